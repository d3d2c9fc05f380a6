"""Checking a training config before anything is built or compiled.

Every error names the config field and the value, in one line, so that a typo in a
``--config.x=...`` flag fails in a second instead of after the compile (or, worse, trains
on). ``0`` turns the optional periodic work off: ``log_every`` (log at the end only),
``checkpoint_every`` (save at the end and on a signal only), ``val_every``.
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections

from n3jax.nn import model_fields
from n3jax.nn.precision import compute_dtype
from n3jax.evaluate.denoise import PROTOCOLS
from n3jax.train.optim import SCHEDULES
from n3jax.train.step import LOSSES

EVERY_FIELDS = ("log_every", "checkpoint_every", "val_every")


class ConfigError(ValueError):
  """A config value is out of range; the message names the field."""


def _number(config, field: str) -> Any:
  value = config.get(field)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ConfigError(f"config.{field} must be a number, got {value!r}")
  if not math.isfinite(value):
    raise ConfigError(f"config.{field} must be finite, got {value!r}")
  return value


def _integer(config, field: str, *, minimum: int) -> int:
  value = _number(config, field)
  if value != int(value) or value < minimum:
    raise ConfigError(f"config.{field} must be an integer >= {minimum}, got {value!r}")
  return int(value)


def _in_range(config, field: str, lo: float, hi: float, *, lo_open: bool, hi_open: bool,
              hint: str = "") -> None:
  value = _number(config, field)
  ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
  if not ok:
    span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    raise ConfigError(f"config.{field} must be in {span}{hint}, got {value!r}")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises :class:`ConfigError` naming the first bad field of a training config."""
  from n3jax.tasks import task_of  # the tasks import this module's checks
  try:
    task = task_of(config)
  except KeyError as e:
    raise ConfigError(f"config.task: {e.args[0]}") from None
  name = config.model.name
  try:
    fields = model_fields(name)
  except KeyError as e:
    raise ConfigError(f"config.model.name: {e.args[0]}") from None
  unknown = sorted(set(config.model.kwargs) - fields)
  if unknown:
    raise ConfigError(f"config.model.kwargs {unknown} are not attributes of model {name!r} "
                      f"(it has {sorted(fields)})")
  if "dtype" in config.model.kwargs:
    raise ConfigError("config.model.kwargs.dtype: set the compute precision with "
                      "config.dtype instead")
  try:
    compute_dtype(config.get("dtype", "float32"), field="config.dtype")
  except ValueError as e:
    raise ConfigError(str(e)) from None
  _integer(config, "batch_size", minimum=1)
  _integer(config, "keep_checkpoints", minimum=1)
  for field in EVERY_FIELDS:
    _integer(config, field, minimum=0)
  _integer(config, "steps_per_epoch", minimum=1)
  _integer(config, "num_epochs", minimum=1)
  steps = _integer(config, "num_train_steps", minimum=-1)
  if steps == 0:
    raise ConfigError("config.num_train_steps must be > 0, or -1 for num_epochs * "
                      "steps_per_epoch; got 0")
  _integer(config, "prefetch", minimum=0)
  _in_range(config, "learning_rate", 0, math.inf, lo_open=True, hi_open=True)
  _in_range(config, "lr_total_decay", 0, 1, lo_open=True, hi_open=False,
            hint=" (the factor the learning rate falls by over num_epochs)")
  _in_range(config, "weight_decay", 0, math.inf, lo_open=False, hi_open=True)
  _in_range(config, "adam_b1", 0, 1, lo_open=False, hi_open=True)
  _in_range(config, "adam_b2", 0, 1, lo_open=False, hi_open=True)
  _in_range(config, "adam_eps", 0, math.inf, lo_open=True, hi_open=True)
  schedule = config.get("lr_schedule", "epochs")
  if schedule not in SCHEDULES:
    raise ConfigError(f"config.lr_schedule must be one of {SCHEDULES}, got {schedule!r}")
  if schedule == "piecewise":
    missing = [f for f in ("lr_boundaries", "lr_factor") if config.get(f) is None]
    if missing:
      raise ConfigError(f"config.lr_schedule='piecewise' needs config.{' and config.'.join(missing)}")
    _in_range(config, "lr_factor", 0, math.inf, lo_open=True, hi_open=True)
    bounds = list(config.lr_boundaries)
    if (any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in bounds)
        or bounds != sorted(set(bounds))):
      raise ConfigError("config.lr_boundaries must be increasing step numbers >= 1, got "
                        f"{tuple(bounds)}")
  if "clip_grad_norm_per_tensor" in config:
    _in_range(config, "clip_grad_norm_per_tensor", 0, math.inf, lo_open=False,
              hi_open=True, hint=" (0: no clipping)")
  try:
    task.check_config(config)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  dist = config.distributed
  if dist.num_processes < 1 or not 0 <= dist.process_id < dist.num_processes:
    raise ConfigError(f"config.distributed: process_id {dist.process_id} of "
                      f"num_processes {dist.num_processes} is impossible")


def check_image_training(config: ml_collections.ConfigDict) -> None:
  """The fields of the image tasks (crops, channels, losses, evaluation protocol); called
  by their ``check_config``."""
  _integer(config, "crop_size", minimum=1)
  _integer(config, "val_max_images", minimum=0)
  protocol = config.get("eval_protocol", "whole")
  if protocol not in PROTOCOLS:
    raise ConfigError(f"config.eval_protocol must be one of {PROTOCOLS}, got {protocol!r}")
  loss = config.get("loss", "reference")
  if loss not in LOSSES:
    raise ConfigError(f"config.loss must be one of {LOSSES}, got {loss!r}")
  if "loss_center" in config:
    center = _integer(config, "loss_center", minimum=0)
    if center and loss != "mse":
      raise ConfigError("config.loss_center applies to loss='mse' only")
    if center > _integer(config, "crop_size", minimum=1):
      raise ConfigError(f"config.loss_center={center} is larger than "
                        f"config.crop_size={config.crop_size}")
  if config.channels not in (1, 3):
    raise ConfigError(f"config.channels must be 1 or 3, got {config.channels!r}")
