"""Building blocks shared by the models: convolutions, BatchNorm and their initializers.

BatchNorm momenta are given in the PyTorch convention of the reference
(``new = (1 - m) · old + m · batch``); Flax's ``momentum`` is ``1 - m``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

# Reference facts (shared/docs/reference-n3net.md).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.001  # DnCNNs, embedding and temperature CNNs (PyTorch convention)
DISTANCE_BN_MOMENTUM = 0.1  # the BatchNorm over distances (PyTorch convention)
BN_SCALE_INIT_MIN = 0.025  # reference init clamps |N(0, 2/(9C))| BN scales to at least this


def conv_kernel_init():
  """The reference's conv init: N(0, 2 / (kh·kw·Cout))."""
  return nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def bn_scale_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  """The reference's BN scale init: ``max(|N(0, 2/(9C))|, 0.025)``."""
  std = math.sqrt(2.0 / (9 * shape[-1]))
  return jnp.maximum(jnp.abs(std * jax.random.normal(key, shape, dtype)), BN_SCALE_INIT_MIN)


def conv(features: int, kernel_size: int, *, use_bias: bool, name: str, dtype=None,
         kernel_init=None) -> nn.Conv:
  """A stride-1 convolution with zero 'SAME' padding and (by default) the reference's init."""
  return nn.Conv(features, (kernel_size, kernel_size), padding="SAME", use_bias=use_bias,
                 kernel_init=kernel_init or conv_kernel_init(), dtype=dtype, name=name)


class BatchNorm(nn.Module):
  """BatchNorm over the last axis as PyTorch computes it (the reference's).

  Normalizes with the biased batch variance, and updates the running variance with the
  *unbiased* one (``n / (n − 1)``), ``new = (1 − m) · old + m · batch`` (``momentum`` in
  the PyTorch convention). Flax's ``nn.BatchNorm`` uses the biased variance for both. The
  variables are named as Flax's (``scale``, ``bias``; ``batch_stats``: ``mean``, ``var``).
  Statistics are computed in at least float32 and averaged over ``axis_name`` devices.
  """
  use_running_average: bool
  momentum: float
  epsilon: float = BN_EPSILON
  axis_name: Optional[str] = None
  scale_init: Callable[..., jax.Array] = bn_scale_init
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    scale = self.param("scale", self.scale_init, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      stats_dtype = jnp.promote_types(x.dtype, jnp.float32)
      xs = x.astype(stats_dtype)
      axes = tuple(range(x.ndim - 1))
      mean, mean2 = jnp.mean(xs, axes), jnp.mean(jnp.square(xs), axes)
      count = math.prod(x.shape[:-1])
      if self.axis_name is not None and not self.is_initializing():
        mean, mean2 = jax.lax.pmean((mean, mean2), self.axis_name)
        count *= jax.lax.psum(1, self.axis_name)
      var = jnp.maximum(mean2 - jnp.square(mean), 0.0)
      if not self.is_initializing():
        m = self.momentum
        unbiased = var * (count / max(count - 1, 1))
        ra_mean.value = ((1 - m) * ra_mean.value + m * mean).astype(ra_mean.value.dtype)
        ra_var.value = ((1 - m) * ra_var.value + m * unbiased).astype(ra_var.value.dtype)
    dtype = self.dtype or jnp.promote_types(x.dtype, scale.dtype)
    y = (x - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
    return y.astype(dtype)


def batch_norm(*, train: bool, momentum: float, axis_name: Optional[str], name: str,
               scale_init=bn_scale_init, dtype=None) -> BatchNorm:
  """BatchNorm with eps 1e-5; ``momentum`` in the PyTorch convention (:class:`BatchNorm`)."""
  return BatchNorm(use_running_average=not train, momentum=momentum, epsilon=BN_EPSILON,
                   axis_name=axis_name, scale_init=scale_init, dtype=dtype, name=name)


default_batch_norm = functools.partial(batch_norm, momentum=BN_MOMENTUM)
