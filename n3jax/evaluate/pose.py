"""Correspondence metrics: inlier classification and the recovered relative pose.

* Classification: precision, recall and F1 of ``logit > 0`` against the inlier labels.
* Pose (Yi et al. 2018, paper Table 6): the essential matrix from the weighted eight-point
  solve on the predicted weights is decomposed into the four ``(R, t)`` candidates; the one
  that puts most predicted inliers in front of both cameras is kept (cheirality). Its
  errors are the angle of ``R_gtᵀ R`` and the angle between the translation directions
  (unsigned: a direction and its opposite count as one, as the scale and sign of an
  essential matrix are free). ``mAP@τ`` is the mean, over the thresholds 5°, 10°, …, τ,
  of the fraction of pairs whose larger error is below the threshold (CNNet's
  definition).
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

MAP_STEP_DEG = 5.0  # the thresholds of mAP@τ: 5°, 10°, …, τ
MAP_THRESHOLDS_DEG = (5, 10, 20)


def classification_scores(logits: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
  """``{"precision", "recall", "f1"}`` of ``logits > 0`` against ``labels`` (any shape),
  pooled over every correspondence; 0 where undefined (no predicted or true inliers)."""
  pred = np.asarray(logits) > 0
  true = np.asarray(labels) > 0.5
  tp = float(np.sum(pred & true))
  precision = tp / max(float(np.sum(pred)), 1.0)
  recall = tp / max(float(np.sum(true)), 1.0)
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"precision": precision, "recall": recall, "f1": f1}


def _triangulated_depths(xs: np.ndarray, rotation: np.ndarray, translation: np.ndarray
                         ) -> Tuple[np.ndarray, np.ndarray]:
  """Depths in both cameras of the least-squares triangulation of each correspondence."""
  x1 = np.concatenate([xs[:, :2], np.ones((len(xs), 1))], 1)
  x2 = np.concatenate([xs[:, 2:], np.ones((len(xs), 1))], 1)
  # d2 · x2 = d1 · R x1 + t  →  [R x1, −x2] [d1, d2]ᵀ = −t
  a = np.stack([x1 @ rotation.T, -x2], axis=-1)  # [N, 3, 2]
  ata = np.einsum("nij,nik->njk", a, a)
  atb = np.einsum("nij,i->nj", a, -translation)
  det = ata[:, 0, 0] * ata[:, 1, 1] - ata[:, 0, 1] * ata[:, 1, 0]
  det = np.where(np.abs(det) < 1e-12, 1e-12, det)
  d1 = (ata[:, 1, 1] * atb[:, 0] - ata[:, 0, 1] * atb[:, 1]) / det
  d2 = (ata[:, 0, 0] * atb[:, 1] - ata[:, 1, 0] * atb[:, 0]) / det
  return d1, d2


def recover_pose(essential: np.ndarray, xs: np.ndarray, inliers: np.ndarray
                 ) -> Tuple[np.ndarray, np.ndarray]:
  """``(R, t)`` of ``essential`` (``t`` of unit length) that puts most of the ``inliers``
  (bool ``[N]``) of ``xs [N, 4]`` in front of both cameras."""
  u, _, vt = np.linalg.svd(np.asarray(essential, np.float64))
  if np.linalg.det(u) < 0:
    u = -u
  if np.linalg.det(vt) < 0:
    vt = -vt
  w = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
  pts = np.asarray(xs, np.float64)[np.asarray(inliers, bool)]
  best, best_count = None, -1
  for rotation in (u @ w @ vt, u @ w.T @ vt):
    for translation in (u[:, 2], -u[:, 2]):
      d1, d2 = _triangulated_depths(pts, rotation, translation)
      count = int(np.sum((d1 > 0) & (d2 > 0)))
      if count > best_count:
        best, best_count = (rotation, translation), count
  return best


def pose_errors(rotation: np.ndarray, translation: np.ndarray, true_rotation: np.ndarray,
                true_translation: np.ndarray) -> Tuple[float, float]:
  """``(rotation error, translation direction error)`` in degrees (see the module doc)."""
  cos_r = (np.trace(true_rotation.T @ rotation) - 1) / 2
  err_r = np.degrees(np.arccos(np.clip(cos_r, -1.0, 1.0)))
  t, g = np.asarray(translation, np.float64), np.asarray(true_translation, np.float64)
  cos_t = abs(float(t @ g)) / max(np.linalg.norm(t) * np.linalg.norm(g), 1e-300)
  err_t = np.degrees(np.arccos(np.clip(cos_t, 0.0, 1.0)))
  return float(err_r), float(err_t)


def pose_map(errors: Sequence[Tuple[float, float]],
             thresholds: Sequence[int] = MAP_THRESHOLDS_DEG) -> Dict[str, float]:
  """``{"map5", "map10", "map20"}``: mAP at each threshold of the pairs' ``(err_R, err_t)``.

  A pair whose pose could not be computed counts with an infinite error.
  """
  worst = np.asarray([np.max(np.asarray(e, np.float64)) for e in errors], np.float64)
  worst = np.where(np.isfinite(worst), worst, np.inf)
  out = {}
  for tau in thresholds:
    steps = np.arange(MAP_STEP_DEG, tau + 1e-9, MAP_STEP_DEG)
    out[f"map{tau:g}"] = float(np.mean([np.mean(worst < s) for s in steps])) if len(worst) else 0.0
  return out
