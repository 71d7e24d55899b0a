"""What is computed from distributions and checkpoints: statistics, landscapes, interpolation, failures, Algorithm 1."""
