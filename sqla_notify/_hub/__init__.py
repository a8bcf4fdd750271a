"""Stage 4, the hub: cursors, the replay window and a bounded queue per connected client."""
