"""The optimizers of the protocols: Adam with L2 weight decay, a learning-rate schedule and
optional per-tensor gradient clipping, all set by the config.

N³Net (shared/docs/reference-n3net.md): Adam (β 0.9, 0.999, ε 1e-8) with L2 weight decay
added to the *gradient* of every parameter except biases (as PyTorch's
``Adam(weight_decay=…)``), learning rate ``lr · decay^(epoch / num_epochs)`` stepped once
per epoch (``config.lr_schedule = "epochs"``).

NLRN (shared/docs/reference-family.md §3): Adam without weight decay, the learning rate
multiplied by ``lr_factor`` at each of ``lr_boundaries`` (``"piecewise"``), and every
gradient tensor clipped to L2 norm ``clip_grad_norm_per_tensor`` (``tf.clip_by_norm``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def decay_mask(params: Any) -> Any:
  """``True`` for every parameter that decays: all but those named ``bias``."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) != "bias", params)


def learning_rate_schedule(*, learning_rate: float, total_decay: float, steps_per_epoch: int,
                           num_epochs: int) -> optax.Schedule:
  """``learning_rate · total_decay^(floor(step / steps_per_epoch) / num_epochs)``."""
  if steps_per_epoch < 1 or num_epochs < 1:
    raise ValueError(f"steps_per_epoch and num_epochs must be >= 1, got {steps_per_epoch}, "
                     f"{num_epochs}")
  return optax.exponential_decay(learning_rate, transition_steps=steps_per_epoch,
                                 decay_rate=total_decay ** (1.0 / num_epochs), staircase=True)


SCHEDULES = ("epochs", "piecewise")


def schedule_from_config(config) -> optax.Schedule:
  """The learning rate of ``config.lr_schedule`` (default ``"epochs"``):

  * ``"epochs"``: :func:`learning_rate_schedule` (``lr_total_decay`` over ``num_epochs``);
  * ``"piecewise"``: ``learning_rate`` times ``lr_factor`` once for each of the steps in
    ``lr_boundaries`` that has been reached.
  """
  kind = config.get("lr_schedule", "epochs")
  if kind == "epochs":
    return learning_rate_schedule(learning_rate=config.learning_rate,
                                  total_decay=config.lr_total_decay,
                                  steps_per_epoch=config.steps_per_epoch,
                                  num_epochs=config.num_epochs)
  if kind == "piecewise":
    return optax.piecewise_constant_schedule(
        config.learning_rate, {int(b): config.lr_factor for b in config.lr_boundaries})
  raise ValueError(f"config.lr_schedule must be one of {SCHEDULES}, got {kind!r}")


def clip_by_norm_per_tensor(max_norm: float) -> optax.GradientTransformation:
  """Scales every gradient tensor whose L2 norm exceeds ``max_norm`` down to it (each
  tensor on its own, as TensorFlow's ``clip_by_norm``; not the global norm)."""
  def clip(g):
    norm = jnp.sqrt(jnp.sum(jnp.square(g)))
    return g * (max_norm / jnp.maximum(norm, max_norm)).astype(g.dtype)
  return optax.stateless(lambda updates, params=None: jax.tree_util.tree_map(clip, updates))


def make_optimizer(config) -> optax.GradientTransformation:
  """Per-tensor clipping (if ``clip_grad_norm_per_tensor`` > 0), then Adam with L2 weight
  decay (not AdamW) on the config's schedule."""
  clip = config.get("clip_grad_norm_per_tensor", 0.0)
  return optax.chain(
      *([clip_by_norm_per_tensor(clip)] if clip else []),
      optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
      optax.adam(schedule_from_config(config), b1=config.adam_b1, b2=config.adam_b2,
                 eps=config.adam_eps))
