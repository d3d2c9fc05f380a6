"""The N³ block on sets, used as a user would: inside their own Flax module, trained with optax."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from n3jax.nn import N3SetBlock


class PointDenoiser(nn.Module):
  """A user's point-cloud denoiser: per-point features, one N³ set block, a per-point head."""

  @nn.compact
  def __call__(self, points, mask=None):
    h = nn.relu(nn.Dense(16)(points))
    h = N3SetBlock(k=4, embed_features=16, embed_depth=2, embed_channels=8,
                   exclude_self=True)(h, mask=mask)
    return points + nn.Dense(3)(nn.relu(nn.Dense(32)(h)))


def _noisy_circles(key, batch=8, n=48, noise=0.08):
  """Points on random circles in 3-D plus Gaussian noise: ``(noisy, clean)`` ``[B, N, 3]``."""
  k1, k2, k3 = jax.random.split(key, 3)
  angle = jax.random.uniform(k1, (batch, n)) * 2 * jnp.pi
  radius = jax.random.uniform(k2, (batch, 1), minval=0.5, maxval=1.5)
  clean = jnp.stack([radius * jnp.cos(angle), radius * jnp.sin(angle),
                     jnp.zeros_like(angle)], axis=-1)
  return clean + noise * jax.random.normal(k3, clean.shape), clean


def test_a_user_set_model_trains_with_optax_finite_gradients_and_falling_loss():
  model = PointDenoiser()
  noisy, clean = _noisy_circles(jax.random.PRNGKey(0))
  params = model.init(jax.random.PRNGKey(1), noisy)
  tx = optax.adam(3e-3)
  opt_state = tx.init(params)

  def loss_fn(p, noisy, clean):
    return jnp.mean(jnp.sum((model.apply(p, noisy) - clean) ** 2, axis=-1))

  @jax.jit
  def step(p, o, key):
    noisy, clean = _noisy_circles(key)
    loss, grads = jax.value_and_grad(loss_fn)(p, noisy, clean)
    updates, o = tx.update(grads, o, p)
    finite = jnp.all(jnp.array([jnp.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads)]))
    return optax.apply_updates(p, updates), o, loss, finite

  losses = []
  for i in range(40):
    params, opt_state, loss, finite = step(params, opt_state, jax.random.PRNGKey(100 + i))
    assert bool(finite), f"non-finite gradient at step {i}"
    losses.append(float(loss))
  assert np.isfinite(losses).all()
  # The noise alone costs 3·0.08² = 0.019 per point; the untrained head starts far above.
  assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
  # The temperature network is trained too (its gradient was the NaN one).
  assert any("temp" in "/".join(map(str, path)) for path, _ in
             jax.tree_util.tree_flatten_with_path(params)[0])


def test_padding_with_masked_items_leaves_valid_outputs_unchanged():
  block = N3SetBlock(k=3, embed_features=16, embed_depth=2, embed_channels=4)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 10, 5))
  variables = block.init(jax.random.PRNGKey(1), x)
  apply = jax.jit(block.apply)
  ref = apply(variables, x)
  # Pad to 16 items with garbage, scattered among the real ones.
  garbage = 1e3 * jax.random.normal(jax.random.PRNGKey(2), (2, 6, 5))
  garbage = garbage.at[:, 0, 0].set(jnp.nan).at[:, 1, 1].set(jnp.inf)
  order = np.random.default_rng(0).permutation(16)
  padded = jnp.concatenate([x, garbage], axis=1)[:, order]
  mask = jnp.asarray(np.concatenate([np.ones(10, bool), np.zeros(6, bool)])[order])
  mask = jnp.broadcast_to(mask, (2, 16))
  out = apply(variables, padded, mask=mask)
  inverse = np.argsort(order)
  np.testing.assert_allclose(np.asarray(out[:, inverse[:10]]), np.asarray(ref),
                             rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(out[:, inverse[10:], 5:]) == 0)  # padding's own volumes are 0
  # Nobody's neighbour: the valid outputs do not depend on the padding at all.
  g = jax.jit(jax.grad(lambda p: jnp.sum(apply(variables, p, mask=mask)[:, inverse[:10]] ** 2)))(
      padded)
  assert np.all(np.asarray(g[:, inverse[10:]]) == 0)
  assert np.isfinite(np.asarray(g)).all()


def test_unbatched_sets_and_vmap_equal_the_batched_block():
  block = N3SetBlock(k=2, embed_features=8, embed_depth=2, embed_channels=4)
  x = jax.random.normal(jax.random.PRNGKey(3), (3, 7, 2))
  variables = block.init(jax.random.PRNGKey(4), x)
  batched = np.asarray(block.apply(variables, x))
  np.testing.assert_allclose(np.asarray(block.apply(variables, x[1])), batched[1], rtol=1e-5)
  mapped = jax.vmap(lambda s: block.apply(variables, s))(x)
  np.testing.assert_allclose(np.asarray(mapped), batched, rtol=1e-5)


def test_dtype_and_param_dtype():
  x = jax.random.normal(jax.random.PRNGKey(5), (2, 9, 3)).astype(jnp.bfloat16)
  block = N3SetBlock(k=2, embed_features=8, embed_depth=2, embed_channels=4,
                     dtype=jnp.bfloat16)
  variables = block.init(jax.random.PRNGKey(6), x)
  out = block.apply(variables, x)
  assert out.dtype == jnp.bfloat16 and np.isfinite(np.asarray(out, np.float32)).all()
  assert {p.dtype for p in jax.tree_util.tree_leaves(variables)} == {jnp.dtype(jnp.float32)}
  ref = N3SetBlock(k=2, embed_features=8, embed_depth=2, embed_channels=4).apply(
      variables, x.astype(jnp.float32))
  np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref), atol=0.1, rtol=0.05)
  half = N3SetBlock(k=2, embed_features=8, embed_depth=2, embed_channels=4,
                    param_dtype=jnp.bfloat16)
  assert {p.dtype for p in jax.tree_util.tree_leaves(half.init(jax.random.PRNGKey(6), x))} == {
      jnp.dtype(jnp.bfloat16)}


def test_self_exclusion_option():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 6, 2)), jnp.float32)
  # A tiny temperature makes the first neighbour the nearest candidate exactly.
  block = N3SetBlock(k=1, embed_features=4, embed_depth=2, embed_channels=2, temp_bias=1e-6,
                     exclude_self=False)
  variables = block.init(jax.random.PRNGKey(0), x)
  np.testing.assert_allclose(np.asarray(block.apply(variables, x)[..., 2:]), 0, atol=1e-6)
  excl = block.clone(exclude_self=True).apply(variables, x)[..., 2:]
  assert np.abs(np.asarray(excl)).min() > 0  # another item, never itself


def test_too_few_valid_items_give_zero_volumes_and_bad_masks_are_errors():
  block = N3SetBlock(k=3, embed_features=8, embed_depth=2, embed_channels=4)
  x = jax.random.normal(jax.random.PRNGKey(7), (1, 6, 2))
  variables = block.init(jax.random.PRNGKey(8), x)
  mask = jnp.array([[True, True, True, False, False, False]])  # 2 candidates per valid item
  out = np.asarray(block.apply(variables, x, mask=mask))
  assert np.isfinite(out).all()
  assert (out[0, :3, 6:] == 0).all() and np.abs(out[0, :3, 2:6]).sum() > 0
  with pytest.raises(ValueError, match="mask must be bool"):
    block.apply(variables, x, mask=jnp.ones((1, 6)))
  with pytest.raises(ValueError, match="at least 4 items"):
    block.apply(variables, x[:, :3])
