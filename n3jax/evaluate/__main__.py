"""``python -m n3jax.evaluate``: see :mod:`n3jax.evaluate.cli`."""

from n3jax.evaluate.cli import run

if __name__ == "__main__":
  run()
