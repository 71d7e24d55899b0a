"""Training jobs: typed configs, the pure training program, the job around it, checkpoints."""
