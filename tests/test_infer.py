"""Tiled whole-image inference equals untiled inference (n3jax.infer)."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from n3jax import infer
from n3jax.nn import create_model

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


@pytest.mark.parametrize("size,core,halo,align", [
    (1000, 256, 47, 5), (301, 64, 6, 1), (257, 100, 47, 5), (90, 100, 6, 1), (512, 128, 0, 5)])
def test_axis_tiles_cover_the_image_with_aligned_equal_tiles(size, core, halo, align):
  tile, core_size, spans = infer.axis_tiles(size, core, halo, align)
  assert tile <= size and (tile - size) % align == 0
  covered = np.zeros(size, bool)
  for ts, cs in spans:
    assert ts % align == 0 and 0 <= ts <= size - tile
    assert ts <= max(cs - halo, 0) and ts + tile >= min(cs + core_size + halo, size)
    covered[cs:cs + core_size] = True
  assert covered.all()
  assert (len(spans) == 1) == (size <= core or tile == size)


@pytest.mark.parametrize("shape,core", [((121, 173), 40)])
@pytest.mark.parametrize("grouped", [False, True])
def test_tiled_n3block_stage_equals_untiled_and_needs_its_halo(shape, core, grouped):
  """The N³ block stage (whose output holds the neighbour differences), alone or with the
  DnCNN after it as restore() tiles them, tiled with its halo equals the whole-image
  stage to 1e-5; with 20 pixels less halo it does not."""
  model = create_model("n3net", features=16, embed_features=16)
  x = jax.random.normal(jax.random.PRNGKey(0), (1, *shape, model.interm_channels))
  variables = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 40, 40, 1)))
  members, halo, align = infer.stage_groups(model)[1]
  assert members == (1, 2) and halo == 9 + 5 * 7 + 3 + 6
  if grouped:
    # A randomly initialized DnCNN's output is mostly its residual input; a large last
    # conv makes what it computes from the N³ output visible.
    params = dict(variables["params"])
    params["dncnn_1"] = {**params["dncnn_1"], "conv_out": jax.tree.map(
        lambda a: 100 * a, params["dncnn_1"]["conv_out"])}
    variables = {**variables, "params": params}
  else:
    members, (halo, align) = (1,), model.stage_geometry()[1]
    assert halo == 9 + 5 * 7 + 3
  fn = functools.partial(infer._apply_stages, model, variables, members)
  ref = fn(x, None)
  tiled = jax.jit(lambda x: infer._tiled(fn, x, None, tile=core, halo=halo, align=align))
  got = tiled(x)
  spans = [infer.axis_tiles(n, core, halo, align)[2] for n in shape]
  assert len(spans[0]) * len(spans[1]) > 1  # really tiled
  scale = float(jnp.abs(ref).max())
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=0, atol=1e-5 * scale)
  short = jax.jit(lambda x: infer._tiled(fn, x, None, tile=core, halo=halo - 20, align=align))
  assert float(jnp.abs(short(x) - ref).max()) > 1e-3 * scale


# Each model's tiling groups (stages, halo, align), as n3jax.infer computed them before the
# models reported their own: DnCNN halos are depth · 1; an N³ block's is
# (patch_size − 1) + stride · (window // 2) + embed_depth, plus the DnCNN after it.
GROUPS = {
    "n3net": [((0,), 6, 1), ((1, 2), 53, 5), ((3, 4), 53, 5)],
    "n3net_light": [((0,), 6, 1), ((1, 2), 53, 5)],
    "knn_input": [((0,), 6, 1), ((1, 2), 53, 5)],
    "n3net_sisr": [((0,), 7, 1), ((1, 2), 54, 5), ((3, 4), 54, 5)],
    "n3net_tiny": [((0,), 3, 1), ((1, 2), 24, 5), ((3, 4), 24, 5)],
    "dncnn17": [((0,), 17, 1)],
    "vdsr": [((0,), 20, 1)],
}


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_models_report_the_tiling_groups_and_sizes_they_had(name):
  model = create_model(name)
  assert infer.stage_groups(model) == model.tiling_groups() == GROUPS[name]
  halo = sum(h for _, h, _ in GROUPS[name])
  assert infer.network_geometry(model) == (halo, 5 if name.startswith(("n3", "knn")) else 1)
  small = (20, 20) if name != "n3net_tiny" else (15, 15)
  assert infer.runnable_size(model, 5, 5) == (small if name[:2] in ("n3", "kn") else (5, 5))
  assert infer.input_channels(model, {"params": {}}) is None


def test_a_model_without_the_tiling_protocol_is_a_clear_type_error():
  import flax.linen as nn

  class Plain(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Conv(1, (3, 3))(x)

    def tiling_groups(self):
      return [((0,), 1, 1)]

  model = Plain()
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
  for call in (lambda: infer.stage_groups(model),
               lambda: infer.restore(model, variables, jnp.zeros((8, 8))),
               lambda: infer.network_geometry(model)):
    with pytest.raises(TypeError, match=r"Plain .*lacks apply_stages, input_channels\."):
      call()

  class Malformed(Plain):
    def tiling_groups(self):
      return [((0,), -1, 1)]

    def apply_stages(self, variables, x, stages, *, network_input):
      return self.apply(variables, x)

    def input_channels(self, variables):
      return 1

  with pytest.raises(TypeError, match="halo >= 0"):
    infer.stage_groups(Malformed())


def test_restore_tiles_any_model_with_the_protocol():
  """A model unknown to n3jax (a conv and a global residual read from network_input, in
  two groups) is tiled as exactly as the registry's."""
  import flax.linen as nn

  class TwoStage(nn.Module):
    @nn.compact
    def __call__(self, x, *, stage=None, network_input=None):
      a, b = nn.Conv(4, (3, 3), name="a"), nn.Conv(1, (5, 5), name="b")
      if stage == 0:
        return a(x)
      if stage == 1:
        return b(x) + network_input
      return b(a(x)) + x

    def tiling_groups(self):
      return [((0,), 1, 1), ((1,), 2, 1)]

    def apply_stages(self, variables, x, stages, *, network_input):
      (stage,) = stages
      return self.apply(variables, x, stage=stage, network_input=network_input)

    def input_channels(self, variables):
      return int(variables["params"]["a"]["kernel"].shape[-2])

  model = TwoStage()
  x = jax.random.uniform(jax.random.PRNGKey(0), (70, 90))
  variables = model.init(jax.random.PRNGKey(1), x[None, :, :, None])
  ref = model.apply(variables, x[None, :, :, None])[0, :, :, 0]
  np.testing.assert_allclose(np.asarray(infer.restore(model, variables, x, tile=16)),
                             np.asarray(ref), rtol=0, atol=1e-5)
  with pytest.raises(ValueError, match="channel"):
    infer.restore(model, variables, jnp.zeros((20, 20, 3)))


@pytest.mark.parametrize("name", ["n3net_tiny", "knn_input", "dncnn17"])
def test_restore_equals_apply_for_every_model_kind(name):
  model = create_model(name, features=8)
  x = jax.random.uniform(jax.random.PRNGKey(0), (150, 71))  # N³ stages tiled too
  variables = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 40, 40, 1)))
  ref = model.apply(variables, x[None, :, :, None])[0, :, :, 0]
  got = infer.restore(model, variables, x, tile=32)
  assert got.shape == x.shape
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=0, atol=1e-5)


def test_restore_layouts_and_errors():
  model = create_model("n3net_tiny")
  variables = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 40, 40, 1)))
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 30, 35, 1))
  ref = model.apply(variables, x)
  got = infer.restore(model, variables, x)
  assert got.shape == x.shape
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-6)
  assert infer.restore(model, variables, x[0]).shape == x[0].shape  # [H, W, C] in and out
  with pytest.raises(ValueError, match="image must be"):
    infer.restore(model, variables, jnp.zeros((1, 1, 30, 30, 1)))
  with pytest.raises(ValueError, match="smaller than the patch size"):
    infer.restore(model, variables, jnp.zeros((5, 30)))


@pytest.mark.slow
def test_restore_with_official_weights_equals_untiled_inference():
  path = os.path.join(SHARED, "pretrained", "n3net_gauss_sigma25.t7")
  if not os.path.isfile(path):
    pytest.skip("official weights not found under ../shared/pretrained")
  from n3jax.convert import convert_official
  variables, _ = convert_official(path)
  model = create_model("n3net")
  x = jax.random.uniform(jax.random.PRNGKey(0), (300, 260))
  ref = model.apply(variables, x[None, :, :, None])[0, :, :, 0]
  got = infer.restore(model, variables, x, tile=96)
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=0, atol=1e-5)


def test_restore_large_equals_untiled_inference_and_needs_the_network_halo(monkeypatch):
  """Whole-network blocks (halo 51 px for n3net_tiny) give the untiled output; half the
  halo does not: the blocks' borders would show."""
  model = create_model("n3net_tiny")
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)))
  x = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (203, 157)))
  ref = np.asarray(model.apply(variables, x[None, :, :, None]))[0, :, :, 0]
  seen = []
  got = infer.restore_large(model, variables, x, block=60, tile=40,
                            progress=lambda done, total: seen.append((done, total)))
  # 203 rows: 4 blocks of 51 (+ halo); 157 columns fit in one block with its halo.
  assert got.shape == x.shape and seen == [(n, 4) for n in range(1, 5)]
  np.testing.assert_allclose(got, ref, atol=1e-5)
  halo, align = infer.network_geometry(model)
  assert (halo, align) == (51, 5)
  monkeypatch.setattr(infer, "network_geometry", lambda m: (halo // 2, align))
  short = infer.restore_large(model, variables, x, block=60, tile=40)
  assert np.abs(short - ref).max() > 1e-4
  with pytest.raises(TypeError, match="float"):
    infer.restore_large(model, variables, (x * 255).astype(np.uint8))
