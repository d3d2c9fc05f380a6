"""Image-quality metrics: PSNR and SSIM as the denoising literature computes them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# SSIM of Wang et al. 2004: Gaussian window 11, σ 1.5, K1 = 0.01, K2 = 0.03.
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def psnr(pred: jax.Array, target: jax.Array, *, peak: float = 1.0) -> jax.Array:
  """``10·log10(peak² / mean((pred − target)²))`` over all elements (jit-able)."""
  mse = jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)))
  return 10.0 * jnp.log10(peak ** 2 / mse)


def ssim(pred: np.ndarray, target: np.ndarray, *, data_range: float = 1.0) -> float:
  """SSIM of two gray ``[H, W]`` images: Gaussian window (σ 1.5, 11 taps), mean over the map.

  Computed with scikit-image's ``structural_similarity`` in its Wang et al. settings
  (population covariances; the map is averaged over the valid region).
  """
  from skimage.metrics import structural_similarity
  pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
  if pred.shape != target.shape or pred.ndim != 2:
    raise ValueError(f"ssim expects two gray [H, W] images, got {pred.shape} and {target.shape}")
  return float(structural_similarity(pred, target, data_range=data_range, gaussian_weights=True,
                                     sigma=SSIM_SIGMA, use_sample_covariance=False,
                                     K1=SSIM_K1, K2=SSIM_K2))
