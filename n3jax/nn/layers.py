"""Building blocks shared by the models: convolutions, BatchNorm and their initializers.

BatchNorm momenta are given in the PyTorch convention of the reference
(``new = (1 - m) · old + m · batch``); Flax's ``momentum`` is ``1 - m``.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

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


def batch_norm(*, train: bool, momentum: float, axis_name: Optional[str], name: str,
               scale_init=bn_scale_init, dtype=None) -> nn.BatchNorm:
  """BatchNorm with eps 1e-5; ``momentum`` in the PyTorch convention."""
  return nn.BatchNorm(use_running_average=not train, momentum=1.0 - momentum,
                      epsilon=BN_EPSILON, axis_name=axis_name, scale_init=scale_init,
                      dtype=dtype, name=name)


default_batch_norm = functools.partial(batch_norm, momentum=BN_MOMENTUM)
