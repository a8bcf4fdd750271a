"""Brokers: the contract that shares batches between the hubs of several processes."""
