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

from n3jax.nn import create_model

MODEL_SPEC_FILE = "model.json"
VARIABLES_DIR = "variables"


def save_model(directory: str | os.PathLike, variables: Mapping[str, Any], *, name: str,
               kwargs: Mapping[str, Any] | None = None,
               metadata: Mapping[str, Any] | None = None) -> None:
  """Writes ``variables`` and the model spec (registry ``name`` + ``kwargs``) to ``directory``."""
  directory = os.path.abspath(os.fspath(directory))
  os.makedirs(directory, exist_ok=True)
  target = os.path.join(directory, VARIABLES_DIR)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(target, jax.tree_util.tree_map(np.asarray, dict(variables)), force=True)
  checkpointer.wait_until_finished()
  spec = {"model": {"name": name, "kwargs": dict(kwargs or {})}, "metadata": dict(metadata or {})}
  tmp = os.path.join(directory, f"{MODEL_SPEC_FILE}.{os.getpid()}.tmp")  # several processes may write
  with open(tmp, "w") as f:
    json.dump(spec, f, indent=2, sort_keys=True)
  os.replace(tmp, os.path.join(directory, MODEL_SPEC_FILE))


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
