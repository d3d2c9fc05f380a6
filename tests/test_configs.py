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
  assert configs.available() == ["denoise", "nlrn", "sisr", "vdsr"]
  for arg in ("denoise", "denoise.py", "configs/denoise.py"):
    assert configs.resolve_config_arg(arg + ":smoke") == shipped + ":smoke"
  assert configs.resolve_config_arg("nonsense.py") == "nonsense.py"
  (tmp_path / "configs" / "denoise").mkdir(parents=True)  # a folder does not shadow it
  assert configs.resolve_config_arg("configs/denoise") == shipped
  (tmp_path / "denoise.py").write_text("# the user's own")
  assert configs.resolve_config_arg("denoise.py") == "denoise.py"  # an existing file wins
  assert configs.resolve_config_flags(["prog", "--config", "vdsr", "--workdir=w"]) == [
      "prog", "--config", os.path.join(configs.CONFIG_DIR, "vdsr.py"), "--workdir=w"]
