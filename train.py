"""Trains a model: ``python train.py --config=configs/denoise.py --workdir=DIR``.

A thin entry point; see :mod:`n3jax.train.cli` (also ``n3jax-train`` once installed).
"""

from n3jax.train.cli import run

if __name__ == "__main__":
  run()
