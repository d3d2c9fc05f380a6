"""Tasks by name: ``get_task(config.task)`` (see :mod:`n3jax.tasks.base`).

  TASKS = {"denoise": DenoiseTask(), "realnoise": RealNoiseTask(), "sisr": SRTask(),
           "correspondences": CorrespondenceTask()}
"""

from __future__ import annotations

from typing import Dict

from n3jax.tasks.base import Task
from n3jax.tasks.correspondences import CorrespondenceTask
from n3jax.tasks.images import DenoiseTask, RealNoiseTask, SRTask

TASKS: Dict[str, Task] = {
    "denoise": DenoiseTask(),  # Gaussian denoising (paper Sec. 5.1-5.2)
    "realnoise": RealNoiseTask(),  # Poisson-Gaussian noise, noise-map input (Sec. 5.3)
    "sisr": SRTask(),  # single-image super-resolution (Sec. 5.4)
    "correspondences": CorrespondenceTask(),  # inlier classification on sets (Sec. 5.5)
}
DEFAULT_TASK = "denoise"


def get_task(name: str) -> Task:
  """The task registered as ``name``; a ``KeyError`` listing the known ones otherwise."""
  if name not in TASKS:
    raise KeyError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
  return TASKS[name]


def task_of(config) -> Task:
  """The task of a config: ``config.task``, default ``"denoise"``."""
  return get_task(config.get("task", DEFAULT_TASK))


__all__ = ["TASKS", "Task", "get_task", "task_of", "DEFAULT_TASK"]
