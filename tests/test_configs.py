"""Configs: the paper's knobs are written in configs/denoise.py and equal the modules'
defaults (defined once, in N3Block); shipped configs are found by name."""

import dataclasses
import os

import pytest

from n3jax import configs
from n3jax.configs import denoise
from n3jax.nn import MODELS, N3Block, N3Net, create_model


def test_paper_knobs_equal_the_module_defaults():
  defaults = {f.name: f.default for f in dataclasses.fields(N3Net)}
  for knob, value in denoise.PAPER_N3NET.items():
    assert defaults[knob] == value, knob
  # N3Net takes its N³ knobs from N3Block instead of repeating them.
  block = {f.name: f.default for f in dataclasses.fields(N3Block)}
  for knob in ("k", "patch_size", "stride", "window", "embed_features", "embed_depth",
               "temp_bias"):
    assert defaults[knob] == block[knob], knob
  assert defaults["interm_channels"] == block["embed_channels"]


@pytest.mark.parametrize("variant", sorted(denoise.VARIANTS))
def test_every_variant_writes_its_knobs_and_builds(variant):
  config = denoise.get_config(variant)
  kwargs = dict(config.model.kwargs)
  if variant not in ("dncnn17", "dncnn18"):
    assert {k: kwargs[k] for k in denoise.N3_KNOBS} == {k: denoise.PAPER_N3NET[k]
                                                         for k in denoise.N3_KNOBS}
  model = create_model(config.model.name, **kwargs)
  assert config.model.name in MODELS and model is not None
  smoke = denoise.get_config(f"{variant},smoke")
  assert dict(smoke.model.kwargs) != kwargs  # smoke shrinks the model


def test_the_full_config_builds_the_paper_model():
  config = denoise.get_config()
  assert create_model(config.model.name, **config.model.kwargs) == N3Net()


def test_shipped_configs_resolve_by_name(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # outside the checkout
  shipped = os.path.join(configs.CONFIG_DIR, "denoise.py")
  assert configs.available() == ["correspondences", "denoise", "nlrn", "realnoise", "sisr",
                                 "vdsr"]
  for arg in ("denoise", "denoise.py", "configs/denoise.py"):
    assert configs.resolve_config_arg(arg + ":smoke") == shipped + ":smoke"
  assert configs.resolve_config_arg("nonsense.py") == "nonsense.py"
  (tmp_path / "configs" / "denoise").mkdir(parents=True)  # a folder does not shadow it
  assert configs.resolve_config_arg("configs/denoise") == shipped
  (tmp_path / "denoise.py").write_text("# the user's own")
  assert configs.resolve_config_arg("denoise.py") == "denoise.py"  # an existing file wins
  assert configs.resolve_config_flags(["prog", "--config", "vdsr", "--workdir=w"]) == [
      "prog", "--config", os.path.join(configs.CONFIG_DIR, "vdsr.py"), "--workdir=w"]


def test_realnoise_config_carries_the_release_protocol():
  from n3jax.configs import realnoise
  from n3jax.data.poisson_gaussian import RealNoiseProtocol
  from n3jax.train.config_check import ConfigError, validate_config
  config = realnoise.get_config()
  validate_config(config)
  assert RealNoiseProtocol.from_config(config.noise) == RealNoiseProtocol()
  assert (config.noise.log10_a_range, config.noise.log10_b_offset,
          config.noise.train_power_range, config.noise.train_scale_range,
          config.noise.test_power, config.noise.test_scales, config.noise.clip) == (
              (-4.0, -1.0), -2.3, (1.25, 10.0), (0.25, 1.0), 2.5, (0.5, 1.0), True)
  assert (config.val_a, config.val_b) == (0.01, 0.0001)  # the release's testnlf default
  assert (0.01, 0.0001) in config.eval_levels
  # The release's network (args.pkl) is the registered default.
  model = create_model(config.model.name, **config.model.kwargs)
  assert (model.num_dncnns, model.depth, model.features, model.interm_channels,
          model.embed_channels, model.k, model.patch_size, model.stride) == (
              3, 9, 128, 32, 8, 3, 10, 5)
  assert (config.crop_size, config.batch_size, config.num_epochs) == (80, 32, 50)
  baseline = realnoise.get_config("dncnn")
  assert baseline.model.name == "dncnn_pg"
  for arg in ("smoke", "dncnn,smoke"):
    smoke = realnoise.get_config(arg)
    validate_config(smoke)
    assert smoke.num_epochs * smoke.steps_per_epoch < 2000
  for field, value, message in (("val_a", -1.0, "val_a/val_b"),
                                ("eval_levels", ((0.01,),), "eval_levels"),
                                ("noise.test_power", 0.0, "config.noise"),
                                ("channels", 3, "must be 1 for the real-noise")):
    bad = realnoise.get_config()
    node, leaf = (bad.noise, "test_power") if "." in field else (bad, field)
    node[leaf] = value
    with pytest.raises(ConfigError, match=message):
      validate_config(bad)
  with pytest.raises(ValueError, match="choose one variant"):
    realnoise.get_config("n3net,dncnn")
