"""The block-grid (memory-bounded) non-local ops equal the straightforward ones.

Straightforward: extract every patch, gather each query's window candidates
(``indexed_sq_distances`` / ``aggregate`` through ``window_indices``, i.e. the
``[M, O, P·P·C]`` candidate volume) and fold the neighbour volumes with ``fold_patches``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from n3jax import ops


def naive(x_img, e_img, weights_fn, p, s, window):
  """Distances and folded neighbour images the straightforward way."""
  b, _, _, c = x_img.shape
  xp, ep = ops.pad_for_patches(x_img, p, s), ops.pad_for_patches(e_img, p, s)
  xg, eg = ops.extract_patches(xp, p, s), ops.extract_patches(ep, p, s)
  _, n1, n2, _ = xg.shape
  idx = ops.window_indices(n1, n2, window)
  e_flat = eg.reshape(b, n1 * n2, -1)
  d = ops.indexed_sq_distances(e_flat, e_flat, idx)
  w = weights_fn(d)
  k = w.shape[-1]
  vol = ops.aggregate(w, xg.reshape(b, n1 * n2, -1), indices=idx)  # [B, M, k, P·P·C]
  vol = vol.reshape(b, n1, n2, k, -1).transpose(0, 3, 1, 2, 4).reshape(b * k, n1, n2, -1)
  folded = ops.fold_patches(vol, xp.shape[1], xp.shape[2], p, s)
  return d, folded.reshape(b, k, xp.shape[1], xp.shape[2], c)


def blockwise(x_img, e_img, weights_fn, p, s, window, tile):
  xb = ops.to_blocks(ops.pad_for_patches(x_img, p, s), s)
  eb = ops.to_blocks(ops.pad_for_patches(e_img, p, s), s)
  q = p // s
  d = ops.block_sq_distances(eb, q, window, tile=tile)
  w = weights_fn(d)
  summed = ops.block_aggregate_sum(w, xb, q, window, tile=tile)
  n1, n2 = xb.shape[1] - q + 1, xb.shape[2] - q + 1
  counts = ops.block_cover_counts(n1, n2, q)[:, :, None, None]
  return d, ops.from_blocks(jnp.moveaxis(summed / counts, 3, 1), s)


def soft_weights(d):
  return ops.continuous_knn_weights(-d / 20.0, 1.0, k=3)


@pytest.mark.parametrize("h,w,p,s,window,tile", [
    (57, 83, 10, 5, 15, 6),   # the reference geometry; border-shifted windows everywhere
    (23, 31, 6, 3, 5, 3),     # q = 2 with another stride
    (20, 50, 10, 5, 15, 1),   # grid smaller than the window: the window shrinks
    (12, 13, 6, 2, 3, 5),     # q = 3
])
def test_block_ops_equal_gather_and_fold(h, w, p, s, window, tile):
  kx, ke = jax.random.split(jax.random.PRNGKey(h * 100 + w))
  x = jax.random.normal(kx, (2, h, w, 3))
  e = jax.random.normal(ke, (2, h, w, 4)) + 3.0  # a common offset, as embeddings have
  d_ref, img_ref = naive(x, e, soft_weights, p, s, window)
  d, img = jax.jit(lambda x, e: blockwise(x, e, soft_weights, p, s, window, tile))(x, e)
  np.testing.assert_allclose(np.asarray(d), np.asarray(d_ref), rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(np.asarray(img), np.asarray(img_ref), rtol=1e-5, atol=2e-5)


def test_block_ops_gradients_equal_naive_gradients():
  p, s, window = 10, 5, 5
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 33, 41, 2))
  e = jax.random.normal(jax.random.PRNGKey(1), (1, 33, 41, 3))

  def loss(fn):
    def f(x, e):
      d, img = fn(x, e)
      return jnp.sum(jnp.tanh(d / 50)) + jnp.sum(jnp.sin(img))
    return f

  g_ref = jax.grad(loss(lambda x, e: naive(x, e, soft_weights, p, s, window)), (0, 1))(x, e)
  g = jax.jit(jax.grad(loss(lambda x, e: blockwise(x, e, soft_weights, p, s, window, 4)),
                       (0, 1)))(x, e)
  for a, b in zip(g, g_ref):
    a, b = np.asarray(a), np.asarray(b)
    assert np.abs(b).max() > 1e-3
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


def test_block_ops_memory_is_bounded_by_a_tile():
  """At a 1-megapixel image the straightforward candidate volume [M, O, P·P·C] alone would
  be ~7 GB; the compiled block ops (forward and backward) need a small multiple of their
  own inputs and outputs."""
  p, s, window, k, c = 10, 5, 15, 7, 8
  hp = wp = 1025  # padded 1024² image: 204 x 204 patches
  x = jax.ShapeDtypeStruct((1, hp, wp, c), jnp.float32)
  n = (hp - p) // s + 1
  volume_bytes = n * n * (window * window - 1) * p * p * c * 4

  def f(x, e):
    d, img = blockwise(x, e, soft_weights, p, s, window, 6)
    return jnp.sum(d) + jnp.sum(img)

  io_bytes = 4 * (n * n * (window * window - 1) * k + 2 * hp * wp * c * (k + 1))
  for fn in (f, jax.grad(f, (0, 1))):
    mem = jax.jit(fn).lower(x, x).compile().memory_analysis()
    temp = mem.temp_size_in_bytes
    assert temp < volume_bytes / 10, (temp, volume_bytes)
    assert temp < 3 * io_bytes, (temp, io_bytes)


def test_blocks_round_trip_and_counts():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 15, 20, 3))
  np.testing.assert_array_equal(np.asarray(ops.from_blocks(ops.to_blocks(x, 5), 5)),
                                np.asarray(x))
  with pytest.raises(ValueError, match="blocks"):
    ops.to_blocks(x, 4)
  counts = np.asarray(ops.block_cover_counts(3, 2, 2))
  np.testing.assert_array_equal(counts, [[1, 2, 1], [2, 4, 2], [2, 4, 2], [1, 2, 1]])
