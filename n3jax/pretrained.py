"""Where trained models are found: the per-user model folder and the official weights.

``python -m n3jax.convert FILE --install`` converts an official checkpoint into the model
folder, ``$N3JAX_MODEL_DIR`` or else ``$XDG_DATA_HOME/n3jax/models`` (by default
``~/.local/share/n3jax/models``), as ``n3net-gauss-sigma25`` and so on. The denoising CLI,
the demo and the notebook look there first. Official ``.t7`` files in
``$N3JAX_PRETRAINED_DIR`` (or ``../shared/pretrained`` beside a checkout) are converted in
memory when no installed model is found.

The official weights are the authors' (https://github.com/visinf/n3net); their licence
forbids redistribution, so n3jax never ships them and downloads nothing by itself.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, List, Optional, Tuple

from n3jax.data.images import env_or_shared

MODEL_DIR_ENV = "N3JAX_MODEL_DIR"
PRETRAINED_ENV = "N3JAX_PRETRAINED_DIR"
OFFICIAL_SIGMAS = (25, 50, 70)
OFFICIAL_REPO = "https://github.com/visinf/n3net"
# The authors' Gaussian-denoising checkpoints (σ on the 0-255 scale), 2,856,732 bytes each.
OFFICIAL_URL = (OFFICIAL_REPO + "/raw/master/results_gaussian_denoising/"
                "pretrained_sigma{sigma}/checkpoint/051_ckpt.t7")


def model_dir() -> str:
  """The per-user model folder (it need not exist)."""
  env = os.environ.get(MODEL_DIR_ENV)
  if env:
    return os.path.abspath(os.path.expanduser(env))
  data_home = os.environ.get("XDG_DATA_HOME") or os.path.join("~", ".local", "share")
  return os.path.abspath(os.path.expanduser(os.path.join(data_home, "n3jax", "models")))


def installed_name(sigma: float) -> str:
  """Folder name of the installed Gaussian denoiser for ``sigma``: ``n3net-gauss-sigma25``."""
  return f"n3net-gauss-sigma{sigma:g}"


# Folder name of the installed real-noise model (the Poisson-Gaussian release, converted).
INSTALLED_PG = "n3net-pg"
# The release's real-noise checkpoint (the model of paper Sec. 5.3, Table 4).
OFFICIAL_PG_URL = (OFFICIAL_REPO + "/raw/master/results_poissongaussian_denoising/"
                   "pretrained/checkpoint/051_ckpt.t7")


def _model_folders(directory: str) -> List[Tuple[str, Dict[str, Any]]]:
  """``[(folder, metadata)]`` of the model folders in ``directory``, sorted by name (folders
  without a readable ``model.json`` are skipped)."""
  found = []
  if not os.path.isdir(directory):
    return found
  for name in sorted(os.listdir(directory)):
    try:
      with open(os.path.join(directory, name, "model.json")) as f:
        meta = json.load(f).get("metadata", {})
      if isinstance(meta, dict):
        found.append((os.path.join(directory, name), meta))
    except (OSError, ValueError, AttributeError, TypeError):
      continue  # not a model folder
  return found


def installed_realnoise(directory: Optional[str] = None) -> Optional[str]:
  """The installed Poisson-Gaussian model folder (``n3net-pg``, or else the first model
  folder whose ``model.json`` says ``"task": "realnoise"``), or ``None``."""
  folders = [path for path, meta in _model_folders(directory or model_dir())
             if meta.get("task") == "realnoise"]
  folders.sort(key=lambda path: os.path.basename(path) != INSTALLED_PG)  # stable
  return folders[0] if folders else None


def installed_denoisers(directory: Optional[str] = None) -> Dict[float, str]:
  """``{σ: model folder}`` of the Gaussian denoisers in the model folder.

  A folder counts when its ``model.json`` says ``"sigma"`` in its metadata (converted
  official weights, or ``WORKDIR/model`` of a denoising run copied there).
  """
  found: Dict[float, str] = {}
  for path, meta in _model_folders(directory or model_dir()):
    try:
      if meta.get("task", "denoise") == "denoise" and meta.get("sigma") is not None:
        found.setdefault(float(meta["sigma"]), path)
    except (ValueError, TypeError):
      continue  # a malformed σ
  return found


def pretrained_dir() -> Optional[str]:
  """``$N3JAX_PRETRAINED_DIR``, else ``../shared/pretrained`` beside a checkout, if present."""
  return env_or_shared(PRETRAINED_ENV, "pretrained")


def official_files(directory: Optional[str] = None) -> Dict[float, str]:
  """``{σ: path}`` of official checkpoints named ``n3net_gauss_sigma{σ}.t7`` in ``directory``."""
  directory = directory or pretrained_dir()
  found: Dict[float, str] = {}
  for sigma in OFFICIAL_SIGMAS:
    path = os.path.join(directory, f"n3net_gauss_sigma{sigma}.t7") if directory else ""
    if path and os.path.isfile(path):
      found[float(sigma)] = path
  return found


def nearest(sigma: float, available: Iterable[float]) -> float:
  """The available noise level closest to ``sigma`` (ties: the lower one)."""
  options = sorted(available)
  if not options:
    raise ValueError("no noise levels to choose from")
  return min(options, key=lambda s: (abs(s - sigma), s))


def how_to_get_realnoise_weights() -> str:
  """What to tell a user who has no Poisson-Gaussian model."""
  return ("no Poisson-Gaussian (real-noise) N³Net found. Download the authors' model, "
          f"{OFFICIAL_PG_URL}, and install it with `n3jax-convert 051_ckpt.t7 --install` "
          f"(it goes to {os.path.join(model_dir(), INSTALLED_PG)}); or pass --checkpoint DIR "
          "with a model trained by `train.py --config=configs/realnoise.py`.")


def how_to_get_weights() -> str:
  """What to tell a user who has no weights."""
  return ("no N³Net weights found. Download the authors' checkpoint for σ=25 (or 50, 70), "
          f"e.g. {OFFICIAL_URL.format(sigma=25)}, and install it with "
          "`n3jax-convert 051_ckpt.t7 --install` (σ is recognised from the file); it goes to "
          f"{model_dir()} (set ${MODEL_DIR_ENV} to change). Or pass --checkpoint DIR with a "
          "model folder from n3jax-convert or train.py.")
