"""Training: train state, optimizer, the pure train step, checkpoints and the loop."""

from n3jax.train.loop import train_and_evaluate

__all__ = ["train_and_evaluate"]
