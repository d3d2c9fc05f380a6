"""NLRN: the official architecture's parameter count, sharing, and correlation propagation
checked against a brute-force forward pass written from the paper's equations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from n3jax.nn import count_parameters, create_model
from n3jax.nn.nlrn import NLRN, NLRN_BN_EPSILON
from tests.helpers.dense_attention import _window_offsets


def _param_shapes(model, size=8):
  x = jnp.zeros((1, size, size, 1))
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))


def test_paper_configuration_has_330625_conv_weights_and_biases():
  variables = _param_shapes(create_model("nlrn"))
  params = variables["params"]
  assert count_parameters(params, batch_norm=False) == 330_625
  # BN γ/β: input 2 + output 256 + 12 states x 3 BNs x 128 x 2 = 9,474.
  assert count_parameters(params) == 340_099
  bns = [k for k in params if k.startswith("bn_")]
  assert len(bns) == 2 + 12 * 3 and "bn_11_c" in bns  # each state its own BatchNorms
  convs = [k for k in params if not k.startswith("bn")]
  assert sorted(convs) == ["conv_a", "conv_b", "conv_in", "conv_out", "nonlocal"]
  nl = params["nonlocal"]
  assert nl["theta"]["kernel"].shape == (1, 1, 128, 64)
  assert nl["phi"]["kernel"].shape == (1, 1, 128, 64)
  assert nl["g"]["kernel"].shape == (1, 1, 128, 128)


def test_ablations_of_table_2():
  unshared = _param_shapes(create_model("nlrn", share_weights=False))["params"]
  # 12 copies of a state's convolutions (328,192) instead of one.
  assert count_parameters(unshared, batch_norm=False) == 330_625 + 11 * 328_192
  assert "conv_a_11" in unshared and "nonlocal_11" in unshared and "conv_a" not in unshared
  plain = _param_shapes(create_model("nlrn", use_nonlocal=False))["params"]
  assert "nonlocal" not in plain
  assert count_parameters(plain, batch_norm=False) == 330_625 - 8_256 * 2 - 16_512


def test_g_is_zero_initialized_so_a_fresh_nonlocal_module_is_the_identity():
  model = NLRN(features=8, embed_features=4, num_steps=2, window=5)
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 12, 12, 1))
  variables = model.init(jax.random.PRNGKey(1), x)
  g = variables["params"]["nonlocal"]["g"]
  assert not np.any(g["kernel"]) and not np.any(g["bias"])
  plain = NLRN(features=8, embed_features=4, num_steps=2, window=5, use_nonlocal=False)
  without = {"params": {k: v for k, v in variables["params"].items() if k != "nonlocal"},
             "batch_stats": variables["batch_stats"]}
  np.testing.assert_allclose(model.apply(variables, x), plain.apply(without, x), atol=1e-6)


def _reference_forward(params, stats, x, *, steps, window, border, propagate):
  """NLRN inference from the equations: dense attention over all pixels with the window as
  a mask, the correlations accumulated explicitly over the states."""
  def bn(name, y):
    p, s = params[name], stats[name]
    return (y - s["mean"]) / jnp.sqrt(s["var"] + NLRN_BN_EPSILON) * p["scale"] + p["bias"]

  def conv(p, y):
    out = jax.lax.conv_general_dilated(y, p["kernel"], (1, 1), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return out + p["bias"]

  b, h, w, _ = x.shape
  off1, _ = _window_offsets(h, window, border)
  off2, _ = _window_offsets(w, window, border)
  inside = jnp.asarray((off1[:, None, :, None] >= 0) & (off2[None, :, None, :] >= 0))
  s0 = conv(params["conv_in"], bn("bn_in", x))
  s, acc = s0, 0.0
  nl = params["nonlocal"]
  for t in range(steps):
    y = jax.nn.relu(bn(f"bn_{t}_a", s))
    theta, phi, g = (conv(nl[n], y) for n in ("theta", "phi", "g"))
    corr = jnp.einsum("bije,byxe->bijyx", theta, phi)
    acc = acc + corr if propagate else corr
    logits = jnp.where(inside[None], acc, -jnp.inf).reshape(b, h, w, h * w)
    y = y + jnp.einsum("bijn,bnc->bijc", jax.nn.softmax(logits, -1), g.reshape(b, h * w, -1))
    y = jax.nn.relu(bn(f"bn_{t}_c", conv(params["conv_a"], bn(f"bn_{t}_b", y))))
    s = conv(params["conv_b"], y) + s0
  return conv(params["conv_out"], jax.nn.relu(bn("bn_out", s))) + x


@pytest.mark.parametrize("border", ["shift", "circular"])
def test_correlation_propagation_matches_the_equations(border):
  """Fails if the model drops (or does not accumulate) the propagated correlations while
  its config says propagate=True: the propagating and plain references differ here."""
  kw = dict(features=6, embed_features=3, num_steps=3, window=5, border=border)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 9, 10, 1))
  model = NLRN(**kw, attention_tile=4)
  variables = model.init(jax.random.PRNGKey(1), x)
  # Non-zero g, BN statistics and scales, so that the non-local part matters.
  leaves, tree = jax.tree_util.tree_flatten(variables)
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
  leaves = [l + 0.3 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)]
  variables = jax.tree_util.tree_unflatten(tree, leaves)
  variables["batch_stats"] = jax.tree_util.tree_map(jnp.abs, variables["batch_stats"])
  params, stats = variables["params"], variables["batch_stats"]
  ref_on = _reference_forward(params, stats, x, steps=3, window=5, border=border,
                              propagate=True)
  ref_off = _reference_forward(params, stats, x, steps=3, window=5, border=border,
                               propagate=False)
  assert float(jnp.max(jnp.abs(ref_on - ref_off))) > 1e-2  # the test can tell them apart
  got_on = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
  got_off = NLRN(**kw, propagate=False, attention_tile=4).apply(variables, x)
  np.testing.assert_allclose(got_on, ref_on, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got_off, ref_off, rtol=1e-4, atol=1e-4)


def test_receptive_radius_and_errors():
  assert create_model("nlrn").receptive_radius() == 2 + 12 * (2 + 22)
  assert create_model("nlrn", use_nonlocal=False).receptive_radius() == 2 + 12 * 2
  assert create_model("nlrn", border="circular").receptive_radius() >= 2 ** 30
  # Every non-local block reports its own radius.
  from n3jax.nn import N3Block
  from n3jax.nn.nlrn import NonLocal
  assert NonLocal().receptive_radius() == 22 and N3Block().receptive_radius() == 47
  x = jnp.zeros((1, 8, 8, 1))
  with pytest.raises(ValueError, match="border"):
    NLRN(border="zero").init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="B, H, W, C"):
    NLRN().init(jax.random.PRNGKey(0), x[0])


def test_training_mode_updates_every_states_batch_norm_and_gradients_reach_shared_convs():
  model = NLRN(features=6, embed_features=3, num_steps=2, window=5)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 10, 10, 1))
  variables = model.init(jax.random.PRNGKey(1), x)

  def loss(params):
    y, upd = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                         train=True, mutable=["batch_stats"])
    return jnp.mean((y - x) ** 2) + jnp.mean(y), upd

  grads, upd = jax.grad(loss, has_aux=True)(variables["params"])
  for t in range(2):
    before = variables["batch_stats"][f"bn_{t}_a"]["mean"]
    assert not np.allclose(upd["batch_stats"][f"bn_{t}_a"]["mean"], before)
  assert float(jnp.abs(grads["conv_a"]["kernel"]).sum()) > 0
  # g starts at zero, but its gradient does not (the module can learn).
  assert float(jnp.abs(grads["nonlocal"]["g"]["kernel"]).sum()) > 0


def test_infer_restores_nlrn_tiled_exactly_as_untiled():
  """Tiles overlap by the receptive radius: the tiled result equals the untiled one."""
  from n3jax import infer
  model = NLRN(features=4, embed_features=2, num_steps=2, window=5, attention_tile=4)
  assert model.tiling_groups() == [((0,), 2 + 2 * (2 + 2), 1)]
  x = jax.random.uniform(jax.random.PRNGKey(0), (40, 37))
  variables = model.init(jax.random.PRNGKey(1), x[None, :, :, None])
  g = variables["params"]["nonlocal"]["g"]
  g["kernel"] = jax.random.normal(jax.random.PRNGKey(2), g["kernel"].shape)
  whole = infer.restore(model, variables, x, tile=64)
  np.testing.assert_allclose(whole, model.apply(variables, x[None, :, :, None])[0, :, :, 0],
                             rtol=1e-5, atol=1e-5)
  tiled = infer.restore(model, variables, x, tile=8)  # 8-pixel cores, 10-pixel halos
  np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-5)
  assert infer.input_channels(model, variables) == 1
  # The radius is needed: three pixels less and the tiles see too little.
  class ShortNLRN(NLRN):
    def receptive_radius(self):
      return 7

  short = ShortNLRN(features=4, embed_features=2, num_steps=2, window=5, attention_tile=4)
  assert not np.allclose(infer.restore(short, variables, x, tile=8), whole, atol=1e-4)
  with pytest.raises(ValueError, match="channel"):
    infer.restore(model, variables, jnp.zeros((40, 37, 3)))
