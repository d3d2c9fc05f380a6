"""Model checkpoints on disk: variables via orbax plus a JSON spec of the model.

Layout of a model directory::

    DIR/model.json    {"model": {"name": ..., "kwargs": {...}}, "metadata": {...}}
    DIR/variables/    orbax checkpoint of {"params": ..., "batch_stats": ...}
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from typing import Any, Dict, List, Mapping, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from n3jax.atomic import atomic_directory, atomic_file
from n3jax.nn import create_model, model_fields
from n3jax.nn.registry import MODELS

MODEL_SPEC_FILE = "model.json"
VARIABLES_DIR = "variables"
MAX_SPEC_BYTES = 1 << 20  # model.json is a few hundred bytes
MIN_INIT_SIDE = 16  # side of the dummy image the shapes are checked on (enlarged if needed)


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


class ModelFileError(ValueError):
  """A model folder is missing, unreadable or does not describe a valid model."""


def read_spec(directory: str | os.PathLike) -> Dict[str, Any]:
  """The checked ``model.json`` of ``directory``: ``{"model": {"name", "kwargs"}, "metadata"}``.

  The name must be registered and the keyword arguments must be attributes of that model
  with values of the types of its defaults.

  Raises:
    FileNotFoundError: no ``model.json`` (not a model folder).
    ModelFileError: unreadable JSON, or a spec that does not describe a registered model.
  """
  spec_path = os.path.join(os.path.abspath(os.fspath(directory)), MODEL_SPEC_FILE)
  if not os.path.isfile(spec_path):
    raise FileNotFoundError(f"{directory} is not an n3jax model directory (no {MODEL_SPEC_FILE}); "
                            "convert official weights with `n3jax-convert` or train with "
                            "train.py (WORKDIR/model)")
  try:
    if os.path.getsize(spec_path) > MAX_SPEC_BYTES:
      raise ValueError(f"larger than {MAX_SPEC_BYTES} bytes")
    with open(spec_path, encoding="utf-8") as f:
      spec = json.load(f)
  except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError included
    raise ModelFileError(f"{spec_path}: not a readable model spec ({e})") from None
  model = spec.get("model") if isinstance(spec, dict) else None
  if (not isinstance(model, dict) or not isinstance(model.get("name"), str)
      or not isinstance(model.get("kwargs", {}), dict)
      or not isinstance(spec.get("metadata", {}), dict)):
    raise ModelFileError(f'{spec_path}: expected {{"model": {{"name": ..., "kwargs": {{...}}}}, '
                         '"metadata": {...}}')
  name, kwargs = model["name"], model.get("kwargs", {})
  if name not in MODELS:
    raise ModelFileError(f"{spec_path}: unknown model {name!r}; this n3jax knows "
                         f"{sorted(MODELS)}")
  problems = _kwarg_problems(name, kwargs)
  if problems:
    raise ModelFileError(f"{spec_path}: {'; '.join(problems)}")
  return {"model": {"name": name, "kwargs": kwargs}, "metadata": spec.get("metadata", {})}


def _kwarg_problems(name: str, kwargs: Mapping[str, Any]) -> List[str]:
  """What is wrong with ``kwargs`` for the registered model ``name`` (types of its defaults)."""
  factory = MODELS[name]
  cls = factory.func if isinstance(factory, functools.partial) else factory
  preset = factory.keywords if isinstance(factory, functools.partial) else {}
  defaults = {f.name: preset.get(f.name, f.default) for f in dataclasses.fields(cls)}
  problems = []
  for key, value in kwargs.items():
    if key not in model_fields(name):
      problems.append(f"{key!r} is not an attribute of model {name!r}")
      continue
    default = defaults.get(key, dataclasses.MISSING)
    if default is dataclasses.MISSING or default is None or value is None:
      continue
    if isinstance(default, bool):
      ok = isinstance(value, bool)
    elif isinstance(default, int):
      ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
      ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
      ok = isinstance(value, str)
    elif isinstance(default, (tuple, list)):
      ok = isinstance(value, (tuple, list))
    else:
      ok = True
    if not ok:
      problems.append(f"{key}={value!r} should be a {type(default).__name__} "
                      f"(default {default!r})")
  return problems


def read_model_name(directory: str | os.PathLike) -> str:
  """The registry name of the model stored in ``directory`` (its checked ``model.json``)."""
  return read_spec(directory)["model"]["name"]


def _expected_shapes(model: nn.Module) -> Dict[str, Tuple[int, ...]]:
  """``{"params/…/kernel": shape}`` of ``model``'s variables (abstractly: no compute).

  Initialized on a small gray image, or on a model's own ``example_input_shape()`` (one
  example, e.g. a set of correspondences) when it has one."""
  from n3jax.infer import runnable_size
  example = getattr(model, "example_input_shape", None)
  if example is not None:
    shape = tuple(example())
  else:
    shape = (*runnable_size(model, MIN_INIT_SIDE, MIN_INIT_SIDE), 1)
  keys = {"params": jax.random.PRNGKey(0), "gumbel": jax.random.PRNGKey(1)}
  shapes = jax.eval_shape(lambda: model.init(keys, jnp.zeros((1, *shape)), train=False))
  return tree_shapes(dict(shapes))


def _path_str(path: Tuple[Any, ...]) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def tree_shapes(tree: Any) -> Dict[str, Tuple[int, ...]]:
  """``{"params/conv/kernel": shape}`` of every leaf of ``tree``."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {_path_str(path): tuple(np.shape(x)) for path, x in flat}


def non_finite_leaves(tree: Any) -> List[str]:
  """Paths (``"params/conv/kernel"``) of the floating-point leaves holding NaN or inf."""
  return [_path_str(path) for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]
          if np.asarray(x).dtype.kind in "fc" and not np.isfinite(np.asarray(x)).all()]


def check_variables(model: nn.Module, variables: Mapping[str, Any], *, where: str) -> None:
  """Fails unless ``variables`` have ``model``'s names and shapes and are all finite.

  The input channels of a convolution kernel (axis -2) may differ: the model was
  initialized on one channel here.

  Raises:
    ModelFileError: naming ``where`` and the first differences.
  """
  want = _expected_shapes(model)
  have = tree_shapes({k: v for k, v in variables.items() if k in ("params", "batch_stats")})
  missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
  wrong = [k for k in set(want) & set(have) if not _same_but_input_channels(want[k], have[k])]
  if missing or extra or wrong:
    parts = ([f"missing {', '.join(missing[:3])}"] if missing else []) + (
        [f"unexpected {', '.join(extra[:3])}"] if extra else []) + (
        [f"{k} is {have[k]}, the model has {want[k]}" for k in sorted(wrong)[:3]])
    raise ModelFileError(f"{where}: the stored variables do not fit model "
                         f"{type(model).__name__} as model.json describes it: "
                         + "; ".join(parts))
  bad = non_finite_leaves(dict(variables))
  if bad:
    raise ModelFileError(f"{where}: {len(bad)} variable(s) hold NaN/inf ({', '.join(bad[:3])})")


def _same_but_input_channels(want: Tuple[int, ...], have: Tuple[int, ...]) -> bool:
  if want == have:
    return True
  return (len(want) == len(have) == 4 and want[:2] == have[:2] and want[3] == have[3])


def first_line(e: BaseException) -> str:
  """``"<Type>: <first line of the message>"`` (at most 300 characters of it)."""
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def _is_closed_loop_noise(unraisable: Any) -> bool:
  """The ``Event loop is closed`` errors of tensorstore's read callbacks (reported as
  unraisable, one per pending read) after orbax gave up on a corrupt checkpoint and
  closed its event loop."""
  exc, tb = unraisable.exc_value, unraisable.exc_traceback
  if not isinstance(exc, RuntimeError) or str(exc) != "Event loop is closed":
    return False
  while tb is not None and tb.tb_next is not None:
    tb = tb.tb_next
  return tb is not None and tb.tb_frame.f_code.co_name == "_check_closed"


def quiet_closed_loop_noise() -> None:
  """Drops :func:`_is_closed_loop_noise` from what ``sys.unraisablehook`` prints (installed
  once per process; every other report goes through as before). Without it a single
  truncated file buries the one-line report under hundreds of tracebacks."""
  previous = sys.unraisablehook
  if getattr(previous, "_n3jax_quiet", False):
    return

  def hook(unraisable):
    if not _is_closed_loop_noise(unraisable):
      previous(unraisable)
  hook._n3jax_quiet = True  # type: ignore[attr-defined]
  sys.unraisablehook = hook


def load_model(directory: str | os.PathLike, **override_kwargs: Any
               ) -> Tuple[nn.Module, Dict[str, Any], Dict[str, Any]]:
  """Reads a directory written by :func:`save_model`, checking it on the way.

  Args:
    directory: the model directory.
    **override_kwargs: model attributes to change that do not affect the parameters
      (e.g. ``query_chunk``).

  Returns:
    ``(model, variables, metadata)``; ``metadata["model_name"]`` is the registry name.

  Raises:
    FileNotFoundError: not a model folder.
    ModelFileError: ``model.json`` is malformed or names an unknown model or attribute,
      the variables cannot be read, do not fit the model, or hold NaN/inf. The message
      names the file.
  """
  directory = os.path.abspath(os.fspath(directory))
  spec = read_spec(directory)
  kwargs = {**spec["model"]["kwargs"], **override_kwargs}
  try:
    model = create_model(spec["model"]["name"], **kwargs)
  except (TypeError, ValueError) as e:
    raise ModelFileError(f"{os.path.join(directory, MODEL_SPEC_FILE)}: {e}") from None
  var_dir = os.path.join(directory, VARIABLES_DIR)
  quiet_closed_loop_noise()
  try:
    variables = ocp.StandardCheckpointer().restore(var_dir)
  except Exception as e:  # noqa: BLE001 - missing, truncated or corrupt files of any kind
    raise ModelFileError(f"{var_dir}: unreadable variables ({first_line(e)})") from None
  variables = dict(variables)
  check_variables(model, variables, where=var_dir)
  metadata = {**spec["metadata"], "model_name": spec["model"]["name"]}
  return model, variables, metadata
