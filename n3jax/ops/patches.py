"""Image <-> patch conversion: the reference's padding, patch extraction and folding.

Pure JAX, no Flax. Images are ``[..., H, W, C]`` with any number of leading (batch)
axes, none included. A patch grid of an image is ``[..., n1, n2, P*P*C]`` where each
feature vector is the patch flattened in ``(row, column, channel)`` order. Items of a
grid are numbered row-major, ``m = i * n2 + j``. Which patches are compared (the search
windows) is :mod:`n3jax.ops.geometry`'s business.
"""

from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp

from n3jax.ops.batching import batched, leading_shape


def patch_padding(size: int, patch_size: int, stride: int) -> Tuple[int, int]:
  """Zero padding ``(before, after)`` that makes ``size - patch_size`` a multiple of ``stride``.

  This is the reference's rule: ``pad = (-(size - patch_size)) mod stride``, split as
  ``floor(pad / 2)`` before and ``ceil(pad / 2)`` after.

  Raises:
    ValueError: if ``size < patch_size`` (no patch fits) or the sizes are not positive.
  """
  if patch_size < 1 or stride < 1:
    raise ValueError(f"patch_size and stride must be positive, got {patch_size}, {stride}")
  if size < patch_size:
    raise ValueError(
        f"image side {size} is smaller than the patch size {patch_size}; "
        f"the N³ block needs images of at least {patch_size} pixels per side")
  pad = (-(size - patch_size)) % stride
  return pad // 2, pad - pad // 2


def grid_size(size: int, patch_size: int, stride: int) -> int:
  """Number of patch positions along one side after :func:`patch_padding`."""
  before, after = patch_padding(size, patch_size, stride)
  return (size + before + after - patch_size) // stride + 1


def pad_for_patches(x: jax.Array, patch_size: int, stride: int) -> jax.Array:
  """Zero-pads ``x [..., H, W, C]`` per :func:`patch_padding` on both spatial axes."""
  lead = leading_shape(x, 3, "image [..., H, W, C]")
  ph = patch_padding(x.shape[-3], patch_size, stride)
  pw = patch_padding(x.shape[-2], patch_size, stride)
  return jnp.pad(x, ((0, 0),) * len(lead) + (ph, pw, (0, 0)))


def crop_patch_padding(x: jax.Array, height: int, width: int, patch_size: int,
                       stride: int) -> jax.Array:
  """Inverse of :func:`pad_for_patches`: crops ``[..., Hp, Wp, C]`` back to ``[..., H, W, C]``."""
  leading_shape(x, 3, "image [..., Hp, Wp, C]")
  top, _ = patch_padding(height, patch_size, stride)
  left, _ = patch_padding(width, patch_size, stride)
  return x[..., top:top + height, left:left + width, :]


@batched(3)
def extract_patches(x: jax.Array, patch_size: int, stride: int) -> jax.Array:
  """All ``patch_size``² patches at ``stride`` of an (already padded) image.

  Args:
    x: ``[..., H, W, C]`` with ``(H - P)`` and ``(W - P)`` multiples of ``stride``.
    patch_size: ``P``.
    stride: step between patches.

  Returns:
    ``[..., n1, n2, P*P*C]`` with ``n1 = (H - P) / stride + 1`` (likewise ``n2``).
  """
  b, h, w, c = x.shape
  if (h - patch_size) % stride or (w - patch_size) % stride or min(h, w) < patch_size:
    raise ValueError(
        f"image {h}x{w} does not tile with patch {patch_size} / stride {stride}; "
        "pad it with pad_for_patches first")
  n1 = (h - patch_size) // stride + 1
  n2 = (w - patch_size) // stride + 1
  if patch_size % stride == 0:
    # Fast path (the reference's 10 / 5): the image is a grid of stride x stride blocks,
    # and a patch is q x q neighbouring blocks. Only reshapes and slices, so the
    # transpose (folding) is pads and adds.
    q, s = patch_size // stride, stride
    xb = x.reshape(b, h // s, s, w // s, s, c)
    rows = []
    for u in range(q):
      cols = [xb[:, u:u + n1, :, v:v + n2, :, :] for v in range(q)]
      rows.append(jnp.stack(cols, axis=4))  # [B, n1, s, n2, q, s, C]
    p = jnp.stack(rows, axis=2)  # [B, n1, q, s, n2, q, s, C]
    p = p.transpose(0, 1, 4, 2, 3, 5, 6, 7)  # [B, n1, n2, q, s, q, s, C]
  else:
    offsets = [
        x[:, a:a + (n1 - 1) * stride + 1:stride, bb:bb + (n2 - 1) * stride + 1:stride, :]
        for a in range(patch_size) for bb in range(patch_size)
    ]
    p = jnp.stack(offsets, axis=3)  # [B, n1, n2, P*P, C]
  return p.reshape(b, n1, n2, patch_size * patch_size * c)


@batched(3)
def fold_patches(patches: jax.Array, height: int, width: int, patch_size: int,
                 stride: int) -> jax.Array:
  """Folds patches back into an image, averaging where patches overlap (col2im).

  Args:
    patches: ``[..., n1, n2, P*P*C]`` as produced by :func:`extract_patches`.
    height, width: the size of the (padded) image the patches came from.

  Returns:
    ``[..., height, width, C]``: each pixel is the mean over the patches covering it
    (zero where no patch covers it).
  """
  b, n1, n2, f = patches.shape
  if f % (patch_size * patch_size):
    raise ValueError(f"patch feature size {f} is not a multiple of {patch_size}²")
  c = f // (patch_size * patch_size)
  if grid_size(height, patch_size, stride) != n1 or grid_size(width, patch_size, stride) != n2:
    raise ValueError(f"a {n1}x{n2} patch grid does not come from a {height}x{width} image")
  template = jax.ShapeDtypeStruct((b, height, width, c), patches.dtype)
  extract_t = jax.linear_transpose(
      lambda img: extract_patches(img, patch_size, stride), template)
  (summed,) = extract_t(patches)
  ones = jnp.ones((1, n1, n2, patch_size * patch_size), patches.dtype)
  count_t = jax.linear_transpose(
      lambda img: extract_patches(img, patch_size, stride),
      jax.ShapeDtypeStruct((1, height, width, 1), patches.dtype))
  (count,) = count_t(ones)
  return summed / jnp.maximum(count, 1)


__all__ = [
    "patch_padding", "grid_size", "pad_for_patches", "crop_patch_padding",
    "extract_patches", "fold_patches",
]
