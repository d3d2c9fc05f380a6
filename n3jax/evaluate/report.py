"""Writing evaluation results: per-set means and atomic JSON files."""

from __future__ import annotations

import json
from typing import Any, Dict, Sequence

import numpy as np

from n3jax.atomic import atomic_file


def summarize(entry: Dict[str, Any], keys: Sequence[str]) -> None:
  """Sets ``entry["mean_<key>"]`` over ``entry["images"]`` and ``entry["num_done"]``."""
  rows = entry["images"]
  for key in keys:
    entry[f"mean_{key}"] = float(np.mean([r[key] for r in rows]))
  entry["num_done"] = len(rows)


def write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` as JSON via a temporary file, so a reader never sees half a file."""
  with atomic_file(path, overwrite=True) as tmp, open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
