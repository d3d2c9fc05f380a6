"""Real camera noise (paper Sec. 5.3): Poisson-Gaussian noise, raw-like images, noise maps.

The noise is heteroscedastic Gaussian, ``noisy = clean + sqrt(a·clean + b) · N(0, 1)``,
clipped to ``[0, 1]`` as the official release clips it: ``a`` scales the signal-dependent
(shot) part, ``b`` is the signal-independent (read) variance, both for intensities in
``[0, 1]``. The network sees the noisy image and, as two more constant channels, ``a`` and
``b`` (the *noise map*); its target is the clean image.

Clean sRGB training images are made *raw-like* first (paper Eq. 13): ``f_c · Y^f_e`` with
the gray image ``Y``, an intensity scale ``f_c ~ U(0.25, 1)`` and a power
``f_e ~ U(1.25, 10)`` per image; test images use the power 2.5 and a scale drawn from
``{0.5, 1}``. Per training image the noise parameters are drawn as the release draws
them: ``log10 a ~ U(−4, −1)``, ``log10 b = log10 a − 2.3 + U(−1.3, 1.3)``.

Everything is pure JAX and keyed (one key per image, :func:`corrupt_for_training`), so the
train step draws it on device, reproducibly across resumes. The release's values are the
defaults of :class:`RealNoiseProtocol`; ``configs/realnoise.py`` carries them as knobs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp

NOISE_MAP_CHANNELS = 2  # the constant a and b channels appended to the image


@dataclasses.dataclass(frozen=True)
class RealNoiseProtocol:
  """The release's Poisson-Gaussian training and test protocol (hashable: a jit static).

  Attributes:
    log10_a_range: ``log10 a`` is uniform on this interval (per training image).
    log10_b_offset, log10_b_spread: ``log10 b = log10 a + offset + U(−spread, spread)``.
    train_power_range, train_scale_range: the raw-like transform's ``f_e`` and ``f_c``
      ranges in training (uniform).
    test_power, test_scales: its power and the scales one is drawn from at test time.
    clip: clip noisy images to ``[0, 1]`` (the release does).
  """
  log10_a_range: Tuple[float, float] = (-4.0, -1.0)
  log10_b_offset: float = -2.3
  log10_b_spread: float = 1.3
  train_power_range: Tuple[float, float] = (1.25, 10.0)
  train_scale_range: Tuple[float, float] = (0.25, 1.0)
  test_power: float = 2.5
  test_scales: Tuple[float, ...] = (0.5, 1.0)
  clip: bool = True

  def __post_init__(self):
    for field in ("log10_a_range", "train_power_range", "train_scale_range"):
      lo, hi = _pair(getattr(self, field), field)
      if not lo <= hi:
        raise ValueError(f"{field} must be (low, high) with low <= high, got ({lo}, {hi})")
      object.__setattr__(self, field, (lo, hi))
    if self.train_power_range[0] <= 0 or self.test_power <= 0:
      raise ValueError("the raw-like powers must be > 0, got "
                       f"{self.train_power_range} and test_power={self.test_power}")
    scales = tuple(float(s) for s in self.test_scales)
    if not scales or min(scales + self.train_scale_range) <= 0:
      raise ValueError(f"the raw-like scales must be > 0, got {self.train_scale_range} and "
                       f"test_scales={self.test_scales}")
    object.__setattr__(self, "test_scales", scales)
    if not self.log10_b_spread >= 0:
      raise ValueError(f"log10_b_spread must be >= 0, got {self.log10_b_spread}")

  @classmethod
  def from_config(cls, noise: Mapping[str, Any]) -> "RealNoiseProtocol":
    """From a config's ``noise`` block (keys are this class's fields; missing: defaults)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(noise) - known)
    if unknown:
      raise ValueError(f"config.noise has unknown fields {unknown}; known: {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in noise.items()})


def _pair(value: Sequence[float], name: str) -> Tuple[float, float]:
  try:
    lo, hi = (float(v) for v in value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a pair of numbers, got {value!r}") from None
  return lo, hi


def check_noise_levels(a: Any, b: Any) -> Tuple[float, float]:
  """``(a, b)`` as floats if they describe a noise level, else a ``ValueError``.

  Both must be finite and ``>= 0``, and not both zero (that is no noise at all).
  """
  out = []
  for name, value in (("a", a), ("b", b)):
    try:
      v = float(value)
    except (TypeError, ValueError):
      raise ValueError(f"noise parameter {name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
      raise ValueError(f"noise parameter {name} must be finite and >= 0, got {value!r}")
    out.append(v)
  if out[0] == 0 and out[1] == 0:
    raise ValueError("noise parameters a = b = 0 describe no noise")
  return out[0], out[1]


def noise_std(clean: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  """The per-pixel standard deviation ``sqrt(a·clean + b)`` (floored at 0 inside)."""
  return jnp.sqrt(jnp.maximum(a * clean + b, 0.0))


def add_poisson_gaussian_noise(clean: jax.Array, a: jax.Array, b: jax.Array, key: jax.Array,
                               *, clip: bool = True) -> jax.Array:
  """``clean + sqrt(a·clean + b) · N(0, 1)``, clipped to ``[0, 1]`` with ``clip``.

  Args:
    clean: any shape, intensities in ``[0, 1]``.
    a, b: scalars, or arrays broadcasting against ``clean``.
  """
  noise = jax.random.normal(key, clean.shape, jnp.float32)
  noisy = clean + noise_std(clean, a, b) * noise
  return jnp.clip(noisy, 0.0, 1.0) if clip else noisy


def sample_noise_levels(key: jax.Array, *, protocol: RealNoiseProtocol = RealNoiseProtocol()
                        ) -> Tuple[jax.Array, jax.Array]:
  """One training image's ``(a, b)`` (scalars), drawn as the release draws them."""
  ka, kb = jax.random.split(key)
  log_a = jax.random.uniform(ka, (), minval=protocol.log10_a_range[0],
                             maxval=protocol.log10_a_range[1])
  log_b = log_a + protocol.log10_b_offset + jax.random.uniform(
      kb, (), minval=-protocol.log10_b_spread, maxval=protocol.log10_b_spread)
  return 10.0 ** log_a, 10.0 ** log_b


def raw_like(clean: jax.Array, key: jax.Array, *,
             protocol: RealNoiseProtocol = RealNoiseProtocol()) -> jax.Array:
  """The training transform of paper Eq. 13 on one image: ``f_c · clean^f_e`` with
  ``f_e ~ U(train_power_range)`` and ``f_c ~ U(train_scale_range)``; same shape, in
  ``[0, max f_c]`` for ``clean`` in ``[0, 1]``."""
  kp, ks = jax.random.split(key)
  power = jax.random.uniform(kp, (), minval=protocol.train_power_range[0],
                             maxval=protocol.train_power_range[1])
  scale = jax.random.uniform(ks, (), minval=protocol.train_scale_range[0],
                             maxval=protocol.train_scale_range[1])
  return scale * jnp.power(jnp.clip(clean, 0.0, None), power)


def raw_like_test(clean: jax.Array, key: jax.Array, *,
                  protocol: RealNoiseProtocol = RealNoiseProtocol()) -> jax.Array:
  """The test transform on one image: ``s · clean^test_power``, ``s`` drawn from
  ``test_scales`` with ``key``."""
  scales = jnp.asarray(protocol.test_scales, jnp.float32)
  scale = scales[jax.random.randint(key, (), 0, scales.shape[0])]
  return scale * jnp.power(jnp.clip(clean, 0.0, None), protocol.test_power)


def with_noise_map(noisy: jax.Array, a: Any, b: Any) -> jax.Array:
  """``noisy [..., H, W, C]`` with two constant channels ``a`` and ``b`` appended:
  ``[..., H, W, C + 2]`` (the network input of the noise-map models)."""
  noisy = jnp.asarray(noisy)
  ones = jnp.ones(noisy.shape[:-1] + (1,), noisy.dtype)
  return jnp.concatenate([noisy, ones * jnp.asarray(a, noisy.dtype),
                          ones * jnp.asarray(b, noisy.dtype)], axis=-1)


def corrupt_for_training(clean: jax.Array, key: jax.Array, *,
                         protocol: RealNoiseProtocol = RealNoiseProtocol()
                         ) -> Tuple[jax.Array, jax.Array]:
  """One training example: ``clean [H, W, C]`` in ``[0, 1]`` → ``(input, target)``.

  ``target`` is the raw-like image (:func:`raw_like`), ``input`` its noisy version at a
  level drawn by :func:`sample_noise_levels`, with the noise map: ``[H, W, C + 2]``.
  """
  k_raw, k_level, k_noise = jax.random.split(key, 3)
  target = raw_like(clean, k_raw, protocol=protocol)
  a, b = sample_noise_levels(k_level, protocol=protocol)
  noisy = add_poisson_gaussian_noise(target, a, b, k_noise, clip=protocol.clip)
  return with_noise_map(noisy, a, b), target


def corrupt_for_test(clean: jax.Array, a: float, b: float, key: jax.Array, *,
                     protocol: RealNoiseProtocol = RealNoiseProtocol()
                     ) -> Tuple[jax.Array, jax.Array]:
  """One test image at a given level: ``clean [H, W, C]`` → ``(input [H, W, C + 2],
  target [H, W, C])``, the target made raw-like by :func:`raw_like_test`."""
  k_raw, k_noise = jax.random.split(key)
  target = raw_like_test(clean, k_raw, protocol=protocol)
  noisy = add_poisson_gaussian_noise(target, a, b, k_noise, clip=protocol.clip)
  return with_noise_map(noisy, a, b), target
