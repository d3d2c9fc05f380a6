"""Reliability: what a careless or hostile user does must not lose files, save broken state,
hang on a hostile file, or give silently wrong results (issue 13's cases).

The subprocess and multi-run training cases are marked ``slow``; the rest are fast.
"""

import glob
import json
import logging
import os
import pickle
import struct
import subprocess
import sys
import time
import tracemalloc
import warnings
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from n3jax import infer
from n3jax.atomic import OutputExistsError
from n3jax.checkpoint import ModelFileError, load_model, save_model
from n3jax.convert import CorruptCheckpointError, load_legacy_checkpoint
from n3jax.nn import create_model
from n3jax.train import checkpoints
from n3jax.train.config_check import ConfigError, validate_config
from tests.helpers.tiny_config import make_fake_data_root, tiny_config
from tests.test_convert import _header, write_legacy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
  return make_fake_data_root(str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def small_dncnn(tmp_path_factory):
  """A saved 3-layer DnCNN (fast to build and run): ``(folder, model, variables)``."""
  model = create_model("dncnn17", depth=3, features=4)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 1)))
  folder = tmp_path_factory.mktemp("models") / "dncnn"
  save_model(folder, variables, name="dncnn17", kwargs={"depth": 3, "features": 4},
             metadata={"sigma": 25})
  return str(folder), model, variables


def _copy_model(src, dest):
  import shutil
  shutil.copytree(src, dest)
  return dest


def _largest_file(folder):
  files = [f for f in glob.glob(os.path.join(folder, "**"), recursive=True) if os.path.isfile(f)]
  return max(files, key=os.path.getsize)


def _truncate(path):
  data = open(path, "rb").read()
  open(path, "wb").write(data[:len(data) // 2])


# --- hostile legacy files ------------------------------------------------------------------


def _pickle_file(tmp_path, name, body: bytes):
  path = tmp_path / name
  path.write_bytes(_header() + body + pickle.dumps([], protocol=2))
  return str(path)


def _billion_laughs() -> bytes:
  """Ten lists of ten references to the previous list, 30 levels: 10^30 leaves, ~400 bytes."""
  ops = bytearray(b"\x80\x02]q\x00(X\x03\x00\x00\x00lolq\x01e")  # memo 0 = ["lol"]
  for level in range(1, 31):
    ops += b"]" + b"(" + (b"h" + bytes([level - 1])) * 10 + b"e" + b"q" + bytes([level])
  return bytes(ops + b".")


def _deeply_nested(depth: int = 100_000) -> bytes:
  return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


@pytest.mark.parametrize("name, body, message", [
    ("laughs.t7", _billion_laughs(), "more than"),
    ("nested.t7", _deeply_nested(), "nested deeper"),
], ids=["billion_laughs", "deeply_nested"])
def test_hostile_pickles_are_refused_fast_in_bounded_memory(tmp_path, name, body, message):
  path = _pickle_file(tmp_path, name, body)
  assert os.path.getsize(path) < 300_000
  tracemalloc.start()
  start = time.perf_counter()
  with pytest.raises(CorruptCheckpointError, match=message) as info:
    load_legacy_checkpoint(path)
  seconds = time.perf_counter() - start
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  assert seconds < 5 and peak < 64 * 2**20, (seconds, peak)
  assert path in str(info.value) and "\n" not in str(info.value) and len(str(info.value)) < 300


def test_a_storage_that_claims_more_bytes_than_the_file_holds_is_not_allocated(tmp_path):
  path = tmp_path / "claims.t7"
  write_legacy(path, {"w": ("0", 0, (2,), (1,))}, {"0": np.ones(2, np.float32)},
               numel_override={"0": 2})
  data = bytearray(path.read_bytes())
  # The storage header is the last 8 + 8 bytes' first 8: claim 2**40 elements instead of 2.
  data[-16:-8] = struct.pack("<q", 2**40)
  path.write_bytes(bytes(data))
  with pytest.raises(CorruptCheckpointError, match="claims|expected"):
    load_legacy_checkpoint(path)


def test_non_finite_official_weights_are_refused(tmp_path):
  from tests.test_convert import _synthetic_state
  from n3jax.convert import state_dict_to_variables
  state = dict(_synthetic_state())
  name = next(iter(state))
  state[name] = state[name].copy()
  state[name].flat[0] = np.nan
  with pytest.raises(ValueError, match=f"{name} holds 1 NaN/inf"):
    state_dict_to_variables(state)


# --- model folders -------------------------------------------------------------------------


def test_corrupt_model_folders_give_one_line_naming_the_file(small_dncnn, tmp_path):
  folder, _, _ = small_dncnn
  cases = {}
  bad_json = _copy_model(folder, tmp_path / "json")
  (bad_json / "model.json").write_text('{"model": {"name": "dncnn17", "kwa')
  cases["json"] = (bad_json, "model.json: not a readable model spec")
  truncated = _copy_model(folder, tmp_path / "truncated")
  _truncate(_largest_file(truncated / "variables"))
  cases["truncated"] = (truncated, "variables: unreadable variables")
  for kwargs, message in [({"depth": 3, "features": 4, "colour": 1}, "'colour' is not an attribute"),
                          ({"depth": "3", "features": 4}, "depth='3' should be a int"),
                          ({"depth": 3, "features": 8}, "do not fit model DnCNN"),
                          ({"depth": 4, "features": 4}, "missing")]:
    d = _copy_model(folder, tmp_path / f"kw{len(cases)}")
    spec = json.loads((d / "model.json").read_text())
    spec["model"]["kwargs"] = kwargs
    (d / "model.json").write_text(json.dumps(spec))
    cases[str(kwargs)] = (d, message)
  unknown = _copy_model(folder, tmp_path / "unknown")
  spec = json.loads((unknown / "model.json").read_text())
  spec["model"]["name"] = "resnet"
  (unknown / "model.json").write_text(json.dumps(spec))
  cases["unknown"] = (unknown, "unknown model 'resnet'")
  for what, (d, message) in cases.items():
    with pytest.raises(ModelFileError) as info:
      load_model(d)
    text = str(info.value)
    assert message in text and str(d) in text and "\n" not in text, (what, text)


def test_non_finite_weights_never_load(small_dncnn, tmp_path):
  _, model, variables = small_dncnn
  broken = jax.tree_util.tree_map(lambda x: np.full_like(np.asarray(x), np.nan), variables)
  save_model(tmp_path / "nan", broken, name="dncnn17", kwargs={"depth": 3, "features": 4})
  with pytest.raises(ModelFileError, match="hold NaN/inf"):
    load_model(tmp_path / "nan")


# --- train state ---------------------------------------------------------------------------


@flax.struct.dataclass
class _State:
  """A small stand-in for the train state (``checkpoints.save`` reads ``.step``)."""
  step: Any
  params: Any
  opt: Any


def _state(step, value=1.0, shape=(3, 2)):
  return _State(step=np.asarray(step, np.int32), params={"w": np.full(shape, value, np.float32)},
                opt={"mu": np.zeros(4, np.float32)})


def _raw_save(manager, state):
  """Saves without n3jax's checks (as a crashed or older writer might have)."""
  from flax import serialization
  manager.save(int(state.step), args=checkpoints.ocp.args.StandardSave(
      serialization.to_state_dict(state)), force=True)


def test_save_refuses_non_finite_state_and_writes_nothing(tmp_path):
  manager = checkpoints.make_manager(str(tmp_path), keep=2)
  checkpoints.save(manager, _state(1))
  manager.wait_until_finished()
  with pytest.raises(checkpoints.NonFiniteStateError, match="step 2 holds NaN/inf .*params/w"):
    checkpoints.save(manager, _state(2, np.inf))
  manager.wait_until_finished()
  assert manager.all_steps() == [1]
  with pytest.raises(ValueError, match="keep_checkpoints must be >= 1"):
    checkpoints.make_manager(str(tmp_path), keep=0)


def test_resume_sets_aside_unreadable_and_non_finite_checkpoints(tmp_path, caplog):
  manager = checkpoints.make_manager(str(tmp_path), keep=5)
  for step in (1, 2):
    checkpoints.save(manager, _state(step, float(step)))
  _raw_save(manager, _state(3, np.nan))
  _raw_save(manager, _state(4))
  manager.wait_until_finished()
  _truncate(_largest_file(str(tmp_path / "checkpoints" / "4" / "default")))
  with caplog.at_level(logging.WARNING, logger="n3jax"):
    restored = checkpoints.restore_latest(manager, _state(0, 0.0))
  assert int(restored.step) == 2 and float(restored.params["w"][0, 0]) == 2.0
  aside = sorted(os.listdir(tmp_path / checkpoints.SET_ASIDE_DIR))
  assert [a.split("-")[0] for a in aside] == ["3", "4"]  # moved, not deleted
  why = {a.split("-")[0]: open(tmp_path / checkpoints.SET_ASIDE_DIR / a / "WHY.txt").read()
         for a in aside}
  assert "non-finite values in params/w" in why["3"] and "unreadable" in why["4"]
  assert manager.all_steps() == [1, 2]
  text = caplog.text
  assert "checkpoint 4 is unusable" in text and "checkpoint 3 is unusable" in text


def test_a_workdir_of_another_model_gives_one_error_naming_both(tmp_path):
  workdir = str(tmp_path)
  checkpoints.check_workdir_model(workdir, "n3net_tiny", {"k": 2})
  checkpoints.check_workdir_model(workdir, "n3net_tiny", {"k": 2})  # the same: fine
  with pytest.raises(checkpoints.WorkdirMismatchError,
                     match=r"holds a run of model 'n3net_tiny'\(k=2\), but the config trains "
                           r"'vdsr'\(\)"):
    checkpoints.check_workdir_model(workdir, "vdsr", {})
  # Checkpoints from before train_model.json existed: told apart by their shapes.
  manager = checkpoints.make_manager(workdir, keep=2)
  checkpoints.save(manager, _state(1))
  manager.wait_until_finished()
  other = _state(0, shape=(5, 2))
  with pytest.raises(checkpoints.WorkdirMismatchError, match="another model .*params"):
    checkpoints.restore_latest(manager, other)
  assert manager.all_steps() == [1]  # nothing set aside


@pytest.mark.parametrize("field, value, message", [
    ("keep_checkpoints", 0, "keep_checkpoints must be an integer >= 1"),
    ("checkpoint_every", -1, "checkpoint_every must be an integer >= 0"),
    ("val_every", -5, "val_every must be an integer >= 0"),
    ("learning_rate", -1e-3, r"learning_rate must be in \(0, inf\)"),
    ("learning_rate", float("nan"), "learning_rate must be finite"),
    ("batch_size", 0, "batch_size must be an integer >= 1"),
    ("sigma", 0.0, r"sigma must be in \(0, 255\]"),
    ("sigma", 1e6, r"sigma must be in \(0, 255\]"),
    ("lr_total_decay", 2.0, r"lr_total_decay must be in \(0, 1\]"),
    ("num_train_steps", 0, "num_train_steps must be > 0"),
])
def test_bad_config_values_fail_before_anything_is_built(fake_root, tmp_path, field, value,
                                                         message):
  from n3jax.train.loop import train_and_evaluate
  config = tiny_config(fake_root, 2)
  config[field] = value
  workdir = tmp_path / "never"
  start = time.perf_counter()
  with pytest.raises(ConfigError, match=f"config.{message}"):
    train_and_evaluate(config, str(workdir))
  assert time.perf_counter() - start < 1 and not workdir.exists()


def test_zero_periods_mean_off_and_model_kwargs_are_checked(fake_root):
  config = tiny_config(fake_root, 2)
  config.log_every = config.checkpoint_every = config.val_every = 0
  validate_config(config)
  config.model.kwargs.colour = 3
  with pytest.raises(ConfigError, match=r"\['colour'\] are not attributes of model 'n3net_tiny'"):
    validate_config(config)


@pytest.mark.slow
def test_divergence_on_a_checkpoint_step_saves_nothing_and_a_sane_rerun_completes(
    fake_root, tmp_path, caplog):
  """Also: a truncated latest checkpoint is set aside and resume says so."""
  from n3jax.train.loop import train_and_evaluate
  workdir = str(tmp_path / "run")
  config = tiny_config(fake_root, 2)  # checkpoints at steps 1 and 2
  train_and_evaluate(config, workdir)
  _truncate(_largest_file(os.path.join(workdir, "checkpoints", "2", "default")))
  diverging = tiny_config(fake_root, 4)
  diverging.learning_rate = 1e39  # every parameter inf after one step
  with caplog.at_level(logging.WARNING, logger="n3jax"):
    with pytest.raises(FloatingPointError, match="holds NaN/inf"):
      train_and_evaluate(diverging, workdir)
  assert "checkpoint 2 is unusable (unreadable" in caplog.text
  assert os.listdir(os.path.join(workdir, checkpoints.SET_ASIDE_DIR))[0].startswith("2-")
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1"]  # nothing new
  summary = train_and_evaluate(tiny_config(fake_root, 3), workdir)  # a sane learning rate
  assert summary["start_step"] == 1 and summary["step"] == 3
  _, variables, _ = load_model(os.path.join(workdir, "model"))  # loading checks finiteness
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(variables))


# --- inference inputs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_n3net():
  model = create_model("n3net_tiny")
  return model, model.init(jax.random.PRNGKey(0), jnp.zeros((1, 24, 24, 1)))


def test_infer_rejects_integer_bool_complex_nan_and_wrong_channels(tiny_n3net):
  model, variables = tiny_n3net
  x = np.random.default_rng(0).random((32, 32), np.float32)
  cases = [((x * 255).astype(np.uint8), TypeError, r"uint8.*astype\(np.float32\) / 255"),
           ((x * 65535).astype(np.uint16), TypeError, "/ 65535"),
           (x > 0.5, TypeError, "dtype bool"),
           (x.astype(np.complex64), TypeError, "dtype complex64"),
           (np.stack([x] * 3, -1), ValueError, r"3 channel\(s\) .* the model takes 1"),
           (np.where(np.arange(x.size).reshape(x.shape) == 77, np.nan, x), ValueError,
            "1 NaN/inf value"),
           (np.full_like(x, np.inf), ValueError, "1024 NaN/inf")]
  for image, error, message in cases:
    for fn in (infer.denoise, infer.restore_large):
      with pytest.raises(error, match=message):
        fn(model, variables, image)
  with pytest.raises(TypeError, match="dtype uint8"):  # inside jit: dtype and shape only
    jax.jit(lambda a: infer.restore(model, variables, a))((x * 255).astype(np.uint8))


def test_infer_warns_about_values_on_another_scale(tiny_n3net):
  model, variables = tiny_n3net
  x = np.random.default_rng(0).random((24, 24), np.float32)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    infer.denoise(model, variables, x + 0.3 * np.random.default_rng(1).standard_normal(x.shape,
                                                                                      np.float32))
  with pytest.warns(UserWarning, match="0-255 scale"):
    infer.denoise(model, variables, x * 255)


# --- image files ---------------------------------------------------------------------------


def test_load_gray_uses_bit_depth_float_tiffs_and_exif(tmp_path):
  from n3jax.data.images import load_gray
  dark = np.arange(0, 200, dtype=np.uint16).reshape(10, 20)  # a 16-bit file, values <= 255
  Image.fromarray(dark).save(tmp_path / "dark16.png")
  np.testing.assert_allclose(load_gray(str(tmp_path / "dark16.png")), dark / 65535.0, atol=1e-7)
  import tifffile
  unit = np.linspace(0, 1, 60, dtype=np.float32).reshape(6, 10)
  tifffile.imwrite(tmp_path / "unit.tif", unit)
  np.testing.assert_array_equal(load_gray(str(tmp_path / "unit.tif")), unit)
  tall = np.zeros((30, 10), np.uint8)
  tall[0, :] = 255  # top row white as stored
  exif = Image.Exif()
  exif[274] = 6  # rotate 90° clockwise for display
  Image.fromarray(tall).save(tmp_path / "rot.jpg", exif=exif, quality=100)
  shown = load_gray(str(tmp_path / "rot.jpg"))
  assert shown.shape == (10, 30) and shown[:, -1].mean() > 0.9  # the top row is now right


# --- results and user files ----------------------------------------------------------------


def _data_root(tmp_path):
  rng = np.random.default_rng(0)
  root = tmp_path / "data"
  for folder, n in (("Set12", 2), ("BSD68", 2)):
    (root / folder).mkdir(parents=True)
    for i in range(n):
      Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8)).save(
          root / folder / f"{i}.png")
  return str(root)


def test_eval_into_an_existing_results_folder_keeps_what_was_measured(small_dncnn, tmp_path):
  from n3jax.evaluate.denoise import evaluate_denoising
  folder, model, variables = small_dncnn
  root, out = _data_root(tmp_path), str(tmp_path / "results")
  meta = load_model(folder)[2]
  run = dict(sigma=25, data_root=root, seed=0, output_dir=out, progress=False,
             run_info={"checkpoint_metadata": meta})
  evaluate_denoising(model, variables, datasets=["set12"], **run)
  first = json.load(open(os.path.join(out, "results.json")))["datasets"]["set12"]
  evaluate_denoising(model, variables, datasets=["bsd68"], **run)
  both = json.load(open(os.path.join(out, "results.json")))
  assert sorted(both["datasets"]) == ["bsd68", "set12"] and both["datasets"]["set12"] == first
  md = open(os.path.join(out, "results.md")).read()
  assert "| set12 | 2 |" in md and "| bsd68 | 2 |" in md
  # Measuring set12 again, or another model's results into the folder: refused, unchanged.
  with pytest.raises(OutputExistsError, match=r"complete results for \['set12'\].*--overwrite"):
    evaluate_denoising(model, variables, datasets=["set12"], **run)
  with pytest.raises(OutputExistsError, match="another evaluation .*sigma: 25.0 there, 50"):
    evaluate_denoising(model, variables, datasets=["set12"], **{**run, "sigma": 50})
  other = {**run, "run_info": {"checkpoint_metadata": {**meta, "step": 7}}}
  with pytest.raises(OutputExistsError, match="another model"):
    evaluate_denoising(model, variables, datasets=["urban100"], **other)
  assert json.load(open(os.path.join(out, "results.json"))) == both
  evaluate_denoising(model, variables, datasets=["set12"], overwrite=True, **run)
  assert sorted(json.load(open(os.path.join(out, "results.json")))["datasets"]) == [
      "bsd68", "set12"]
  for sigma in (0, -5, 1e6, float("nan")):
    with pytest.raises(ValueError, match="sigma must be"):
      evaluate_denoising(model, variables, datasets=["set12"], **{**run, "sigma": sigma,
                                                                   "output_dir": None})


def test_results_json_is_strict_json(tmp_path):
  from n3jax.evaluate.report import write_json
  write_json(str(tmp_path / "r.json"), {"psnr": float("inf"), "rows": [float("nan"), 1.5]})
  text = (tmp_path / "r.json").read_text()
  assert "Infinity" not in text and "NaN" not in text
  assert json.loads(text) == {"psnr": None, "rows": [None, 1.5]}


def test_record_cache_is_keyed_on_content(tmp_path):
  from n3jax.data.records import fingerprint
  a = np.zeros((16, 16), np.uint8)
  Image.fromarray(a).save(tmp_path / "x.png", compress_level=0)
  items = [("x.png", str(tmp_path / "x.png"))]
  before = fingerprint("train400", items, 1)
  size = os.path.getsize(tmp_path / "x.png")
  Image.fromarray(a + 7).save(tmp_path / "x.png", compress_level=0)  # same size, new pixels
  assert os.path.getsize(tmp_path / "x.png") == size
  assert fingerprint("train400", items, 1) != before


def test_demo_never_writes_over_its_input_or_a_users_file(tmp_path, capsys):
  from n3jax.demo import main
  photo = tmp_path / "photo.png"
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(photo)
  mine = tmp_path / "mine.png"
  mine.write_bytes(photo.read_bytes())
  for out in (photo, mine):
    stamp = out.stat().st_mtime_ns
    assert main(["--image", str(photo), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and ("is the input image" in err or "--overwrite" in err)
    assert out.stat().st_mtime_ns == stamp
  assert main(["--image", str(photo), "--sigma", "0"]) == 1
  assert "--sigma must be in (0, 255]" in capsys.readouterr().err


@pytest.mark.slow
def test_clis_print_one_line_and_a_traceback_only_with_debug(small_dncnn, tmp_path):
  folder, _, _ = small_dncnn
  bad = _copy_model(folder, tmp_path / "bad")
  (bad / "model.json").write_text("{not json")

  def run(*args):
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    return proc.returncode, proc.stderr.strip()

  train = ["train.py", "--config=configs/denoise.py:smoke", f"--workdir={tmp_path / 'w'}"]
  cases = [
      (train + ["--config.keep_checkpoints=0"], "config.keep_checkpoints must be"),
      (train + ["--config.nosuch=1"], "the config has no field 'nosuch'"),
      (["eval.py", "--config=configs/denoise.py", f"--checkpoint={bad}",
        f"--output={tmp_path / 'o'}"], "model.json: not a readable model spec"),
      (["-m", "n3jax.denoise", str(tmp_path / "missing.png"), f"--checkpoint={bad}"],
       "model.json: not a readable model spec"),
      (["-m", "n3jax.convert", str(bad / "model.json"), f"--out={tmp_path / 'c'}"],
       "not a readable legacy PyTorch checkpoint"),
  ]
  for args, message in cases:
    code, err = run(*args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code in (1, 2) and len(lines) == 1 and message in lines[0], (args, err[-2000:])
  code, err = run(*cases[0][0], "--debug")
  assert code == 1 and "Traceback" in err and "ConfigError" in err


def test_denoise_cli_refuses_broken_weights_and_inputs_that_did_not_exist(small_dncnn, tmp_path,
                                                                          capsys):
  from n3jax import denoise
  _, _, variables = small_dncnn
  huge = jax.tree_util.tree_map(lambda x: np.full_like(np.asarray(x), 1e30), variables)
  save_model(tmp_path / "huge", huge, name="dncnn17", kwargs={"depth": 3, "features": 4})
  photo = tmp_path / "y_denoised.png"
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24), dtype=np.uint8)).save(photo)
  run = [str(photo), "--sigma", "25", "--no-progress"]
  assert denoise.main(run + ["--checkpoint", str(tmp_path / "huge")]) == 1
  assert "produced NaN/inf" in capsys.readouterr().err
  assert not (tmp_path / "y_denoised_denoised.png").exists()
  # The second "input" would only exist as the first one's output: not read as an input.
  folder, _, _ = small_dncnn
  later = str(tmp_path / "y_denoised_denoised.png")
  assert denoise.main(run[:1] + [later] + run[1:] + ["--checkpoint", folder]) == 1
  err = capsys.readouterr().err
  assert "is an input (never overwritten)" in err and f"{later}: no such file" in err
  assert not (tmp_path / "y_denoised_denoised_denoised.png").exists()


def test_converter_refuses_an_impossible_sigma(tmp_path, capsys):
  from n3jax.convert.__main__ import main
  for sigma in ("nan", "inf", "-1", "0", "1e9"):
    with pytest.raises(SystemExit):
      main([str(tmp_path / "any.t7"), "--out", str(tmp_path / "o"), "--sigma", sigma])
    assert "must be in (0, 255]" in capsys.readouterr().err
  assert not (tmp_path / "o").exists()
