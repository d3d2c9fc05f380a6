"""Correspondence classification on sets (paper Sec. 5.5) on the synthetic two-view
benchmark: CNNet and CNNet + N³."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np

from n3jax.data import pipeline
from n3jax.data.two_view import SPLITS, TwoViewSpec, make_batch
from n3jax.evaluate.correspondences import (evaluate_correspondences, make_predict_fn,
                                            score_pairs)
from n3jax.tasks.base import Task, Validation, load_for_eval
from n3jax.train.correspondence_loss import correspondence_objective
from n3jax.train.step import AXIS, gradient_step

BENCHMARK = "two_view_synthetic"


def benchmark_spec(config) -> TwoViewSpec:
  """The benchmark of ``config.data`` (a :class:`TwoViewSpec`'s fields)."""
  fields = {f.name for f in dataclasses.fields(TwoViewSpec)}
  unknown = sorted(set(config.data) - fields)
  if unknown:
    raise ValueError(f"config.data has unknown fields {unknown}; known: {sorted(fields)}")
  return TwoViewSpec(**{k: tuple(v) if isinstance(v, (list, tuple)) else v
                        for k, v in config.data.items()})


def correspondence_step(state, batch, *, model, essential_weight: float,
                        essential_start: int):
  """One step on this device's pairs ``{"xs", "label", "E"}``; inside ``pmap``."""
  objective = functools.partial(correspondence_objective, essential_weight=essential_weight,
                                essential_start=essential_start)
  return gradient_step(state, batch["xs"], batch, model=model, objective=objective)


class CorrespondenceTask(Task):
  """Inlier classification of two-view correspondences; metrics F1 and pose mAP."""
  name = "correspondences"
  progress_metric = "f1"

  def check_config(self, config) -> None:
    spec = benchmark_spec(config)
    for field in ("val_pairs", "eval_pairs"):
      value = config.get(field)
      split = "val" if field == "val_pairs" else "test"
      size = spec.split_sizes[SPLITS[split]]
      if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= size:
        raise ValueError(f"config.{field} must be an integer in [1, {size}] (the {split} "
                         f"split's size), got {value!r}")
    start = config.essential_loss_start
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
      raise ValueError(f"config.essential_loss_start must be an integer step >= 0, got {start!r}")
    if not config.essential_loss_weight >= 0:
      raise ValueError(f"config.essential_loss_weight must be >= 0, got "
                       f"{config.essential_loss_weight!r}")

  def input_shape(self, config) -> Tuple[int, ...]:
    return (benchmark_spec(config).num_points, 4)

  def training_source(self, config, root):
    del root  # generated, no files
    return benchmark_spec(config), BENCHMARK

  def host_batch(self, source, step, config, *, shard_index, num_shards):
    plan = pipeline.crop_plan(step, seed=config.train_seed,
                              num_images=source.split_sizes[SPLITS["train"]],
                              batch_size=config.batch_size, flips=False, rotations=False)
    mine = plan.index[pipeline.shard_slice(config.batch_size, shard_index, num_shards)]
    batch = make_batch(mine, split="train", seed=config.data_seed, spec=source)
    return {"xs": batch["xs"], "label": batch["label"], "E": batch["E"].astype(np.float32)}

  def make_p_step(self, model, config):
    return jax.pmap(functools.partial(
        correspondence_step, model=model, essential_weight=float(config.essential_loss_weight),
        essential_start=int(config.essential_loss_start)), axis_name=AXIS, donate_argnums=(0,))

  def make_validation(self, model, config, root) -> Optional[Validation]:
    predict, spec = make_predict_fn(model), benchmark_spec(config)

    def run(variables, stop):
      scores = score_pairs(predict, variables, spec=spec, split="val", seed=config.data_seed,
                           num_pairs=config.val_pairs, stop=stop)
      if scores is None:
        return None
      return {f"val_{k}": float(v) for k, v in scores.items()
              if k not in ("pairs", "num_pairs")}
    return run

  def summary_line(self, metrics) -> str:
    return (f"validation F1 {metrics['val_f1']:.4f} (precision {metrics['val_precision']:.4f},"
            f" recall {metrics['val_recall']:.4f}), pose mAP 5°/10°/20° "
            f"{metrics['val_map5']:.3f}/{metrics['val_map10']:.3f}/{metrics['val_map20']:.3f}")

  def export_metadata(self, config) -> Dict[str, Any]:
    return {"benchmark": BENCHMARK, "data": config.data.to_dict(),
            "data_seed": config.data_seed}

  def evaluate(self, config, checkpoint, *, datasets, output_dir, overwrite) -> None:
    if list(datasets) not in ([], ["two_view_test"]):
      raise ValueError(f"the correspondence task evaluates the synthetic benchmark's test "
                       f"split (two_view_test), not {list(datasets)}")
    self.check_config(config)
    model, variables, run_info = load_for_eval(config, checkpoint, task=self.name)
    meta = run_info["checkpoint_metadata"]
    stored = {"data": meta.get("data"), "data_seed": meta.get("data_seed")}
    wanted = {"data": config.data.to_dict(), "data_seed": config.data_seed}
    differ = [k for k in stored if stored[k] is not None
              and json.loads(json.dumps(stored[k])) != json.loads(json.dumps(wanted[k]))]
    if differ:
      raise ValueError(f"{checkpoint} was trained on another benchmark ({', '.join(differ)} "
                       "differ from the config's); evaluate it with the config it was "
                       "trained with (e.g. :n3,smoke for a smoke run)")
    evaluate_correspondences(model, variables, spec=benchmark_spec(config),
                             seed=config.data_seed, num_pairs=config.eval_pairs,
                             output_dir=output_dir, run_info=run_info, overwrite=overwrite)
