"""Flax modules: shapes and structure, set-block equivariance, registry, parity fixture."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from n3jax import nn as n3nn


def test_n3block_output_layout():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 30, 35, 3))
  block = n3nn.N3Block(k=2, embed_features=8, embed_channels=4, window=5)
  variables = block.init(jax.random.PRNGKey(1), x)
  out = block.apply(variables, x)
  assert out.shape == (2, 30, 35, 9)
  np.testing.assert_array_equal(np.asarray(out[..., :3]), np.asarray(x))  # j = 0 is x itself
  # Neighbour volumes are differences to x of averages of x's own patches: bounded by range.
  nbrs = np.asarray(out[..., 3:].reshape(2, 30, 35, 2, 3) + x[..., None, :])
  assert nbrs.min() >= float(x.min()) - 1e-5 and nbrs.max() <= float(x.max()) + 1e-5


def test_set_block_is_permutation_equivariant():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 16, 5)).astype(np.float32))
  block = n3nn.N3SetBlock(k=3, embed_features=16, embed_channels=8)
  variables = block.init(jax.random.PRNGKey(0), x)
  perm = rng.permutation(16)
  out = block.apply(variables, x)
  out_perm = block.apply(variables, x[:, perm])
  assert out.shape == (2, 16, 20)
  np.testing.assert_allclose(np.asarray(out_perm), np.asarray(out)[:, perm], rtol=1e-5,
                             atol=1e-5)
  with pytest.raises(ValueError, match="at least 4 items"):
    block.apply(variables, x[:, :3])


def test_dncnn_partial_residual():
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 12, 12, 3))
  model = n3nn.DnCNN(out_channels=5, features=4, depth=3)
  variables = model.init(jax.random.PRNGKey(1), x)
  zeroed = jax.tree_util.tree_map(jnp.zeros_like, variables["params"])
  out = model.apply({**variables, "params": zeroed}, x)
  np.testing.assert_allclose(np.asarray(out[..., :3]), np.asarray(x), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(out[..., 3:]), 0.0)


def test_registry():
  assert isinstance(n3nn.create_model("n3net"), n3nn.N3Net)
  assert n3nn.create_model("n3net_light").num_dncnns == 2
  assert n3nn.create_model("dncnn17").depth == 17
  assert n3nn.create_model("n3net", k=5).k == 5
  with pytest.raises(KeyError, match="unknown model 'n3nett'"):
    n3nn.create_model("n3nett")


def test_tiny_n3net_trains_on_a_40px_image_with_finite_gradients():
  model = n3nn.create_model("n3net_tiny")
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 40, 40, 1))
  variables = model.init(jax.random.PRNGKey(1), x, train=True)

  def loss(params):
    out, _ = model.apply({**variables, "params": params}, x + 0.1, train=True,
                         mutable=["batch_stats"])
    return jnp.mean((out - x) ** 2)

  value, grads = jax.jit(jax.value_and_grad(loss))(variables["params"])
  leaves = jax.tree_util.tree_leaves(grads)
  assert np.isfinite(float(value)) and all(np.isfinite(np.asarray(g)).all() for g in leaves)
  assert any(np.abs(np.asarray(g)).max() > 0 for g in
             jax.tree_util.tree_leaves(grads["n3block_0"]["embedcnn"]))


def test_paper_n3net_on_a_40px_image_shrinks_the_window_in_both_paths():
  # 40x40 -> a 7x7 patch grid, smaller than the 15x15 window: 48 candidates per patch.
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 40, 40, 1))
  tiled, gather = n3nn.create_model("n3net"), n3nn.create_model("n3net", tile=None)
  variables = tiled.init(jax.random.PRNGKey(1), x)
  out_t, out_g = tiled.apply(variables, x), gather.apply(variables, x)
  assert out_t.shape == (1, 40, 40, 1) and np.isfinite(np.asarray(out_t)).all()
  np.testing.assert_allclose(np.asarray(out_t), np.asarray(out_g), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("patch_size,stride", [(10, 5), (7, 3)])
def test_n3block_impls_give_the_same_output(patch_size, stride):
  """gather, windowed and (when patches are whole blocks) blockwise: one result, border-
  shifted windows included."""
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 37, 44, 3))
  impls = ["gather", "windowed"] + (["blockwise"] if patch_size % stride == 0 else [])
  blocks = {impl: n3nn.N3Block(k=3, patch_size=patch_size, stride=stride, window=5,
                               embed_features=8, embed_channels=4, impl=impl, tile=4,
                               query_chunk=50) for impl in impls + ["auto"]}
  variables = blocks["gather"].init(jax.random.PRNGKey(1), x)
  out = {impl: np.asarray(jax.jit(b.apply)(variables, x)) for impl, b in blocks.items()}
  assert np.abs(out["gather"][..., 3:]).max() > 0.1  # the neighbour differences are not 0
  for impl in impls[1:]:
    np.testing.assert_allclose(out[impl], out["gather"], rtol=0, atol=1e-5, err_msg=impl)
  np.testing.assert_array_equal(out["auto"], out[impls[-1]])


@pytest.mark.parametrize("impl,patch_size,stride,tile,expected", [
    ("auto", 10, 5, 6, "blockwise"), ("auto", 7, 3, 6, "windowed"),
    ("auto", 10, 5, 0, "gather"), ("auto", 10, 5, None, "gather"),
    ("gather", 10, 5, 6, "gather"), ("gather", 10, 5, None, "gather"),
    ("windowed", 10, 5, 6, "windowed"), ("blockwise", 6, 3, 4, "blockwise")])
def test_impl_resolution(impl, patch_size, stride, tile, expected):
  assert n3nn.resolve_impl(impl, patch_size=patch_size, stride=stride, tile=tile) == expected


@pytest.mark.parametrize("kwargs,match", [
    (dict(impl="fused"), r"unknown impl 'fused'.*'auto', 'gather', 'windowed', 'blockwise'"),
    (dict(impl="blockwise", patch_size=7, stride=3), "patch_size % stride == 0"),
    (dict(impl="windowed", tile=None), "needs a positive tile"),
])
def test_bad_impl_is_a_clear_error(kwargs, match):
  block = n3nn.N3Block(k=2, embed_features=8, embed_channels=4, window=5, **kwargs)
  with pytest.raises(ValueError, match=match):
    block.init(jax.random.PRNGKey(0), jnp.zeros((1, 30, 30, 2)))


def test_model_folder_with_tile_0_still_runs_the_gather_path(tmp_path):
  """Older versions wrote ``tile: 0`` into model.json for the per-query gathers."""
  from n3jax.checkpoint import load_model, save_model
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 30, 33, 1))
  model = n3nn.create_model("n3net_tiny", tile=0)
  variables = model.init(jax.random.PRNGKey(1), x)
  save_model(tmp_path / "m", variables, name="n3net_tiny", kwargs={"tile": 0})
  loaded, loaded_vars, _ = load_model(tmp_path / "m")
  assert (loaded.impl, loaded.tile) == ("auto", 0)
  gather = n3nn.create_model("n3net_tiny", impl="gather")
  np.testing.assert_array_equal(np.asarray(loaded.apply(loaded_vars, x)),
                                np.asarray(gather.apply(variables, x)))


def test_image_smaller_than_a_patch_is_a_clear_error():
  model = n3nn.create_model("n3net_tiny")
  with pytest.raises(ValueError, match="smaller than the patch size"):
    model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))


# Relative error allowed per stage. The gather path computes distances as sums of squared
# differences like the reference; the tiled default uses |q|² + |c|² − 2 q·c with matmuls,
# whose float32 cancellation costs about one more digit inside the N³ blocks.
TOLERANCE = {None: {"n3block": 1e-5, "other": 1e-5}, 6: {"n3block": 5e-5, "other": 1e-5}}


@pytest.mark.slow
@pytest.mark.parametrize("tile", [None, 6])
def test_parity_with_reference_fixture_stage_by_stage(shared, converted_sigma25, tile):
  """Each stage of the converted σ=25 model matches the independent reference pass."""
  path = os.path.join(shared, "pretrained", "fixtures", "n3net_sigma25_set12-01_crop96.npz")
  if not os.path.isfile(path):
    pytest.skip(f"{path} is absent")
  fx = np.load(path)
  _, variables, _ = converted_sigma25
  model = n3nn.create_model("n3net", tile=tile)

  def sub(name):
    return {c: variables[c][name] for c in variables if name in variables[c]}

  def batch(key):
    return jnp.asarray(fx[key])[None]

  stages = [
      (n3nn.DnCNN(8), sub("dncnn_0"), "input_noisy", "dncnn0_out"),
      (n3nn.EmbeddingCNN(8), {c: variables[c]["n3block_0"]["embedcnn"] for c in variables},
       "dncnn0_out", "n3block0_embedding"),
      (n3nn.EmbeddingCNN(1), {c: variables[c]["n3block_0"]["tempcnn"] for c in variables},
       "dncnn0_out", "n3block0_log_temperature_map"),
      (n3nn.N3Block(tile=tile), sub("n3block_0"), "dncnn0_out", "n3block0_out"),
      (n3nn.DnCNN(8), sub("dncnn_1"), "n3block0_out", "dncnn1_out"),
      (n3nn.N3Block(tile=tile), sub("n3block_1"), "dncnn1_out", "n3block1_out"),
      (n3nn.DnCNN(1), sub("dncnn_2"), "n3block1_out", "output"),
      (model, variables, "input_noisy", "output"),
  ]
  for module, v, src, dst in stages:
    got = np.asarray(jax.jit(module.apply)(v, batch(src)))[0]
    scale = np.abs(fx[dst]).max()
    err = np.abs(got - fx[dst]).max() / scale
    tol = TOLERANCE[tile]["n3block" if dst.startswith("n3block") and "out" in dst else "other"]
    assert err < tol, f"{src} -> {dst}: relative error {err:.2e} (tile={tile})"
