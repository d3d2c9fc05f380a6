"""Training: train state, optimizer, the pure train step, checkpoints and the loop."""

__all__ = ["train_and_evaluate"]


def __getattr__(name):
  # Lazy: the loop imports the tasks, which import this package's step module.
  if name == "train_and_evaluate":
    from n3jax.train.loop import train_and_evaluate
    return train_and_evaluate
  raise AttributeError(f"module 'n3jax.train' has no attribute {name!r}")
