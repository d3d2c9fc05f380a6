"""Tiled windowed ops equal the gather-based ops through window_indices, in value and gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from n3jax import ops


@pytest.mark.parametrize("n1,n2,tile", [(7, 7, 32), (19, 23, 6), (3, 20, 4), (16, 16, 1),
                                        (1, 9, 4), (19, 23, 4)])
def test_windowed_distances_and_aggregation_equal_gather_versions(n1, n2, tile):
  key1, key2 = jax.random.split(jax.random.PRNGKey(n1 * 100 + n2))
  grid = jax.random.normal(key1, (2, n1, n2, 12)) + 3.0  # a common offset, as embeddings have
  idx = ops.window_indices(n1, n2, 15)
  flat = grid.reshape(2, n1 * n2, 12)
  ref = ops.indexed_sq_distances(flat, flat, idx)
  got = jax.jit(lambda g: ops.windowed_sq_distances(g, 15, tile=tile))(grid)
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=2e-5)
  w = jax.random.uniform(key2, ref.shape + (3,))
  ref_a = ops.aggregate(w, flat, indices=idx)
  got_a = jax.jit(lambda w, g: ops.windowed_aggregate(w, g, 15, tile=tile))(w, grid)
  np.testing.assert_allclose(np.asarray(got_a), np.asarray(ref_a), rtol=1e-5, atol=1e-4)


def test_windowed_gradients_equal_gather_gradients():
  n1, n2 = 11, 13
  grid = jax.random.normal(jax.random.PRNGKey(0), (1, n1, n2, 6))
  idx = ops.window_indices(n1, n2, 5)
  w = jax.random.uniform(jax.random.PRNGKey(1), (1, n1 * n2, idx.shape[1], 2))

  def f_tiled(g, w):
    d = ops.windowed_sq_distances(g, 5, tile=4)
    return jnp.sum(jnp.tanh(d / 10)) + jnp.sum(ops.windowed_aggregate(w, g, 5, tile=4) ** 2)

  def f_gather(g, w):
    flat = g.reshape(1, n1 * n2, 6)
    d = ops.indexed_sq_distances(flat, flat, idx)
    return jnp.sum(jnp.tanh(d / 10)) + jnp.sum(ops.aggregate(w, flat, indices=idx) ** 2)

  for a, b in zip(jax.grad(f_tiled, (0, 1))(grid, w), jax.grad(f_gather, (0, 1))(grid, w)):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


def test_n3block_tiled_and_gather_paths_agree():
  from n3jax.nn import N3Block
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 57, 83, 2))
  tiled = N3Block(k=3, embed_features=8, embed_channels=4)
  gather = N3Block(k=3, embed_features=8, embed_channels=4, tile=None, query_chunk=50)
  v = tiled.init(jax.random.PRNGKey(1), x)
  np.testing.assert_allclose(np.asarray(tiled.apply(v, x)), np.asarray(gather.apply(v, x)),
                             rtol=1e-4, atol=1e-5)


def test_windowed_ops_compose_with_vmap_and_grad():
  grids = jax.random.normal(jax.random.PRNGKey(2), (3, 1, 9, 10, 4))
  mapped = jax.vmap(lambda g: ops.windowed_sq_distances(g, 5, tile=4))(grids)
  for i in range(3):
    np.testing.assert_allclose(np.asarray(mapped[i]),
                               np.asarray(ops.windowed_sq_distances(grids[i], 5, tile=4)),
                               rtol=1e-6)
  g = jax.grad(lambda x: jnp.sum(jax.vmap(lambda y: ops.windowed_sq_distances(y, 5))(x)))(grids)
  assert np.isfinite(np.asarray(g)).all()


def test_n3net_runs_in_bfloat16_close_to_float32():
  from n3jax.nn import create_model
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 40, 44, 1))
  f32 = create_model("n3net_tiny")
  bf16 = create_model("n3net_tiny", dtype=jnp.bfloat16)
  v = f32.init(jax.random.PRNGKey(1), x)
  out32 = f32.apply(v, x)
  out16 = jax.jit(bf16.apply)(v, x.astype(jnp.bfloat16))
  assert out16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out16, np.float32), np.asarray(out32), atol=0.05)
