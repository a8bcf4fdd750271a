"""Stages 2 and 3, notifier and sinks: committed transactions become batches of notifications for a sink."""
