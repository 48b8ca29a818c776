"""Training: the trainer loop, the update step, checkpoints, weight sync, task sampling, metrics and the run config."""
