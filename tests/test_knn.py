"""Continuous nearest neighbours: limits, parity with brute-force kNN, gradients, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from n3jax import ops


def _numpy_knn(logits, k):
  """Indices of the k largest logits, in order (brute force)."""
  return np.argsort(-logits, axis=-1, kind="stable")[..., :k]


@pytest.mark.parametrize("use_jit", [False, True])
def test_low_temperature_weights_are_one_hot_of_true_neighbours(use_jit):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 40)).astype(np.float32)  # distinct with probability 1
  fn = lambda l: ops.continuous_knn_weights(l, 1e-4, k=6)
  w = np.asarray((jax.jit(fn) if use_jit else fn)(jnp.asarray(logits)))
  assert w.shape == (3, 5, 40, 6)
  onehot = np.eye(40, dtype=np.float32)[_numpy_knn(logits, 6)]  # [3, 5, 6, 40]
  np.testing.assert_allclose(w, np.moveaxis(onehot, -2, -1), atol=1e-5)


def test_neighbour_volumes_match_brute_force_knn_on_points():
  rng = np.random.default_rng(1)
  pts = rng.normal(size=(2, 30, 3)).astype(np.float32)
  vals = rng.normal(size=(2, 30, 4)).astype(np.float32)
  out = ops.neural_nearest_neighbors(jnp.asarray(pts), jnp.asarray(pts), jnp.asarray(vals),
                                     1e-5, k=4, exclude_self=True)
  d = ((pts[:, :, None] - pts[:, None]) ** 2).sum(-1)
  d[:, np.arange(30), np.arange(30)] = np.inf
  nn_idx = np.argsort(d, axis=-1)[..., :4]  # [2, 30, 4]
  expected = np.take_along_axis(vals[:, None], nn_idx[..., None], axis=2)  # [2, 30, 4, 4]
  np.testing.assert_allclose(np.asarray(out), expected, atol=1e-4)


def test_high_temperature_first_weight_is_uniform_and_all_sum_to_one():
  logits = jax.random.normal(jax.random.PRNGKey(0), (4, 17))
  w = ops.continuous_knn_weights(logits, 1e6, k=3)
  np.testing.assert_allclose(w[..., 0], np.full((4, 17), 1 / 17), rtol=1e-4)
  w = ops.continuous_knn_weights(logits, jnp.array([0.1, 1.0, 10.0, 100.0]), k=5)
  np.testing.assert_allclose(np.asarray(w.sum(axis=-2)), np.ones((4, 5)), rtol=1e-5)
  assert (np.asarray(w) >= 0).all()


def test_k1_is_softmax_and_later_steps_renormalize_the_rest():
  logits = jax.random.normal(jax.random.PRNGKey(3), (9,))
  w = np.asarray(ops.continuous_knn_weights(logits, 0.7, k=2), np.float64)
  p = np.exp(np.asarray(logits, np.float64) / 0.7)
  w1 = p / p.sum()
  np.testing.assert_allclose(w[:, 0], w1, rtol=1e-5)
  w2 = p * (1 - w1) / (p * (1 - w1)).sum()  # Eq. 10: α² = α¹ + log(1 − w¹)
  np.testing.assert_allclose(w[:, 1], w2, rtol=1e-5)


def test_log1mexp_values_and_guarded_gradient():
  x = np.array([-50.0, -3.0, -0.7, np.log(0.5), -0.3, -1e-4, -1e-9], np.float32)
  expected = np.log1p(-np.exp(x.astype(np.float64)))
  np.testing.assert_allclose(np.asarray(ops.log1mexp(jnp.asarray(x))), expected, rtol=2e-6)
  g = jax.vmap(jax.grad(ops.log1mexp))(jnp.asarray(x))
  exact = -np.exp(x.astype(np.float64)) / (1 - np.exp(x.astype(np.float64)))
  np.testing.assert_allclose(np.asarray(g)[:4], exact[:4], rtol=1e-5)
  # At 0 the reference's guard bounds the slope by 1/eps instead of returning -inf.
  g0 = float(jax.grad(ops.log1mexp)(0.0))
  assert np.isfinite(g0) and g0 == pytest.approx(-1.0 / ops.LOG1MEXP_GRAD_EPS, rel=1e-3)


@pytest.mark.parametrize("temperature", [1e-6, 1e-3, 1.0, 1e3])
@pytest.mark.parametrize("ties", [False, True])
def test_gradients_are_finite_and_bounded(temperature, ties):
  rng = np.random.default_rng(2)
  d = rng.uniform(0, 2, size=(6, 20)).astype(np.float32)
  if ties:
    d[:, 5:10] = d[:, :1]  # several candidates at exactly the same (minimal) distance
    d[:, 0] = d[:, 1] = 0.0
  probe = jnp.asarray(rng.normal(size=(6, 20, 4)).astype(np.float32))

  def loss(logits, t):
    return jnp.sum(ops.continuous_knn_weights(logits, t, k=4) * probe)

  g_logits, g_t = jax.grad(loss, argnums=(0, 1))(-jnp.asarray(d), jnp.float32(temperature))
  g_logits, g_t = np.asarray(g_logits), float(g_t)
  assert np.isfinite(g_logits).all() and np.isfinite(g_t)
  # d/dα of α/t is 1/t; through k guarded log1mexp steps the slope is at most ~k/(eps·t).
  bound = 4 * 20 * np.abs(np.asarray(probe)).max() * (1 + 1 / ops.LOG1MEXP_GRAD_EPS) / temperature
  assert np.abs(g_logits).max() <= bound


def test_composes_with_vmap_and_bfloat16():
  logits = jax.random.normal(jax.random.PRNGKey(5), (3, 8, 24))
  t = jnp.full((3, 8), 0.5)
  batched = ops.continuous_knn_weights(logits, t, k=3)
  mapped = jax.vmap(lambda l, tt: ops.continuous_knn_weights(l, tt, k=3))(logits, t)
  np.testing.assert_allclose(np.asarray(batched), np.asarray(mapped), rtol=1e-6)
  w16 = ops.continuous_knn_weights(logits.astype(jnp.bfloat16), t, k=3)
  assert w16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(w16, np.float32), np.asarray(batched), atol=2e-2)


def test_bad_k_is_a_clear_error():
  with pytest.raises(ValueError, match="k must be in"):
    ops.continuous_knn_weights(jnp.zeros((4, 5)), 1.0, k=6)


def test_aggregate_through_indices_equals_dense_and_is_chunk_invariant():
  rng = np.random.default_rng(4)
  db = jnp.asarray(rng.normal(size=(2, 12, 5)).astype(np.float32))
  idx = jnp.asarray(rng.integers(0, 12, size=(2, 7, 4)))
  w = jax.nn.softmax(jnp.asarray(rng.normal(size=(2, 7, 4, 3)).astype(np.float32)), axis=2)
  expected = np.einsum("bmok,bmod->bmkd", np.asarray(w),
                       np.take_along_axis(np.asarray(db)[:, None], np.asarray(idx)[..., None],
                                          axis=2))
  for chunk in (None, 3, 7, 100):
    out = ops.aggregate(w, db, indices=idx, query_chunk=chunk)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-6)
  f = lambda w, db, c: jnp.sum(ops.aggregate(w, db, indices=idx, query_chunk=c) ** 2)
  g_full = jax.grad(f, argnums=(0, 1))(w, db, None)
  g_chunk = jax.grad(f, argnums=(0, 1))(w, db, 3)
  for a, b in zip(g_full, g_chunk):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_hard_knn_weights_are_one_hots_of_the_sorted_neighbours():
  rng = np.random.default_rng(3)
  # Distinct logits, gaps of at least 0.5 (no near-ties).
  logits = np.stack([rng.permutation(9) for _ in range(10)]).reshape(2, 5, 9)
  logits = (0.5 * logits + rng.uniform(-3, 3, (2, 5, 1))).astype(np.float32)
  w = np.asarray(ops.hard_knn_weights(jnp.asarray(logits), k=4))
  order = np.argsort(-logits, axis=-1)[..., :4]
  np.testing.assert_array_equal(w.argmax(axis=-2), order)
  np.testing.assert_array_equal(w.sum(axis=-2), np.ones((2, 5, 4)))
  # The limit of the continuous relaxation.
  soft = np.asarray(ops.continuous_knn_weights(jnp.asarray(logits), 1e-2, k=4))
  np.testing.assert_allclose(soft, w, atol=1e-4)
  # No gradient through the selection.
  g = jax.grad(lambda l: (ops.hard_knn_weights(l, k=2) * jnp.arange(9.)[:, None]).sum())(
      jnp.asarray(logits))
  assert not np.any(np.asarray(g))


def test_concrete_first_neighbour_follows_the_softmax_distribution():
  # Gumbel-max: the first pick of the Concrete relaxation is candidate o with prob. p_o.
  p = np.array([0.1, 0.3, 0.6], np.float32)
  logits = jnp.log(jnp.asarray(p))
  keys = jax.random.split(jax.random.PRNGKey(0), 4000)
  w = jax.vmap(lambda key: ops.concrete_knn_weights(logits, 1.0, k=2, key=key))(keys)
  freq = np.bincount(np.asarray(w[:, :, 0].argmax(-1)), minlength=3) / 4000
  np.testing.assert_allclose(freq, p, atol=0.03)
  np.testing.assert_allclose(np.asarray(w.sum(axis=1)), 1.0, rtol=1e-5)


# --- masks, temperatures, ties, check_grads -------------------------------------------------


@pytest.mark.parametrize("temperature", [1e-3, 0.3, 10.0])
def test_masked_weights_equal_the_relaxation_on_the_valid_subset(temperature):
  rng = np.random.default_rng(7)
  logits = rng.normal(size=(4, 12)).astype(np.float32)
  mask = rng.random((4, 12)) < 0.6
  mask[:, :4] = True  # at least k valid candidates per query
  w = np.asarray(ops.continuous_knn_weights(jnp.asarray(logits), temperature, k=3,
                                            mask=jnp.asarray(mask)))
  assert (w[~mask] == 0).all()  # exactly zero, not merely small
  for r in range(4):
    sub = np.asarray(ops.continuous_knn_weights(jnp.asarray(logits[r, mask[r]]), temperature, k=3))
    np.testing.assert_allclose(w[r, mask[r]], sub, rtol=1e-5, atol=1e-7)


def test_minus_inf_logits_count_as_masked_with_finite_gradients():
  logits = jax.random.normal(jax.random.PRNGKey(0), (3, 9))
  mask = jnp.arange(9) % 3 != 0
  with_mask = ops.continuous_knn_weights(logits, 0.5, k=2, mask=mask)
  with_inf = ops.continuous_knn_weights(jnp.where(mask, logits, -jnp.inf), 0.5, k=2)
  np.testing.assert_array_equal(np.asarray(with_mask), np.asarray(with_inf))
  probe = jax.random.normal(jax.random.PRNGKey(1), (3, 9, 2))
  grads = jax.grad(lambda l, t: jnp.sum(ops.continuous_knn_weights(l, t, k=2) * probe),
                   argnums=(0, 1))(jnp.where(mask, logits, -jnp.inf), 0.5)
  assert all(np.isfinite(np.asarray(g)).all() for g in grads)


def test_self_excluded_knn_has_finite_gradients_for_inputs_and_temperature():
  # The failure this guards against: the -inf of a masked diagonal, divided by the
  # temperature, gave 0 · inf = NaN in the temperature's gradient.
  pts = jax.random.normal(jax.random.PRNGKey(2), (2, 10, 3))
  vals = jax.random.normal(jax.random.PRNGKey(3), (2, 10, 5))

  def loss(p, t):
    return jnp.sum(ops.neural_nearest_neighbors(p, p, vals, t, k=4, exclude_self=True) ** 2)

  for t in (1e-4, 0.5, 1e3):
    g_p, g_t = jax.grad(loss, argnums=(0, 1))(pts, jnp.float32(t))
    assert np.isfinite(np.asarray(g_p)).all() and np.isfinite(float(g_t)), t
  # Per-query temperatures, under jit.
  g_t = jax.jit(jax.grad(loss, argnums=1))(pts, jnp.full((2, 10), 0.3))
  assert np.isfinite(np.asarray(g_t)).all() and np.abs(np.asarray(g_t)).sum() > 0


def test_fewer_valid_candidates_than_k_gives_zero_weight_vectors():
  logits = jax.random.normal(jax.random.PRNGKey(4), (3, 6))
  mask = jnp.array([[True] * 6, [True, True] + [False] * 4, [False] * 6])
  for t in (1e-5, 1.0):
    w = np.asarray(ops.continuous_knn_weights(logits, t, k=4, mask=mask))
    np.testing.assert_allclose(w[0].sum(axis=0), 1.0, rtol=1e-5)
    np.testing.assert_allclose(w[1].sum(axis=0), [1, 1, 0, 0], rtol=1e-5)
    assert (w[1, 2:] == 0).all() and (w[2] == 0).all()
    h = np.asarray(ops.hard_knn_weights(logits, k=4, mask=mask))
    np.testing.assert_array_equal(h.sum(axis=1), [[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]])
  g = jax.grad(lambda l: jnp.sum(ops.continuous_knn_weights(l, 0.1, k=4, mask=mask) ** 2))(logits)
  assert np.isfinite(np.asarray(g)).all()


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), [0.5, 0.0], 1e-50])
def test_non_positive_or_non_finite_temperature_is_a_clear_error(bad):
  with pytest.raises(ValueError, match="temperature must be finite and > 0"):
    ops.continuous_knn_weights(jnp.zeros((2, 5)), jnp.asarray(bad), k=2)
  with pytest.raises(ValueError, match="temperature must be finite and > 0"):
    ops.concrete_knn_weights(jnp.zeros((2, 5)), np.asarray(bad), k=2, key=jax.random.PRNGKey(0))
  # Traced temperatures cannot be checked: documented, and no error under jit.
  jax.jit(lambda t: ops.continuous_knn_weights(jnp.zeros((2, 5)), t, k=2))(0.5)


def test_mask_must_be_boolean_and_broadcast():
  with pytest.raises(TypeError, match="boolean"):
    ops.continuous_knn_weights(jnp.zeros((2, 5)), 1.0, k=2, mask=jnp.ones((2, 5)))
  with pytest.raises(ValueError, match="does not broadcast"):
    ops.continuous_knn_weights(jnp.zeros((2, 5)), 1.0, k=2, mask=jnp.ones((3, 5), bool))


def test_exact_ties_share_weight_equally_at_every_step():
  logits = jnp.array([-1.0, 0.0, -2.0, 0.0, -3.0])  # candidates 1 and 3 tie for nearest
  for t in (1.0, 0.1):
    w = np.asarray(ops.continuous_knn_weights(logits, t, k=3))
    np.testing.assert_array_equal(w[1], w[3])
  # As t → 0 every weight vector tends to the uniform average of the tied group.
  w = np.asarray(ops.continuous_knn_weights(logits, 1e-4, k=3))
  np.testing.assert_allclose(w, np.tile(np.array([[0, .5, 0, .5, 0]]).T, (1, 3)), atol=1e-6)
  # No dependence on the candidates' order: permuting them permutes the weights.
  perm = np.array([4, 3, 0, 2, 1])
  wp = np.asarray(ops.continuous_knn_weights(logits[perm], 0.5, k=3))
  np.testing.assert_allclose(wp, np.asarray(ops.continuous_knn_weights(logits, 0.5, k=3))[perm],
                             rtol=1e-6)
  # Hard kNN breaks the tie by index.
  h = np.asarray(ops.hard_knn_weights(logits, k=2))
  assert h[:, 0].argmax() == 1 and h[:, 1].argmax() == 3


@pytest.mark.parametrize("masked", [False, True])
def test_check_grads_on_the_relaxation(masked):
  from jax.test_util import check_grads
  with jax.enable_x64(True):
    logits = jax.random.normal(jax.random.PRNGKey(1), (3, 8), dtype=jnp.float64)
    temperature = jnp.array([0.3, 1.0, 2.0], jnp.float64)
    mask = None
    if masked:
      mask = jax.random.bernoulli(jax.random.PRNGKey(2), 0.6, (3, 8)).at[:, :3].set(True)
      assert not bool(mask.all())
    fn = lambda l, t: ops.continuous_knn_weights(l, t, k=3, mask=mask)
    check_grads(fn, (logits, temperature), order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize("spread", [0.5, 5.0, 40.0])
def test_relaxation_step_equals_log1mexp_of_log_softmax_with_its_guard(spread):
  """The fused step (2 transcendentals per entry) is the reference's composition."""
  from n3jax.ops.knn import _softmax_and_log_rest
  with jax.enable_x64(True):
    alpha = spread * jax.random.normal(jax.random.PRNGKey(4), (5, 12), dtype=jnp.float64)
    alpha = alpha.at[0, 3].set(200.0)  # a top weight that rounds to 1: log(1 − w) = -inf
    valid = jnp.ones(alpha.shape, bool)

    def reference(a):
      log_w = jax.nn.log_softmax(a, axis=-1)
      return jnp.exp(log_w), ops.log1mexp(log_w)

    probe = jax.random.normal(jax.random.PRNGKey(5), (2,) + alpha.shape, dtype=jnp.float64)

    def loss(fn, a):
      w, log_rest = fn(a)
      return jnp.sum(w * probe[0]) + jnp.sum(jnp.where(jnp.isfinite(log_rest), log_rest, 0)
                                             * probe[1])

    (w, lr), (w_ref, lr_ref) = _softmax_and_log_rest(alpha, valid), reference(alpha)
    np.testing.assert_allclose(np.asarray(w), np.asarray(w_ref), rtol=1e-12, atol=1e-300)
    np.testing.assert_array_equal(np.isfinite(lr), np.isfinite(lr_ref))
    assert not bool(np.isfinite(lr[0, 3]))
    finite = np.isfinite(np.asarray(lr_ref))
    np.testing.assert_allclose(np.asarray(lr)[finite], np.asarray(lr_ref)[finite], rtol=1e-9)
    g = jax.grad(lambda a: loss(lambda b: _softmax_and_log_rest(b, valid), a))(alpha)
    g_ref = jax.grad(lambda a: loss(reference, a))(alpha)
    assert bool(jnp.isfinite(g).all())
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("masked", [False, True])
def test_fused_neighbours_equal_weights_then_aggregate_in_value_and_gradient(masked):
  """neural_nearest_neighbors (all pairs, fused per chunk) against the two-call form."""
  with jax.enable_x64(True):
    keys = jax.random.split(jax.random.PRNGKey(6), 5)
    q = jax.random.normal(keys[0], (2, 37, 5), dtype=jnp.float64)
    c = jax.random.normal(keys[1], (2, 23, 5), dtype=jnp.float64)
    v = jax.random.normal(keys[2], (2, 23, 3), dtype=jnp.float64)
    t = jnp.exp(jax.random.normal(keys[3], (2, 37), dtype=jnp.float64))
    mask = jax.random.bernoulli(keys[4], 0.7, (2, 37, 23)) if masked else None
    g = jax.random.normal(keys[4], (2, 37, 4, 3), dtype=jnp.float64)

    def two_calls(q, c, v, t):
      w = ops.continuous_knn_weights(-ops.pairwise_sq_distances(q, c), t, k=4, mask=mask)
      return ops.aggregate(w, v)

    def fused(q, c, v, t):  # 37 queries in chunks of 8: the last chunk is padded
      return ops.neural_nearest_neighbors(q, c, v, t, k=4, mask=mask, query_chunk=8)

    np.testing.assert_allclose(np.asarray(fused(q, c, v, t)), np.asarray(two_calls(q, c, v, t)),
                               rtol=1e-10, atol=1e-12)
    grads = [jax.grad(lambda *a, f=f: jnp.vdot(f(*a), g), argnums=(0, 1, 2, 3))(q, c, v, t)
             for f in (fused, two_calls)]
    for a, b in zip(*grads):
      assert bool(jnp.isfinite(a).all())
      # Chunked distances round differently (1e-16); where a top weight is within 1e-9
      # of 1, log1mexp's log(−expm1(log w)) turns that into 1e-7 (the same in both).
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("masked", [False, True])
def test_fused_neighbours_memory_does_not_grow_with_the_queries(masked):
  """XLA's temp memory of the fused forward + backward is bounded by a chunk of queries
  (a candidate mask included), where the two-call form holds the [M, N, k] weights."""
  n, k = 2048, 8
  mask = (jnp.arange(n) % 3 > 0) if masked else None

  def temp_mib(fn, m):
    q, c, v = jnp.zeros((m, 16)), jnp.zeros((n, 16)), jnp.zeros((n, 32))
    grad = jax.grad(lambda *a: jnp.sum(fn(*a)), argnums=(0, 1, 2))
    analysis = jax.jit(grad).lower(q, c, v).compile().memory_analysis()
    if analysis is None:
      pytest.skip("this backend reports no memory analysis")
    return analysis.temp_size_in_bytes / 2 ** 20

  fused = lambda q, c, v: ops.neural_nearest_neighbors(q, c, v, 1e-2, k=k, mask=mask)
  two_calls = lambda q, c, v: ops.aggregate(ops.continuous_knn_weights(
      -ops.pairwise_sq_distances(q, c), 1e-2, k=k, mask=mask), v)
  small, large = temp_mib(fused, 512), temp_mib(fused, 8192)
  two_small, two_large = temp_mib(two_calls, 512), temp_mib(two_calls, 2048)
  assert two_large > 3 * two_small > 3 * 512 * n * k * 4 / 2 ** 20  # grows with M
  # 16x the queries: measured 73.55 -> 74.05 MiB (the [M, k, D] output and cotangent).
  assert large - small < 2 * (8192 - 512) * k * 32 * 4 / 2 ** 20, (small, large)
  assert small < two_small / 2, (small, two_small)  # measured: 74 and 210 MiB


def test_fused_neighbours_promote_values_and_check_their_arguments():
  q = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
  c = jax.random.normal(jax.random.PRNGKey(1), (9, 3))
  ints = jnp.arange(18).reshape(9, 2)
  out = ops.neural_nearest_neighbors(q, c, ints, 1.0, k=2)  # integer values: averaged
  ref = ops.aggregate(ops.continuous_knn_weights(-ops.pairwise_sq_distances(q, c), 1.0, k=2),
                      ints.astype(jnp.float32))
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5)
  assert ops.neural_nearest_neighbors(q, c, ints.astype(jnp.bfloat16), 1.0,
                                      k=2).dtype == jnp.float32
  # A traced non-positive temperature is not replaced: it gives what the relaxation gives.
  bad = jax.jit(lambda t: ops.neural_nearest_neighbors(q, c, ints, t, k=2, query_chunk=2))
  bad_ref = jax.jit(lambda t: ops.aggregate(ops.continuous_knn_weights(
      -ops.pairwise_sq_distances(q, c), t, k=2), ints.astype(jnp.float32)))
  nan = jnp.float32(jnp.nan)
  assert bool(jnp.isnan(bad(nan)).any())
  np.testing.assert_array_equal(np.isnan(bad(nan)), np.isnan(bad_ref(nan)))
  with pytest.raises(ValueError, match="chunk must be positive"):
    ops.neural_nearest_neighbors(q, c, ints, 1.0, k=2, query_chunk=0)
  with pytest.raises(ValueError, match="as many queries as items"):
    ops.neural_nearest_neighbors(q, c, c, 1.0, k=2, exclude_self=True)
  with pytest.raises(ValueError, match="does not broadcast"):
    ops.neural_nearest_neighbors(q, c, ints, 1.0, k=2, mask=jnp.ones((4, 9), bool))
