"""Model checkpoints on disk: variables via orbax plus a JSON spec of the model.

Layout of a model directory::

    DIR/model.json    {"model": {"name": ..., "kwargs": {...}}, "metadata": {...}}
    DIR/variables/    orbax checkpoint of {"params": ..., "batch_stats": ...}
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Tuple

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp

from n3jax.atomic import atomic_directory, atomic_file
from n3jax.nn import create_model

MODEL_SPEC_FILE = "model.json"
VARIABLES_DIR = "variables"


def save_model(directory: str | os.PathLike, variables: Mapping[str, Any], *, name: str,
               kwargs: Mapping[str, Any] | None = None,
               metadata: Mapping[str, Any] | None = None, overwrite: bool = False) -> None:
  """Writes ``variables`` and the model spec (registry ``name`` + ``kwargs``) to ``directory``.

  The folder is written under a temporary name and renamed into place, so it is either
  complete or absent. An existing non-empty ``directory`` is replaced only with
  ``overwrite`` (else :class:`n3jax.atomic.OutputExistsError`). With several processes
  (multi-host training) all of them write the same folder in place, as orbax requires.
  """
  directory = os.path.abspath(os.fspath(directory))
  spec = {"model": {"name": name, "kwargs": dict(kwargs or {})}, "metadata": dict(metadata or {})}
  if jax.process_count() > 1:
    _write_model(directory, variables, spec)
    return
  with atomic_directory(directory, overwrite=overwrite) as tmp:
    _write_model(tmp, variables, spec)


def _write_model(directory: str, variables: Mapping[str, Any], spec: Dict[str, Any]) -> None:
  os.makedirs(directory, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(directory, VARIABLES_DIR),
                    jax.tree_util.tree_map(np.asarray, dict(variables)), force=True)
  checkpointer.wait_until_finished()
  with atomic_file(os.path.join(directory, MODEL_SPEC_FILE), overwrite=True) as tmp, \
      open(tmp, "w") as f:  # several processes may write it
    json.dump(spec, f, indent=2, sort_keys=True)


def read_model_name(directory: str | os.PathLike) -> str:
  """The registry name of the model stored in ``directory``."""
  spec_path = os.path.join(os.path.abspath(os.fspath(directory)), MODEL_SPEC_FILE)
  if not os.path.isfile(spec_path):
    raise FileNotFoundError(f"{directory} is not an n3jax model directory (no {MODEL_SPEC_FILE}); "
                            "convert official weights with `python -m n3jax.convert` or train "
                            "with train.py (WORKDIR/model)")
  with open(spec_path) as f:
    return json.load(f)["model"]["name"]


def load_model(directory: str | os.PathLike, **override_kwargs: Any
               ) -> Tuple[nn.Module, Dict[str, Any], Dict[str, Any]]:
  """Reads a directory written by :func:`save_model`.

  Args:
    directory: the model directory.
    **override_kwargs: model attributes to change that do not affect the parameters
      (e.g. ``query_chunk``).

  Returns:
    ``(model, variables, metadata)``; ``metadata["model_name"]`` is the registry name.
  """
  directory = os.path.abspath(os.fspath(directory))
  spec_path = os.path.join(directory, MODEL_SPEC_FILE)
  if not os.path.isfile(spec_path):
    raise FileNotFoundError(f"{directory} is not an n3jax model directory (no {MODEL_SPEC_FILE}); "
                            "convert official weights with `python -m n3jax.convert`")
  with open(spec_path) as f:
    spec = json.load(f)
  kwargs = {**spec["model"].get("kwargs", {}), **override_kwargs}
  model = create_model(spec["model"]["name"], **kwargs)
  variables = ocp.StandardCheckpointer().restore(os.path.join(directory, VARIABLES_DIR))
  metadata = {**spec.get("metadata", {}), "model_name": spec["model"]["name"]}
  return model, dict(variables), metadata
