"""``n3jax-denoise`` on the files users have: bit depths, modes, sizes, bad files, existing
outputs, model choice. Most tests use a tiny untrained model installed in a temporary model
folder: they check the file handling, which must equal ``infer.restore_large`` exactly."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from n3jax import denoise, infer, pretrained
from n3jax.checkpoint import load_model, save_model
from n3jax.data import imagefile
from n3jax.nn import create_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _install_tiny(model_dir, sigma, seed=0):
  model = create_model("n3net_tiny")
  variables = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 32, 32, 1)))
  path = os.path.join(model_dir, pretrained.installed_name(sigma))
  save_model(path, variables, name="n3net_tiny", metadata={"sigma": sigma, "task": "denoise"})
  return path


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
  """A model folder with tiny σ=25 and σ=50 models (different weights)."""
  root = tmp_path_factory.mktemp("models")
  return {25: _install_tiny(str(root), 25.0, seed=0), 50: _install_tiny(str(root), 50.0, seed=1),
          "dir": str(root)}


@pytest.fixture
def env(tiny_models, tmp_path, monkeypatch):
  monkeypatch.setenv(pretrained.MODEL_DIR_ENV, tiny_models["dir"])
  monkeypatch.setenv(pretrained.PRETRAINED_ENV, str(tmp_path / "no-official-weights"))
  return tiny_models


def _expected(model_path, unit):
  """What the CLI must compute: each colour channel through restore_large."""
  model, variables, _ = load_model(model_path)
  return np.stack([infer.restore_large(model, variables, unit[..., c])
                   for c in range(unit.shape[-1])], axis=-1)


def _rng_image(shape, top, seed=0):
  rng = np.random.default_rng(seed)
  smooth = np.kron(rng.random((shape[0] // 8 + 1, shape[1] // 8 + 1) + shape[2:]),
                   np.ones((8, 8) + (1,) * (len(shape) - 2)))[:shape[0], :shape[1]]
  noisy = np.clip(smooth + 0.1 * rng.standard_normal(smooth.shape), 0, 1)
  return np.rint(noisy * top)


def test_16bit_png_gives_16bit_output_computed_at_16_bits(env, tmp_path, capsys):
  samples = _rng_image((40, 52), 65535).astype(np.uint16)
  samples[0, 0] = 3  # a dark pixel: the scale comes from the bit depth, not the maximum
  Image.fromarray(samples).save(tmp_path / "scan.png")
  assert denoise.main([str(tmp_path / "scan.png"), "--sigma", "25", "--no-progress"]) == 0
  out = Image.open(tmp_path / "scan_denoised.png")
  assert out.mode == "I;16"
  got = np.asarray(out)
  want = imagefile.from_unit(_expected(env[25], imagefile.to_unit(samples[..., None])), np.uint16)
  np.testing.assert_array_equal(got, want[..., 0])
  assert "16 bit" in capsys.readouterr().out


def test_palette_and_rgba_pngs(env, tmp_path):
  rgb = _rng_image((33, 47, 3), 255).astype(np.uint8)
  Image.fromarray(rgb).quantize(64).save(tmp_path / "palette.png")
  rgba = np.concatenate([rgb, _rng_image((33, 47, 1), 255, seed=3).astype(np.uint8)], axis=-1)
  Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
  assert denoise.main([str(tmp_path / "palette.png"), str(tmp_path / "rgba.png"),
                       "--sigma", "25", "--no-progress"]) == 0
  pal_in = np.asarray(Image.open(tmp_path / "palette.png").convert("RGB"))
  pal_out = Image.open(tmp_path / "palette_denoised.png")
  assert pal_out.mode == "RGB"  # a palette cannot hold denoised values
  want = imagefile.from_unit(_expected(env[25], imagefile.to_unit(pal_in)), np.uint8)
  np.testing.assert_array_equal(np.asarray(pal_out), want)
  rgba_out = np.asarray(Image.open(tmp_path / "rgba_denoised.png"))
  assert rgba_out.shape == rgba.shape
  np.testing.assert_array_equal(rgba_out[..., 3], rgba[..., 3])  # alpha kept as it was
  want = imagefile.from_unit(_expected(env[25], imagefile.to_unit(rgba[..., :3])), np.uint8)
  np.testing.assert_array_equal(rgba_out[..., :3], want)


def test_tiny_images_and_exif_orientation(env, tmp_path):
  small = _rng_image((20, 20), 255).astype(np.uint8)
  Image.fromarray(small).save(tmp_path / "small.png")
  for shape in ((1, 1), (5, 9)):  # smaller than an N³ patch: mirrored out, then cropped
    Image.fromarray(_rng_image(shape, 255).astype(np.uint8)).save(tmp_path / f"{shape[0]}.png")
    assert denoise.main([str(tmp_path / f"{shape[0]}.png"), "--sigma", "25",
                         "--no-progress"]) == 0
    assert np.asarray(Image.open(tmp_path / f"{shape[0]}_denoised.png")).shape == shape
  photo = _rng_image((24, 40, 3), 255).astype(np.uint8)
  exif = Image.Exif()
  exif[imagefile.EXIF_ORIENTATION] = 6  # stored sideways: displayed rotated by 90°
  Image.fromarray(photo).save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
  assert denoise.main([str(tmp_path / "small.png"), str(tmp_path / "phone.jpg"),
                       "--sigma", "25", "--no-progress"]) == 0
  assert np.asarray(Image.open(tmp_path / "small_denoised.png")).shape == (20, 20)
  out = Image.open(tmp_path / "phone_denoised.jpg")
  assert out.size == (24, 40)  # (width, height) of the displayed image
  assert out.getexif().get(imagefile.EXIF_ORIENTATION, 1) == 1


def test_16bit_colour_and_float_tiffs(env, tmp_path):
  import tifffile
  rgb16 = _rng_image((30, 36, 3), 65535).astype(np.uint16)
  tifffile.imwrite(tmp_path / "rgb16.tif", rgb16, photometric="rgb")
  gray = _rng_image((30, 36), 1.0).astype(np.float32)
  tifffile.imwrite(tmp_path / "float.tif", gray)
  assert denoise.main([str(tmp_path / "rgb16.tif"), str(tmp_path / "float.tif"),
                       "--sigma", "25", "--no-progress"]) == 0
  got = tifffile.imread(tmp_path / "rgb16_denoised.tif")
  assert got.dtype == np.uint16 and got.shape == rgb16.shape
  np.testing.assert_array_equal(
      got, imagefile.from_unit(_expected(env[25], imagefile.to_unit(rgb16)), np.uint16))
  f = tifffile.imread(tmp_path / "float_denoised.tif")
  assert f.dtype == np.float32
  np.testing.assert_allclose(f, _expected(env[25], gray[..., None])[..., 0], atol=1e-6)


def test_a_bad_file_gets_one_line_and_the_others_are_written(env, tmp_path, capsys):
  good = _rng_image((24, 24), 255).astype(np.uint8)
  Image.fromarray(good).save(tmp_path / "a.png")
  Image.fromarray(good).save(tmp_path / "c.png")
  (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a corrupt PNG
  code = denoise.main([str(tmp_path / p) for p in ("a.png", "b.png", "c.png", "missing.png")]
                      + ["--sigma", "25", "--no-progress"])
  assert code != 0
  errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
  assert len(errors) == 2 and "b.png" in errors[0] and "missing.png" in errors[1]
  assert (tmp_path / "a_denoised.png").exists() and (tmp_path / "c_denoised.png").exists()
  assert not (tmp_path / "b_denoised.png").exists()


def test_existing_outputs_and_inputs_are_never_overwritten(env, tmp_path, capsys):
  img = _rng_image((24, 24), 255).astype(np.uint8)
  Image.fromarray(img).save(tmp_path / "x.png")
  (tmp_path / "x_denoised.png").write_bytes(b"the user's own file")
  assert denoise.main([str(tmp_path / "x.png"), "--sigma", "25", "--no-progress"]) != 0
  assert (tmp_path / "x_denoised.png").read_bytes() == b"the user's own file"
  assert "--overwrite" in capsys.readouterr().err
  # An output that is itself one of the inputs: refused even with --overwrite.
  Image.fromarray(img).save(tmp_path / "x_denoised.png")
  before = (tmp_path / "x_denoised.png").read_bytes()
  assert denoise.main([str(tmp_path / "x.png"), str(tmp_path / "x_denoised.png"),
                       "--sigma", "25", "--overwrite", "--no-progress"]) != 0
  assert (tmp_path / "x_denoised.png").read_bytes() == before
  assert (tmp_path / "x_denoised_denoised.png").exists()  # the other input went on
  # Two inputs with one output name: the second may not replace the first's result.
  (tmp_path / "b").mkdir()
  Image.fromarray(img).save(tmp_path / "b" / "x.png")
  assert denoise.main([str(tmp_path / "b" / "x.png"), str(tmp_path / "x.png"), "--out",
                       str(tmp_path / "o"), "--overwrite", "--no-progress"]) != 0
  assert "another input" in capsys.readouterr().err
  assert os.listdir(tmp_path / "o") == ["x_denoised.png"]
  for extra in ("b", "o"):
    __import__("shutil").rmtree(tmp_path / extra)
  # --overwrite replaces an output that is not an input; no temporary files are left.
  (tmp_path / "x_denoised.png").write_bytes(b"old result")
  assert denoise.main([str(tmp_path / "x.png"), "--sigma", "25", "--overwrite",
                       "--no-progress"]) == 0
  assert Image.open(tmp_path / "x_denoised.png").size == (24, 24)
  assert sorted(os.listdir(tmp_path)) == ["x.png", "x_denoised.png", "x_denoised_denoised.png"]


def test_sigma_auto_picks_the_nearest_model_and_says_so(env, tmp_path, capsys):
  rng = np.random.default_rng(0)
  clean = np.kron(rng.random((8, 8)), np.ones((8, 8)))
  noisy = np.clip(clean + 45 / 255 * rng.standard_normal(clean.shape), 0, 1)
  Image.fromarray(np.rint(noisy * 65535).astype(np.uint16)).save(tmp_path / "n.png")
  assert denoise.main([str(tmp_path / "n.png"), "--no-progress"]) == 0
  out = capsys.readouterr().out
  assert "estimated σ=" in out and "σ=50 model" in out
  assert denoise.main([str(tmp_path / "n.png"), "--sigma", "30", "--out",
                       str(tmp_path / "o"), "--no-progress"]) == 0
  assert "σ=25 model" in capsys.readouterr().out
  assert (tmp_path / "o" / "n_denoised.png").exists()


def test_without_weights_it_says_how_to_get_them(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv(pretrained.MODEL_DIR_ENV, str(tmp_path / "empty"))
  monkeypatch.setenv(pretrained.PRETRAINED_ENV, str(tmp_path / "empty"))
  Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "a.png")
  assert denoise.main([str(tmp_path / "a.png")]) == 2
  err = capsys.readouterr().err
  assert "n3jax-convert" in err and "--install" in err and pretrained.OFFICIAL_URL.format(
      sigma=25) in err
  assert not (tmp_path / "a_denoised.png").exists()


def test_bad_arguments_are_clear(env, tmp_path, capsys):
  for bad in (["--sigma", "-3"], ["--sigma", "nan"], ["--sigma", "loud"], ["--tile", "0"]):
    with pytest.raises(SystemExit) as e:
      denoise.main(["x.png"] + bad)
    assert e.value.code == 2
  assert "must be" in capsys.readouterr().err


def test_official_weights_remove_noise(shared, tmp_path, monkeypatch, capsys):
  from skimage import data as skdata
  monkeypatch.setenv(pretrained.MODEL_DIR_ENV, str(tmp_path / "empty"))
  monkeypatch.setenv(pretrained.PRETRAINED_ENV, os.path.join(shared, "pretrained"))
  clean = skdata.camera()[160:256, 200:328].astype(np.float64)
  noisy = np.clip(clean + 25 * np.random.default_rng(0).standard_normal(clean.shape), 0, 255)
  Image.fromarray(np.rint(noisy).astype(np.uint8)).save(tmp_path / "cam.png")
  assert denoise.main([str(tmp_path / "cam.png"), "--no-progress"]) == 0
  assert "official σ=25 model" in capsys.readouterr().out
  out = np.asarray(Image.open(tmp_path / "cam_denoised.png"), np.float64)
  psnr = lambda a: 10 * np.log10(255 ** 2 / np.mean((a - clean) ** 2))  # noqa: E731
  assert psnr(out) > psnr(np.rint(noisy)) + 5


@pytest.mark.slow
def test_a_12_megapixel_photo_in_bounded_memory(tmp_path, monkeypatch):
  """4000x3000 RGB in a fresh process; its peak RSS is printed. A tiny DnCNN keeps this
  quick: the blocks and the file handling are what is tested (the official N³Net on such a
  photo: bench/denoise_photo.py)."""
  model = create_model("dncnn17", depth=3, features=8)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 1)))
  save_model(tmp_path / "models" / "tiny", variables, name="dncnn17",
             kwargs={"depth": 3, "features": 8}, metadata={"sigma": 25, "task": "denoise"})
  monkeypatch.setenv(pretrained.MODEL_DIR_ENV, str(tmp_path / "models"))
  rng = np.random.default_rng(0)
  photo = np.kron(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
  Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=90)
  # VmHWM: this process's own high-water mark (ru_maxrss would include the forking
  # pytest process's).
  script = ("import re, sys; from n3jax import denoise; code = denoise.main(sys.argv[1:]);"
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read());"
            "print('PEAK_RSS_MB', int(hwm.group(1)) / 1024); sys.exit(code)")
  proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "photo.jpg"),
                         "--sigma", "25", "--no-progress"], capture_output=True, text=True,
                        cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, timeout=900)
  assert proc.returncode == 0, proc.stderr[-2000:]
  peak = float(proc.stdout.split("PEAK_RSS_MB")[1].split()[0])
  print(f"4000x3000 RGB, tiny DnCNN: peak RSS {peak:.0f} MB")
  out = Image.open(tmp_path / "photo_denoised.jpg")
  assert out.size == (4000, 3000) and out.mode == "RGB"
  # The photo and its float copies are ~0.3 GB; whole-image N³ intermediates would be 10x.
  assert peak < 2500


def test_ctrl_c_leaves_no_partial_output(env, tmp_path, monkeypatch, capsys):
  Image.fromarray(_rng_image((24, 24), 255).astype(np.uint8)).save(tmp_path / "a.png")
  Image.fromarray(_rng_image((24, 24), 255).astype(np.uint8)).save(tmp_path / "b.png")
  real_save = Image.Image.save

  def interrupted_save(self, fp, *args, **kwargs):  # Ctrl-C while b's output is written
    if "b_denoised" in str(fp):
      real_save(self, fp, *args, **kwargs)
      raise KeyboardInterrupt
    return real_save(self, fp, *args, **kwargs)

  monkeypatch.setattr(Image.Image, "save", interrupted_save)
  assert denoise.main([str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--sigma", "25",
                       "--no-progress"]) == 130
  assert "interrupted at" in capsys.readouterr().err
  assert sorted(os.listdir(tmp_path)) == ["a.png", "a_denoised.png", "b.png"]
