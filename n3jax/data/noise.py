"""Noise models."""

from __future__ import annotations

import jax
import jax.numpy as jnp

PIXEL_SCALE = 255.0  # σ is given on the 0-255 scale; images live in [0, 1]


def add_gaussian_noise(clean: jax.Array, sigma: float, key: jax.Array) -> jax.Array:
  """``clean + σ/255 · N(0, 1)``, not clipped (the N³Net protocol)."""
  noise = jax.random.normal(key, clean.shape, jnp.float32).astype(clean.dtype)
  return clean + (sigma / PIXEL_SCALE) * noise
