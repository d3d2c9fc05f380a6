"""The correspondence classifiers' training loss (the CNNet / N³ release's).

``balanced_bce``: binary cross-entropy on the inlier labels with inliers and outliers
weighted equally (the mean over each class, averaged), per pair. After
``essential_start`` steps, ``essential_weight`` × the essential-matrix loss is added: the
distance of the weighted eight-point solve (weights ``relu(tanh(logits))``) to the true
essential matrix (:func:`n3jax.ops.epipolar.essential_distance`).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import jax
import jax.numpy as jnp

from n3jax.ops import epipolar


def balanced_bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``[B, N]`` logits and 0/1 labels → ``[B]``: ``½ (mean BCE over inliers + mean BCE over
  outliers)`` (a class that is absent contributes 0)."""
  positive = labels > 0.5
  sign = jnp.where(positive, 1.0, -1.0)
  losses = -jax.nn.log_sigmoid(sign * logits)
  pos = jnp.sum(jnp.where(positive, losses, 0), -1) / jnp.maximum(jnp.sum(positive, -1), 1)
  neg = jnp.sum(jnp.where(positive, 0, losses), -1) / jnp.maximum(jnp.sum(~positive, -1), 1)
  return 0.5 * (pos + neg)


def correspondence_objective(logits: jax.Array, target: Mapping[str, jax.Array],
                             inputs: jax.Array, step: jax.Array, *, essential_weight: float,
                             essential_start: int) -> Tuple[jax.Array, Dict[str, Any]]:
  """The step's loss and metrics (``bce``, ``essential``, ``f1``) for
  :func:`n3jax.train.step.gradient_step`.

  The essential-matrix term is computed only from ``essential_start`` on (``lax.cond``: the
  eigen-solve is not run before it).
  """
  logits = logits.astype(jnp.float32)
  bce = balanced_bce(logits, target["label"]).mean()

  def essential_loss():
    estimate = epipolar.weighted_eight_point(inputs, epipolar.eight_point_weights(logits))
    return epipolar.essential_distance(estimate, target["E"]).mean()

  use = jnp.logical_and(essential_weight > 0, step >= essential_start)
  e_loss = jax.lax.cond(use, essential_loss, lambda: jnp.zeros((), jnp.float32))
  pred, true = logits > 0, target["label"] > 0.5
  tp = jnp.sum(pred & true)
  precision = tp / jnp.maximum(jnp.sum(pred), 1)
  recall = tp / jnp.maximum(jnp.sum(true), 1)
  f1 = 2 * precision * recall / jnp.maximum(precision + recall, 1e-12)
  return bce + essential_weight * e_loss, {"bce": bce, "essential": e_loss, "f1": f1}
