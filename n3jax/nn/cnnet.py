"""CNNet (Yi et al., CVPR 2018) and CNNet + N³ (paper Sec. 5.5): inlier classification of
a set of putative two-view correspondences.

Every layer acts per correspondence (a "1×1 convolution": ``nn.Dense`` on the last axis)
or over the whole set (Context Normalization, BatchNorm, the N³ set block), so the
networks are permutation-equivariant in the correspondences.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from n3jax.nn.layers import batch_norm
from n3jax.nn.n3block import N3SetBlock

CN_EPSILON = 1e-3  # Context Normalization's epsilon (the CNNet code's)
BN_MOMENTUM = 0.01  # TensorFlow's default decay 0.99, in the PyTorch convention used here
EXAMPLE_SET_SIZE = 16


def context_norm(x: jax.Array, *, epsilon: float = CN_EPSILON) -> jax.Array:
  """Context Normalization: each channel normalized over the set, ``[..., N, C]`` →
  ``[..., N, C]`` (zero mean, unit variance over ``N``; no learned parameters)."""
  mean = jnp.mean(x, axis=-2, keepdims=True)
  var = jnp.var(x, axis=-2, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + epsilon)


class CNBlock(nn.Module):
  """CNNet's ResNet block: ``2 × [Dense → Context Norm → BN → ReLU]`` plus the input
  (through a Dense to ``features`` when the widths differ)."""
  features: int
  bn_momentum: float = BN_MOMENTUM
  bn_axis_name: Optional[str] = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    shortcut = x if x.shape[-1] == self.features else nn.Dense(
        self.features, dtype=self.dtype, name="lift")(x)
    h = x
    for i in range(2):
      h = nn.Dense(self.features, dtype=self.dtype, name=f"dense_{i}")(h)
      h = context_norm(h)
      # BatchNorm over the batch and the set: [B, N, C] as [B·N, C].
      shape = h.shape
      h = batch_norm(train=train, momentum=self.bn_momentum, axis_name=self.bn_axis_name,
                     name=f"bn_{i}", dtype=self.dtype)(h.reshape(-1, shape[-1])).reshape(shape)
      h = nn.relu(h)
    return h + shortcut


class CNNet(nn.Module):
  """``Dense(features) → num_blocks × CNBlock → Dense(1)``: one logit per correspondence.

  With ``n3_after = i > 0`` (CNNet + N³, the release's placement: ``i = num_blocks / 2``),
  block ``i`` outputs ``features / (k + 1)`` channels and an :class:`N3SetBlock` over all
  correspondences (self excluded, one shared embedding network, no residual) concatenates
  its ``k`` neighbour volumes back to ``features`` channels.

  The release's temperature network multiplies the logits by its raw output (an inverse
  temperature of either sign); the set block here divides them by a positive temperature
  ``exp(t)·temp_bias`` — the positive scalings only.
  Its embedding and temperature networks are per-point MLPs of ``embed_depth`` layers
  (the release's are ResNet blocks of the same widths).
  """
  features: int = 128
  num_blocks: int = 12
  n3_after: int = 0
  k: int = 3
  embed_features: int = 128
  embed_depth: int = 3
  temp_bias: float = 1.0
  bn_momentum: float = BN_MOMENTUM
  bn_axis_name: Optional[str] = None
  dtype: Any = None

  @nn.compact
  def __call__(self, xs: jax.Array, *, train: bool = False,
               mask: Optional[jax.Array] = None) -> jax.Array:
    """``xs [B, N, 4]`` normalized correspondences → logits ``[B, N]``.

    ``mask``: unsupported (sets of one size), accepted as ``None`` only.
    """
    if xs.ndim != 3 or xs.shape[-1] != 4:
      raise ValueError(f"CNNet expects [B, N, 4] correspondences, got shape {xs.shape}")
    if mask is not None:
      raise ValueError("CNNet takes sets of one size (Context Normalization has no mask)")
    if not 0 <= self.n3_after <= self.num_blocks:
      raise ValueError(f"n3_after must be in [0, {self.num_blocks}], got {self.n3_after}")
    narrow, rest = divmod(self.features, self.k + 1)
    if self.n3_after and rest:
      raise ValueError(f"features {self.features} is not divisible by k + 1 = {self.k + 1}")
    h = nn.Dense(self.features, dtype=self.dtype, name="input")(xs)
    for i in range(1, self.num_blocks + 1):
      width = narrow if i == self.n3_after else self.features
      h = CNBlock(width, bn_momentum=self.bn_momentum, bn_axis_name=self.bn_axis_name,
                  dtype=self.dtype, name=f"block_{i}")(h, train=train)
      if i == self.n3_after:
        h = N3SetBlock(k=self.k, embed_features=self.embed_features,
                       embed_depth=self.embed_depth, embed_channels=narrow,
                       temp_bias=self.temp_bias, residual=False, exclude_self=True,
                       dtype=self.dtype, name="n3block")(h)
    return nn.Dense(1, dtype=self.dtype, name="output")(h)[..., 0].astype(jnp.float32)

  def example_input_shape(self) -> Tuple[int, ...]:
    """One example's input shape, to initialize the model abstractly (e.g. to check stored
    variables): a set of ``EXAMPLE_SET_SIZE`` correspondences."""
    return (max(EXAMPLE_SET_SIZE, self.k + 2), 4)
