"""Train-state checkpoints in the workdir with orbax's ``CheckpointManager``.

``WORKDIR/checkpoints/<step>/`` holds the whole train state (parameters, optimizer state,
BatchNorm statistics, step, key) as plain nested dicts of arrays. Orbax writes each
checkpoint to a temporary folder and renames it when complete, so a run killed while
saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

CHECKPOINT_DIR = "checkpoints"


def make_manager(workdir: str, *, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR),
                               options=options)


def save(manager: ocp.CheckpointManager, state: Any) -> None:
  """Saves an (unreplicated, host) train state at ``state.step``."""
  tree = jax.tree_util.tree_map(np.asarray, serialization.to_state_dict(state))
  manager.save(int(state.step), args=ocp.args.StandardSave(tree), force=True)


def restore_latest(manager: ocp.CheckpointManager, template: Any) -> Optional[Any]:
  """The latest saved state, structured like ``template``; ``None`` if there is none."""
  step = manager.latest_step()
  if step is None:
    return None
  target = jax.tree_util.tree_map(np.asarray, serialization.to_state_dict(template))
  tree = manager.restore(step, args=ocp.args.StandardRestore(target))
  return serialization.from_state_dict(template, tree)
