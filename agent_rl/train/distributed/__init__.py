"""Training as N ranks: process groups (ranks.py), FSDP2 sharding and sharded checkpoints
(fsdp.py). One process is the N = 1 case of the same code paths, with every collective a
no-op."""
