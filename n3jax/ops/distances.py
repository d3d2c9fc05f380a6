"""Squared Euclidean distances between query items and candidate items.

Pure JAX, no Flax. Items are feature vectors on the last axis.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from n3jax.ops.chunking import map_query_chunks


def pairwise_sq_distances(x: jax.Array, y: jax.Array) -> jax.Array:
  """All-pairs squared Euclidean distances.

  Args:
    x: ``[..., N, D]`` queries.
    y: ``[..., M, D]`` candidates (same leading dims as ``x``, or broadcastable).

  Returns:
    ``[..., N, M]`` with ``out[..., n, m] = ||x[..., n, :] - y[..., m, :]||²`` (clamped at
    0 against rounding; computed as ``|x|² + |y|² - 2 x·y`` with a matmul, accumulated in
    at least float32).
  """
  if x.ndim < 2 or y.ndim < 2 or x.shape[-1] != y.shape[-1]:
    raise ValueError(f"expected [..., N, D] and [..., M, D], got {x.shape} and {y.shape}")
  acc = jnp.promote_types(jnp.result_type(x, y), jnp.float32)
  xx = jnp.sum(jnp.square(x.astype(acc)), axis=-1)[..., :, None]
  yy = jnp.sum(jnp.square(y.astype(acc)), axis=-1)[..., None, :]
  xy = jnp.einsum("...nd,...md->...nm", x, y, preferred_element_type=acc)
  return jnp.maximum(xx + yy - 2 * xy, 0).astype(jnp.result_type(x, y))


def gather_candidates(database: jax.Array, indices: jax.Array) -> jax.Array:
  """Gathers candidate items: ``[B, N, D]`` and ``[B, M, O]`` (or ``[M, O]``) → ``[B, M, O, D]``."""
  if database.ndim != 3:
    raise ValueError(f"database must be [B, N, D], got {database.shape}")
  if indices.ndim == 2:
    return jnp.take(database, indices, axis=1)
  if indices.ndim != 3 or indices.shape[0] != database.shape[0]:
    raise ValueError(f"indices must be [M, O] or [B, M, O], got {indices.shape} "
                     f"for a database of shape {database.shape}")
  return jax.vmap(lambda d, i: jnp.take(d, i, axis=0))(database, indices)


def indexed_sq_distances(queries: jax.Array, database: jax.Array, indices: jax.Array, *,
                         query_chunk: Optional[int] = None) -> jax.Array:
  """Squared Euclidean distances from each query to its own list of candidates.

  Args:
    queries: ``[B, M, D]``.
    database: ``[B, N, D]``.
    indices: int ``[B, M, O]`` (or ``[M, O]``, shared by the batch): for query ``m``, the
      database rows of its ``O`` candidates. Out-of-range indices are clamped by the
      gather, so keep them in ``[0, N)``.
    query_chunk: process this many queries at a time, so that the gathered candidates
      ``[B, chunk, O, D]`` rather than ``[B, M, O, D]`` are held in memory.

  Returns:
    ``[B, M, O]``: ``||queries[b, m] - database[b, indices[b, m, o]]||²``, summed in at
    least float32 and returned in the inputs' dtype.
  """
  if queries.ndim != 3 or database.ndim != 3 or queries.shape[-1] != database.shape[-1]:
    raise ValueError(f"expected queries [B, M, D] and database [B, N, D], got "
                     f"{queries.shape} and {database.shape}")
  if indices.shape[-2] != queries.shape[1]:
    raise ValueError(f"indices {indices.shape} do not list candidates for "
                     f"{queries.shape[1]} queries")
  dtype = jnp.result_type(queries, database)
  acc = jnp.promote_types(dtype, jnp.float32)
  idx = jnp.broadcast_to(indices, (queries.shape[0],) + indices.shape[-2:])

  def chunk_fn(q, i):
    cand = gather_candidates(database, i)  # [B, C, O, D]
    diff = (q[:, :, None, :] - cand).astype(acc)
    return jnp.sum(diff * diff, axis=-1).astype(dtype)

  return map_query_chunks(chunk_fn, (queries, idx), chunk=query_chunk)
