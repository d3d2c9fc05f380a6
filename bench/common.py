"""Shared helpers of the benchmark scripts: timing, machine description, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Any, Callable, Dict, List

import jax


def machine() -> Dict[str, Any]:
  """What the figures were measured on."""
  dev = jax.devices()[0]
  return {"platform": dev.platform, "device": getattr(dev, "device_kind", str(dev)),
          "num_devices": jax.device_count(), "cpu_count": os.cpu_count(),
          "python": platform.python_version(), "jax": jax.__version__}


def time_calls(fn: Callable[[], Any], *, repeats: int, warmup: int) -> List[float]:
  """Wall times of ``repeats`` calls of ``fn`` (blocked until ready), after ``warmup`` calls."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return times


def median(xs: List[float]) -> float:
  return statistics.median(xs)


def write_json(path: str, obj: Any) -> None:
  if not path:
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f, indent=2)
