"""The benchmark scripts run and report consistent figures (tiny sizes; timings not judged)."""

import json

from bench import train_step


def test_train_step_bench_reports_medians_and_their_ratio(tmp_path):
  out = tmp_path / "ts.json"
  train_step.main(["--batch=2", "--crop=24", "--models=n3net_tiny,dncnn17", "--repeats=2",
                   "--warmup=1", f"--json={out}"])
  res = json.loads(out.read_text())
  assert res["batch"] == 2 and res["crop"] == 24
  models = res["models"]
  for name in ("n3net_tiny", "dncnn17"):
    assert len(models[name]["times_s"]) == 2
    assert all(t > 0 for t in models[name]["times_s"])
    assert models[name]["median_s"] == sorted(models[name]["times_s"])[0] + (
        sorted(models[name]["times_s"])[1] - sorted(models[name]["times_s"])[0]) / 2
  assert abs(res["ratio"] - models["n3net_tiny"]["median_s"] / models["dncnn17"]["median_s"]) < 1e-12
