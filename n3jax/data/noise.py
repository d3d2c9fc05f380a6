"""Noise models, and estimating the noise level of an image."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

PIXEL_SCALE = 255.0  # σ is given on the 0-255 scale; images live in [0, 1]


def add_gaussian_noise(clean: jax.Array, sigma: float, key: jax.Array) -> jax.Array:
  """``clean + σ/255 · N(0, 1)``, not clipped (the N³Net protocol)."""
  noise = jax.random.normal(key, clean.shape, jnp.float32).astype(clean.dtype)
  return clean + (sigma / PIXEL_SCALE) * noise


# Median absolute deviation of Gaussian noise: MAD = σ · Φ⁻¹(3/4).
MAD_TO_SIGMA = 1.0 / 0.6744897501960817


def estimate_sigma(image: np.ndarray) -> float:
  """Estimates the standard deviation of additive white Gaussian noise in an image.

  Donoho's wavelet estimate: ``median(|HH|) / 0.6745`` over the finest diagonal Haar
  coefficients ``(a − b − c + d) / 2`` of the 2×2 blocks, which hold almost no image
  structure but all of the noise (the Haar transform is orthonormal, so their noise
  standard deviation is σ). Texture-rich images read a little high (grass: +4 at σ=25).

  Args:
    image: ``[H, W]`` gray image in [0, 1] (at least 2×2).

  Returns:
    σ on the 0-255 scale.
  """
  x = np.asarray(image, np.float64)
  if x.ndim != 2 or min(x.shape) < 2:
    raise ValueError(f"need a [H, W] image of at least 2x2 pixels, got shape {x.shape}")
  h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
  x = x[:h, :w]
  hh = (x[0::2, 0::2] - x[0::2, 1::2] - x[1::2, 0::2] + x[1::2, 1::2]) / 2
  return float(np.median(np.abs(hh)) * MAD_TO_SIGMA * PIXEL_SCALE)


# σ above the whole pixel range is not a denoising problem (and overflows PSNRs to ±inf).
MAX_SIGMA = PIXEL_SCALE


def check_sigma(sigma: float, *, name: str = "sigma") -> float:
  """``sigma`` as a float if ``0 < sigma ≤ 255`` (the 0-255 scale), else a ``ValueError``."""
  try:
    value = float(sigma)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a number on the 0-255 scale, got {sigma!r}") from None
  if not 0 < value <= MAX_SIGMA:
    raise ValueError(f"{name} must be in (0, {MAX_SIGMA:g}] on the 0-255 scale "
                     f"(e.g. 25), got {sigma!r}")
  return value
