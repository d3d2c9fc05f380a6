"""The training input pipeline: random crops with flips and rotations, as a pure function of the step.

The batch of global step ``s`` is determined by ``(seed, s)`` alone: which images (a fresh
permutation of the set for every pass over it), where to crop, and how to flip/rotate.
Resuming at step ``s`` therefore needs no iterator state, and every host can compute the
same global plan and read only its own shard of it. Noise is added on device by the train
step (:mod:`n3jax.train.step`), fresh every step.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from typing import Any, Dict, Iterator, Optional, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class CropPlan:
  """What the global batch of one step is made of (arrays of length ``batch_size``)."""
  index: np.ndarray  # image index in the source
  offset: np.ndarray  # [B, 2] relative crop offset in [0, 1)
  flip: np.ndarray  # bool, flip up-down
  rot90: np.ndarray  # number of quarter turns, 0..3


def crop_plan(step: int, *, seed: int, num_images: int, batch_size: int, flips: bool = True,
              rotations: bool = True) -> CropPlan:
  """The global crop plan of ``step``, the same on every host.

  Images are drawn without replacement within each pass over the set: example ``i`` of
  step ``s`` is item ``p mod N`` of the permutation of pass ``p // N``, ``p = s·B + i``.
  """
  if num_images < 1 or batch_size < 1:
    raise ValueError(f"need at least one image and batch_size >= 1, got {num_images}, "
                     f"{batch_size}")
  pos = step * batch_size + np.arange(batch_size, dtype=np.int64)
  passes, within = np.divmod(pos, num_images)
  index = np.empty(batch_size, np.int64)
  for p in np.unique(passes):
    perm = np.random.default_rng([seed, 0, int(p)]).permutation(num_images)
    index[passes == p] = perm[within[passes == p]]
  rng = np.random.default_rng([seed, 1, step])
  offset = rng.random((batch_size, 2))
  flip = rng.random(batch_size) < 0.5
  rot90 = rng.integers(0, 4, batch_size)
  if not flips:
    flip[:] = False
  if not rotations:
    rot90[:] = 0
  return CropPlan(index=index, offset=offset, flip=flip, rot90=rot90)


def crop_image(image: np.ndarray, offset: Sequence[float], size: int, flip: bool,
               rot90: int) -> np.ndarray:
  """A ``size × size`` crop of ``image [H, W, C]`` at relative ``offset``, flipped and rotated."""
  h, w = image.shape[:2]
  if h < size or w < size:
    raise ValueError(f"image of {h}x{w} is smaller than the {size}x{size} training crop")
  y = min(int(offset[0] * (h - size + 1)), h - size)
  x = min(int(offset[1] * (w - size + 1)), w - size)
  crop = image[y:y + size, x:x + size]
  if flip:
    crop = crop[::-1]
  return np.rot90(crop, int(rot90), axes=(0, 1))


def shard_slice(batch_size: int, shard_index: int, num_shards: int) -> slice:
  """The examples of the global batch that shard ``shard_index`` (a host) reads."""
  if batch_size % num_shards:
    raise ValueError(f"global batch {batch_size} does not split over {num_shards} hosts")
  per = batch_size // num_shards
  return slice(shard_index * per, (shard_index + 1) * per)


def make_batch(source: Any, step: int, *, seed: int, batch_size: int, crop_size: int,
               flips: bool = True, rotations: bool = True, shard_index: int = 0,
               num_shards: int = 1) -> np.ndarray:
  """This host's part of the clean training batch of ``step``.

  Args:
    source: random-access images, ``source[i]["image"]`` a ``uint8 [H, W, C]`` array.
    step: the global step.
    batch_size: the *global* batch size.

  Returns:
    float32 ``[batch_size / num_shards, crop_size, crop_size, C]`` in ``[0, 1]``.
  """
  plan = crop_plan(step, seed=seed, num_images=len(source), batch_size=batch_size,
                   flips=flips, rotations=rotations)
  crops = []
  for i in range(batch_size)[shard_slice(batch_size, shard_index, num_shards)]:
    image = np.asarray(source[int(plan.index[i])]["image"])
    crops.append(crop_image(image, plan.offset[i], crop_size, bool(plan.flip[i]),
                            int(plan.rot90[i])))
  return np.stack(crops).astype(np.float32) / 255.0


def check_source(source: Any, crop_size: int) -> None:
  """Fails early, naming the image, if any image is smaller than the crop or not uint8."""
  for i in range(len(source)):
    ex = source[i]
    image = ex["image"]
    if image.dtype != np.uint8 or image.ndim != 3:
      raise ValueError(f"training image {ex.get('name')!r}: expected uint8 [H, W, C], got "
                       f"{image.dtype} {image.shape}")
    if min(image.shape[:2]) < crop_size:
      raise ValueError(f"training image {ex.get('name')!r} is {image.shape[0]}x{image.shape[1]}, "
                       f"smaller than crop_size={crop_size}")


def prefetch(fn, steps: Iterator[int], depth: int = 2) -> Iterator[Any]:
  """Runs ``fn(step)`` for each step in a background thread, ``depth`` steps ahead.

  Exceptions in the thread are re-raised in the consumer.
  """
  q: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, depth))
  stop = threading.Event()
  sentinel = object()

  def worker():
    try:
      for s in steps:
        if stop.is_set():
          return
        q.put((s, fn(s)))
      q.put(sentinel)
    except BaseException as e:  # handed to the consumer
      q.put(e)

  thread = threading.Thread(target=worker, daemon=True)
  thread.start()
  try:
    while True:
      item = q.get()
      if item is sentinel:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()
    while thread.is_alive():  # unblock a worker waiting on a full queue
      try:
        q.get_nowait()
      except queue.Empty:
        thread.join(timeout=0.05)


def scale_plan(step: int, *, seed: int, batch_size: int, scales: Sequence[int]) -> np.ndarray:
  """The SR scale of every example of the global batch of ``step`` (a pure function)."""
  if not scales:
    raise ValueError("need at least one scale")
  rng = np.random.default_rng([seed, 2, step])
  return np.asarray(scales, np.int64)[rng.integers(0, len(scales), batch_size)]


def make_sr_batch(source: Any, step: int, *, seed: int, batch_size: int, crop_size: int,
                  scales: Sequence[int], flips: bool = True, rotations: bool = True,
                  shard_index: int = 0, num_shards: int = 1) -> Dict[str, np.ndarray]:
  """This host's part of the SR training batch of ``step``.

  Each example is an HR crop (flipped/rotated as in :func:`make_batch`), its luminance
  (BT.601 Y) the target, and the input the same crop downscaled by the example's scale and
  upscaled back with MATLAB-compatible bicubic (:mod:`n3jax.data.bicubic`).

  Args:
    source: random-access RGB images, ``source[i]["image"]`` a ``uint8 [H, W, 3]`` array.
    crop_size: HR crop size; must be divisible by every scale.

  Returns:
    ``{"input", "target"}``: float32 ``[b, crop, crop, 1]`` in ``[0, 1]`` (Y / 255), and
    ``"scale"``: int ``[b]``, with ``b = batch_size / num_shards``.
  """
  from n3jax.data.bicubic import imresize, luminance  # host-side numpy
  bad = [s for s in scales if crop_size % s]
  if bad:
    raise ValueError(f"crop_size {crop_size} is not divisible by the scale(s) {bad}")
  plan = crop_plan(step, seed=seed, num_images=len(source), batch_size=batch_size,
                   flips=flips, rotations=rotations)
  per_example = scale_plan(step, seed=seed, batch_size=batch_size, scales=scales)
  inputs, targets, kept = [], [], []
  for i in range(batch_size)[shard_slice(batch_size, shard_index, num_shards)]:
    image = np.asarray(source[int(plan.index[i])]["image"])
    crop = crop_image(image, plan.offset[i], crop_size, bool(plan.flip[i]), int(plan.rot90[i]))
    y = luminance(crop) / 255.0
    s = int(per_example[i])
    inputs.append(imresize(imresize(y, 1.0 / s), float(s)))
    targets.append(y)
    kept.append(s)
  return {"input": np.stack(inputs)[..., None].astype(np.float32),
          "target": np.stack(targets)[..., None].astype(np.float32),
          "scale": np.asarray(kept, np.int32)}
