"""What launches: a fresh process with results as data, the timed run's worker, and torchrun."""
