"""``python -m n3jax.train``: see :mod:`n3jax.train.cli`."""

from n3jax.train.cli import run

if __name__ == "__main__":
  run()
