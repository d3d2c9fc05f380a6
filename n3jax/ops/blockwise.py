"""Windowed patch distances and folded aggregation on the block grid of an image.

Pure JAX, no Flax. When the patch size is a multiple of the stride (the reference's
10 / 5), a padded image is a grid of ``stride x stride`` *blocks* and every patch is
``q x q`` neighbouring blocks (``q = patch_size / stride``). Two facts then make the N³
block's non-local part several times cheaper than working on patch vectors:

* distances: ``||P_a − P_c||² = Σ_u ||B_{a+u} − B_{c+u}||²`` (``u ∈ [0, q)²``), so a
  tile's patch Gram matrix is a sum of ``q²`` shifted slices of one *block* Gram matrix;
* aggregation + folding: block ``b`` of neighbour image ``j`` is
  ``Σ_u Σ_o w[b − u, o, j] · B[cand(b − u, o) + u]`` (then divided by the number of
  patches covering it), one matmul of the weights scattered onto a block region against
  that region, without ever forming the ``[M, k, P·P·C]`` neighbour volumes.

Both are computed tile by tile (``lax.map``, each tile rematerialized in the backward
pass), so memory is bounded by one tile in the forward and the backward pass. They equal
:func:`~n3jax.ops.windowed_sq_distances` on :func:`~n3jax.ops.extract_patches` and
:func:`~n3jax.ops.fold_patches` of :func:`~n3jax.ops.windowed_aggregate` up to float
rounding (tests/test_blockwise.py).
"""

from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp

from n3jax.ops.batching import batched
from n3jax.ops.chunking import map_tiles, untile
from n3jax.ops.geometry import tile_regions, window_candidates

# Tile sides chosen by timing the N³ block at a 512² image on CPU (k = 7, window 15).
DISTANCE_TILE = 6  # query patches per tile side
AGGREGATE_TILE = 4  # output blocks per tile side


@batched(3)
def to_blocks(x: jax.Array, stride: int) -> jax.Array:
  """``[..., H, W, C]`` (``H``, ``W`` multiples of ``stride``) → ``[..., H/s, W/s, s·s·C]``."""
  b, h, w, c = x.shape
  if h % stride or w % stride:
    raise ValueError(f"image {h}x{w} is not a whole number of {stride}x{stride} blocks")
  x = x.reshape(b, h // stride, stride, w // stride, stride, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // stride, w // stride, stride * stride * c)


def from_blocks(blocks: jax.Array, stride: int) -> jax.Array:
  """Inverse of :func:`to_blocks`: ``[..., N1, N2, s·s·C]`` → ``[..., N1·s, N2·s, C]``."""
  *lead, n1, n2, f = blocks.shape
  c = f // (stride * stride)
  x = blocks.reshape(*lead, n1, n2, stride, stride, c)
  x = jnp.swapaxes(x, -4, -3)
  return x.reshape(*lead, n1 * stride, n2 * stride, c)


def _box_sum(x: jax.Array, q: int, axes: Tuple[int, int], sizes: Tuple[int, int]) -> jax.Array:
  """Sum of the ``q x q`` shifted slices of ``x`` along two axes (a box filter, 'valid')."""
  out = 0
  for u1 in range(q):
    for u2 in range(q):
      sl = [slice(None)] * x.ndim
      sl[axes[0]] = slice(u1, u1 + sizes[0])
      sl[axes[1]] = slice(u2, u2 + sizes[1])
      out = out + x[tuple(sl)]
  return out


def _patch_grid(blocks: jax.Array, q: int) -> Tuple[int, int]:
  if blocks.ndim != 4:
    raise ValueError(f"blocks must be [B, N1, N2, D], got {blocks.shape}")
  n1, n2 = blocks.shape[1] - q + 1, blocks.shape[2] - q + 1
  if q < 1 or n1 < 1 or n2 < 1:
    raise ValueError(f"a {blocks.shape[1]}x{blocks.shape[2]} block grid has no {q}x{q} patch")
  return n1, n2


@batched(3)
def block_sq_distances(blocks: jax.Array, q: int, window: int, *,
                       tile: int = DISTANCE_TILE) -> jax.Array:
  """Squared distances of every patch to the candidates of its search window.

  Args:
    blocks: ``[..., N1, N2, D]`` block grid (:func:`to_blocks` of a padded image; any
      leading axes, none included); patch
      ``(i, j)`` is blocks ``[i, i + q) x [j, j + q)``, so the patch grid is
      ``n1 x n2 = (N1 − q + 1) x (N2 − q + 1)``.
    q: patch side in blocks (``patch_size / stride``).
    window: search window side in patch-grid positions (:mod:`n3jax.ops.geometry`).
    tile: query patches per tile side.

  Returns:
    ``[..., n1·n2, O]``, equal up to float rounding to ``windowed_sq_distances`` of the
    patches of the same image. Computed in at least float32, clamped at 0.
  """
  n1, n2 = _patch_grid(blocks, q)
  b, _, _, d = blocks.shape
  acc = jnp.promote_types(blocks.dtype, jnp.float32)
  t1, reg1, r0s = tile_regions(n1, window, tile)
  t2, reg2, c0s = tile_regions(n2, window, tile)
  # Query blocks of the padding tiles beyond the grid repeat the edge (results dropped).
  padded = jnp.pad(blocks, ((0, 0), (0, t1 * tile - n1), (0, t2 * tile - n2), (0, 0)),
                   mode="edge")

  def tile_fn(i, j):
    p1 = jnp.minimum(i * tile + jnp.arange(tile), n1 - 1)
    p2 = jnp.minimum(j * tile + jnp.arange(tile), n2 - 1)
    r0, c0 = r0s[i], c0s[j]
    qb = jax.lax.dynamic_slice(padded, (0, i * tile, j * tile, 0),
                               (b, tile + q - 1, tile + q - 1, d)).astype(acc)
    cb = jax.lax.dynamic_slice(blocks, (0, r0, c0, 0),
                               (b, reg1 + q - 1, reg2 + q - 1, d)).astype(acc)
    # Distances are translation-invariant: centring on the region's mean block keeps the
    # cancellation in |a|² + |c|² − 2 a·c small when the features share a large offset.
    mu = jnp.mean(cb, axis=(1, 2), keepdims=True)
    qb, cb = qb - mu, cb - mu
    gram = jnp.einsum("bxyd,bzwd->bxyzw", qb, cb, preferred_element_type=acc)
    dots = sum(gram[:, a:a + tile, c:c + tile, a:a + reg1, c:c + reg2]
               for a in range(q) for c in range(q))  # Σ_u G[t + u, r + u]
    qn = _box_sum(jnp.sum(qb * qb, -1), q, (1, 2), (tile, tile))  # [B, T, T]
    cn = _box_sum(jnp.sum(cb * cb, -1), q, (1, 2), (reg1, reg2))  # [B, R1, R2]
    dense = qn[:, :, :, None, None] + cn[:, None, None] - 2 * dots  # [B, T, T, R1, R2]
    rows, cols = window_candidates(p1[:, None], p2[None, :], n1, n2, window)  # [T, T, O]
    local = (rows - r0) * reg2 + (cols - c0)
    dense = dense.reshape(b, tile, tile, reg1 * reg2)
    out = jnp.take_along_axis(dense, local[None], axis=3)  # [B, T, T, O]
    return jnp.maximum(out, 0).astype(blocks.dtype)

  out = untile(map_tiles(tile_fn, t1, t2), n1, n2)  # [B, n1, n2, O]
  return out.reshape(b, n1 * n2, -1)


@batched(3, 3)
def block_aggregate_sum(weights: jax.Array, blocks: jax.Array, q: int, window: int, *,
                        tile: int = AGGREGATE_TILE) -> jax.Array:
  """Folded neighbour volumes, summed (not yet averaged) over the patches covering a block.

  Args:
    weights: ``[..., n1·n2, O, k]`` window weights of every patch (the order of
      ``window_indices``), e.g. from ``continuous_knn_weights``.
    blocks: ``[..., N1, N2, D]`` block grid of the padded image whose patches are averaged
      (leading axes broadcast with those of ``weights``).
    q, window, tile: as in :func:`block_sq_distances` (``tile`` counts output blocks).

  Returns:
    ``[..., N1, N2, k, D]``: block ``b`` of neighbour image ``j`` summed over the patches
    ``a`` covering it, ``Σ_{a ∋ b} Σ_o w[a, o, j] · B[cand(a, o) + (b − a)]``. Divide by
    :func:`block_cover_counts` to get ``fold_patches`` of the neighbour volumes.
  """
  n1, n2 = _patch_grid(blocks, q)
  b, nb1, nb2, d = blocks.shape
  if weights.ndim != 4 or weights.shape[:2] != (b, n1 * n2):
    raise ValueError(f"weights {weights.shape} do not match a {n1}x{n2} patch grid "
                     f"(blocks {blocks.shape})")
  k = weights.shape[-1]
  # The patches covering a tile of blocks start up to q − 1 blocks before it; their
  # candidates lie in a region of reg1 x reg2 patches.
  t1, reg1, r0s = tile_regions(n1, window, tile, reach=q - 1)
  t2, reg2, c0s = tile_regions(n2, window, tile, reach=q - 1)
  rb1, rb2 = reg1 + q - 1, reg2 + q - 1  # the region in blocks
  u1, u2 = (a.reshape(-1) for a in jnp.meshgrid(jnp.arange(q), jnp.arange(q), indexing="ij"))

  def tile_fn(i, j):
    bl1 = i * tile + jnp.arange(tile)  # output block rows (beyond the grid: dropped)
    bl2 = j * tile + jnp.arange(tile)
    p1 = bl1[:, None, None] - u1[None, None, :]  # [T, 1, q²] patch covering with offset u
    p2 = bl2[None, :, None] - u2[None, None, :]  # [1, T, q²]
    valid = (p1 >= 0) & (p1 < n1) & (p2 >= 0) & (p2 < n2)  # [T, T, q²]
    p1c, p2c = jnp.clip(p1, 0, n1 - 1), jnp.clip(p2, 0, n2 - 1)
    p1c, p2c = jnp.broadcast_arrays(p1c, p2c)
    r0, c0 = r0s[i], c0s[j]
    rows, cols = window_candidates(p1c, p2c, n1, n2, window)  # [T, T, q², O]
    local = (rows + u1[:, None] - r0) * rb2 + (cols + u2[:, None] - c0)
    w = jnp.take(weights, (p1c * n2 + p2c).reshape(-1), axis=1)  # [B, T·T·q², O, k]
    w = w.reshape(b, tile, tile, q * q, -1, k) * valid[None, ..., None, None].astype(w.dtype)
    dense = jnp.zeros((b, tile * tile, rb1 * rb2, k), w.dtype)
    tq = jnp.arange(tile * tile)[:, None, None]
    dense = dense.at[:, tq, local.reshape(tile * tile, q * q, -1)].add(
        w.reshape(b, tile * tile, q * q, -1, k))
    region = jax.lax.dynamic_slice(blocks, (0, r0, c0, 0), (b, rb1, rb2, d))
    out = jnp.einsum("btrk,brd->btkd", dense, region.reshape(b, rb1 * rb2, d))
    return out.reshape(b, tile, tile, k, d)

  return untile(map_tiles(tile_fn, t1, t2), nb1, nb2)


def block_cover_counts(n1: int, n2: int, q: int) -> jax.Array:
  """``[N1, N2]``: how many of the ``n1 x n2`` patches (``q x q`` blocks) cover each block."""
  def axis(n):
    bl = jnp.arange(n + q - 1)
    return jnp.minimum(bl, n - 1) - jnp.maximum(bl - q + 1, 0) + 1
  return axis(n1)[:, None] * axis(n2)[None, :]


__all__ = ["to_blocks", "from_blocks", "block_sq_distances", "block_aggregate_sum",
           "block_cover_counts", "DISTANCE_TILE", "AGGREGATE_TILE"]
