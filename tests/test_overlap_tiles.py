"""The official NLRN tile protocol: tile placement and averaging."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from n3jax.nn import create_model
from n3jax.overlap_tiles import num_tiles, restore_overlapping, tile_starts


def test_tile_starts_cover_the_image_with_the_last_tile_flush():
  assert tile_starts(256, 43, 7) == list(range(0, 214, 7)) + [213]
  assert tile_starts(43, 43, 7) == [0] and tile_starts(20, 43, 7) == [0]
  assert tile_starts(50, 43, 7) == [0, 7]
  assert num_tiles(256, 256) == 32 * 32 and num_tiles(512, 512) == 68 * 68
  with pytest.raises(ValueError, match="positive"):
    tile_starts(10, 4, 0)


def test_averages_the_tiles_outputs():
  """Each pixel is the mean of the outputs of the tiles covering it (brute force)."""
  model = create_model("dncnn17", depth=2, features=2)
  x = jax.random.uniform(jax.random.PRNGKey(0), (19, 23))
  variables = model.init(jax.random.PRNGKey(1), x[None, :, :, None])
  got = restore_overlapping(model, variables, x, tile=8, stride=3, batch=5)
  total = np.zeros((19, 23))
  count = np.zeros((19, 23))
  for r in tile_starts(19, 8, 3):
    for c in tile_starts(23, 8, 3):
      out = model.apply(variables, x[None, r:r + 8, c:c + 8, None])[0, :, :, 0]
      total[r:r + 8, c:c + 8] += np.asarray(out)
      count[r:r + 8, c:c + 8] += 1
  np.testing.assert_allclose(got, total / count, rtol=1e-5, atol=1e-6)
  for batch in (1, 7, 64):  # padding calls carry no weight
    np.testing.assert_allclose(
        restore_overlapping(model, variables, x, tile=8, stride=3, batch=batch), got,
        rtol=1e-5, atol=1e-6)


def test_an_image_no_larger_than_a_tile_is_one_call():
  model = create_model("nlrn", features=4, embed_features=2, num_steps=1, window=5)
  x = jax.random.uniform(jax.random.PRNGKey(0), (12, 10, 1))
  variables = model.init(jax.random.PRNGKey(1), x[None])
  np.testing.assert_allclose(restore_overlapping(model, variables, x, tile=43),
                             model.apply(variables, x[None])[0], rtol=1e-5, atol=1e-6)


def test_evaluation_runs_either_protocol_and_never_mixes_them(tmp_path):
  from n3jax.evaluate.denoise import evaluate_denoising, make_denoise_fn
  from n3jax.evaluate.report import OutputExistsError
  from tests.helpers.tiny_config import make_fake_data_root
  root = make_fake_data_root(str(tmp_path / "data"), num_train=1, size=48)
  model = create_model("nlrn", features=4, embed_features=2, num_steps=1, window=5)
  variables = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 16, 16, 1)))
  kw = dict(sigma=25, datasets=["set12"], data_root=root, seed=0, progress=False)
  out = str(tmp_path / "out")
  tiles = evaluate_denoising(model, variables, output_dir=out, protocol="tiles", **kw)
  whole = evaluate_denoising(model, variables, protocol="whole", **kw)
  assert tiles["protocol"] == "tiles" and whole["protocol"] == "whole"
  # 48² images: the 43² tiles pad their borders inside the image, so the results differ.
  assert tiles["datasets"]["set12"]["mean_psnr"] != whole["datasets"]["set12"]["mean_psnr"]
  with pytest.raises(OutputExistsError, match="protocol"):
    evaluate_denoising(model, variables, output_dir=out, protocol="whole", **kw)
  with pytest.raises(ValueError, match="protocol must be one of"):
    make_denoise_fn(model, 25.0, protocol="patches")


def test_bad_arguments_and_x64(tmp_path):
  model = create_model("dncnn17", depth=2, features=2)
  x = jnp.zeros((20, 20))
  variables = model.init(jax.random.PRNGKey(1), x[None, :, :, None])
  with pytest.raises(ValueError, match="batch must be a positive integer"):
    restore_overlapping(model, variables, x, batch=0)
  # Under jax_enable_x64 (a subprocess: the flag is global) the index tables still agree.
  import subprocess, sys, textwrap
  code = textwrap.dedent("""
      import jax; jax.config.update("jax_enable_x64", True)
      import jax.numpy as jnp
      from n3jax import infer
      from n3jax.nn import create_model
      from n3jax.overlap_tiles import restore_overlapping
      m = create_model("dncnn17", depth=2, features=2)
      x = jnp.linspace(0, 1, 30 * 30).reshape(30, 30)
      v = m.init(jax.random.PRNGKey(0), x[None, :, :, None])
      a = restore_overlapping(m, v, x, tile=20, stride=7)
      b = infer.restore(m, v, x, tile=8)
      assert a.dtype == b.dtype == jnp.float64 and a.shape == b.shape == (30, 30)
      print("ok")
      """)
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
