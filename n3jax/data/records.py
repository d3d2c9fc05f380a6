"""Training image sets as tensorflow-datasets builders in the ``array_record`` format.

Each set (a folder of images under the data root, or scikit-image's bundled photos) is
written once by a TFDS ``GeneratorBasedBuilder`` into ``array_record`` files and read back
with random access through ``builder.as_data_source()``. Neither step needs TensorFlow:
images are stored as raw ``uint8`` tensors (zlib-compressed), not as PNG/JPEG features.

Prepared records live under ``$N3JAX_TFDS_DIR`` (default ``~/.cache/n3jax/tfds``), in a
folder named after a fingerprint of the source files, so a changed data root or changed
files never reuse stale records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import glob
import hashlib
import logging
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from n3jax.data.images import GRAY_MATRIX, default_data_root

log = logging.getLogger(__name__)

TFDS_DIR_ENV = "N3JAX_TFDS_DIR"
RECORDS_VERSION = "1.0.0"


@dataclasses.dataclass(frozen=True)
class TrainingSet:
  """Image files under the data root, or scikit-image's bundled photos (``builtin``)."""
  globs: Tuple[str, ...]
  description: str
  builtin: Tuple[str, ...] = ()


TRAINING_SETS: Dict[str, TrainingSet] = {
    # The 400 images of the N³Net/DnCNN denoising protocol: BSDS500 train + test.
    "bsds400": TrainingSet(("BSDS500/train/*.jpg", "BSDS500/test/*.jpg"),
                           "BSDS500 train+test, 400 images 481x321"),
    # DnCNN's 400 gray 180x180 crops of BSDS.
    "train400": TrainingSet(("Train400/*.png",), "DnCNN's Train400, 400 gray 180x180"),
    # Super-resolution training sets (VDSR/NLRN): T91 and BSDS500 train.
    "t91": TrainingSet(("T91/*.bmp",), "Yang et al. T91 (90 images)"),
    "bsds200": TrainingSet(("BSDS500/train/*.jpg",), "BSDS500 train, 200 images"),
    # The 291 images of the VDSR/N³Net SISR protocol: T91 (90 distinct files) + BSDS500 train.
    "t91_bsds200": TrainingSet(("T91/*.bmp", "BSDS500/train/*.jpg"),
                               "T91 + BSDS500 train (290 images)"),
    # The real-noise release's training data (paper Sec. 5.3): BSDS500 train+test, DIV2K
    # train (800 HR images) and the release's 3,793-image train split of the Waterloo
    # Exploration Database's pristine images.
    "div2k": TrainingSet(("DIV2K/DIV2K_train_HR/*.png",), "DIV2K train, 800 HR images"),
    "bsds400_div2k_waterloo": TrainingSet(
        ("BSDS500/train/*.jpg", "BSDS500/test/*.jpg", "DIV2K/DIV2K_train_HR/*.png",
         "Waterloo/pristine_images/train/*.bmp"),
        "BSDS500 train+test, DIV2K train, Waterloo train (4,993 images)"),
    # Photos bundled with scikit-image: the fallback when no data root exists.
    "builtin": TrainingSet((), "scikit-image sample photos (no download)", builtin=(
        "astronaut", "coffee", "chelsea", "rocket", "coins", "page", "clock",
        "immunohistochemistry", "moon", "brick", "grass", "gravel", "text", "cell")),
}
# scikit-image photos held out from "builtin" for validation without a data root.
BUILTIN_VALIDATION = ("camera",)


def default_tfds_dir() -> str:
  return os.environ.get(TFDS_DIR_ENV) or os.path.join(os.path.expanduser("~"), ".cache",
                                                       "n3jax", "tfds")


def _read_rgb_or_gray(path: str, channels: int) -> np.ndarray:
  """``uint8 [H, W, channels]``; RGB → gray with the N³Net matrix, rounded as PIL does."""
  try:
    with Image.open(path) as im:
      im.load()
      if channels == 1:
        im = im if im.mode == "L" else im.convert("RGB").convert("L", matrix=GRAY_MATRIX)
      else:
        im = im.convert("RGB")
      arr = np.asarray(im, np.uint8)
  except (OSError, SyntaxError, ValueError) as e:
    raise ValueError(f"cannot read training image {path}: {e}") from e
  return arr.reshape(arr.shape[0], arr.shape[1], channels)


def _builtin_image(name: str, channels: int) -> np.ndarray:
  from skimage import data as skdata  # optional: only for the no-data fallback
  arr = np.asarray(getattr(skdata, name)())
  if arr.ndim == 3:
    arr = arr[..., :3]
    img = Image.fromarray(arr.astype(np.uint8))
    arr = np.asarray(img.convert("L", matrix=GRAY_MATRIX) if channels == 1 else img)
  elif channels == 3:
    arr = np.repeat(arr[..., None], 3, axis=-1)
  return arr.reshape(arr.shape[0], arr.shape[1], channels).astype(np.uint8)


def source_items(name: str, root: Optional[str]) -> List[Tuple[str, str]]:
  """``[(item name, file path or "builtin:<name>")]`` of a training set, sorted.

  Raises:
    KeyError: unknown set. FileNotFoundError: no data root, or no files found.
  """
  if name not in TRAINING_SETS:
    raise KeyError(f"unknown training set {name!r}; known: {sorted(TRAINING_SETS)}")
  spec = TRAINING_SETS[name]
  if spec.builtin:
    return [(n, f"builtin:{n}") for n in spec.builtin]
  if root is None:
    raise FileNotFoundError(f"training set {name!r} needs a data root: set $N3JAX_DATA_ROOT or "
                            "config.data_root (see README, 'Data'), or train on 'builtin'")
  files = []
  for pattern in spec.globs:  # every part of a set must be there: no silent subsets
    found = glob.glob(os.path.join(root, pattern))
    if not found:
      raise FileNotFoundError(f"no files for training set {name!r} under {root}: nothing "
                              f"matches {pattern} (the set is {', '.join(spec.globs)}; "
                              "see README, 'Data')")
    files += found
  files = sorted(set(files))
  return [(os.path.relpath(f, root), f) for f in files]


def fingerprint(name: str, items: Sequence[Tuple[str, str]], channels: int) -> str:
  """A hash of the set's name, channel count, and its files' names and contents.

  Keyed on content (not sizes or times), so an image replaced by another one is read
  again. Hashing the 400 BSDS images took 0.18 s on the 2-core CPU.
  """
  h = hashlib.sha256(f"{RECORDS_VERSION}|{name}|{channels}".encode())
  for item, path in items:
    h.update(f"|{item}:".encode())
    if path.startswith("builtin:"):
      continue  # shipped with scikit-image: the name is the content
    with open(path, "rb") as f:
      h.update(hashlib.file_digest(f, "sha256").digest())
  return h.hexdigest()[:16]


def _make_builder_class():
  import tensorflow_datasets as tfds  # imported lazily: heavy, and only needed here

  class N3jaxImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A folder of training images as ``{"image": uint8 [H, W, C], "name": str}``."""
    VERSION = tfds.core.Version(RECORDS_VERSION)

    def __init__(self, *, items: Sequence[Tuple[str, str]], channels: int, **kwargs):
      self._items = list(items)
      self._channels = channels
      super().__init__(**kwargs)

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          description="n3jax training images",
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Tensor(shape=(None, None, self._channels),
                                            dtype=np.uint8, encoding="zlib"),
              "name": tfds.features.Text(),
          }))

    def _split_generators(self, dl_manager):
      del dl_manager  # everything is local
      return {"train": self._generate_examples()}

    def _generate_examples(self) -> Iterator[Tuple[str, dict]]:
      for item, path in self._items:
        if path.startswith("builtin:"):
          image = _builtin_image(path.split(":", 1)[1], self._channels)
        else:
          image = _read_rgb_or_gray(path, self._channels)
        yield item, {"image": image, "name": item}

  return N3jaxImages


@contextlib.contextmanager
def _file_lock(path: str):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def image_data_source(name: str, *, root: Optional[str] = None, channels: int = 1,
                      tfds_dir: Optional[str] = None):
  """Random-access source of a training set, preparing its ``array_record`` files once.

  Args:
    name: a key of :data:`TRAINING_SETS`.
    root: the data root (default :func:`~n3jax.data.images.default_data_root`).
    channels: 1 (gray, N³Net's conversion) or 3 (RGB).
    tfds_dir: where prepared records live (default ``$N3JAX_TFDS_DIR`` or
      ``~/.cache/n3jax/tfds``).

  Returns:
    A TFDS data source: ``len(source)`` and ``source[i] → {"image": uint8 [H, W, C],
    "name": bytes}``.
  """
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels}")
  root = root or default_data_root()
  items = source_items(name, root)
  data_dir = os.path.join(tfds_dir or default_tfds_dir(), name,
                          fingerprint(name, items, channels))
  # One writer at a time (e.g. several training processes on one machine). The builder is
  # made under the lock: one made before another process wrote the records would not see
  # them.
  with _file_lock(os.path.join(data_dir, ".lock")):
    builder = _make_builder_class()(items=items, channels=channels, data_dir=data_dir,
                                    file_format="array_record")
    log.info("training set %s: %d images, records in %s", name, len(items), data_dir)
    builder.download_and_prepare()  # a no-op when the records exist
  return builder.as_data_source(split="train")
