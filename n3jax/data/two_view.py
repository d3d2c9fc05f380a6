"""A synthetic two-view correspondence benchmark (paper Sec. 5.5 without the downloads).

Each pair is a random 3-D scene seen by two calibrated pinhole cameras with a random
relative pose: ``N`` putative correspondences, a fraction ``outlier_ratio`` of them random
pixel pairs, the others projections of scene points with Gaussian pixel noise. Coordinates
are normalized by each camera's intrinsics, ``K⁻¹ (u, v, 1)``; a correspondence is an
inlier when its symmetric epipolar distance under the ground-truth essential matrix is
below ``inlier_threshold`` (1e-4, CNNet's labels). Everything is a pure function of
``(seed, split, index)``: no files, the same pairs on every machine.
"""

from __future__ import annotations

import dataclasses
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from n3jax.ops import epipolar

SPLITS = {"train": 0, "val": 1, "test": 2}
MAX_SCENE_DRAWS = 50  # rounds of 4·N candidate scene points, before giving up


@dataclasses.dataclass(frozen=True)
class TwoViewSpec:
  """How the pairs are made (the defaults: our benchmark; see README).

  Attributes:
    num_points: correspondences per pair (the paper's 2,000).
    outlier_ratio: fraction of random correspondences.
    pixel_noise: standard deviation of the inliers' pixel noise, in pixels.
    image_size: ``(width, height)`` in pixels.
    focal_range: focal lengths in pixels, uniform (each camera its own).
    depth_range: scene depths in front of the first camera.
    max_rotation_deg: the relative rotation's angle is uniform up to this.
    baseline_range: the translation's length (its direction is uniform).
    inlier_threshold: on the squared symmetric epipolar distance (normalized coordinates).
    split_sizes: pairs per split, ``(train, val, test)``.
  """
  num_points: int = 2000
  outlier_ratio: float = 0.5
  pixel_noise: float = 1.0
  image_size: tuple = (640, 480)
  focal_range: tuple = (400.0, 800.0)
  depth_range: tuple = (4.0, 12.0)
  max_rotation_deg: float = 30.0
  baseline_range: tuple = (0.5, 2.0)
  inlier_threshold: float = 1e-4
  split_sizes: tuple = (20000, 500, 1000)

  def __post_init__(self):
    if self.num_points < 8:
      raise ValueError(f"num_points must be >= 8 (the eight-point solve), got {self.num_points}")
    if not 0 <= self.outlier_ratio < 1:
      raise ValueError(f"outlier_ratio must be in [0, 1), got {self.outlier_ratio}")
    if self.pixel_noise < 0:
      raise ValueError(f"pixel_noise must be >= 0, got {self.pixel_noise}")
    if len(self.split_sizes) != 3 or min(self.split_sizes) < 1:
      raise ValueError(f"split_sizes must be three positive counts, got {self.split_sizes}")
    if len(self.image_size) != 2 or min(self.image_size) <= 0:
      raise ValueError(f"image_size must be (width, height) > 0, got {self.image_size}")
    for name in ("focal_range", "depth_range", "baseline_range"):
      pair = tuple(getattr(self, name))
      if len(pair) != 2 or not 0 < pair[0] <= pair[1]:
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {pair}")
    if not 0 <= self.max_rotation_deg <= 180 or not self.inlier_threshold > 0:
      raise ValueError("max_rotation_deg must be in [0, 180] and inlier_threshold > 0, got "
                       f"{self.max_rotation_deg}, {self.inlier_threshold}")


def rotation_from_axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
  """Rodrigues' formula: the ``3×3`` rotation by ``angle`` (radians) about unit ``axis``."""
  k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
  return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def _intrinsics(rng: np.random.Generator, spec: TwoViewSpec) -> np.ndarray:
  f = rng.uniform(*spec.focal_range)
  w, h = spec.image_size
  return np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])


def _normalize(pixels: np.ndarray, k: np.ndarray) -> np.ndarray:
  return (pixels - k[:2, 2]) / np.array([k[0, 0], k[1, 1]])


def make_pair(index: int, *, split: str = "train", seed: int = 0,
              spec: TwoViewSpec = TwoViewSpec()) -> Dict[str, np.ndarray]:
  """Pair ``index`` of ``split``.

  Returns:
    ``{"xs": float32 [N, 4]`` normalized ``(x1, y1, x2, y2)``, ``"label": float32 [N]``
    (1: inlier by the epipolar threshold), ``"is_outlier": bool [N]`` (made at random),
    ``"R": [3, 3]``, ``"t": [3]`` (unit length), ``"E": [3, 3]`` (unit norm)``}``.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
  size = spec.split_sizes[SPLITS[split]]
  if not 0 <= index < size:
    raise IndexError(f"{split} has {size} pairs, asked for pair {index}")
  rng = np.random.default_rng([seed, SPLITS[split], index])
  k1, k2 = _intrinsics(rng, spec), _intrinsics(rng, spec)
  axis = rng.normal(size=3)
  rotation = rotation_from_axis_angle(axis / np.linalg.norm(axis),
                                      np.deg2rad(rng.uniform(0, spec.max_rotation_deg)))
  direction = rng.normal(size=3)
  translation = direction / np.linalg.norm(direction) * rng.uniform(*spec.baseline_range)
  w, h = spec.image_size
  num_out = int(round(spec.outlier_ratio * spec.num_points))
  num_in = spec.num_points - num_out
  # Scene points: pixels of the first image back-projected to random depths, kept where the
  # second camera sees them in front and inside its image.
  points = np.zeros((0, 3))
  for _ in range(MAX_SCENE_DRAWS):
    if len(points) >= num_in:
      break
    m = 4 * num_in
    pix = rng.uniform([0, 0], [w, h], size=(m, 2))
    depth = rng.uniform(*spec.depth_range, size=(m, 1))
    x1 = np.concatenate([_normalize(pix, k1), np.ones((m, 1))], 1) * depth
    x2 = x1 @ rotation.T + translation
    u2 = x2[:, :2] / x2[:, 2:] * [k2[0, 0], k2[1, 1]] + k2[:2, 2]
    ok = (x2[:, 2] > 0.1) & (u2[:, 0] >= 0) & (u2[:, 0] < w) & (u2[:, 1] >= 0) & (u2[:, 1] < h)
    points = np.concatenate([points, x1[ok]])
  if len(points) < num_in:
    raise ValueError(f"the second camera sees too few scene points ({len(points)} of "
                     f"{num_in} after {MAX_SCENE_DRAWS} draws): widen depth_range or "
                     "shorten baseline_range")
  points = points[:num_in]
  p1 = points[:, :2] / points[:, 2:] * [k1[0, 0], k1[1, 1]] + k1[:2, 2]
  cam2 = points @ rotation.T + translation
  p2 = cam2[:, :2] / cam2[:, 2:] * [k2[0, 0], k2[1, 1]] + k2[:2, 2]
  p1 = p1 + spec.pixel_noise * rng.normal(size=p1.shape)
  p2 = p2 + spec.pixel_noise * rng.normal(size=p2.shape)
  o1 = rng.uniform([0, 0], [w, h], size=(num_out, 2))
  o2 = rng.uniform([0, 0], [w, h], size=(num_out, 2))
  xs = np.concatenate([np.concatenate([_normalize(p1, k1), _normalize(p2, k2)], 1),
                       np.concatenate([_normalize(o1, k1), _normalize(o2, k2)], 1)])
  is_outlier = np.arange(spec.num_points) >= num_in
  order = rng.permutation(spec.num_points)
  xs, is_outlier = xs[order], is_outlier[order]
  # On the CPU, so that every machine labels the same pairs alike.
  with jax.default_device(jax.devices("cpu")[0]):
    essential = np.asarray(epipolar.essential_from_pose(
        jnp.asarray(rotation, jnp.float32), jnp.asarray(translation, jnp.float32)))
    distance = epipolar.symmetric_epipolar_distance(jnp.asarray(xs, jnp.float32),
                                                    jnp.asarray(essential))
  label = np.asarray(distance) < spec.inlier_threshold
  return {"xs": xs.astype(np.float32), "label": label.astype(np.float32),
          "is_outlier": is_outlier, "R": rotation, "t": translation / np.linalg.norm(translation),
          "E": essential}


def make_batch(indices, *, split: str = "train", seed: int = 0,
               spec: TwoViewSpec = TwoViewSpec()) -> Dict[str, np.ndarray]:
  """The pairs ``indices`` of ``split`` stacked: ``xs [B, N, 4]``, ``label [B, N]``,
  ``E [B, 3, 3]``, ``R [B, 3, 3]``, ``t [B, 3]``."""
  pairs = [make_pair(int(i), split=split, seed=seed, spec=spec) for i in indices]
  return {k: np.stack([p[k] for p in pairs]) for k in ("xs", "label", "E", "R", "t")}
