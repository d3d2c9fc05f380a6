"""NLRN: the non-local recurrent network (Liu et al., NeurIPS 2018), as the official code
builds it (shared/docs/reference-family.md §3).

``BN → conv3×3`` stem ``s⁰``; ``T`` recurrent states, each
``[BN → ReLU → non-local → BN → conv3×3 → BN → ReLU → conv3×3] + s⁰``, whose convolutions
(the 3×3s and the non-local module's θ, φ, g) are shared by all states while every state
has its own BatchNorms; then ``BN → ReLU → conv3×3`` to the image plus the input (global
residual). The non-local module is ``x + Σ_j softmax_j(θ(x_i)·φ(x_j)) g(x_j)`` over the
``window x window`` neighbourhood of every pixel (:func:`n3jax.ops.local_attention`), with
``g`` zero-initialized; with correlation propagation the pre-softmax correlations of each
state are added to those of the next (accumulating).
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax

from n3jax.nn.dncnn import conv_in_channels
from n3jax.nn.layers import BatchNorm
from n3jax.nn.precision import at_least_float32
from n3jax.ops import attention as la
from n3jax.ops import geometry

# The official code's layers are TF1 defaults: BatchNorm momentum 0.99 (0.01 in the
# PyTorch convention n3jax uses) and epsilon 1e-3, Xavier-uniform convolutions.
NLRN_BN_MOMENTUM = 0.01
NLRN_BN_EPSILON = 1e-3


class NonLocal(nn.Module):
  """The non-local module: ``x + local_attention(θ(x), φ(x), g(x))`` (1×1 convs θ, φ: to
  ``embed_features``; g: to the input's channels, zero-initialized).

  Returns the output and the pre-softmax correlations (``prior`` included).
  """
  embed_features: int = 64
  window: int = 45
  border: str = "shift"
  tile: int = la.DEFAULT_TILE
  dtype: Any = None

  def receptive_radius(self) -> int:
    """Pixels of input an output pixel depends on, per side
    (:func:`~n3jax.ops.geometry.attention_radius`; circular windows: the whole image)."""
    return geometry.attention_radius(self.window, border=self.border)

  @nn.compact
  def __call__(self, x: jax.Array, prior: Optional[jax.Array] = None):
    """``x [B, H, W, C]``, ``prior [B, H, W, O]`` or None → (``[B, H, W, C]``, ``[B, H, W, O]``)."""
    c = x.shape[-1]
    init = nn.initializers.xavier_uniform()
    theta = nn.Conv(self.embed_features, (1, 1), kernel_init=init, dtype=self.dtype,
                    name="theta")(x)
    phi = nn.Conv(self.embed_features, (1, 1), kernel_init=init, dtype=self.dtype,
                  name="phi")(x)
    g = nn.Conv(c, (1, 1), kernel_init=nn.initializers.zeros, dtype=self.dtype, name="g")(x)
    z, corr = la.local_attention(at_least_float32(theta), at_least_float32(phi),
                                 at_least_float32(g), window=self.window, border=self.border,
                                 prior=prior, return_logits=True, tile=self.tile)
    return at_least_float32(x) + z, corr


class NLRN(nn.Module):
  """Non-local recurrent network for denoising: ``[B, H, W, C]`` → ``[B, H, W, C]``.

  Attributes:
    features: channels of the states (paper: 128).
    embed_features: θ/φ channels (paper: 64).
    num_steps: unrolled recurrent states ``T`` (paper: 12).
    window: non-local neighbourhood side ``q`` in pixels (paper: 45).
    border: the neighbourhood at the image border, ``"shift"`` or ``"circular"``
      (:mod:`n3jax.ops.local_attention`).
    share_weights: one set of convolutions for all states (paper Table 2: without sharing,
      every state has its own).
    use_nonlocal: the non-local module (Table 2: off is the same RNN without it).
    propagate: correlation propagation (Table 2: off uses each state's own correlations).
    attention_tile: query pixels per tile side of the attention (memory and speed only).
    dtype: computation dtype of the convolutions (see :mod:`n3jax.nn.precision`); the
      attention, BatchNorm statistics, residual sums and the output stay float32.
  """
  features: int = 128
  embed_features: int = 64
  num_steps: int = 12
  window: int = 45
  border: str = "shift"
  share_weights: bool = True
  use_nonlocal: bool = True
  propagate: bool = True
  attention_tile: int = la.DEFAULT_TILE
  kernel_size: int = 3
  bn_momentum: float = NLRN_BN_MOMENTUM
  bn_epsilon: float = NLRN_BN_EPSILON
  bn_axis_name: Optional[str] = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"NLRN expects [B, H, W, C] images, got shape {x.shape}")
    if self.num_steps < 1:
      raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
    geometry.check_border(self.border)

    def bn(name):
      return BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                       epsilon=self.bn_epsilon, axis_name=self.bn_axis_name,
                       scale_init=nn.initializers.ones, name=name)

    def conv3(features, name):
      return nn.Conv(features, (self.kernel_size,) * 2, padding="SAME",
                     kernel_init=nn.initializers.xavier_uniform(), dtype=self.dtype,
                     name=name)

    def step_modules(suffix):
      nl = (NonLocal(self.embed_features, self.window, self.border, self.attention_tile,
                     dtype=self.dtype, name=f"nonlocal{suffix}") if self.use_nonlocal
            else None)
      return nl, conv3(self.features, f"conv_a{suffix}"), conv3(self.features,
                                                                 f"conv_b{suffix}")

    x32 = at_least_float32(x)
    s0 = at_least_float32(conv3(self.features, "conv_in")(bn("bn_in")(x32)))
    shared = step_modules("") if self.share_weights else None
    s, corr = s0, None
    for t in range(self.num_steps):
      nonlocal_, conv_a, conv_b = shared or step_modules(f"_{t}")
      y = nn.relu(bn(f"bn_{t}_a")(s))
      if nonlocal_ is not None:
        y, corr = nonlocal_(y, prior=corr if self.propagate else None)
      y = nn.relu(bn(f"bn_{t}_c")(conv_a(bn(f"bn_{t}_b")(y))))
      s = at_least_float32(conv_b(y)) + s0
    y = conv3(x.shape[-1], "conv_out")(nn.relu(bn("bn_out")(s)))
    return at_least_float32(y) + x32

  def receptive_radius(self) -> int:
    """Pixels of input an output pixel depends on, per side: the stem and output
    convolutions, and per state two convolutions and the non-local window
    (:meth:`NonLocal.receptive_radius`). Correlation propagation adds nothing:
    a state's correlations come from the same window. ``border="circular"``: every
    output pixel may depend on every input pixel."""
    if self.use_nonlocal and self.border == "circular":
      return geometry.INFINITE_RADIUS
    conv = geometry.conv_radius(1, kernel_size=self.kernel_size)
    block = NonLocal(window=self.window, border=self.border, parent=None)
    attention = block.receptive_radius() if self.use_nonlocal else 0
    return 2 * conv + self.num_steps * (2 * conv + attention)

  # The tiling protocol of n3jax.infer: one stage, tiled by the receptive radius (the
  # correlations propagated between states cover a whole state's input, so the states
  # cannot be tiled one by one without holding an [H, W, window²] volume per state).

  def tiling_groups(self) -> List[Tuple[Tuple[int, ...], int, int]]:
    """``[((0,), receptive_radius(), 1)]``: the whole network, tiled by its radius (290
    pixels for the paper's; ``border="circular"``: runs in one piece)."""
    return [((0,), self.receptive_radius(), 1)]

  def apply_stages(self, variables: Mapping[str, Any], x: jax.Array, stages: Sequence[int],
                   *, network_input: Optional[jax.Array] = None) -> jax.Array:
    """The whole network on ``x`` in inference mode (``network_input`` unused)."""
    if tuple(stages) != (0,):
      raise ValueError(f"NLRN has one stage, (0,); got {tuple(stages)}")
    return self.apply(variables, x, train=False)

  def input_channels(self, variables: Mapping[str, Any]) -> Optional[int]:
    """Image channels, read from the stem's ``conv_in`` kernel (``None``: not there)."""
    return conv_in_channels(variables.get("params", {}))


__all__ = ["NLRN", "NonLocal", "NLRN_BN_MOMENTUM", "NLRN_BN_EPSILON"]
