"""Super-resolution: MATLAB bicubic, YCbCr, the bicubic baseline, SR models, data and training."""

import glob
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from n3jax.configs.sisr import get_config as sisr_config
from n3jax.configs.vdsr import get_config as vdsr_config
from n3jax.checkpoint import load_model
from n3jax.data import bicubic, pipeline
from n3jax.evaluate import sisr
from n3jax.nn import create_model
from n3jax.train.loop import train_and_evaluate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The standard bicubic figures of the SR literature (Y, shave = scale), x2 / x3 / x4.
STANDARD_BICUBIC = {"set5": (33.66, 30.39, 28.42), "set14": (30.24, 27.55, 26.00)}


# --- MATLAB imresize --------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_downscale_reproduces_matlab_lr_images_of_set5(shared, scale):
  hr_files = sorted(glob.glob(os.path.join(shared, "data", "Set5", "HR", "*.png")))
  assert len(hr_files) == 5
  for f in hr_files:
    name = os.path.basename(f)[:-4]
    hr = np.asarray(Image.open(f).convert("RGB"))
    ref = np.asarray(Image.open(os.path.join(shared, "data", "Set5", "LR_bicubic", f"X{scale}",
                                             f"{name}x{scale}.png")).convert("RGB"))
    ours = bicubic.imresize(bicubic.modcrop(hr, scale), 1.0 / scale)
    assert ours.dtype == np.uint8 and ours.shape == ref.shape
    # Measured: identical, every pixel (max |diff| 0).
    np.testing.assert_array_equal(ours, ref)


def test_imresize_shapes_and_affine_invariance():
  x = np.random.default_rng(0).random((13, 17))
  assert bicubic.imresize(x, 1 / 3).shape == (5, 6)  # ceil, as MATLAB
  assert bicubic.imresize(x, 2).shape == (26, 34)
  # Weights sum to one: an affine change of intensities commutes with resizing.
  for s in (0.5, 1 / 3, 2, 3):
    np.testing.assert_allclose(bicubic.imresize(3 * x + 7, s), 3 * bicubic.imresize(x, s) + 7,
                               atol=1e-10)
  np.testing.assert_allclose(bicubic.imresize(x, 1.0), x, atol=1e-12)  # identity at scale 1
  np.testing.assert_allclose(bicubic.imresize(np.full((9, 9), 0.3), 1 / 3), 0.3, atol=1e-12)


def test_imresize_antialias_widens_the_kernel_when_downscaling():
  w_aa, _ = bicubic.contributions(12, 4, 1 / 3, antialias=True)
  w_plain, _ = bicubic.contributions(12, 4, 1 / 3, antialias=False)
  assert w_aa.shape[1] > w_plain.shape[1]
  np.testing.assert_allclose(w_aa.sum(1), 1.0)


def test_imresize_rejects_bad_input():
  with pytest.raises(ValueError, match="positive"):
    bicubic.imresize(np.zeros((8, 8)), 0)
  with pytest.raises(ValueError, match=r"\[H, W\]"):
    bicubic.imresize(np.zeros((2, 2, 2, 2)), 2)
  with pytest.raises(ValueError, match="smaller than the scale"):
    bicubic.modcrop(np.zeros((2, 8)), 3)


def test_ycbcr_is_bt601_with_matlab_ranges():
  assert bicubic.rgb_to_ycbcr(np.array([0, 0, 0]))[0] == pytest.approx(16.0)
  assert bicubic.rgb_to_ycbcr(np.array([255, 255, 255]))[0] == pytest.approx(235.0)
  rgb = np.random.default_rng(1).random((4, 5, 3)) * 255
  np.testing.assert_allclose(bicubic.ycbcr_to_rgb(bicubic.rgb_to_ycbcr(rgb)), rgb, atol=1e-9)
  gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
  np.testing.assert_array_equal(bicubic.luminance(gray), gray)  # gray is its own Y


def test_to_uint8_rounds_half_away_from_zero_and_saturates():
  np.testing.assert_array_equal(bicubic.to_uint8(np.array([0.5, 1.5, 2.49, -3, 300])),
                                [1, 2, 2, 0, 255])


# --- the bicubic baseline ---------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["set5", "set14"])
def test_bicubic_baseline_matches_the_standard_figures(shared, dataset):
  res = sisr.evaluate_sr(None, None, datasets=[dataset], scales=[2, 3, 4],
                         data_root=os.path.join(shared, "data"), progress=False)
  got = [res["datasets"][dataset][f"x{s}"]["mean_psnr"] for s in (2, 3, 4)]
  np.testing.assert_allclose(got, STANDARD_BICUBIC[dataset], atol=0.02)


def test_sr_scores_shave_the_border():
  target = np.full((20, 20), 100, np.uint8)
  pred = target.astype(np.float64)
  pred[:3] = 0  # only inside the shaved border for scale 3
  assert sisr.sr_scores(pred, target, 3)[0] == float("inf")
  assert np.isfinite(sisr.sr_scores(pred, target, 2)[0])


def test_eval_cli_bicubic_writes_the_table(shared, tmp_path):
  out = tmp_path / "bic"
  subprocess.run([sys.executable, os.path.join(REPO, "eval.py"),
                  f"--config={os.path.join(REPO, 'configs', 'sisr.py')}",
                  "--checkpoint=bicubic", "--datasets=set5", f"--output={out}"],
                 check=True, cwd=REPO, capture_output=True)
  res = json.loads((out / "results.json").read_text())
  assert res["model"] == "bicubic" and res["scales"] == [2, 3, 4]
  assert res["datasets"]["set5"]["x2"]["mean_psnr"] == pytest.approx(33.66, abs=0.02)
  assert "| set5 | 33.656 / " in (out / "results.md").read_text()


# --- models -----------------------------------------------------------------------------


def test_vdsr_has_the_papers_size_and_starts_as_the_identity():
  model = create_model("vdsr")
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 24, 24, 1))
  variables = model.init(jax.random.PRNGKey(1), x)
  convs = [k for k in variables["params"] if k.startswith("conv")]
  assert len(convs) == 20 and "batch_stats" not in variables
  assert sum(p.size for p in jax.tree_util.tree_leaves(variables["params"])) == 665_921
  np.testing.assert_allclose(model.apply(variables, x), x, atol=1e-6)


def test_n3net_sisr_structure_and_identity_start():
  model = create_model("n3net_sisr")
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 30, 30, 1))
  variables = model.init(jax.random.PRNGKey(1), x)
  params = variables["params"]
  assert sorted(k for k in params if k.startswith("dncnn")) == ["dncnn_0", "dncnn_1", "dncnn_2"]
  assert sorted(k for k in params if k.startswith("n3block")) == ["n3block_0", "n3block_1"]
  for i in range(3):  # VDSR stages of depth 7, no BatchNorm in them
    assert len([k for k in params[f"dncnn_{i}"] if k.startswith("conv")]) == 7
    assert f"dncnn_{i}" not in variables["batch_stats"]
  assert model.k == 7
  np.testing.assert_allclose(model.apply(variables, x), x, atol=1e-6)


# --- data and training ------------------------------------------------------------------


def _rgb_source(n=4, size=60):
  rng = np.random.default_rng(0)
  return [{"image": rng.integers(0, 256, (size, size + 6, 3), dtype=np.uint8)}
          for _ in range(n)]


def test_sr_batch_is_a_pure_function_of_the_step_and_degrades_each_crop():
  source = _rgb_source()
  a = pipeline.make_sr_batch(source, 5, seed=1, batch_size=6, crop_size=24, scales=(2, 3, 4))
  b = pipeline.make_sr_batch(source, 5, seed=1, batch_size=6, crop_size=24, scales=(2, 3, 4))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert a["input"].shape == a["target"].shape == (6, 24, 24, 1)
  for i in range(6):
    s = int(a["scale"][i])
    y = a["target"][i, :, :, 0].astype(np.float64)
    expect = bicubic.imresize(bicubic.imresize(y, 1 / s), s)
    np.testing.assert_allclose(a["input"][i, :, :, 0], expect, atol=1e-5)
  plans = [pipeline.scale_plan(t, seed=1, batch_size=64, scales=(2, 3, 4)) for t in range(3)]
  assert set(np.concatenate(plans)) == {2, 3, 4}
  # Host shards are slices of the global batch.
  half = pipeline.make_sr_batch(source, 5, seed=1, batch_size=6, crop_size=24, scales=(2, 3, 4),
                                shard_index=1, num_shards=2)
  np.testing.assert_array_equal(half["target"], a["target"][3:])
  with pytest.raises(ValueError, match="divisible"):
    pipeline.make_sr_batch(source, 0, seed=1, batch_size=2, crop_size=25, scales=(2, 3))


def _fake_sr_root(root):
  rng = np.random.default_rng(0)
  for folder, count, ext in (("T91", 6, "bmp"), ("BSDS500/train", 2, "jpg"), ("Set5/HR", 2, "png")):
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    for i in range(count):
      coarse = rng.random((8, 8, 3))
      img = np.kron(coarse, np.ones((8, 8, 1)))
      Image.fromarray((255 * img).astype(np.uint8)).save(os.path.join(root, folder, f"{i}.{ext}"))
  return root


@pytest.mark.parametrize("get_config", [sisr_config, vdsr_config])
def test_sr_training_runs_validates_on_y_and_exports(tmp_path, get_config):
  config = get_config("smoke")
  config.data_root = _fake_sr_root(str(tmp_path / "data"))
  config.tfds_dir = str(tmp_path / "tfds")
  config.crop_size = 24
  config.batch_size = 4
  config.num_train_steps = 6
  config.val_every = 6
  config.checkpoint_every = 6
  config.log_every = 3
  config.progress = False
  config.scales = (2, 3, 4)  # the full config's joint training
  if config.model.name == "n3net_sisr":
    config.model.kwargs.update(features=8, k=2, window=5, embed_features=8)
  else:
    config.model.kwargs.update(features=8, depth=4)
  workdir = str(tmp_path / "run")
  summary = train_and_evaluate(config, workdir)
  metrics = json.loads(open(os.path.join(workdir, "metrics.json")).read())
  assert metrics["step"] == 6 and np.isfinite(metrics["val_psnr"])
  assert metrics["val_images"] == 2 and "val_psnr_x2" in metrics
  # The validation input is the bicubic image: its PSNR is the bicubic baseline.
  assert metrics["val_input_psnr"] > 20
  assert all(np.isfinite(v) for v in summary["train_loss"].values())
  model, variables, meta = load_model(os.path.join(workdir, "model"))
  assert meta["task"] == "sisr" and meta["scales"] == list(config.scales)
  assert "sigma" not in meta
  out = model.apply(variables, jnp.zeros((1, 24, 24, 1)))
  assert out.shape == (1, 24, 24, 1)
