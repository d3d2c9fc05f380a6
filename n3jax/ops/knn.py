"""The continuous deterministic nearest-neighbour relaxation of N³Net (paper Eqs. 8-11).

Pure JAX, no Flax. Given logits ``α`` over ``O`` candidates (e.g. negative distances)
and a temperature ``t``, step ``j = 1..k`` of the relaxation is

    w^j = softmax(α^j / t),   α^{j+1} = α^j + t·log(1 - w^j)

(written here on the scaled logits ``α / t``), so that ``w^j`` is a smooth version of
the one-hot vector of the j-th nearest neighbour; as ``t → 0`` it becomes exactly that.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from n3jax.ops.chunking import map_query_chunks
from n3jax.ops.distances import gather_candidates, indexed_sq_distances, pairwise_sq_distances

LOG_HALF = math.log(0.5)
# The reference's guard in the backward pass of log(1 - exp(x)) for x >= log(1/2):
# d/dx log(1 - e^x + eps), so that the gradient stays bounded (by 1/eps) as e^x -> 1.
LOG1MEXP_GRAD_EPS = 1e-7


@jax.custom_jvp
def log1mexp(x: jax.Array) -> jax.Array:
  """``log(1 - exp(x))`` for ``x <= 0``, evaluated stably (Mächler 2012).

  Uses ``log1p(-exp(x))`` for ``x < log 1/2`` and ``log(-expm1(x))`` otherwise. Its
  derivative ``-e^x / (1 - e^x)`` is guarded by :data:`LOG1MEXP_GRAD_EPS` on the second
  branch, as in the reference, so it is bounded by ``1 / LOG1MEXP_GRAD_EPS`` even at
  ``x = 0``. Inputs above 0 are treated as 0.
  """
  x = jnp.minimum(x, 0)
  return jnp.where(x < LOG_HALF, jnp.log1p(-jnp.exp(x)), jnp.log(-jnp.expm1(x)))


@log1mexp.defjvp
def _log1mexp_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  xc = jnp.minimum(x, 0)
  guard = jnp.where(xc < LOG_HALF, 0.0, LOG1MEXP_GRAD_EPS).astype(xc.dtype)
  slope = -jnp.exp(xc) / (-jnp.expm1(xc) + guard)
  return log1mexp(x), slope * dx


def continuous_knn_weights(logits: jax.Array, temperature: jax.Array | float, *,
                           k: int) -> jax.Array:
  """Weights of the ``k`` continuous nearest neighbours (a ``lax.scan`` over the k steps).

  Args:
    logits: ``[..., O]`` similarity of each of ``O`` candidates to the query (larger is
      nearer; e.g. negative squared distances). ``-inf`` excludes a candidate.
    temperature: positive, broadcastable to ``logits.shape[:-1]`` (one per query) or a
      scalar. Smaller is harder: as ``t → 0`` the j-th weight vector tends to the one-hot
      vector of the j-th nearest candidate.
    k: number of neighbours, ``1 <= k <= O`` (at least ``k`` finite logits per query).

  Returns:
    ``[..., O, k]`` in the dtype of ``logits``; each ``[..., :, j]`` is non-negative and
    sums to 1. The relaxation itself runs in at least float32.
  """
  if logits.ndim < 1:
    raise ValueError("logits must have a candidate axis, got a scalar")
  num_candidates = logits.shape[-1]
  if not 1 <= k <= num_candidates:
    raise ValueError(f"k must be in [1, {num_candidates}] (the number of candidates), got {k}")
  dtype = logits.dtype
  compute = jnp.promote_types(dtype, jnp.float32)
  temperature = jnp.asarray(temperature, compute)
  alpha = logits.astype(compute) / temperature[..., None]

  def step(alpha, _):
    log_w = jax.nn.log_softmax(alpha, axis=-1)
    return alpha + log1mexp(log_w), jnp.exp(log_w)

  _, weights = jax.lax.scan(step, alpha, None, length=k)  # [k, ..., O]
  return jnp.moveaxis(weights, 0, -1).astype(dtype)


def hard_knn_weights(logits: jax.Array, *, k: int) -> jax.Array:
  """One-hot weights of the ``k`` nearest candidates (hard kNN, no gradient to ``logits``).

  The limit ``t → 0`` of :func:`continuous_knn_weights`, computed with ``lax.top_k``
  (ties go to the lower candidate index). Gradients still flow to whatever the weights
  are applied to (:func:`aggregate`), not to the selection.

  Args:
    logits: ``[..., O]``, larger is nearer; ``-inf`` excludes a candidate.
    k: ``1 <= k <= O``.

  Returns:
    ``[..., O, k]`` one-hot along ``O`` for each ``j``, in the dtype of ``logits``.
  """
  if logits.ndim < 1:
    raise ValueError("logits must have a candidate axis, got a scalar")
  num_candidates = logits.shape[-1]
  if not 1 <= k <= num_candidates:
    raise ValueError(f"k must be in [1, {num_candidates}] (the number of candidates), got {k}")
  _, top = jax.lax.top_k(jax.lax.stop_gradient(logits), k)  # [..., k]
  onehot = jax.nn.one_hot(top, num_candidates, dtype=logits.dtype)  # [..., k, O]
  return jnp.swapaxes(onehot, -1, -2)


def concrete_knn_weights(logits: jax.Array, temperature: jax.Array | float, *, k: int,
                         key: jax.Array) -> jax.Array:
  """Stochastic (Concrete / Gumbel-softmax) relaxation of kNN: the paper's "Concrete" baseline.

  Perturbs the scaled logits ``α / t`` once with Gumbel noise and then runs the same k
  exclusion steps as :func:`continuous_knn_weights`, so that as ``t → 0`` the weights are
  the one-hot vectors of a *sampled* ordering (Gumbel-top-k) instead of the deterministic
  nearest neighbours.

  Args:
    logits: ``[..., O]``; temperature: per query, broadcastable to ``logits.shape[:-1]``.
    k: number of neighbours. key: PRNG key of the Gumbel noise.

  Returns:
    ``[..., O, k]`` as :func:`continuous_knn_weights`.
  """
  compute = jnp.promote_types(logits.dtype, jnp.float32)
  temperature = jnp.asarray(temperature, compute)
  gumbel = jax.random.gumbel(key, logits.shape, compute)
  # Perturb α/t by g, i.e. α by t·g, and reuse the deterministic relaxation.
  perturbed = logits.astype(compute) + temperature[..., None] * gumbel
  return continuous_knn_weights(perturbed, temperature, k=k).astype(logits.dtype)


def aggregate(weights: jax.Array, database: jax.Array, indices: Optional[jax.Array] = None,
              *, query_chunk: Optional[int] = None) -> jax.Array:
  """Applies neighbour weights to database items: the k "neighbour volumes".

  Args:
    weights: ``[B, M, O, k]`` from :func:`continuous_knn_weights`.
    database: ``[B, N, D]`` items to average (e.g. patches of the block's input).
    indices: int ``[B, M, O]`` or ``[M, O]``, the database rows of each query's candidates;
      ``None`` means every query's candidates are all ``N = O`` database items.
    query_chunk: queries per chunk when gathering through ``indices`` (bounds memory).

  Returns:
    ``[B, M, k, D]``: ``out[b, m, j] = Σ_o weights[b, m, o, j] · database[b, cand(m, o)]``.
  """
  if weights.ndim != 4 or database.ndim != 3 or weights.shape[0] != database.shape[0]:
    raise ValueError(f"expected weights [B, M, O, k] and database [B, N, D], got "
                     f"{weights.shape} and {database.shape}")
  if indices is None:
    if weights.shape[2] != database.shape[1]:
      raise ValueError(f"without indices, O ({weights.shape[2]}) must equal N "
                       f"({database.shape[1]})")
    return jnp.einsum("bmok,bod->bmkd", weights, database)
  if indices.shape[-2:] != weights.shape[1:3]:
    raise ValueError(f"indices {indices.shape} do not match weights {weights.shape}")
  idx = jnp.broadcast_to(indices, weights.shape[:3])

  def chunk_fn(w, i):
    return jnp.einsum("bcok,bcod->bckd", w, gather_candidates(database, i))

  return map_query_chunks(chunk_fn, (weights, idx), chunk=query_chunk)


def neural_nearest_neighbors(query_embed: jax.Array, db_embed: jax.Array,
                             db_values: jax.Array, temperature: jax.Array | float, *,
                             k: int, indices: Optional[jax.Array] = None,
                             exclude_self: bool = False,
                             query_chunk: Optional[int] = None) -> jax.Array:
  """Continuous kNN in one call: distances → weights → neighbour volumes.

  Args:
    query_embed: ``[B, M, E]`` query embeddings.
    db_embed: ``[B, N, E]`` database embeddings; ``db_values``: ``[B, N, D]`` what is
      averaged.
    temperature: per query ``[B, M]`` or scalar.
    k: number of neighbours.
    indices: ``[B, M, O]`` / ``[M, O]`` candidate rows, or ``None`` for all ``N`` items.
    exclude_self: with ``indices=None`` and ``M == N``, drop item ``m`` from the
      candidates of query ``m`` (queries and database are the same set).

  Returns:
    ``[B, M, k, D]`` neighbour volumes.
  """
  if indices is None:
    logits = -pairwise_sq_distances(query_embed, db_embed)
    if exclude_self:
      logits = mask_self(logits)
  else:
    logits = -indexed_sq_distances(query_embed, db_embed, indices, query_chunk=query_chunk)
  weights = continuous_knn_weights(logits, temperature, k=k)
  return aggregate(weights, db_values, indices, query_chunk=query_chunk)


def mask_self(logits: jax.Array) -> jax.Array:
  """Sets the diagonal of all-pairs logits ``[..., N, N]`` to ``-inf`` (no self-matches)."""
  n = logits.shape[-1]
  if logits.shape[-2] != n:
    raise ValueError(f"mask_self needs square [..., N, N] logits, got {logits.shape}")
  return jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, logits)
