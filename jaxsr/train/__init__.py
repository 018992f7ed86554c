"""Training: state, the jitted step, the loop and checkpoints."""
