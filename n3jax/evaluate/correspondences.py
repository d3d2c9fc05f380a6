"""Correspondence evaluation: inlier classification and pose mAP on the synthetic two-view
benchmark (:mod:`n3jax.data.two_view`), written as JSON and Markdown.

The network's logits give the weights ``relu(tanh(logit))`` of the weighted eight-point
solve (CNNet's); the pose recovered from that essential matrix, with the correspondences of
positive logit as inliers for the cheirality test, is scored by :mod:`n3jax.evaluate.pose`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from n3jax.data.two_view import TwoViewSpec, make_batch
from n3jax.evaluate import pose, report
from n3jax.ops import epipolar

TASK = "correspondences"


def make_predict_fn(model: nn.Module) -> Callable[..., tuple]:
  """A jit-compiled ``(variables, xs [B, N, 4]) → (logits [B, N], E [B, 3, 3])``."""

  @jax.jit
  def predict(variables, xs):
    logits = model.apply(variables, xs, train=False)
    return logits, epipolar.weighted_eight_point(xs, epipolar.eight_point_weights(logits))

  return predict


def score_pairs(predict: Callable, variables: Mapping[str, Any], *, spec: TwoViewSpec,
                split: str, seed: int, num_pairs: int, batch_size: int = 16,
                stop: Callable[[], bool] = lambda: False, progress: bool = False
                ) -> Optional[Dict[str, Any]]:
  """Precision/recall/F1 (pooled) and pose mAP over the first ``num_pairs`` of ``split``.

  ``None`` when ``stop()`` turned true between two batches.

  Returns:
    ``{"precision", "recall", "f1", "map5", "map10", "map20", "num_pairs",
    "pairs": [{"index", "err_r", "err_t", "f1"}]}``.
  """
  logits_all, labels_all, rows = [], [], []
  starts = range(0, num_pairs, batch_size)
  for start in tqdm(starts, desc=split, unit="batch", disable=not progress):
    if stop():
      return None
    idx = range(start, min(start + batch_size, num_pairs))
    batch = make_batch(idx, split=split, seed=seed, spec=spec)
    logits, essential = predict(variables, jnp.asarray(batch["xs"]))
    logits, essential = np.asarray(logits), np.asarray(essential, np.float64)
    for j, i in enumerate(idx):
      inliers = logits[j] > 0
      if np.isfinite(essential[j]).all() and inliers.sum() >= 1:
        r, t = pose.recover_pose(essential[j], batch["xs"][j], inliers)
        err_r, err_t = pose.pose_errors(r, t, batch["R"][j], batch["t"][j])
      else:
        err_r = err_t = float("inf")
      rows.append({"index": i, "err_r": err_r, "err_t": err_t,
                   "f1": pose.classification_scores(logits[j], batch["label"][j])["f1"]})
    logits_all.append(logits)
    labels_all.append(batch["label"])
  out: Dict[str, Any] = pose.classification_scores(np.concatenate(logits_all),
                                                   np.concatenate(labels_all))
  out.update(pose.pose_map([(r["err_r"], r["err_t"]) for r in rows]))
  out["num_pairs"] = len(rows)
  out["pairs"] = rows
  return out


def evaluate_correspondences(model: nn.Module, variables: Mapping[str, Any], *,
                             spec: TwoViewSpec, seed: int, num_pairs: int,
                             output_dir: Optional[str] = None,
                             run_info: Optional[Mapping[str, Any]] = None,
                             progress: bool = True, overwrite: bool = False
                             ) -> Dict[str, Any]:
  """Scores ``model`` on the first ``num_pairs`` test pairs; writes ``results.json`` and
  ``results.md`` to ``output_dir`` (an existing evaluation there is kept unless
  ``overwrite``)."""
  run_info = dict(run_info or {})
  identity = {"task": TASK, "benchmark": dataclasses.asdict(spec), "seed": seed,
              "checkpoint_metadata": run_info.get("checkpoint_metadata")}
  name = "two_view_test"
  report.previous_datasets(output_dir, identity, [name], overwrite=overwrite,
                           complete=lambda e: bool(e.get("num_pairs")))
  start = time.perf_counter()
  scores = score_pairs(make_predict_fn(model), variables, spec=spec, split="test", seed=seed,
                       num_pairs=num_pairs, progress=progress)
  scores["seconds"] = time.perf_counter() - start
  results = {**run_info, **identity, "datasets": {name: scores}}
  report.write_results(output_dir, results, results_markdown(results))
  return results


def results_markdown(results: Mapping[str, Any]) -> str:
  """A Markdown table of :func:`evaluate_correspondences`' results."""
  bench = results["benchmark"]
  lines = ["# Correspondence classification (synthetic two-view benchmark)", "",
           f"checkpoint: `{results.get('checkpoint', '?')}`, data seed {results['seed']}; "
           f"{bench['num_points']} correspondences per pair, outlier ratio "
           f"{bench['outlier_ratio']:g}, pixel noise {bench['pixel_noise']:g} px", "",
           "| set | pairs | precision | recall | F1 | mAP 5° | mAP 10° | mAP 20° |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for name, e in results["datasets"].items():
    lines.append(f"| {name} | {e['num_pairs']} | {e['precision']:.4f} | {e['recall']:.4f} | "
                 f"{e['f1']:.4f} | {e['map5']:.4f} | {e['map10']:.4f} | {e['map20']:.4f} |")
  return "\n".join(lines) + "\n"
