"""Experiment configs (``ml_collections``), shipped inside the package.

One file per experiment: ``denoise.py`` (Gaussian denoising, paper Tables 1 and 3),
``realnoise.py`` (Poisson-Gaussian noise, Sec. 5.3), ``sisr.py`` and ``vdsr.py``
(super-resolution, Table 5), ``nlrn.py`` (NLRN), ``correspondences.py`` (sets, Sec. 5.5);
each takes ``:smoke``. In a
checkout ``configs/`` points here, so ``--config=configs/denoise.py`` is a path; after
``pip install`` the entry points also accept the bare name, ``--config=denoise.py:smoke``
(see :func:`resolve_config_arg`).
"""

from __future__ import annotations

import os
from typing import Iterable, List, Sequence, Tuple

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))


def parse_arg(arg: str, variants: Iterable[str], *, default: str) -> Tuple[str, bool]:
  """A config argument ``"VARIANT,smoke"`` → ``(variant, smoke)``: comma-separated, at most
  one of ``variants`` (else ``default``) and/or ``smoke``; a ``ValueError`` otherwise."""
  known = sorted(variants)
  tokens = [t for t in arg.split(",") if t]
  unknown = [t for t in tokens if t != "smoke" and t not in known]
  if unknown:
    raise ValueError(f"unknown config argument(s) {unknown}; use {known} and/or smoke")
  chosen = [t for t in tokens if t in known]
  if len(chosen) > 1:
    raise ValueError(f"choose one variant, got {chosen}")
  return (chosen[0] if chosen else default), "smoke" in tokens


def available() -> List[str]:
  """Names of the shipped configs, e.g. ``["denoise", "sisr", "vdsr"]``."""
  return sorted(f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith(".py") and f[0] != "_")


def resolve_config_arg(value: str) -> str:
  """``PATH[:ARG]`` → the same, with a shipped config's path when ``PATH`` is not a file.

  ``denoise``, ``denoise.py`` and ``configs/denoise.py`` (when no such file exists
  relative to the working directory) all name the shipped ``denoise.py``; an existing
  file always wins, so a user's own config is used as given.
  """
  path, sep, arg = value.partition(":")
  if os.path.isfile(path):
    return value
  name = os.path.basename(path)
  name = name[:-3] if name.endswith(".py") else name
  if name in available() and os.path.dirname(path) in ("", "configs"):
    return os.path.join(CONFIG_DIR, f"{name}.py") + sep + arg
  return value


def resolve_config_flags(argv: Sequence[str], flag: str = "config") -> List[str]:
  """``argv`` with the value of ``--config=…`` / ``--config …`` passed through
  :func:`resolve_config_arg` (other arguments untouched)."""
  out = list(argv)
  for i, a in enumerate(out):
    if a.startswith(f"--{flag}="):
      out[i] = f"--{flag}=" + resolve_config_arg(a.split("=", 1)[1])
    elif a == f"--{flag}" and i + 1 < len(out):
      out[i + 1] = resolve_config_arg(out[i + 1])
  return out
