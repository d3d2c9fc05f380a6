"""DnCNN (Zhang et al. 2017) as used inside N³Net, and the small CNNs of the N³ block."""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from n3jax.nn.layers import BN_MOMENTUM, batch_norm, conv
from n3jax.ops.geometry import conv_radius


class DnCNN(nn.Module):
  """``conv → ReLU → (depth − 2) × [conv → BN → ReLU] → conv`` plus a partial residual.

  The partial residual (the reference's): the first ``min(C_in, C_out)`` output channels
  get the first ``min(C_in, C_out)`` input channels added, or only the first
  ``residual_channels`` when that is set (a noise-map input: only the image channels).

  Attributes:
    out_channels: channels of the output.
    features: channels of the hidden layers.
    depth: number of conv layers (the reference's N³Net uses 6, DnCNN-17 uses 17).
    zero_init_out: initialize the last conv to zero, so that a residual network starts
      as the identity (our choice for the SR models: training starts at bicubic quality).
    dtype: computation dtype of the convolutions (``None``: the input's; see
      :mod:`n3jax.nn.precision`). The output is in the input's dtype or wider.
  """
  out_channels: int
  features: int = 64
  depth: int = 6
  kernel_size: int = 3
  use_bn: bool = True
  residual: bool = True
  residual_channels: Optional[int] = None
  zero_init_out: bool = False
  bn_momentum: float = BN_MOMENTUM
  bn_axis_name: Optional[str] = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """``[B, H, W, C_in]`` → ``[B, H, W, out_channels]``."""
    if self.depth < 2:
      raise ValueError(f"DnCNN depth must be >= 2, got {self.depth}")
    h = nn.relu(conv(self.features, self.kernel_size, use_bias=True, name="conv_in",
                     dtype=self.dtype)(x))
    for i in range(self.depth - 2):
      h = conv(self.features, self.kernel_size, use_bias=not self.use_bn, name=f"conv_{i}",
               dtype=self.dtype)(h)
      if self.use_bn:
        h = batch_norm(train=train, momentum=self.bn_momentum, axis_name=self.bn_axis_name,
                       name=f"bn_{i}", dtype=self.dtype)(h)
      h = nn.relu(h)
    y = conv(self.out_channels, self.kernel_size, use_bias=True, name="conv_out",
             dtype=self.dtype,
             kernel_init=nn.initializers.zeros if self.zero_init_out else None)(h)
    # The output (and the residual sum) is in the input's precision, even when the
    # convolutions run in bfloat16.
    y = y.astype(jnp.promote_types(y.dtype, x.dtype))
    if self.residual:
      c = min(x.shape[-1], self.out_channels, self.residual_channels or self.out_channels)
      y = y.at[..., :c].add(x[..., :c].astype(y.dtype))
    return y

  # The tiling protocol of n3jax.infer: the whole network is one stage.

  def tiling_groups(self) -> List[Tuple[Tuple[int, ...], int, int]]:
    """``[((0,), depth · (kernel_size // 2), 1)]``: one stage, tiled by its receptive radius."""
    return [((0,), conv_radius(self.depth, kernel_size=self.kernel_size), 1)]

  def apply_stages(self, variables: Mapping[str, Any], x: jax.Array, stages: Sequence[int],
                   *, network_input: Optional[jax.Array] = None) -> jax.Array:
    """The whole network on ``x [B, H, W, C_in]`` in inference mode (``network_input``
    unused)."""
    if tuple(stages) != (0,):
      raise ValueError(f"a DnCNN has one stage, (0,); got {tuple(stages)}")
    return self.apply(variables, x, train=False)

  def input_channels(self, variables: Mapping[str, Any]) -> Optional[int]:
    """``C_in``, read from the ``conv_in`` kernel of ``variables`` (``None``: not there)."""
    return conv_in_channels(variables.get("params", {}))


def conv_in_channels(params: Any) -> Optional[int]:
  """Input channels of the ``conv_in`` kernel of ``params`` (a DnCNN's), ``None`` if absent."""
  layer = params.get("conv_in") if hasattr(params, "get") else None
  kernel = layer.get("kernel") if hasattr(layer, "get") else None
  return None if kernel is None else int(kernel.shape[-2])


class EmbeddingCNN(nn.Module):
  """The N³ block's embedding / log-temperature network.

  ``(depth − 1) × [conv (no bias) → BN → ReLU] → conv (bias)``; no residual.
  """
  out_channels: int
  features: int = 64
  depth: int = 3
  kernel_size: int = 3
  bn_momentum: float = BN_MOMENTUM
  bn_axis_name: Optional[str] = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """``[B, H, W, C]`` → ``[B, H, W, out_channels]``."""
    h = x
    for i in range(self.depth - 1):
      h = conv(self.features, self.kernel_size, use_bias=False, name=f"conv_{i}",
               dtype=self.dtype)(h)
      h = batch_norm(train=train, momentum=self.bn_momentum, axis_name=self.bn_axis_name,
                     name=f"bn_{i}", dtype=self.dtype)(h)
      h = nn.relu(h)
    return conv(self.out_channels, self.kernel_size, use_bias=True, name="conv_out",
                dtype=self.dtype)(h)
