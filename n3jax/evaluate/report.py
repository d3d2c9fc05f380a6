"""Writing evaluation results: per-set means, atomic JSON files, merging into earlier results."""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import numpy as np

from n3jax.atomic import OutputExistsError, atomic_file


def summarize(entry: Dict[str, Any], keys: Sequence[str]) -> None:
  """Sets ``entry["mean_<key>"]`` over ``entry["images"]`` and ``entry["num_done"]``."""
  rows = entry["images"]
  for key in keys:
    entry[f"mean_{key}"] = float(np.mean([r[key] for r in rows]))
  entry["num_done"] = len(rows)


def write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` as strict JSON via a temporary file, so a reader never sees half a file.

  Non-finite floats (a PSNR of a perfect result is inf) become ``null``: Python's
  ``Infinity``/``NaN`` tokens are not JSON, and other readers reject them.
  """
  with atomic_file(path, overwrite=True) as tmp, open(tmp, "w") as f:
    json.dump(_finite_or_null(obj), f, indent=2, allow_nan=False)


def write_text(path: str, text: str) -> None:
  """Writes ``text`` via a temporary file (replacing ``path``)."""
  with atomic_file(path, overwrite=True) as tmp, open(tmp, "w") as f:
    f.write(text)


def _finite_or_null(obj: Any) -> Any:
  if isinstance(obj, float):
    return obj if np.isfinite(obj) else None
  if isinstance(obj, dict):
    return {k: _finite_or_null(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_finite_or_null(v) for v in obj]
  return obj


RESULTS_FILE = "results.json"
RESULTS_TABLE = "results.md"


def write_results(output_dir: Optional[str], results: Mapping[str, Any], markdown: str) -> None:
  """``output_dir/results.json`` and ``output_dir/results.md`` (the folder made if needed),
  each written atomically; nothing without an ``output_dir``."""
  if not output_dir:
    return
  os.makedirs(output_dir, exist_ok=True)
  write_json(os.path.join(output_dir, RESULTS_FILE), results)
  write_text(os.path.join(output_dir, RESULTS_TABLE), markdown)


def same_model(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
  """Whether two ``checkpoint_metadata`` describe one model (by sha256 when both have it)."""
  if a.get("sha256") and b.get("sha256"):
    return a["sha256"] == b["sha256"]
  return dict(a) == dict(b)


def is_complete(entry: Mapping[str, Any]) -> bool:
  """Whether a set's (or a scale's) entry holds every image of the set."""
  return bool(entry.get("num_done")) and entry.get("num_done") == entry.get("num_images")


# Identity fields that results written before the field existed had implicitly.
IDENTITY_DEFAULTS = {"protocol": "whole"}


def previous_datasets(output_dir: Optional[str], identity: Mapping[str, Any],
                      measuring: Sequence[str], *, overwrite: bool = False,
                      complete: Callable[[Any], bool] = is_complete) -> Dict[str, Any]:
  """The sets of an existing ``OUTPUT/results.json`` that a new evaluation keeps.

  Evaluating into a folder that holds results adds sets to them; it never drops any. The
  file must come from the same run (``identity``: task, σ, seed, model, …): otherwise,
  or when it already holds complete results for a set in ``measuring``, nothing is
  written unless ``overwrite`` is given. (A set left incomplete, e.g. by Ctrl-C, is
  measured again without it.)

  Args:
    identity: the fields of the new results that must equal the old ones;
      ``checkpoint_metadata`` is compared with :func:`same_model`.
    complete: whether an old set's entry is complete.

  Returns:
    ``{name: entry}`` of old sets to write along with the new ones.

  Raises:
    OutputExistsError: as above; the message names the file and what differs.
  """
  path = os.path.join(output_dir, RESULTS_FILE) if output_dir else None
  if output_dir and os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise OutputExistsError(f"--output {output_dir} is a file, not a folder")
  if path is None or not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      old = json.load(f)
    old_sets = old["datasets"]
    if not isinstance(old_sets, dict):
      raise ValueError("'datasets' is not a mapping")
  except (OSError, ValueError, KeyError, TypeError) as e:
    if overwrite:
      return {}
    raise OutputExistsError(f"{path} exists but is not readable results ({e}); choose "
                            "another --output, or pass --overwrite to replace it") from None
  old = {**IDENTITY_DEFAULTS, **old}
  differ = [k for k, v in identity.items()
            if not (same_model(old.get(k) or {}, v or {}) if k == "checkpoint_metadata"
                    else _same_value(old.get(k), v))]
  if differ:
    if overwrite:
      return {}
    shown = ", ".join(f"{k}: {old.get(k)!r:.80} there, {identity[k]!r:.80} now"
                      for k in differ if k != "checkpoint_metadata")
    shown += (", another model" if "checkpoint_metadata" in differ else "")
    raise OutputExistsError(f"{path} holds results of another evaluation ({shown.strip(', ')}); "
                            "choose another --output, or pass --overwrite to replace them")
  again = [n for n in measuring if n in old_sets and complete(old_sets[n])]
  if again and not overwrite:
    raise OutputExistsError(f"{path} already holds complete results for {again}; pass "
                            "--overwrite to measure them again (the other sets are kept)")
  return {n: e for n, e in old_sets.items() if n not in measuring}


def _same_value(a: Any, b: Any) -> bool:
  try:
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))  # tuples vs lists
  except (TypeError, ValueError):
    return a == b
