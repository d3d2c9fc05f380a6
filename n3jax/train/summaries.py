"""Where training reports: TensorBoard event files (tensorboardX, no TensorFlow) and metrics.json."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional

METRICS_FILE = "metrics.json"


class SummaryWriter:
  """Scalars to ``WORKDIR/tensorboard`` and the latest validation to ``WORKDIR/metrics.json``.

  Only the first process writes (``enabled=False`` elsewhere).
  """

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.workdir = workdir
    self.enabled = enabled
    self._tb: Optional[Any] = None
    if enabled:
      from tensorboardX import SummaryWriter as _TBWriter  # protobuf only, no TensorFlow
      self._tb = _TBWriter(os.path.join(workdir, "tensorboard"))

  def scalars(self, step: int, values: Mapping[str, float], prefix: str = "") -> None:
    if self._tb is None:
      return
    for name, value in values.items():
      self._tb.add_scalar(f"{prefix}{name}", float(value), step)
    self._tb.flush()

  def write_metrics_json(self, values: Mapping[str, Any]) -> None:
    """Atomically replaces ``WORKDIR/metrics.json`` with a flat JSON object."""
    if not self.enabled:
      return
    path = os.path.join(self.workdir, METRICS_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(dict(values), f, indent=2, sort_keys=True)
    os.replace(tmp, path)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
