"""Evaluation: metrics, data loading, the eval runner and CLI, and real-weight denoising."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from n3jax.data import images
from n3jax.evaluate import metrics
from n3jax.evaluate.denoise import evaluate_denoising, image_key, make_denoise_fn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_psnr_and_ssim():
  rng = np.random.default_rng(0)
  a = rng.uniform(size=(32, 40)).astype(np.float32)
  b = a + 0.1 * rng.normal(size=a.shape).astype(np.float32)
  expected = 10 * np.log10(1 / np.mean((a - b) ** 2, dtype=np.float64))
  assert float(metrics.psnr(jnp.asarray(b), jnp.asarray(a))) == pytest.approx(expected, abs=1e-4)
  assert metrics.ssim(a, a) == pytest.approx(1.0)
  assert 0 < metrics.ssim(b, a) < 0.99
  assert metrics.ssim(0.5 * b + 0.5 * a, a) > metrics.ssim(b, a)
  with pytest.raises(ValueError, match="gray"):
    metrics.ssim(a[None], a[None])


def test_noise_key_depends_on_the_name_only():
  k1, k2 = image_key(0, "01.png"), image_key(0, "02.png")
  assert not np.array_equal(np.asarray(k1), np.asarray(k2))
  assert np.array_equal(np.asarray(k1), np.asarray(image_key(0, "01.png")))
  assert not np.array_equal(np.asarray(k1), np.asarray(image_key(1, "01.png")))


def test_rgb_is_converted_with_the_reference_weights_and_corrupt_files_fail(tmp_path):
  rgb = np.random.default_rng(0).integers(0, 256, size=(12, 10, 3)).astype(np.uint8)
  Image.fromarray(rgb).save(tmp_path / "c.png")
  gray = images.load_gray(str(tmp_path / "c.png"))
  expected = rgb.astype(np.float64) @ np.array(images.GRAY_MATRIX[:3])
  assert gray.shape == (12, 10) and gray.dtype == np.float32
  assert np.abs(gray * 255 - expected).max() <= 0.5 + 1e-3  # rounded to 8 bits
  (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
  with pytest.raises(ValueError, match="bad.png"):
    images.load_gray(str(tmp_path / "bad.png"))


def _fake_root(tmp_path):
  rng = np.random.default_rng(0)
  root = tmp_path / "data"
  (root / "Set12").mkdir(parents=True)
  for name, shape in [("a.png", (40, 40)), ("b.png", (40, 40)), ("c.png", (48, 40))]:
    img = (np.add.outer(np.arange(shape[0]), np.arange(shape[1])) * 3 % 256).astype(np.uint8)
    img = np.clip(img + rng.integers(0, 20, size=shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(root / "Set12" / name)
  return root


def test_evaluate_denoising_writes_consistent_results(tmp_path):
  from n3jax.nn import create_model
  root = _fake_root(tmp_path)
  model = create_model("n3net_tiny")
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 40, 40, 1)))
  out = tmp_path / "out"
  res = evaluate_denoising(model, variables, sigma=25, datasets=["set12"], data_root=str(root),
                           seed=0, output_dir=str(out), progress=False)
  e = res["datasets"]["set12"]
  assert e["num_images"] == 3 and e["num_shapes"] == 2
  assert [r["name"] for r in e["images"]] == ["a.png", "b.png", "c.png"]
  assert e["mean_psnr"] == pytest.approx(np.mean([r["psnr"] for r in e["images"]]))
  # σ = 25 noise on [0, 1] images: 20·log10(255/25) = 20.17 dB, up to the draw.
  assert e["mean_noisy_psnr"] == pytest.approx(20.17, abs=0.3)
  on_disk = json.loads((out / "results.json").read_text())
  assert on_disk["datasets"]["set12"]["mean_psnr"] == pytest.approx(e["mean_psnr"])
  assert "| set12 | 3 |" in (out / "results.md").read_text()
  with pytest.raises(FileNotFoundError, match="no \\*.png images"):
    evaluate_denoising(model, variables, sigma=25, datasets=["bsd68"], data_root=str(root),
                       seed=0, progress=False)


@pytest.mark.slow
def test_eval_cli_end_to_end(tmp_path):
  from n3jax.checkpoint import save_model
  from n3jax.nn import create_model
  root = _fake_root(tmp_path)
  model = create_model("n3net_tiny")
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 40, 40, 1)))
  save_model(tmp_path / "ck", variables, name="n3net_tiny", metadata={"sigma": 25})
  cmd = [sys.executable, os.path.join(REPO, "eval.py"), "--config",
         os.path.join(REPO, "configs", "denoise.py"), "--config.sigma=25",
         "--config.model.name=n3net_tiny",
         f"--config.data_root={root}", f"--checkpoint={tmp_path / 'ck'}", "--datasets=set12",
         f"--output={tmp_path / 'out'}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  res = json.loads((tmp_path / "out" / "results.json").read_text())
  assert res["config"]["sigma"] == 25 and res["datasets"]["set12"]["num_done"] == 3
  # A config that names another model than the checkpoint holds is refused.
  wrong = [c for c in cmd if not c.startswith("--config.model.name")]
  proc = subprocess.run(wrong + [f"--output={tmp_path / 'out2'}"], capture_output=True,
                        text=True, cwd=REPO, timeout=300)
  assert proc.returncode != 0 and "holds a 'n3net_tiny' model" in proc.stderr


def test_training_free_demo_denoiser_improves_psnr():
  from n3jax.demo import knn_patch_denoise
  _, clean = images.builtin_gray_images()[0]
  clean = jnp.asarray(clean[128:256, 128:256])
  noisy = clean + 25 / 255 * jax.random.normal(jax.random.PRNGKey(0), clean.shape)
  gain = float(metrics.psnr(knn_patch_denoise(noisy, 25.0), clean) - metrics.psnr(noisy, clean))
  assert gain > 4.0


@pytest.mark.slow
def test_converted_sigma25_denoises_set12_above_floor(shared, converted_sigma25):
  """Set12 01.png at σ=25 (noise seed 0): measured 30.08 dB (noisy 20.14)."""
  path = os.path.join(shared, "data", "Set12", "01.png")
  if not os.path.isfile(path):
    pytest.skip(f"{path} is absent")
  model, variables, _ = converted_sigma25
  clean = jnp.asarray(images.load_gray(path))
  pred, noisy_psnr, psnr = make_denoise_fn(model, 25.0)(variables, clean,
                                                        image_key(0, "01.png"))
  assert float(noisy_psnr) == pytest.approx(20.14, abs=0.05)
  assert float(psnr) > 29.9


def test_results_table_combines_runs_and_flags_partial_sets(tmp_path):
  from n3jax.evaluate.table import collect, markdown
  # σ=70: an interrupted run (3 of 12 done); σ=50: a data root with 2 of Set12's images.
  for sigma, psnr, done, total in [(25, 30.5, 12, 12), (50, 27.4, 2, 2), (70, 25.0, 3, 12)]:
    d = tmp_path / f"s{sigma}"
    d.mkdir()
    (d / "results.json").write_text(json.dumps({"sigma": sigma, "datasets": {"set12": {
        "num_images": total, "num_done": done, "mean_psnr": psnr, "mean_ssim": 0.8}}}))
  cells = collect([str(tmp_path / f"s{s}") for s in (25, 50, 70)])
  assert set(cells) == {("set12", 25.0), ("set12", 50.0), ("set12", 70.0)}
  table = markdown(cells)
  assert ("| set12 | 30.50 / 0.8000 (30.55), 12 images | 27.40 / 0.8000 (27.43), **partial: "
          "2 of 12 images** | 25.00 / 0.8000 (25.90), **partial: 3 of 12 images** |") in table
  with pytest.raises(ValueError, match="in both"):
    collect([str(tmp_path / "s25"), str(tmp_path / "s25")])
