"""Evaluates a model: ``python eval.py --config=configs/denoise.py --checkpoint=DIR --output=OUT``.

A thin entry point; see :mod:`n3jax.evaluate.cli` (also ``n3jax-eval`` once installed).
"""

from n3jax.evaluate.cli import run

if __name__ == "__main__":
  run()
