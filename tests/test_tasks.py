"""Tasks as objects: the registry, and the correspondence task end to end (paper Sec. 5.5)."""

import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from n3jax.tasks import TASKS, get_task, task_of
from n3jax.tasks.base import Task


def test_registry_names_every_task_and_refuses_unknown_ones():
  assert sorted(TASKS) == ["correspondences", "denoise", "realnoise", "sisr"]
  for name, task in TASKS.items():
    assert isinstance(task, Task) and task.name == name
  with pytest.raises(KeyError, match="known tasks"):
    get_task("segmentation")
  from n3jax.configs import correspondences, denoise, realnoise, sisr
  for module, name in ((denoise, "denoise"), (realnoise, "realnoise"), (sisr, "sisr"),
                       (correspondences, "correspondences")):
    assert task_of(module.get_config()).name == name


def test_no_task_branches_remain():
  """The loop, the step and the entry points dispatch through the task objects."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run(["grep", "-rn", "task ==", "n3jax", "train.py", "eval.py"],
                       capture_output=True, text=True, cwd=root)
  assert out.returncode == 1, out.stderr  # grep: 1 = nothing found
  assert out.stdout == ""


def test_balanced_bce_weighs_classes_equally():
  from n3jax.train.correspondence_loss import balanced_bce
  labels = jnp.asarray([[1, 0, 0, 0, 0, 0, 0, 0]], jnp.float32)
  # Wrong on the single inlier costs as much as wrong on all seven outliers.
  one = balanced_bce(jnp.asarray([[-2.0, -9, -9, -9, -9, -9, -9, -9]]), labels)
  seven = balanced_bce(jnp.asarray([[9.0, 2, 2, 2, 2, 2, 2, 2]]), labels)
  assert float(one[0]) == pytest.approx(float(seven[0]), rel=1e-3)
  # An absent class contributes nothing (no NaN).
  assert bool(jnp.isfinite(balanced_bce(jnp.zeros((1, 4)), jnp.zeros((1, 4)))).all())


def test_essential_loss_enters_after_its_start_step():
  from n3jax.data.two_view import TwoViewSpec, make_batch
  from n3jax.train.correspondence_loss import correspondence_objective
  batch = make_batch(range(2), spec=TwoViewSpec(num_points=100, split_sizes=(2, 1, 1)))
  target = {"label": jnp.asarray(batch["label"]), "E": jnp.asarray(batch["E"], jnp.float32)}
  xs, logits = jnp.asarray(batch["xs"]), jnp.asarray(4 * batch["label"] - 2)
  kw = dict(essential_weight=0.1, essential_start=10)
  before, m0 = correspondence_objective(logits, target, xs, jnp.asarray(9), **kw)
  after, m1 = correspondence_objective(logits, target, xs, jnp.asarray(10), **kw)
  assert float(m0["essential"]) == 0 and float(m1["essential"]) > 0
  assert float(after) == pytest.approx(float(before) + 0.1 * float(m1["essential"]), rel=1e-5)
  assert float(m1["f1"]) == pytest.approx(1.0)  # the logits follow the labels
  # Past the start the gradient through the eigen-solve is finite, even where every
  # logit is negative (all eight-point weights 0).
  for z in (logits, -jnp.abs(logits) - 1):
    g = jax.grad(lambda l: correspondence_objective(l, target, xs, jnp.asarray(10), **kw)[0])(z)
    assert bool(jnp.all(jnp.isfinite(g)))


@pytest.mark.slow
def test_correspondence_training_runs_resumes_and_evaluates(tmp_path):
  from n3jax.checkpoint import load_model
  from n3jax.configs.correspondences import get_config
  from n3jax.evaluate.correspondences import evaluate_correspondences
  from n3jax.tasks.correspondences import benchmark_spec
  from n3jax.train.loop import train_and_evaluate

  def config(steps):
    c = get_config("n3,smoke")
    c.model.kwargs.features, c.model.kwargs.num_blocks, c.model.kwargs.n3_after = 8, 2, 1
    c.model.kwargs.embed_features = 8
    c.data.num_points, c.data.split_sizes = 64, (40, 8, 8)
    c.batch_size, c.num_train_steps, c.log_every = 4, steps, 1
    c.essential_loss_start, c.val_every, c.val_pairs, c.eval_pairs = 2, steps, 8, 8
    c.checkpoint_every, c.progress = 1, False
    return c

  straight = train_and_evaluate(config(4), str(tmp_path / "a"))
  train_and_evaluate(config(2), str(tmp_path / "b"))
  resumed = train_and_evaluate(config(4), str(tmp_path / "b"))
  assert resumed["start_step"] == 2
  assert [resumed["train_loss"][s] for s in (2, 3)] == [straight["train_loss"][s]
                                                        for s in (2, 3)]
  val = straight["val"][4]
  for key in ("val_f1", "val_precision", "val_recall", "val_map5", "val_map20"):
    assert 0 <= val[key] <= 1
  model, variables, meta = load_model(tmp_path / "a" / "model")
  assert meta["task"] == "correspondences" and meta["model_name"] == "cnnet_n3"
  results = evaluate_correspondences(model, variables, spec=benchmark_spec(config(4)), seed=0,
                                     num_pairs=8, output_dir=str(tmp_path / "eval"),
                                     progress=False, run_info={"checkpoint_metadata": meta})
  assert results["datasets"]["two_view_test"]["num_pairs"] == 8
  assert "| two_view_test | 8 |" in (tmp_path / "eval" / "results.md").read_text()
  assert "val_num_pairs" not in meta and 0 <= meta["val_f1"] <= 1
  # eval.py's task evaluation refuses another benchmark and another task's model.
  from n3jax.tasks import get_task
  other = config(4)
  other.data.outlier_ratio = 0.3
  with pytest.raises(ValueError, match="another benchmark"):
    get_task("correspondences").evaluate(other, str(tmp_path / "a" / "model"), datasets=[],
                                         output_dir=str(tmp_path / "e2"), overwrite=False)
  from n3jax.configs.denoise import get_config as denoise_config
  gauss = denoise_config()
  gauss.model.name = "cnnet_n3"
  with pytest.raises(ValueError, match="task 'correspondences' but the config evaluates "
                                       "'denoise'"):
    get_task("denoise").evaluate(gauss, str(tmp_path / "a" / "model"), datasets=["set12"],
                                 output_dir=str(tmp_path / "e3"), overwrite=False)


def test_correspondence_config_is_checked():
  from n3jax.configs.correspondences import get_config
  from n3jax.train.config_check import ConfigError, validate_config
  for arg in ("n3", "cnnet", "n3,smoke", "cnnet,smoke"):
    validate_config(get_config(arg))
  for field, value, message in (("val_pairs", 10**6, "val_pairs must be"),
                                ("eval_pairs", 0, "eval_pairs must be"),
                                ("essential_loss_weight", -1.0, "essential_loss_weight"),
                                ("data.outlier_ratio", 1.5, "outlier_ratio"),
                                ("data.num_point", 10, "unknown fields")):
    config = get_config("n3,smoke")
    node = config
    *parents, leaf = field.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value  # a new field for data.num_point (a typo)
    with pytest.raises(ConfigError, match=message):
      validate_config(config)
  with pytest.raises(ValueError, match="choose one variant"):
    get_config("n3,cnnet")
