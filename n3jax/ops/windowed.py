"""Windowed distances and aggregation on a patch grid, computed tile by tile with matmuls.

Pure JAX, no Flax. These compute exactly what :func:`indexed_sq_distances` and
:func:`aggregate` compute with ``indices = window_indices(n1, n2, window)``, but exploit
the window structure: the windows of a ``tile x tile`` block of queries all lie inside one
region of at most ``(tile + window − 1)²`` grid positions
(:func:`~n3jax.ops.geometry.tile_regions`), so a tile's distances and its
neighbour volumes are two dense matmuls against that region instead of per-query gathers.
Memory is bounded by one tile (tiles are mapped with ``lax.map`` and rematerialized in the
backward pass).
"""

from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp

from n3jax.ops.batching import batched
from n3jax.ops.chunking import map_tiles, untile
from n3jax.ops.geometry import tile_regions, window_indices

DEFAULT_TILE = 6  # fastest on CPU among 4/6/8/12/16 (bench: 512² image, k = 7)


def _tiled_local_indices(n1: int, n2: int, window: int, tile: int):
  """Window candidates of each query as indices into its tile's region.

  Returns ``(local [t1, t2, tile², O], r0 [t1], c0 [t2], region (R1, R2))`` (regions of
  :func:`~n3jax.ops.geometry.tile_regions`); queries of the padding beyond the grid
  repeat the last row/column (their results are dropped).
  """
  t1, reg1, r0 = tile_regions(n1, window, tile)
  t2, reg2, c0 = tile_regions(n2, window, tile)
  idx = window_indices(n1, n2, window).reshape(n1, n2, -1)
  idx = jnp.pad(idx, ((0, t1 * tile - n1), (0, t2 * tile - n2), (0, 0)), mode="edge")
  rows, cols = idx // n2, idx % n2
  rows = rows.reshape(t1, tile, t2, tile, -1) - r0[:, None, None, None, None]
  cols = cols.reshape(t1, tile, t2, tile, -1) - c0[None, None, :, None, None]
  local = (rows * reg2 + cols).transpose(0, 2, 1, 3, 4).reshape(t1, t2, tile * tile, -1)
  return local, r0, c0, (reg1, reg2)


def _tiles(grid: jax.Array, tile: int, t1: int, t2: int) -> jax.Array:
  """``[B, n1, n2, F]`` → ``[t1, t2, B, tile², F]`` (edge-padded)."""
  b, n1, n2, f = grid.shape
  g = jnp.pad(grid, ((0, 0), (0, t1 * tile - n1), (0, t2 * tile - n2), (0, 0)), mode="edge")
  g = g.reshape(b, t1, tile, t2, tile, f).transpose(1, 3, 0, 2, 4, 5)
  return g.reshape(t1, t2, b, tile * tile, f)


def _region(grid: jax.Array, r0: jax.Array, c0: jax.Array, reg: Tuple[int, int]) -> jax.Array:
  b, _, _, f = grid.shape
  region = jax.lax.dynamic_slice(grid, (0, r0, c0, 0), (b, reg[0], reg[1], f))
  return region.reshape(b, reg[0] * reg[1], f)


@batched(3)
def windowed_sq_distances(grid: jax.Array, window: int, *, tile: int = DEFAULT_TILE
                          ) -> jax.Array:
  """Squared distances of every grid item to the candidates of its search window.

  Args:
    grid: ``[..., n1, n2, D]`` item features on a patch grid (e.g. patch embeddings),
      with any leading axes (none included).
    window: side of the border-shifted search window (see :func:`window_indices`).
    tile: queries per tile side.

  Returns:
    ``[..., n1·n2, O]``, equal (up to float rounding) to
    ``indexed_sq_distances(q, q, window_indices(n1, n2, window))`` with
    ``q = grid.reshape(B, n1·n2, D)``. Computed as ``|q|² + |c|² − 2 q·c`` in at least
    float32, clamped at 0.
  """
  if grid.ndim != 4:
    raise ValueError(f"grid must be [B, n1, n2, D], got {grid.shape}")
  b, n1, n2, _ = grid.shape
  local, r0, c0, reg = _tiled_local_indices(n1, n2, window, tile)
  t1, t2 = local.shape[:2]
  acc = jnp.promote_types(grid.dtype, jnp.float32)

  def tile_fn(i, j, q, loc):
    c = _region(grid, r0[i], c0[j], reg).astype(acc)  # [B, Nc, D]
    # Distances are translation-invariant: centring on the region's mean keeps the
    # cancellation in |q|² + |c|² − 2 q·c small when the features share a large offset.
    mu = jnp.mean(c, axis=1, keepdims=True)
    q, c = q.astype(acc) - mu, c - mu
    qq = jnp.sum(jnp.square(q.astype(acc)), -1)[..., :, None]
    cc = jnp.sum(jnp.square(c.astype(acc)), -1)[..., None, :]
    dense = qq + cc - 2 * jnp.einsum("bqd,bnd->bqn", q, c, preferred_element_type=acc)
    d = jnp.take_along_axis(dense, loc[None], axis=2)  # [B, tile², O]
    return jnp.maximum(d, 0).astype(grid.dtype).reshape(b, tile, tile, -1)

  out = map_tiles(tile_fn, t1, t2, _tiles(grid, tile, t1, t2), local)
  return untile(out, n1, n2).reshape(b, n1 * n2, -1)


@batched(3, 3)
def windowed_aggregate(weights: jax.Array, grid: jax.Array, window: int, *,
                       tile: int = DEFAULT_TILE) -> jax.Array:
  """Neighbour volumes from window weights: the windowed form of :func:`aggregate`.

  Args:
    weights: ``[..., n1·n2, O, k]`` over the candidates of :func:`window_indices`.
    grid: ``[..., n1, n2, D]`` items to average (e.g. patches of the block's input);
      leading axes (any number, none included) broadcast.

  Returns:
    ``[..., n1·n2, k, D]``, equal to ``aggregate(weights, grid.reshape(B, -1, D),
    window_indices(n1, n2, window))``.
  """
  if grid.ndim != 4 or weights.ndim != 4:
    raise ValueError(f"expected weights [B, M, O, k] and grid [B, n1, n2, D], got "
                     f"{weights.shape} and {grid.shape}")
  b, n1, n2, _ = grid.shape
  if weights.shape[:2] != (b, n1 * n2):
    raise ValueError(f"weights {weights.shape} do not match a {n1}x{n2} grid")
  local, r0, c0, reg = _tiled_local_indices(n1, n2, window, tile)
  t1, t2 = local.shape[:2]
  k = weights.shape[-1]
  w_grid = weights.reshape(b, n1, n2, -1)
  w_tiles = _tiles(w_grid, tile, t1, t2)  # [t1, t2, B, tile², O*k]
  nc = reg[0] * reg[1]

  def tile_fn(i, j, w, loc):
    w = w.reshape(b, tile * tile, -1, k)
    dense = jnp.zeros((b, tile * tile, nc, k), w.dtype)
    q = jnp.arange(tile * tile)[:, None]
    dense = dense.at[:, q, loc].add(w)  # candidates are distinct: a scatter of the weights
    c = _region(grid, r0[i], c0[j], reg)  # [B, Nc, D]
    return jnp.einsum("bqnk,bnd->bqkd", dense, c).reshape(b, tile, tile, k, -1)

  out = map_tiles(tile_fn, t1, t2, w_tiles, local)
  return untile(out, n1, n2).reshape(b, n1 * n2, k, -1)
