"""Distances: parity with NumPy, chunking invariance in value and gradient, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from n3jax import ops


def test_pairwise_matches_numpy_and_is_zero_on_self():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 9, 6)).astype(np.float32)
  y = rng.normal(size=(2, 11, 6)).astype(np.float32)
  expected = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)
  np.testing.assert_allclose(np.asarray(ops.pairwise_sq_distances(x, y)), expected,
                             rtol=1e-5, atol=1e-5)
  self_d = np.asarray(ops.pairwise_sq_distances(x, x))
  assert (self_d >= 0).all() and np.abs(np.diagonal(self_d, axis1=1, axis2=2)).max() < 1e-5


@pytest.mark.parametrize("shared_indices", [True, False])
def test_indexed_matches_numpy_for_any_chunking(shared_indices):
  rng = np.random.default_rng(1)
  q = rng.normal(size=(2, 13, 5)).astype(np.float32)
  db = rng.normal(size=(2, 20, 5)).astype(np.float32)
  idx = rng.integers(0, 20, size=(13, 6) if shared_indices else (2, 13, 6))
  cand = db[:, idx] if shared_indices else np.take_along_axis(db[:, None], idx[..., None], 2)
  expected = ((q[:, :, None] - cand) ** 2).sum(-1)
  for chunk in (None, 1, 4, 13, 50):
    got = jax.jit(lambda a, b: ops.indexed_sq_distances(a, b, jnp.asarray(idx),
                                                        query_chunk=chunk))(q, db)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


def test_chunked_gradient_equals_unchunked():
  rng = np.random.default_rng(2)
  e = jnp.asarray(rng.normal(size=(1, 30, 8)).astype(np.float32))
  idx = jnp.asarray(rng.integers(0, 30, size=(30, 5)))
  probe = jnp.asarray(rng.normal(size=(1, 30, 5)).astype(np.float32))
  f = lambda e, c: jnp.sum(probe * ops.indexed_sq_distances(e, e, idx, query_chunk=c))
  full, chunked = np.asarray(jax.grad(f)(e, None)), np.asarray(jax.grad(f)(e, 7))
  assert np.abs(full).max() > 1
  np.testing.assert_allclose(chunked, full, rtol=1e-5, atol=1e-5 * np.abs(full).max())


def test_bfloat16_inputs_accumulate_in_float32():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(1, 8, 800)).astype(np.float32)
  idx = jnp.asarray(rng.integers(0, 8, size=(8, 3)))
  ref = ops.indexed_sq_distances(jnp.asarray(x), jnp.asarray(x), idx)
  got = ops.indexed_sq_distances(jnp.asarray(x, jnp.bfloat16), jnp.asarray(x, jnp.bfloat16), idx)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(ref), rtol=2e-2, atol=0.5)


def test_shape_errors_are_clear():
  with pytest.raises(ValueError, match=r"do not broadcast.*queries \[..., M, D\] \(2, 4, 3\)"):
    ops.indexed_sq_distances(jnp.zeros((2, 4, 3)), jnp.zeros((3, 4, 3)), jnp.zeros((4, 2), int))
  with pytest.raises(ValueError, match=r"at least 2 axes"):
    ops.indexed_sq_distances(jnp.zeros((3,)), jnp.zeros((4, 3)), jnp.zeros((1, 2), int))
  with pytest.raises(ValueError, match="different feature sizes"):
    ops.indexed_sq_distances(jnp.zeros((4, 3)), jnp.zeros((4, 2)), jnp.zeros((4, 2), int))
  with pytest.raises(ValueError, match="do not list candidates"):
    ops.indexed_sq_distances(jnp.zeros((1, 4, 3)), jnp.zeros((1, 4, 3)), jnp.zeros((5, 2), int))
