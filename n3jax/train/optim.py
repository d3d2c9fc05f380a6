"""The optimizer of the N³Net protocol: Adam with L2 weight decay and a per-epoch decay.

Reference (shared/docs/reference-n3net.md): Adam (β 0.9, 0.999, ε 1e-8) with L2 weight
decay added to the *gradient* of every parameter except biases (as PyTorch's
``Adam(weight_decay=…)``), learning rate ``lr · decay^(epoch / num_epochs)`` stepped once
per epoch.
"""

from __future__ import annotations

from typing import Any

import jax
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


def make_optimizer(config) -> optax.GradientTransformation:
  """Adam with L2 weight decay (not AdamW) on the config's schedule."""
  schedule = learning_rate_schedule(learning_rate=config.learning_rate,
                                    total_decay=config.lr_total_decay,
                                    steps_per_epoch=config.steps_per_epoch,
                                    num_epochs=config.num_epochs)
  return optax.chain(
      optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
      optax.adam(schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps))
