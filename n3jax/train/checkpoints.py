"""Train-state checkpoints in the workdir with orbax's ``CheckpointManager``.

``WORKDIR/checkpoints/<step>/`` holds the whole train state (parameters, optimizer state,
BatchNorm statistics, step, key) as plain nested dicts of arrays. Orbax writes each
checkpoint to a temporary folder and renames it when complete, so a run killed while
saving leaves the previous checkpoint intact.

Nothing non-finite is ever saved (:func:`save` refuses it). On resume, a latest checkpoint
that cannot be read or holds NaN/inf is moved to ``WORKDIR/checkpoints_set_aside/`` (never
deleted) and the newest good one is used (:func:`restore_latest`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, List, Mapping, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from n3jax.atomic import atomic_file
from n3jax.checkpoint import (first_line, non_finite_leaves, quiet_closed_loop_noise,
                              tree_shapes)

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
SET_ASIDE_DIR = "checkpoints_set_aside"
RUN_MODEL_FILE = "train_model.json"  # the model a workdir trains: {"name", "kwargs"}


class NonFiniteStateError(FloatingPointError):
  """The train state holds NaN/inf; it was not saved."""


class WorkdirMismatchError(ValueError):
  """The workdir holds checkpoints of another model."""


def make_manager(workdir: str, *, keep: int) -> ocp.CheckpointManager:
  """Orbax manager of ``WORKDIR/checkpoints`` keeping the ``keep`` (≥ 1) newest steps."""
  if keep < 1:
    raise ValueError(f"keep_checkpoints must be >= 1, got {keep} (resuming needs a checkpoint)")
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  # The handler is named so that metadata can be read before restoring.
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR),
                               options=options, item_handlers=ocp.StandardCheckpointHandler())


def _describe(paths: List[str]) -> str:
  more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
  return ", ".join(paths[:3]) + more


def save(manager: ocp.CheckpointManager, state: Any) -> None:
  """Saves an (unreplicated, host) train state at ``state.step``.

  Raises:
    NonFiniteStateError: a parameter, optimizer or BatchNorm value is NaN/inf; nothing is
      written, so the newest checkpoint on disk stays a good one.
  """
  tree = jax.tree_util.tree_map(np.asarray, serialization.to_state_dict(state))
  bad = non_finite_leaves(tree)
  if bad:
    raise NonFiniteStateError(
        f"the train state at step {int(state.step)} holds NaN/inf ({_describe(bad)}); not "
        "saved. The training diverged: lower the learning rate (resuming starts from the last "
        "good checkpoint).")
  manager.save(int(state.step), args=ocp.args.StandardSave(tree), force=True)


def check_workdir_model(workdir: str, name: str, kwargs: Mapping[str, Any]) -> None:
  """Records the model a workdir trains, or fails if it already trains another one.

  Other keyword arguments are only warned about: those that change parameter shapes
  make :func:`restore_latest` fail.

  Raises:
    WorkdirMismatchError: ``WORKDIR/train_model.json`` names another model (the message
      names both).
  """
  path = os.path.join(workdir, RUN_MODEL_FILE)
  spec = {"name": name, "kwargs": json.loads(json.dumps(dict(kwargs)))}
  if os.path.isfile(path):
    try:
      with open(path) as f:
        old = json.load(f)
    except (OSError, ValueError) as e:
      raise WorkdirMismatchError(f"{path} is unreadable ({e}); it records which model the "
                                 "workdir trains. Use another --workdir.") from None
    if old.get("name") != name:
      raise WorkdirMismatchError(
          f"{workdir} holds a run of model {_spec_str(old)}, but the config trains "
          f"{_spec_str(spec)}. Use another --workdir (or the config that made it).")
    if old.get("kwargs") != spec["kwargs"]:
      log.warning("%s was started as %s; the config now says %s", workdir, _spec_str(old),
                  _spec_str(spec))
    return
  if jax.process_index() == 0:
    with atomic_file(path, overwrite=True) as tmp, open(tmp, "w") as f:
      json.dump(spec, f, indent=2, sort_keys=True)


def _spec_str(spec: Mapping[str, Any]) -> str:
  kw = ", ".join(f"{k}={v}" for k, v in sorted(dict(spec.get("kwargs", {})).items()))
  return f"{spec.get('name')!r}({kw})"


def _set_aside(manager: ocp.CheckpointManager, step: int, reason: str) -> str:
  """Moves checkpoint ``step`` out of the manager's folder; returns where it went."""
  src = os.path.join(os.fspath(manager.directory), str(step))
  dest_root = os.path.join(os.path.dirname(os.fspath(manager.directory)), SET_ASIDE_DIR)
  dest = os.path.join(dest_root, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
  if jax.process_index() == 0:
    os.makedirs(dest_root, exist_ok=True)
    os.rename(src, dest)
    with open(os.path.join(dest, "WHY.txt"), "w") as f:
      f.write(reason + "\n")
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"n3jax set aside checkpoint {step}")
  manager.reload()
  return dest


def restore_latest(manager: ocp.CheckpointManager, template: Any) -> Optional[Any]:
  """The newest good saved state, structured like ``template``; ``None`` if there is none.

  A checkpoint that cannot be read, or that holds NaN/inf, is moved to
  ``WORKDIR/checkpoints_set_aside/<step>-<time>/`` (with a ``WHY.txt``) and the next
  older one is tried; a warning says which.

  Raises:
    WorkdirMismatchError: the checkpoints hold another model (other parameter names or
      shapes); nothing is moved.
  """
  target = jax.tree_util.tree_map(np.asarray, serialization.to_state_dict(template))
  for step in sorted(manager.all_steps(), reverse=True):
    reason, tree = _try_restore(manager, step, target)
    if reason is None:
      return serialization.from_state_dict(template, tree)
    where = _set_aside(manager, step, reason)
    log.warning("checkpoint %d is unusable (%s); moved it to %s and trying the previous one",
                step, reason, where)
  return None


def _try_restore(manager: ocp.CheckpointManager, step: int, target: Any
                 ) -> Tuple[Optional[str], Any]:
  """``(None, tree)``, or ``(why the checkpoint is unusable, None)``."""
  try:
    stored = manager.item_metadata(step)
    stored = getattr(stored, "tree", stored)
  except Exception as e:  # noqa: BLE001 - any unreadable metadata makes it unusable
    return f"unreadable metadata: {first_line(e)}", None
  if stored is not None:
    have, want = tree_shapes(stored), tree_shapes(target)
    if set(have) != set(want) or any(have[k] != want[k] for k in want):
      diff = sorted(set(have) ^ set(want)) or [k for k in want if have[k] != want[k]]
      raise WorkdirMismatchError(
          f"the checkpoints in {manager.directory} hold another model than the config's "
          f"(parameters that differ: {_describe(diff)}). Use another --workdir.")
  quiet_closed_loop_noise()
  try:
    tree = manager.restore(step, args=ocp.args.StandardRestore(target))
  except Exception as e:  # noqa: BLE001 - truncated or corrupt files of any kind
    return f"unreadable: {first_line(e)}", None
  bad = non_finite_leaves(tree)
  if bad:
    return f"non-finite values in {_describe(bad)}", None
  return None, tree
