"""Benchmark image sets: where they live, how they are read and converted to gray.

The data root is ``$N3JAX_DATA_ROOT`` if set, else ``../shared/data`` beside the
repository checkout. Without any data root, :func:`builtin_gray_images` supplies sample
photos that ship with scikit-image, so demos run on a fresh machine.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from n3jax.data import imagefile

DATA_ROOT_ENV = "N3JAX_DATA_ROOT"
# RGB -> gray weights of the N³Net evaluation (PIL convert("L", matrix)).
GRAY_MATRIX = (0.2989, 0.5870, 0.1140, 0.0)


@dataclass(frozen=True)
class ImageSet:
  """A folder of images under the data root."""
  folder: str
  pattern: str
  description: str
  num_images: int  # in the published benchmark (a results table flags fewer)


DENOISING_SETS: Dict[str, ImageSet] = {
    "set12": ImageSet("Set12", "*.png", "12 gray images (7x 256², 5x 512²)", 12),
    "bsd68": ImageSet("BSD68", "*.png", "68 gray BSDS500 validation images (481x321)", 68),
    "urban100": ImageSet("Urban100", "*.png", "100 RGB urban photos, longest side 1024", 100),
}


# Super-resolution benchmarks (HR images; LR images are made by bicubic downscaling).
SR_SETS: Dict[str, ImageSet] = {
    "set5": ImageSet("Set5/HR", "*.png", "5 RGB images", 5),
    "set14": ImageSet("Set14", "*.png", "14 images (13 RGB, bridge gray)", 14),
    "bsd100": ImageSet("BSDS500/val", "*.jpg", "the 100 BSDS500 val images (B100)", 100),
    "urban100": ImageSet("Urban100", "*.png", "100 RGB urban photos, longest side 1024", 100),
}


def repo_shared_dir() -> str:
  """``../shared`` beside the repository this package was loaded from."""
  return os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))


def env_or_shared(env_var: str, subdir: str) -> Optional[str]:
  """``$env_var`` if set, else ``../shared/subdir`` beside a checkout if it exists, else None."""
  env = os.environ.get(env_var)
  if env:
    return env
  candidate = os.path.join(repo_shared_dir(), subdir)
  return candidate if os.path.isdir(candidate) else None


def default_data_root() -> Optional[str]:
  """``$N3JAX_DATA_ROOT``, else ``../shared/data`` if it exists, else ``None``."""
  return env_or_shared(DATA_ROOT_ENV, "data")


def _set_files(name: str, sets: Dict[str, ImageSet], root: Optional[str]) -> List[str]:
  """The sorted files of benchmark ``name`` of ``sets`` under the data root.

  Raises:
    KeyError: unknown set name. FileNotFoundError: no data root, or the set is missing.
  """
  if name not in sets:
    raise KeyError(f"unknown dataset {name!r}; known: {sorted(sets)}")
  root = root or default_data_root()
  spec = sets[name]
  if root is None:
    raise FileNotFoundError(
        f"no data root: set ${DATA_ROOT_ENV} or config.data_root to the folder holding "
        f"{spec.folder}/ (see README, 'Data')")
  files = sorted(glob.glob(os.path.join(root, spec.folder, spec.pattern)))
  if not files:
    raise FileNotFoundError(f"no {spec.pattern} images in {os.path.join(root, spec.folder)}")
  return files


def load_gray(path: str) -> np.ndarray:
  """Reads an image as gray float32 ``[H, W]`` in ``[0, 1]``, in display orientation.

  8-bit RGB images are converted with :data:`GRAY_MATRIX` and rounded to 8 bits, as PIL's
  ``convert("L", matrix)`` does (the reference's protocol). 16-bit files are scaled by
  their bit depth (never by their largest value), float TIFFs are taken as they are, alpha
  is dropped; palette, CMYK and other modes convert as
  :func:`n3jax.data.imagefile.read_picture` documents.

  Raises:
    ValueError: the file is missing, corrupt or not an image (the message names it).
  """
  color = imagefile.read_picture(path).color
  if color.dtype == np.uint8:
    if color.shape[-1] == 3:
      gray = Image.fromarray(color).convert("L", matrix=GRAY_MATRIX)
      return np.asarray(gray, np.float32) / 255.0
    return color[..., 0].astype(np.float32) / 255.0
  x = imagefile.to_unit(color)
  return x[..., 0] if x.shape[-1] == 1 else (x @ np.asarray(GRAY_MATRIX[:3], np.float32))


def load_denoising_set(name: str, root: Optional[str] = None) -> List[Tuple[str, np.ndarray]]:
  """All images of a denoising benchmark, sorted by file name, as gray ``[H, W]`` arrays.

  Raises:
    KeyError: unknown set name. FileNotFoundError: no data root, or the set is missing.
  """
  return [(os.path.basename(f), load_gray(f)) for f in _set_files(name, DENOISING_SETS, root)]


def load_uint8(path: str) -> np.ndarray:
  """Reads an image as stored: ``uint8 [H, W]`` (gray) or ``[H, W, 3]`` (RGB).

  Raises:
    ValueError: the file is missing, corrupt, not an image, or not 8-bit.
  """
  try:
    with Image.open(path) as im:
      im.load()
      if im.mode not in ("L", "RGB", "RGBA", "P"):
        raise ValueError(f"unsupported image mode {im.mode} (need 8-bit gray or RGB)")
      if im.mode != "L":
        im = im.convert("RGB")
      return np.asarray(im, np.uint8)
  except (OSError, SyntaxError, ValueError) as e:
    raise ValueError(f"cannot read image {path}: {e}") from e


def load_sr_set(name: str, root: Optional[str] = None) -> List[Tuple[str, np.ndarray]]:
  """The HR images of an SR benchmark, sorted by file name, as stored (``uint8``).

  Raises:
    KeyError: unknown set name. FileNotFoundError: no data root, or the set is missing.
  """
  return [(os.path.basename(f), load_uint8(f)) for f in _set_files(name, SR_SETS, root)]


BUILTIN_GRAY = ("camera", "moon", "brick", "grass", "gravel", "text")


def builtin_gray_images() -> List[Tuple[str, np.ndarray]]:
  """Gray sample photos bundled with scikit-image (no download), as float32 in [0, 1]."""
  from skimage import data as skdata  # optional: only for the no-data fallback
  out = []
  for name in BUILTIN_GRAY:
    arr = np.asarray(getattr(skdata, name)())
    out.append((name, (arr.astype(np.float32) / 255.0)))
  return out
