"""Mapping a per-query computation over chunks of queries, to bound memory.

Pure JAX, no Flax.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp


def map_query_chunks(fn: Callable[..., jax.Array], arrays: Sequence[jax.Array], *,
                     chunk: Optional[int],
                     pad_values: Optional[Sequence[Any]] = None) -> jax.Array:
  """Applies ``fn`` to chunks of queries along axis 1 and concatenates the results.

  Args:
    fn: maps arrays ``[B, C, ...]`` (one chunk of each input) to ``[B, C, ...]``.
    arrays: inputs whose axis 1 is the query axis ``M`` (the same for all; axis 0 may
      differ, e.g. 1 for arrays shared by the batch).
    chunk: queries per chunk; ``None`` or ``>= M`` calls ``fn`` once on everything.
    pad_values: per array, the value of the padding queries that complete the last chunk
      (default 0); their results are dropped.

  Returns:
    ``fn``'s output for all ``M`` queries. Each chunk is rematerialized in the backward
    pass (``jax.checkpoint``), so the memory held is that of one chunk, not of all.
  """
  m = arrays[0].shape[1]
  if any(a.shape[1] != m for a in arrays):
    raise ValueError(f"query axes differ: {[a.shape for a in arrays]}")
  if chunk is None or chunk >= m:
    return fn(*arrays)
  if chunk < 1:
    raise ValueError(f"chunk must be positive, got {chunk}")
  n = -(-m // chunk)
  pad = n * chunk - m
  if pad_values is None:
    pad_values = [0] * len(arrays)

  def split(a, value):
    a = jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2), constant_values=value)
    a = a.reshape(a.shape[0], n, chunk, *a.shape[2:])
    return jnp.moveaxis(a, 1, 0)

  out = jax.lax.map(lambda xs: jax.checkpoint(fn)(*xs),
                    tuple(split(a, v) for a, v in zip(arrays, pad_values)))
  out = jnp.moveaxis(out, 0, 1)
  out = out.reshape(out.shape[0], n * chunk, *out.shape[3:])
  return out[:, :m]


def map_tiles(fn: Callable[..., jax.Array], t1: int, t2: int, *xs: jax.Array) -> jax.Array:
  """``lax.map`` of ``fn(i, j, *x[i, j])`` over a ``t1 x t2`` grid of tiles.

  Args:
    fn: maps tile indices (traced int scalars) and the tile's slices of ``xs`` to an array.
    xs: per-tile inputs ``[t1, t2, ...]``.

  Returns:
    ``[t1, t2, ...]``: ``fn``'s outputs (each array of them, when ``fn`` returns a tuple). Each tile is rematerialized in the backward pass
    (``jax.checkpoint``), so memory is bounded by one tile.
  """
  ii, jj = jnp.meshgrid(jnp.arange(t1), jnp.arange(t2), indexing="ij")
  flat = [x.reshape(t1 * t2, *x.shape[2:]) for x in xs]
  out = jax.lax.map(lambda a: jax.checkpoint(fn)(*a), (ii.reshape(-1), jj.reshape(-1), *flat))
  return jax.tree_util.tree_map(lambda o: o.reshape(t1, t2, *o.shape[1:]), out)


def untile(x: jax.Array, n1: int, n2: int) -> jax.Array:
  """Reassembles square tiles: ``[t1, t2, B, T, T, ...]`` → ``[B, n1, n2, ...]``.

  The ``t1·T x t2·T`` tiled grid is cropped to its first ``n1 x n2`` positions.
  """
  t1, t2, b, tile = x.shape[:4]
  rest = x.shape[5:]
  x = jnp.moveaxis(x, 2, 0)  # [B, t1, t2, T, T, ...]
  x = jnp.swapaxes(x, 2, 3).reshape(b, t1 * tile, t2 * tile, *rest)
  return x[:, :n1, :n2]
