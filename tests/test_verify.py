"""``python -m n3jax.verify trainstep``: n3jax's training step against the official code's."""

import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def fixture_paths(shared):
  folder = os.path.join(shared, "pretrained")
  paths = {"f32": os.path.join(folder, "fixtures", "n3net_sigma25_trainstep.npz"),
           "f64": os.path.join(folder, "fixtures", "n3net_sigma25_trainstep_f64.npz"),
           "weights": os.path.join(folder, "n3net_gauss_sigma25.t7")}
  for path in paths.values():
    if not os.path.isfile(path):
      pytest.skip(f"{path} is absent")
  return paths


def test_float32_step_is_within_tolerance_and_a_wrong_step_is_not(fixture_paths):
  from n3jax.verify import trainstep_checks
  with np.load(fixture_paths["f32"], allow_pickle=False) as f:
    fixture = {k: f[k] for k in f.files}
  checks = {c.group: c for c in trainstep_checks(fixture, fixture_paths["weights"], x64=False)}
  assert set(checks) == {"loss", "prediction", "gradients", "zero gradients", "bn_statistics",
                         "adam"}
  assert all(c.ok for c in checks.values()), checks
  # What the check would see if n3jax computed a gradient or a BN update 10 % off.
  wrong = dict(fixture)
  wrong["grad/blocks.1.layer1.3.weight"] = 1.1 * fixture["grad/blocks.1.layer1.3.weight"]
  wrong["bn_after/nls.0.embedcnn.1.running_var"] = (
      1.1 * fixture["bn_after/nls.0.embedcnn.1.running_var"])
  bad = {c.group: c for c in trainstep_checks(wrong, fixture_paths["weights"], x64=False)}
  assert not bad["gradients"].ok and bad["gradients"].where == "blocks.1.layer1.3.weight"
  assert not bad["bn_statistics"].ok and bad["loss"].ok


def test_float64_step_agrees_to_1e_6_from_the_command_line(fixture_paths):
  proc = subprocess.run([sys.executable, "-m", "n3jax.verify", "trainstep", "--fixture",
                         fixture_paths["f64"], "--weights", fixture_paths["weights"], "--x64"],
                        capture_output=True, text=True, cwd=REPO, timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
  lines = [line for line in proc.stdout.splitlines() if line.startswith("  ")]
  assert len(lines) == 5 and all(line.endswith(" ok") for line in lines), proc.stdout
  assert "float64" in proc.stdout
