"""MATLAB-compatible bicubic ``imresize``, ``modcrop`` and BT.601 YCbCr: the SR degradation.

The super-resolution literature makes its low-resolution images with MATLAB's
``imresize(img, 1/s, 'bicubic')`` (Keys cubic, a = −0.5, antialiased when downscaling:
the kernel is stretched by ``1/s``), evaluates on the Y channel of MATLAB's ``rgb2ycbcr``
and shaves ``s`` border pixels. This module reproduces those host-side, in numpy, so that
the benchmark numbers are comparable. Everything works per channel on ``[H, W]`` or
``[H, W, C]`` arrays.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np

# Keys' cubic convolution parameter used by MATLAB's 'bicubic'.
CUBIC_A = -0.5
# Support of the cubic kernel (in input samples at scale 1).
CUBIC_SUPPORT = 4.0
# ITU-R BT.601 as MATLAB's rgb2ycbcr applies it to [0, 255] RGB: Y in [16, 235].
YCBCR_MATRIX = np.array([[65.481, 128.553, 24.966],
                         [-37.797, -74.203, 112.0],
                         [112.0, -93.786, -18.214]]) / 255.0
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])


def cubic(x: np.ndarray) -> np.ndarray:
  """Keys' cubic kernel with ``a = −0.5`` (MATLAB's)."""
  a = CUBIC_A
  ax = np.abs(x)
  ax2, ax3 = ax ** 2, ax ** 3
  return (((a + 2) * ax3 - (a + 3) * ax2 + 1) * (ax <= 1)
          + (a * ax3 - 5 * a * ax2 + 8 * a * ax - 4 * a) * ((ax > 1) & (ax <= 2)))


def contributions(in_size: int, out_size: int, scale: float,
                  antialias: bool = True) -> Tuple[np.ndarray, np.ndarray]:
  """MATLAB's ``contributions``: weights ``[out, P]`` and 0-based source indices ``[out, P]``.

  Source indices outside the image are mirrored (``symmetric`` padding), as MATLAB does.
  """
  if antialias and scale < 1:
    kernel = lambda x: scale * cubic(scale * x)  # noqa: E731
    width = CUBIC_SUPPORT / scale
  else:
    kernel = cubic
    width = CUBIC_SUPPORT
  u = np.arange(1, out_size + 1, dtype=np.float64)
  # Output pixel u maps to input coordinate x (both 1-based, pixel centres).
  x = u / scale + 0.5 * (1.0 - 1.0 / scale)
  left = np.floor(x - width / 2.0)
  taps = int(math.ceil(width)) + 2
  indices = left[:, None] + np.arange(taps)[None, :]  # 1-based
  weights = kernel(x[:, None] - indices)
  weights = weights / weights.sum(axis=1, keepdims=True)
  mirror = np.concatenate([np.arange(in_size), np.arange(in_size - 1, -1, -1)])
  indices = mirror[np.mod(indices.astype(np.int64) - 1, mirror.size)]
  keep = np.any(weights != 0, axis=0)
  return weights[:, keep], indices[:, keep]


def _resize_axis(x: np.ndarray, axis: int, out_size: int, scale: float,
                 antialias: bool) -> np.ndarray:
  weights, indices = contributions(x.shape[axis], out_size, scale, antialias)
  moved = np.moveaxis(x, axis, 0)  # [in, ...]
  gathered = moved[indices]  # [out, P, ...]
  w = weights.reshape(weights.shape + (1,) * (moved.ndim - 1))
  return np.moveaxis(np.sum(gathered * w, axis=1), 0, axis)


def _round_like_matlab(x: np.ndarray) -> np.ndarray:
  """MATLAB's double → uint8: round half away from zero, saturate."""
  return np.clip(np.sign(x) * np.floor(np.abs(x) + 0.5), 0, 255).astype(np.uint8)


def imresize(image: np.ndarray, scale: float, *, antialias: bool = True) -> np.ndarray:
  """MATLAB ``imresize(image, scale, 'bicubic')``.

  Args:
    image: ``[H, W]`` or ``[H, W, C]``; uint8 (the result is uint8, rounded as MATLAB does
      after each pass along an axis) or floating (float64 result, no rounding).
    scale: the factor, e.g. ``1/3`` to downscale by 3 or ``3`` to upscale. The output is
      ``ceil(H·scale) × ceil(W·scale)``.
    antialias: MATLAB's default ``'Antialiasing', true`` (only matters when downscaling).

  Raises:
    ValueError: non-positive scale, or an image too small to resize.
  """
  image = np.asarray(image)
  if not scale > 0:
    raise ValueError(f"scale must be positive, got {scale}")
  if image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
    raise ValueError(f"imresize expects [H, W] or [H, W, C], got shape {image.shape}")
  is_uint8 = image.dtype == np.uint8
  out = image.astype(np.float64)
  # MATLAB resizes the axis with the smaller factor first (height first on a tie).
  for axis in sorted((0, 1), key=lambda a: scale):
    size = int(math.ceil(image.shape[axis] * scale))
    if size < 1:
      raise ValueError(f"image of {image.shape[:2]} is too small to resize by {scale}")
    out = _resize_axis(out, axis, size, scale, antialias)
    if is_uint8:
      out = _round_like_matlab(out).astype(np.float64)
  return out.astype(np.uint8) if is_uint8 else out


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
  """Crops ``image [H, W, ...]`` at the bottom/right to a multiple of ``scale``."""
  h, w = image.shape[:2]
  if h < scale or w < scale:
    raise ValueError(f"image of {h}x{w} is smaller than the scale {scale}")
  return image[:h - h % scale, :w - w % scale]


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
  """MATLAB ``rgb2ycbcr`` on ``[..., 3]`` RGB in ``[0, 255]`` → float64 YCbCr in ``[0, 255]``
  (Y in ``[16, 235]``), without rounding."""
  rgb = np.asarray(rgb, np.float64)
  if rgb.shape[-1] != 3:
    raise ValueError(f"rgb_to_ycbcr expects [..., 3], got shape {rgb.shape}")
  return rgb @ YCBCR_MATRIX.T + YCBCR_OFFSET


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
  """Inverse of :func:`rgb_to_ycbcr` (float64, ``[0, 255]``, not clipped)."""
  ycbcr = np.asarray(ycbcr, np.float64)
  return (ycbcr - YCBCR_OFFSET) @ np.linalg.inv(YCBCR_MATRIX).T


def luminance(image: np.ndarray) -> np.ndarray:
  """The SR benchmarks' Y channel, float64 on the ``[0, 255]`` scale.

  RGB ``[H, W, 3]`` → Y of :func:`rgb_to_ycbcr` (in ``[16, 235]``). A gray image
  (``[H, W]`` or ``[H, W, 1]``) is its own Y, unchanged, as the SR evaluation codes
  (SRCNN/VDSR) treat it: that is how Set14's gray ``bridge`` enters the standard figures.
  """
  image = np.asarray(image, np.float64)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim == 2:
    return image
  return rgb_to_ycbcr(image)[..., 0]


def to_uint8(x: np.ndarray) -> np.ndarray:
  """MATLAB's ``uint8(x)``: round half away from zero, saturate to ``[0, 255]``."""
  return _round_like_matlab(np.asarray(x, np.float64))
