"""Windowed (confined) attention equals dense attention with the window as a mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from n3jax.ops.attention import local_attention, local_attention_flops
from tests.helpers.dense_attention import dense_reference


def _inputs(seed, b, h, w, e=5, c=3):
  ks = jax.random.split(jax.random.PRNGKey(seed), 4)
  q = jax.random.normal(ks[0], (b, h, w, e))
  k = jax.random.normal(ks[1], (b, h, w, e))
  v = jax.random.normal(ks[2], (b, h, w, c))
  return q, k, v, ks[3]


@pytest.mark.parametrize("border", ["shift", "circular"])
@pytest.mark.parametrize("h,w,window,tile", [(9, 11, 5, 4), (7, 6, 9, 3), (12, 12, 5, 8),
                                             (5, 13, 3, 1), (6, 6, 7, 8)])
def test_equals_dense_masked_attention_with_and_without_prior(border, h, w, window, tile):
  q, k, v, kp = _inputs(h * 31 + w, 2, h, w)
  w1, w2 = min(window, h), min(window, w)
  prior = jax.random.normal(kp, (2, h, w, w1 * w2))
  fn = jax.jit(lambda q, k, v, p: local_attention(q, k, v, window=window, border=border,
                                                  prior=p, return_logits=True, tile=tile))
  out, corr = fn(q, k, v, prior)
  ref_out, ref_corr = dense_reference(q, k, v, window, border, prior)
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(corr, ref_corr, rtol=1e-5, atol=1e-5)
  plain = local_attention(q, k, v, window=window, border=border, tile=tile)
  np.testing.assert_allclose(plain, dense_reference(q, k, v, window, border)[0],
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("border", ["shift", "circular"])
def test_gradients_equal_dense_attention(border):
  h, w, window = 8, 9, 5
  q, k, v, kp = _inputs(3, 1, h, w)
  prior = jax.random.normal(kp, (1, h, w, 25))
  cot = jax.random.normal(jax.random.PRNGKey(9), (1, h, w, 3))
  cot_l = jax.random.normal(jax.random.PRNGKey(10), (1, h, w, 25))

  def loss(fn):
    def f(q, k, v, p):
      out, corr = fn(q, k, v, p)
      return jnp.sum(out * cot) + jnp.sum(jnp.tanh(corr) * cot_l)
    return jax.grad(f, argnums=(0, 1, 2, 3))(q, k, v, prior)

  got = loss(lambda *a: local_attention(*a[:3], window=window, border=border, prior=a[3],
                                        return_logits=True, tile=3))
  ref = loss(lambda *a: dense_reference(*a[:3], window, border, a[3]))
  for g, r in zip(got, ref):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


def test_a_window_covering_the_image_is_global_attention():
  """On the official 43×43 training patches a 45-window is attention over the whole patch
  (what the official code computes); both borders give it."""
  q, k, v, _ = _inputs(0, 1, 10, 10)
  logits = jnp.einsum("bije,byxe->bijyx", q, k).reshape(1, 10, 10, 100)
  ref = jnp.einsum("bijn,bnc->bijc", jax.nn.softmax(logits, -1), v.reshape(1, 100, -1))
  for border in ("shift", "circular"):
    got = local_attention(q, k, v, window=11, border=border, tile=4)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_leading_axes_tiles_and_errors():
  q, k, v, _ = _inputs(1, 1, 6, 7)
  one = local_attention(q[0], k[0], v[0], window=3)
  np.testing.assert_allclose(one, local_attention(q, k, v, window=3)[0], rtol=1e-6)
  two = local_attention(jnp.stack([q, q]), jnp.stack([k, k]), v, window=3)  # v broadcasts
  assert two.shape == (2, 1, 6, 7, 3)
  for tile in (1, 2, 5, 16):
    np.testing.assert_allclose(local_attention(q, k, v, window=3, tile=tile),
                               local_attention(q, k, v, window=3), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="border"):
    local_attention(q, k, v, window=3, border="zero")
  with pytest.raises(ValueError, match="window"):
    local_attention(q, k, v, window=0)
  with pytest.raises(ValueError, match="prior"):
    local_attention(q, k, v, window=3, prior=jnp.zeros((1, 6, 7, 8)))
  with pytest.raises(ValueError, match="same channels"):
    local_attention(q, k[..., :2], v, window=3)
  with pytest.raises(ValueError, match="image size"):
    local_attention(q, k[:, :5], v, window=3)


def test_memory_is_bounded_by_a_tile_not_by_the_window_volume():
  """No [H·W, window²] buffer: the compiled temp memory stays far below one such volume."""
  h = w = 96
  window = 31
  q = jnp.zeros((1, h, w, 8))
  v = jnp.zeros((1, h, w, 16))

  def f(q, v):
    return jnp.sum(local_attention(q, q, v, window=window, tile=8) ** 2)

  volume = h * w * window * window * 4  # bytes of one float32 correlation volume
  for fn in (f, jax.grad(f, argnums=(0, 1))):
    stats = jax.jit(fn).lower(q, v).compile().memory_analysis()
    assert stats.temp_size_in_bytes < volume / 8, (stats.temp_size_in_bytes, volume)


def test_flop_count():
  assert local_attention_flops(43, 43, window=45, embed=64, channels=128) == (
      2 * 43 * 43 * 43 * 43 * (64 + 128))
  assert local_attention_flops(100, 100, window=45, embed=64, channels=128) == (
      2 * 100 * 100 * 45 * 45 * 192)


def test_more_input_checks_and_tiles_larger_than_the_image():
  q, k, v, _ = _inputs(2, 1, 5, 6)
  with pytest.raises(ValueError, match="q is empty"):
    local_attention(q[:0], k[:0], v[:0], window=3)
  with pytest.raises(TypeError, match="must be real"):
    local_attention(q.astype(jnp.complex64), k, v, window=3)
  with pytest.raises(TypeError, match="return_logits must be a bool"):
    local_attention(q, k, v, window=3, return_logits="no")
  # A tile larger than the image is clipped to it: the compiled work does not grow.
  def flops(tile):
    fn = jax.jit(lambda q, k, v: local_attention(q, k, v, window=45, border="circular",
                                                 tile=tile))
    cost = fn.lower(q, k, v).compile().cost_analysis()
    return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]
  assert flops(256) == flops(6)
  np.testing.assert_allclose(local_attention(q, k, v, window=3, tile=256),
                             dense_reference(q, k, v, 3, "shift")[0], rtol=1e-5, atol=1e-5)
