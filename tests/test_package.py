"""The installable package: the wheel holds the code, the configs, the licence and the console
scripts (and no tests or data), and works when installed outside the checkout."""

import email
import os
import shutil
import subprocess
import sys
import venv
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  """Builds the wheel from a copy of the tracked files (no network: --no-build-isolation)."""
  out = tmp_path_factory.mktemp("wheel")
  src = out / "src"
  listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True)
  if listing.returncode:
    pytest.skip("not a git checkout: the wheel is built from the tracked files")
  files = listing.stdout.decode().split("\0")
  for name in filter(None, files):
    dest = src / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    source = os.path.join(REPO, name)
    if os.path.islink(source):
      os.symlink(os.readlink(source), dest)
    elif os.path.isfile(source):
      shutil.copy2(source, dest)
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-q", "-w", str(out), str(src)], check=True, capture_output=True)
  (path,) = [p for p in out.iterdir() if p.suffix == ".whl"]
  return path


@pytest.mark.slow
def test_the_wheel_holds_configs_licence_and_scripts_but_no_tests(wheel):
  with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    meta = email.message_from_bytes(z.read(next(n for n in names if n.endswith("METADATA"))))
    entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
  for shipped in ("n3jax/configs/denoise.py", "n3jax/configs/sisr.py", "n3jax/configs/vdsr.py",
                  "n3jax/ops/knn.py", "n3jax/denoise.py"):
    assert shipped in names, shipped
  assert any(n.endswith("licenses/LICENSE") for n in names)
  assert not [n for n in names if n.startswith(("tests/", "bench/", "results/", "notebooks/"))]
  assert meta["License-Expression"] == "MIT"
  assert meta["Requires-Python"] == ">=3.11"
  requires = meta.get_all("Requires-Dist")
  base = [r for r in requires if "extra ==" not in r]
  assert {r.split(">")[0].split("=")[0].strip() for r in base} >= {"jax", "numpy", "flax"}
  assert not [r for r in base if r.startswith(("tensorflow", "scikit-image", "matplotlib"))]
  for script in ("n3jax-denoise", "n3jax-convert", "n3jax-train", "n3jax-eval", "n3jax-demo"):
    assert script in entry_points


@pytest.mark.slow
def test_installed_outside_the_checkout(wheel, tmp_path):
  """In a virtualenv (sharing this interpreter's dependencies, not its n3jax), run from an
  empty folder: import the pure ops, the CLIs' --help, a packaged config's smoke training."""
  env_dir = tmp_path / "venv"
  venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
  python = str(env_dir / "bin" / "python")
  subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q",
                  "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)
  work = tmp_path / "elsewhere"
  work.mkdir()
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "N3JAX_DATA_ROOT")}
  env.update(N3JAX_TFDS_DIR=str(tmp_path / "tfds"), N3JAX_MODEL_DIR=str(tmp_path / "models"))

  def run(*cmd):
    proc = subprocess.run(list(cmd), cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{cmd}: {proc.stderr[-3000:]}"
    return proc.stdout

  where = run(python, "-c", "import n3jax, n3jax.ops; print(n3jax.__file__)")
  assert where.startswith(str(env_dir)), where  # the installed copy, not the checkout
  for script in ("n3jax-denoise", "n3jax-convert", "n3jax-train", "n3jax-demo"):
    assert "usage" in run(str(env_dir / "bin" / script), "--help").lower() or script == "n3jax-train"
  out = run(str(env_dir / "bin" / "n3jax-train"), "--config=denoise.py:smoke",
            "--config.num_train_steps=2", "--config.log_every=1", "--config.val_every=2",
            "--config.val_max_images=1", "--config.checkpoint_every=2", "--config.progress=False",
            "--workdir=run")
  assert "validation PSNR" in out
  assert (work / "run" / "model" / "model.json").exists()
