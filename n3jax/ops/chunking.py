"""Mapping a per-query computation over chunks of queries, to bound memory.

Pure JAX, no Flax.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp


def map_query_chunks(fn: Callable[..., jax.Array], arrays: Sequence[jax.Array], *,
                     chunk: Optional[int]) -> jax.Array:
  """Applies ``fn`` to chunks of queries along axis 1 and concatenates the results.

  Args:
    fn: maps arrays ``[B, C, ...]`` (one chunk of each input) to ``[B, C, ...]``.
    arrays: inputs whose axis 1 is the query axis ``M`` (the same for all).
    chunk: queries per chunk; ``None`` or ``>= M`` calls ``fn`` once on everything.

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

  def split(a):
    a = jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
    a = a.reshape(a.shape[0], n, chunk, *a.shape[2:])
    return jnp.moveaxis(a, 1, 0)

  out = jax.lax.map(lambda xs: jax.checkpoint(fn)(*xs), tuple(split(a) for a in arrays))
  out = jnp.moveaxis(out, 0, 1)
  out = out.reshape(out.shape[0], n * chunk, *out.shape[3:])
  return out[:, :m]
