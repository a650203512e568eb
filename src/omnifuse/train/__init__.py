"""Training: the loop, and running a whole config."""
