"""Squared Euclidean distances between query items and candidate items.

Pure JAX, no Flax. Items are feature vectors on the last axis.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from n3jax.ops.batching import broadcast_leading, leading_shape, merge_leading, split_leading
from n3jax.ops.chunking import map_query_chunks


def pairwise_sq_distances(x: jax.Array, y: jax.Array) -> jax.Array:
  """All-pairs squared Euclidean distances.

  Args:
    x: ``[..., N, D]`` queries.
    y: ``[..., M, D]`` candidates (same leading dims as ``x``, or broadcastable).

  Returns:
    ``[..., N, M]`` with ``out[..., n, m] = ||x[..., n, :] - y[..., m, :]||²`` (clamped at
    0 against rounding; computed as ``|x|² + |y|² - 2 x·y`` with a matmul, accumulated in
    at least float32, returned in the inputs' dtype: in float16, distances above 65504
    become inf, which the relaxation treats as masked; use bfloat16 or float32).
  """
  if x.ndim < 2 or y.ndim < 2 or x.shape[-1] != y.shape[-1]:
    raise ValueError(f"expected [..., N, D] and [..., M, D], got {x.shape} and {y.shape}")
  acc = jnp.promote_types(jnp.result_type(x, y), jnp.float32)
  xx = jnp.sum(jnp.square(x.astype(acc)), axis=-1)[..., :, None]
  yy = jnp.sum(jnp.square(y.astype(acc)), axis=-1)[..., None, :]
  xy = jnp.einsum("...nd,...md->...nm", x, y, preferred_element_type=acc)
  return jnp.maximum(xx + yy - 2 * xy, 0).astype(jnp.result_type(x, y))


def gather_candidates(database: jax.Array, indices: jax.Array) -> jax.Array:
  """Gathers candidate items: ``[..., N, D]`` and ``[..., M, O]`` → ``[..., M, O, D]``.

  ``indices`` of shape ``[M, O]`` are shared by all leading axes of ``database``; other
  leading axes broadcast.
  """
  if indices.ndim == 2:
    leading_shape(database, 2, "database [..., N, D]")
    return jnp.take(database, indices, axis=-2)
  lead = broadcast_leading([(database, 2, "database [..., N, D]"),
                            (indices, 2, "indices [..., M, O]")])
  db, idx = merge_leading(database, 2, lead), merge_leading(indices, 2, lead)
  return split_leading(jax.vmap(lambda d, i: jnp.take(d, i, axis=0))(db, idx), lead)


def indexed_sq_distances(queries: jax.Array, database: jax.Array, indices: jax.Array, *,
                         query_chunk: Optional[int] = None) -> jax.Array:
  """Squared Euclidean distances from each query to its own list of candidates.

  Args:
    queries: ``[..., M, D]``.
    database: ``[..., N, D]``; leading axes (any number, none included) broadcast.
    indices: int ``[..., M, O]`` (or ``[M, O]``, shared by the leading axes): for query
      ``m``, the database rows of its ``O`` candidates. Out-of-range indices are clamped
      by the gather, so keep them in ``[0, N)``.
    query_chunk: process this many queries at a time, so that the gathered candidates
      ``[..., chunk, O, D]`` rather than ``[..., M, O, D]`` are held in memory.

  Returns:
    ``[..., M, O]``: ``||queries[..., m] - database[..., indices[..., m, o]]||²``, summed
    in at least float32 and returned in the inputs' dtype.
  """
  arrays = [(queries, 2, "queries [..., M, D]"), (database, 2, "database [..., N, D]")]
  if indices.ndim > 2:
    arrays.append((indices, 2, "indices [..., M, O]"))
  lead = broadcast_leading(arrays)
  if queries.shape[-1] != database.shape[-1]:
    raise ValueError(f"queries {queries.shape} and database {database.shape} have "
                     "different feature sizes")
  if indices.shape[-2] != queries.shape[-2]:
    raise ValueError(f"indices {indices.shape} do not list candidates for "
                     f"{queries.shape[-2]} queries")
  dtype = jnp.result_type(queries, database)
  acc = jnp.promote_types(dtype, jnp.float32)
  q, db = merge_leading(queries, 2, lead), merge_leading(database, 2, lead)
  idx = merge_leading(indices, 2, lead) if indices.ndim > 2 else indices
  idx = jnp.broadcast_to(idx, (q.shape[0],) + indices.shape[-2:])

  def chunk_fn(q, i):
    cand = gather_candidates(db, i)  # [B, C, O, D]
    diff = (q[:, :, None, :] - cand).astype(acc)
    return jnp.sum(diff * diff, axis=-1).astype(dtype)

  return split_leading(map_query_chunks(chunk_fn, (q, idx), chunk=query_chunk), lead)
