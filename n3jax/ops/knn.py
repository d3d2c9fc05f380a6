"""The continuous deterministic nearest-neighbour relaxation of N³Net (paper Eqs. 8-11).

Pure JAX, no Flax. Given logits ``α`` over ``O`` candidates (e.g. negative distances)
and a temperature ``t``, step ``j = 1..k`` of the relaxation is

    w^j = softmax(α^j / t),   α^{j+1} = α^j + t·log(1 - w^j)

(written here on the scaled logits ``α / t``), so that ``w^j`` is a smooth version of
the one-hot vector of the j-th nearest neighbour; as ``t → 0`` it becomes exactly that.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from n3jax.ops.batching import broadcast_leading, merge_leading, split_leading
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


def check_temperature(temperature: Any, *, dtype: Any = jnp.float32) -> None:
  """Raises ``ValueError`` if a concrete ``temperature`` is not finite and positive in ``dtype``.

  Concrete: Python numbers, NumPy arrays and JAX arrays outside ``jit``. A traced
  temperature (inside ``jit``, ``grad`` or ``vmap``) cannot be inspected and is not
  checked, so a learned one should come out of ``exp(·)`` or ``softplus(·)``. A value that
  underflows to 0 in ``dtype`` (e.g. 1e-50 in float32) counts as 0.
  """
  try:
    t = np.asarray(temperature)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return
  bad = ~(np.isfinite(t.astype(np.dtype(dtype))) & (t.astype(np.dtype(dtype)) > 0))
  if np.any(bad):
    shown = t[bad].ravel()[:3].tolist() if t.ndim else [t.item()]
    raise ValueError(f"temperature must be finite and > 0 (in {np.dtype(dtype).name}), got "
                     f"{shown}{' (and more)' if bad.sum() > 3 else ''}")


def candidate_mask(logits: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  """The valid candidates ``[..., O]``: ``mask`` (broadcast to ``logits``) and not ``-inf``."""
  valid = logits != -jnp.inf
  if mask is None:
    return valid
  mask = _boolean_mask(mask)
  try:
    return valid & jnp.broadcast_to(mask, logits.shape)
  except ValueError:
    raise ValueError(f"mask {mask.shape} does not broadcast to the logits {logits.shape}") from None


def _boolean_mask(mask: Any) -> jax.Array:
  mask = jnp.asarray(mask)
  if mask.dtype != jnp.bool_:
    raise TypeError(f"mask must be boolean (True: a valid candidate), got {mask.dtype}")
  return mask


@jax.custom_jvp
def _softmax_and_log_rest(alpha: jax.Array, valid: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """One relaxation step's ``w = softmax(α)`` and ``log(1 − w)`` over the valid entries.

  Equal to ``exp(log_softmax(α))`` and :func:`log1mexp` ``(log_softmax(α))``, with the
  same guarded derivative, in two transcendentals per entry instead of five: ``w`` comes
  from the softmax's own ``exp``, and ``log(1 − w) = log1p(−w)``, which is accurate
  wherever ``w <= 1/2``, i.e. for every entry but possibly the largest one; that one
  takes log1mexp's ``log(−expm1(log w))`` on a per-query scalar. Invalid entries give
  ``w = 0`` and a finite ``log(1 − w)``; no ``-inf`` enters the arithmetic (a row without
  valid entries gives zeros).
  """
  w, log_rest, _ = _softmax_step_primal(alpha, valid)
  return w, log_rest


def _softmax_step_primal(alpha, valid):
  any_valid = jnp.any(valid, axis=-1, keepdims=True)
  top = jnp.max(alpha, axis=-1, keepdims=True, where=valid, initial=jnp.finfo(alpha.dtype).min)
  top = jnp.where(any_valid, top, 0)
  z = jnp.where(valid, alpha - top, 0)
  # Weights below the smallest normal number are flushed to 0, and exp never produces a
  # denormal number (its argument is clamped first): denormal arithmetic is many times
  # slower on CPUs, and such weights (< 1e-38 in float32) change nothing.
  log_tiny = math.log(jnp.finfo(z.dtype).tiny)
  e = jnp.where(valid & (z > log_tiny), jnp.exp(jnp.maximum(z, log_tiny)), 0)
  total = jnp.where(any_valid, jnp.sum(e, axis=-1, keepdims=True), 1)
  w = e / total
  # Only the top entry (z = 0) can have w > 1/2. Its log w = −log(total), and its
  # log(1 − w) is log1mexp's second branch on that per-query scalar, rounding included:
  # as in the reference, a top weight that rounds to 1 gives -inf (the candidate is spent).
  top_rest = -jnp.expm1(-jnp.log(total))  # [..., 1]
  big = w > 0.5
  rest = jnp.where(big, top_rest, 1 - w)
  log_rest = jnp.where(big, jnp.log(top_rest), jnp.log1p(-w))
  return w, log_rest, rest


@_softmax_and_log_rest.defjvp
def _softmax_and_log_rest_jvp(primals, tangents):
  alpha, valid = primals
  dalpha = tangents[0]
  w, log_rest, rest = _softmax_step_primal(alpha, valid)
  dz = jnp.where(valid, dalpha, 0)
  dlog_w = jnp.where(valid, dz - jnp.sum(w * dz, axis=-1, keepdims=True), 0)
  # log1mexp's guarded slope d log(1 − w) / d log w = −w / (1 − w + guard).
  guard = jnp.where(w >= 0.5, LOG1MEXP_GRAD_EPS, 0.0).astype(w.dtype)
  slope = -w / (rest + guard)
  return (w, log_rest), (w * dlog_w, slope * dlog_w)


def _relaxation_step(alpha: jax.Array, valid: jax.Array) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """One step on the scaled logits: ``(w, α + log(1 − w), still valid)``.

  A weight that rounds to 1 makes ``log(1 − w)`` ``-inf``: that candidate is spent and
  leaves the valid set instead of carrying ``-inf``.
  """
  w, log_rest = _softmax_and_log_rest(alpha, valid)
  keep = valid & (log_rest > -jnp.inf)
  return w, alpha + jnp.where(keep, log_rest, 0), keep


def continuous_knn_weights(logits: jax.Array, temperature: jax.Array | float, *,
                           k: int, mask: Optional[jax.Array] = None) -> jax.Array:
  """Weights of the ``k`` continuous nearest neighbours (a ``lax.scan`` over the k steps).

  **Temperature.** The logits are divided by ``t``, so ``t`` is in the units of the
  logits: with ``logits = −squared distances`` it is a squared distance, and a candidate
  whose squared distance is larger by ``t`` gets ``e`` times less weight. ``t`` much
  smaller than the gaps between the nearest candidates' distances gives hard kNN; much
  larger than their spread, a uniform average. A good start is the typical gap between
  the 1st and the k-th nearest squared distance; to learn it, produce it as ``exp(·)``
  of a network output (the N³ block learns one per query on batch-normalized distances).
  A concrete ``t <= 0`` or non-finite ``t`` is a ``ValueError``; a traced one (under
  ``jit``, ``grad``, ``vmap``) cannot be checked (:func:`check_temperature`).

  **Masks.** ``mask`` marks the valid candidates of each query (e.g. not itself, not
  padding). Invalid candidates get weight exactly 0 and no gradient, and no ``inf``
  enters the arithmetic, so gradients with respect to the logits, the temperature and
  everything before them are finite. A ``-inf`` logit counts as masked. Step ``j`` of a
  query with ``n <= j`` valid candidates returns an all-zero weight vector (so a query
  without valid candidates gets zeros, never NaN).

  **Ties.** Candidates with exactly equal logits get exactly equal weights at every step:
  the relaxation does not break ties. As ``t → 0`` with a group of ``g`` tied nearest
  candidates, *every one* of the ``k`` weight vectors tends to the uniform average over
  that group (each step lowers all of them by the same ``log(1 − 1/g)``), so the block
  returns that average ``k`` times. :func:`hard_knn_weights` breaks ties by index instead.

  Args:
    logits: ``[..., O]`` similarity of each of ``O`` candidates to the query (larger is
      nearer; e.g. negative squared distances).
    temperature: positive, broadcastable to ``logits.shape[:-1]`` (one per query) or a
      scalar (see above).
    k: number of neighbours, ``1 <= k <= O``.
    mask: optional bool, broadcastable to ``[..., O]``: True for valid candidates.

  Returns:
    ``[..., O, k]`` in the dtype of ``logits``; each ``[..., :, j]`` is non-negative and
    sums to 1 over the valid candidates (or is all zero, see above). The relaxation
    itself runs in at least float32.
  """
  _check_k(logits, k)
  compute = jnp.promote_types(logits.dtype, jnp.float32)
  check_temperature(temperature, dtype=compute)
  weights = _relaxation_scan(logits, candidate_mask(logits, mask),
                             jnp.asarray(temperature, compute), k=k, emit=lambda w: w)
  return jnp.moveaxis(weights, 0, -1).astype(logits.dtype)  # [k, ..., O] -> [..., O, k]


def _relaxation_scan(logits: jax.Array, valid: jax.Array, temperature: jax.Array, *, k: int,
                     emit) -> jax.Array:
  """The k relaxation steps as a ``lax.scan``: ``[k, ...]`` of ``emit(w_j)`` for each step's
  weights ``w_j [..., O]`` (zero on invalid candidates and beyond a query's valid count)."""
  compute = jnp.promote_types(logits.dtype, jnp.float32)
  alpha = jnp.where(valid, logits, 0).astype(compute) / temperature[..., None]
  num_valid = jnp.sum(valid, axis=-1)

  def step(carry, j):
    alpha, valid = carry
    w, alpha, keep = _relaxation_step(alpha, valid)
    return (alpha, keep), emit(jnp.where(valid & (j < num_valid)[..., None], w, 0))

  return jax.lax.scan(step, (alpha, valid), jnp.arange(k))[1]


def _check_k(logits: jax.Array, k: int) -> None:
  if logits.ndim < 1:
    raise ValueError("logits must have a candidate axis, got a scalar")
  _check_k_of(logits.shape[-1], k)


def _check_k_of(num_candidates: int, k: int) -> None:
  if not 1 <= k <= num_candidates:
    raise ValueError(f"k must be in [1, {num_candidates}] (the number of candidates), got {k}")


def hard_knn_weights(logits: jax.Array, *, k: int, mask: Optional[jax.Array] = None
                     ) -> jax.Array:
  """One-hot weights of the ``k`` nearest candidates (hard kNN, no gradient to ``logits``).

  The limit ``t → 0`` of :func:`continuous_knn_weights`, computed with ``lax.top_k``
  (exact ties go to the lower candidate index). Gradients still flow to whatever the
  weights are applied to (:func:`aggregate`), not to the selection.

  Args:
    logits: ``[..., O]``, larger is nearer.
    k: ``1 <= k <= O``.
    mask: optional bool, broadcastable to ``[..., O]``: True for valid candidates
      (``-inf`` logits count as masked). Step ``j`` of a query with ``n <= j`` valid
      candidates is all zero.

  Returns:
    ``[..., O, k]`` one-hot along ``O`` for each ``j``, in the dtype of ``logits``.
  """
  _check_k(logits, k)
  valid = candidate_mask(logits, mask)
  ranked = jnp.where(valid, jax.lax.stop_gradient(logits), -jnp.inf)  # no gradient path
  _, top = jax.lax.top_k(ranked, k)  # [..., k]
  onehot = jax.nn.one_hot(top, logits.shape[-1], dtype=logits.dtype)  # [..., k, O]
  present = jnp.arange(k) < jnp.sum(valid, axis=-1)[..., None]  # [..., k]
  return jnp.swapaxes(onehot * present[..., None].astype(logits.dtype), -1, -2)


def concrete_knn_weights(logits: jax.Array, temperature: jax.Array | float, *, k: int,
                         key: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
  """Stochastic (Concrete / Gumbel-softmax) relaxation of kNN: the paper's "Concrete" baseline.

  Perturbs the scaled logits ``α / t`` once with Gumbel noise and then runs the same k
  exclusion steps as :func:`continuous_knn_weights`, so that as ``t → 0`` the weights are
  the one-hot vectors of a *sampled* ordering (Gumbel-top-k) instead of the deterministic
  nearest neighbours.

  Args:
    logits: ``[..., O]``; temperature: per query, broadcastable to ``logits.shape[:-1]``.
    k: number of neighbours. key: PRNG key of the Gumbel noise.
    mask: optional valid candidates, as in :func:`continuous_knn_weights`.

  Returns:
    ``[..., O, k]`` as :func:`continuous_knn_weights`.
  """
  _check_k(logits, k)
  compute = jnp.promote_types(logits.dtype, jnp.float32)
  check_temperature(temperature, dtype=compute)
  valid = candidate_mask(logits, mask)
  temperature = jnp.asarray(temperature, compute)
  gumbel = jax.random.gumbel(key, logits.shape, compute)
  # Perturb α/t by g, i.e. α by t·g, and reuse the deterministic relaxation.
  perturbed = jnp.where(valid, logits, 0).astype(compute) + temperature[..., None] * gumbel
  return continuous_knn_weights(perturbed, temperature, k=k, mask=valid).astype(logits.dtype)


def aggregate(weights: jax.Array, database: jax.Array, *,
              indices: Optional[jax.Array] = None,
              query_chunk: Optional[int] = None) -> jax.Array:
  """Applies neighbour weights to database items: the k "neighbour volumes".

  Args:
    weights: ``[..., M, O, k]`` from :func:`continuous_knn_weights`.
    database: ``[..., N, D]`` items to average (e.g. patches of the block's input).
    indices: int ``[..., M, O]``, or ``[M, O]`` shared by all leading axes: the database
      rows of each query's candidates; ``None`` means every query's candidates are all
      ``N = O`` database items.
    query_chunk: queries per chunk when gathering through ``indices`` (bounds memory).

  The leading axes ``...`` (any number, none included) broadcast between the arguments.

  Returns:
    ``[..., M, k, D]``: ``out[..., m, j] = Σ_o weights[..., m, o, j] · database[..., cand(m, o)]``.
  """
  lead = broadcast_leading([(weights, 3, "weights [..., M, O, k]"),
                            (database, 2, "database [..., N, D]")])
  if indices is None:
    if weights.shape[-2] != database.shape[-2]:
      raise ValueError(f"without indices, O ({weights.shape[-2]}) must equal N "
                       f"({database.shape[-2]}); got weights {weights.shape} and "
                       f"database {database.shape}")
    return jnp.einsum("...mok,...od->...mkd", weights, database)
  if indices.shape[-2:] != weights.shape[-3:-1]:
    raise ValueError(f"indices {indices.shape} do not match weights {weights.shape}")
  if indices.ndim > 2:
    lead = broadcast_leading([(weights, 3, "weights"), (database, 2, "database"),
                              (indices, 2, "indices")])
    indices = merge_leading(indices, 2, lead)
  w = merge_leading(weights, 3, lead)
  idx = jnp.broadcast_to(indices, w.shape[:3])

  def chunk_fn(w, i):
    return jnp.einsum("bcok,bcod->bckd", w, gather_candidates(db, i))

  db = merge_leading(database, 2, lead)
  return split_leading(map_query_chunks(chunk_fn, (w, idx), chunk=query_chunk), lead)


def neural_nearest_neighbors(query_embed: jax.Array, db_embed: jax.Array,
                             db_values: jax.Array, temperature: jax.Array | float, *,
                             k: int, indices: Optional[jax.Array] = None,
                             mask: Optional[jax.Array] = None,
                             exclude_self: bool = False,
                             query_chunk: Optional[int] = None) -> jax.Array:
  """Continuous kNN in one call: distances → weights → neighbour volumes.

  Args:
    query_embed: ``[..., M, E]`` query embeddings.
    db_embed: ``[..., N, E]`` database embeddings; ``db_values``: ``[..., N, D]`` what is
      averaged. Leading axes (any number, none included) broadcast.
    temperature: per query ``[..., M]`` or scalar (see :func:`continuous_knn_weights`).
    k: number of neighbours.
    indices: ``[..., M, O]`` / ``[M, O]`` candidate rows, or ``None`` for all ``N`` items.
    mask: optional bool, broadcastable to ``[..., M, O]`` (``O = N`` without indices):
      True for valid candidates, e.g. ``db_valid[..., None, :]`` for a padded database.
    exclude_self: with ``indices=None`` and ``M == N``, drop item ``m`` from the
      candidates of query ``m`` (queries and database are the same set).
    query_chunk: queries processed at a time. All-pairs search (``indices=None``) is
      fused per chunk: distances, the k steps and the aggregation, recomputed in the
      backward pass, so neither ``[..., M, N, k]`` weights nor (for masks without a
      query axis, ``[..., 1, N]``, and ``exclude_self``) ``[..., M, N]`` masks are held;
      ``None`` picks ``FUSED_CHUNK_ENTRIES // N`` queries. With ``indices`` it bounds
      the gathers (``None``: all at once).

  Returns:
    ``[..., M, k, D]`` neighbour volumes, in at least float32 (and at least the dtype of
    ``db_values``).
  """
  if indices is None:
    return _fused_all_pairs(query_embed, db_embed, db_values, temperature, k=k, mask=mask,
                            exclude_self=exclude_self, query_chunk=query_chunk)
  else:
    if exclude_self:
      raise ValueError("exclude_self applies to all-pairs search (indices=None); leave "
                       "the query out of its own indices instead")
    logits = -indexed_sq_distances(query_embed, db_embed, indices, query_chunk=query_chunk)
  weights = continuous_knn_weights(logits, temperature, k=k, mask=mask)
  return aggregate(weights, db_values, indices=indices, query_chunk=query_chunk)


# Queries per chunk of the fused all-pairs path when not given: chunk · N ≈ this many
# entries (2 MiB per [chunk, N] float32 array): fewer, larger chunks run faster on CPU,
# smaller ones hold less memory (bench/relaxation.py).
FUSED_CHUNK_ENTRIES = 2 ** 19


def _fused_all_pairs(query_embed: jax.Array, db_embed: jax.Array, db_values: jax.Array,
                     temperature: jax.Array | float, *, k: int, mask: Optional[jax.Array],
                     exclude_self: bool, query_chunk: Optional[int]) -> jax.Array:
  """All-pairs :func:`neural_nearest_neighbors` without ``[..., M, N, k]`` weights.

  For each chunk of queries: distances, then the k relaxation steps
  (:func:`_relaxation_scan`, as :func:`continuous_knn_weights`), each aggregating its
  weights right away (``w_j @ values``). The chunk is recomputed in the backward pass
  (:func:`~n3jax.ops.chunking.map_query_chunks`), so the work memory is that of one
  chunk's ``[chunk, N]`` arrays, forward and backward. Self-exclusion is computed per
  chunk, and a candidate mask without a query axis (``[..., 1, N]``) is used as it is;
  only a mask that varies per query is held ``[..., M, N]`` (it already is).
  """
  lead = broadcast_leading([(query_embed, 2, "query_embed [..., M, E]"),
                            (db_embed, 2, "db_embed [..., N, E]"),
                            (db_values, 2, "db_values [..., N, D]")])
  m, n = query_embed.shape[-2], db_embed.shape[-2]
  if db_values.shape[-2] != n:
    raise ValueError(f"db_embed {db_embed.shape} and db_values {db_values.shape} hold "
                     f"different numbers of items")
  if query_embed.shape[-1] != db_embed.shape[-1]:
    raise ValueError(f"query_embed {query_embed.shape} and db_embed {db_embed.shape} have "
                     f"different embedding sizes")
  if exclude_self and m != n:
    raise ValueError(f"exclude_self needs as many queries as items, got {query_embed.shape} "
                     f"and {db_embed.shape}")
  _check_k_of(n, k)
  compute = jnp.promote_types(jnp.result_type(query_embed, db_embed), jnp.float32)
  out_dtype = jnp.promote_types(compute, db_values.dtype)
  check_temperature(temperature, dtype=compute)
  q = merge_leading(query_embed, 2, lead)
  db = merge_leading(db_embed, 2, lead)
  values = merge_leading(db_values, 2, lead).astype(out_dtype)
  t = jnp.asarray(temperature, compute)
  try:
    t = merge_leading(jnp.broadcast_to(t, lead + (m,)), 1, lead)
  except ValueError:
    raise ValueError(f"temperature {t.shape} does not broadcast to the queries "
                     f"{lead + (m,)}") from None
  chunked = [q, t, jnp.arange(m)[None]]  # the query's index, for exclude_self
  pad_values = [0, 1, 0]  # padding queries of the last chunk get t = 1, never 0
  per_candidate = None  # [B or 1, 1, N]
  if mask is not None:
    mask = _boolean_mask(mask)
    try:
      jnp.broadcast_shapes(mask.shape, lead + (m, n))
    except ValueError:
      raise ValueError(f"mask {mask.shape} does not broadcast to {lead + (m, n)}") from None
    if mask.ndim < 2 or mask.shape[-2] == 1:
      per_candidate = merge_leading(jnp.broadcast_to(mask, lead + (1, n)), 2, lead)
    else:
      chunked.append(merge_leading(jnp.broadcast_to(mask, lead + (m, n)), 2, lead))
      pad_values.append(False)

  def chunk_fn(q_c, t_c, index_c, mask_c=None):  # [B, c, E], [B, c], [1, c], [B, c, N]
    logits = -pairwise_sq_distances(q_c, db)
    valid = candidate_mask(logits, mask_c)
    if per_candidate is not None:
      valid = valid & per_candidate
    if exclude_self:
      valid = valid & (index_c[..., None] != jnp.arange(n))
    volumes = _relaxation_scan(logits, valid, t_c, k=k, emit=lambda w: jnp.einsum(
        "bcn,bnd->bcd", w.astype(out_dtype), values))  # [k, B, c, D]
    return jnp.moveaxis(volumes, 0, 2)

  chunk = max(1, FUSED_CHUNK_ENTRIES // n) if query_chunk is None else query_chunk
  return split_leading(map_query_chunks(chunk_fn, chunked, chunk=chunk,
                                        pad_values=pad_values), lead)


def exclude_self_mask(n: int) -> jax.Array:
  """``[N, N]`` bool candidate mask of all-pairs search without self-matches (False on
  the diagonal), for the ``mask`` of :func:`continuous_knn_weights`."""
  if n < 1:
    raise ValueError(f"need at least one item, got {n}")
  return ~jnp.eye(n, dtype=bool)
