"""The train state: parameters, optimizer state, BatchNorm statistics and the RNG key."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
  """``flax`` train state plus ``batch_stats`` and the run's base RNG ``key``.

  The key never changes; the step folds ``step`` (and the example or device index) into it.
  """
  batch_stats: Any
  key: jax.Array


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, *, key: jax.Array,
                       image_shape, init_variables: Optional[Mapping[str, Any]] = None
                       ) -> TrainState:
  """Initializes the model on a dummy ``[1, H, W, C]`` batch (or takes ``init_variables``).

  Args:
    key: the run's key; parameters are initialized from ``fold_in(key, 0)``.
    init_variables: ``{"params", "batch_stats"}`` to start from (fine-tuning); must match
      the model's structure and shapes.
  """
  init_key, gumbel_key = jax.random.split(jax.random.fold_in(key, 0))
  dummy = jnp.zeros((1, *image_shape), jnp.float32)
  variables = jax.jit(lambda k1, k2: model.init({"params": k1, "gumbel": k2}, dummy,
                                                train=False))(init_key, gumbel_key)
  variables = dict(variables)
  if init_variables is not None:
    for col in ("params", "batch_stats"):
      ref, new = variables.get(col, {}), init_variables.get(col, {})
      ref_struct = jax.tree_util.tree_structure(ref)
      if ref_struct != jax.tree_util.tree_structure(new):
        raise ValueError(f"init checkpoint's {col} do not match the model's structure")
      for a, b in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(new)):
        if a.shape != b.shape:
          raise ValueError(f"init checkpoint's {col} have shape {b.shape} where the model "
                           f"has {a.shape}")
      variables[col] = jax.tree_util.tree_map(jnp.asarray, new)
  return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                           batch_stats=variables.get("batch_stats", {}), key=key)
