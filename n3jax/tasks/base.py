"""The task interface: what differs between denoising, super-resolution, real noise and
correspondence classification, so that the training loop and ``eval.py`` hold no task
branches (as scenic and big_vision choose a trainer by name).

A task is chosen by ``config.task`` (default ``"denoise"``) through
:func:`n3jax.tasks.get_task`. It supplies, for a config:

* ``check_config(config)``: its own fields, raising ``ValueError`` naming the field;
* ``input_shape(config)``: one example's model input shape (to initialize the model);
* ``training_source(config, root)``: the training data, and the name of the set used;
* ``host_batch(source, step, config, *, shard_index, num_shards)``: this host's part of the
  global batch of ``step`` (numpy; a pure function of the config and the step);
* ``make_p_step(model, config)``: the pmapped train step (on-device noise, loss, metrics);
* ``make_validation(model, config, root)``: ``run(variables, stop) -> metrics | None``;
* ``summary_line(metrics)``: one log line for a validation;
* ``export_metadata(config)``: what the exported model says about its task;
* ``evaluate(config, checkpoint, *, datasets, output_dir, overwrite)``: ``eval.py``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import ml_collections

log = logging.getLogger(__name__)

Validation = Callable[[Mapping[str, Any], Callable[[], bool]], Optional[Dict[str, float]]]


class Task:
  """Base class: the common parts; subclasses fill in the rest (see the module doc)."""
  name: str = ""
  # The training metric shown next to the loss on the progress bar.
  progress_metric: str = "psnr"

  def check_config(self, config: ml_collections.ConfigDict) -> None:
    del config

  def input_shape(self, config: ml_collections.ConfigDict) -> Tuple[int, ...]:
    raise NotImplementedError

  def training_source(self, config: ml_collections.ConfigDict, root: Optional[str]
                      ) -> Tuple[Any, str]:
    raise NotImplementedError

  def host_batch(self, source: Any, step: int, config: ml_collections.ConfigDict, *,
                 shard_index: int, num_shards: int) -> Any:
    raise NotImplementedError

  def make_p_step(self, model: Any, config: ml_collections.ConfigDict) -> Callable:
    raise NotImplementedError

  def make_validation(self, model: Any, config: ml_collections.ConfigDict,
                      root: Optional[str]) -> Optional[Validation]:
    raise NotImplementedError

  def summary_line(self, metrics: Mapping[str, float]) -> str:
    return (f"validation PSNR {metrics['val_psnr']:.3f} dB (SSIM {metrics['val_ssim']:.4f}, "
            f"input {metrics['val_input_psnr']:.3f} dB)")

  def export_metadata(self, config: ml_collections.ConfigDict) -> Dict[str, Any]:
    return {}

  def evaluate(self, config: ml_collections.ConfigDict, checkpoint: str, *,
               datasets: Sequence[str], output_dir: str, overwrite: bool) -> None:
    raise NotImplementedError


def load_for_eval(config: ml_collections.ConfigDict, checkpoint: str, *, task: str):
  """``(model, variables, run_info)`` of a model folder for ``eval.py``: checked against the
  config (same model name, same task), with the config's inference knobs applied."""
  from n3jax.checkpoint import load_model, read_model_name
  from n3jax.nn import model_fields
  from n3jax.nn.precision import compute_dtype
  name = read_model_name(checkpoint)
  if name != config.model.name:
    raise ValueError(f"{checkpoint} holds a {name!r} model but the config asks for "
                     f"{config.model.name!r} (set --config.model.name)")
  # Inference-only knobs, for the models (and configs) that have them.
  inference = {k: v for k, v in (("query_chunk", config.get("query_chunk")),
                                 ("tile", config.get("tile", 0) or None),
                                 ("dtype", compute_dtype(config.get("dtype", "float32"),
                                                         field="config.dtype")))
               if k in model_fields(name) and (k == "dtype" or k in config)}
  # The architecture is the checkpoint's (its model.json); the config may only change
  # inference knobs. A config that describes another architecture is reported, not applied.
  model, variables, meta = load_model(checkpoint, **inference)
  stored = meta.get("task", "denoise")
  if stored != task:
    raise ValueError(f"{checkpoint} holds a model for task {stored!r} but the config "
                     f"evaluates {task!r}")
  differ = {k: v for k, v in config.model.kwargs.items() if getattr(model, k, v) != v}
  if differ:
    log.warning("evaluating %s as stored (%s); the config's %s are not applied",
                checkpoint, name, differ)
  run_info = {"checkpoint": os.path.abspath(checkpoint), "checkpoint_metadata": meta,
              "config": json.loads(config.to_json())}
  return model, variables, run_info
