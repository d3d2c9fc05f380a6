"""N³Net: DnCNNs interleaved with N³ blocks (paper Sec. 5, Fig. 2)."""

from __future__ import annotations

import math
from typing import Any, ClassVar, List, Mapping, Optional, Sequence, Tuple, Type

import flax.linen as nn
import jax

from n3jax.nn.dncnn import DnCNN, conv_in_channels
from n3jax.nn.layers import BN_MOMENTUM
from n3jax.nn.n3block import N3Block
from n3jax.ops import geometry


class N3Net(nn.Module):
  """``DnCNN_0 → N3Block_0 → DnCNN_1 → … → DnCNN_{n−1}``; no global skip.

  Every DnCNN but the last outputs ``interm_channels``; each N³ block turns those into
  ``(k + 1)·interm_channels``; the last DnCNN outputs ``out_channels``. The defaults are
  the official Gaussian denoiser's (shared/docs/reference-n3net.md). ``embed_channels``
  is the N³ blocks' embedding size (``None``: ``interm_channels``; the real-noise release
  embeds its 32 channels in 8). The first DnCNN adds its residual to the first
  ``out_channels`` input channels only, so extra input channels (a noise map) are not
  added to the image.

  ``selection`` and ``match_on`` give the ablations of paper Table 1: ``selection`` is the
  N³ blocks' neighbour selection (``"continuous"``, ``"hard"``, ``"concrete"``, see
  :class:`N3Block`); ``match_on="input"`` matches patches of the noisy network input
  (classic block matching) instead of a learned embedding. ``dncnn_bn=False`` drops the
  BatchNorm of the DnCNN stages (VDSR-style stages, for super-resolution);
  ``zero_init_out`` zero-initializes each stage's last conv (see :class:`DnCNN`).
  ``impl``, ``tile`` and ``query_chunk`` choose how the N³ blocks compute (the same
  result; see :class:`N3Block`). The blocks are built by :attr:`block_cls` (a class
  attribute, not a model attribute: a subclass may swap in another block, e.g. the
  benchmarks' conv-only stand-in in ``bench/conv_only.py``).
  """
  block_cls: ClassVar[Type[nn.Module]] = N3Block

  out_channels: int = 1
  num_dncnns: int = 3
  interm_channels: int = 8
  embed_channels: Optional[int] = None
  features: int = 64
  depth: int = 6
  # The N³ blocks' knobs: their defaults are defined once, by N3Block (the paper's).
  k: int = N3Block.k
  patch_size: int = N3Block.patch_size
  stride: int = N3Block.stride
  window: int = N3Block.window
  embed_features: int = N3Block.embed_features
  embed_depth: int = N3Block.embed_depth
  temp_bias: float = N3Block.temp_bias
  impl: str = N3Block.impl
  query_chunk: Optional[int] = N3Block.query_chunk
  tile: Optional[int] = N3Block.tile
  selection: str = "continuous"
  match_on: str = "embedding"
  dncnn_bn: bool = True
  zero_init_out: bool = False
  bn_momentum: float = BN_MOMENTUM
  bn_axis_name: Optional[str] = None
  dtype: Any = None

  @property
  def num_stages(self) -> int:
    """Stages in order: ``DnCNN_0, N3Block_0, DnCNN_1, …, DnCNN_{n−1}``."""
    return 2 * self.num_dncnns - 1

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, stage: Optional[int] = None,
               match: Optional[jax.Array] = None) -> jax.Array:
    """``[B, H, W, C]`` noisy images → ``[B, H, W, out_channels]`` restored images.

    With ``stage=i`` only stage ``i`` (see :attr:`num_stages`) is applied to ``x``, the
    output of stage ``i − 1``; ``match`` is then the network input when
    ``match_on="input"`` (used by :func:`n3jax.infer.restore` to tile stage by stage).
    """
    if x.ndim != 4:
      raise ValueError(f"N3Net expects [B, H, W, C] images, got shape {x.shape}")
    if self.match_on not in ("embedding", "input"):
      raise ValueError(f"match_on must be 'embedding' or 'input', got {self.match_on!r}")
    if stage is not None:
      if not 0 <= stage < self.num_stages:
        raise ValueError(f"stage must be in [0, {self.num_stages}), got {stage}")
      return self._stage(stage, x, train, match)
    match = x if self.match_on == "input" else None
    for i in range(self.num_stages):
      x = self._stage(i, x, train, match)
    return x

  def _stage(self, i: int, x: jax.Array, train: bool, match: Optional[jax.Array]) -> jax.Array:
    if i % 2 == 0:
      last = i == self.num_stages - 1
      return DnCNN(self.out_channels if last else self.interm_channels, self.features,
                   self.depth, use_bn=self.dncnn_bn, zero_init_out=self.zero_init_out,
                   residual_channels=self.out_channels if i == 0 else None,
                   bn_momentum=self.bn_momentum, bn_axis_name=self.bn_axis_name,
                   dtype=self.dtype, name=f"dncnn_{i // 2}")(x, train=train)
    return self.block_cls(
        k=self.k, patch_size=self.patch_size, stride=self.stride, window=self.window,
        embed_features=self.embed_features, embed_depth=self.embed_depth,
        embed_channels=self.embed_channels or self.interm_channels, temp_bias=self.temp_bias,
        bn_momentum=self.bn_momentum, bn_axis_name=self.bn_axis_name, impl=self.impl,
        query_chunk=self.query_chunk, tile=self.tile, selection=self.selection,
        dtype=self.dtype, name=f"n3block_{i // 2}")(x, train=train, match=match)

  # The tiling protocol of n3jax.infer.

  def stage_geometry(self) -> List[Tuple[int, int]]:
    """``(halo, align)`` of each stage: its receptive radius in pixels (a DnCNN's
    ``depth``, an N³ block's :meth:`N3Block.receptive_radius`) and the multiple
    its tiles start at (1, or the block's ``stride``: the patch grid)."""
    out = []
    for i in range(self.num_stages):
      if i % 2 == 0:
        out.append((geometry.conv_radius(self.depth), 1))
      else:
        block = N3Block(patch_size=self.patch_size, stride=self.stride, window=self.window,
                        embed_depth=self.embed_depth, parent=None)  # asked for its radius
        out.append((block.receptive_radius(), self.stride))
    return out

  def tiling_groups(self) -> List[Tuple[Tuple[int, ...], int, int]]:
    """The stages tiled together, ``[(stages, halo, align), …]`` in order.

    An N³ block is tiled together with the DnCNN after it, so its ``(k + 1)·c``-channel
    output (64 channels in the paper's N³Net) exists only tile by tile: the whole-image
    intermediates are the DnCNNs' outputs (8 channels). A group's halo is the sum of its
    stages' halos, its alignment their least common multiple.
    """
    stages = self.stage_geometry()
    groups, i = [], 0
    while i < len(stages):
      members = (i, i + 1) if i % 2 == 1 and i + 1 < len(stages) else (i,)
      groups.append((members, sum(stages[j][0] for j in members),
                     math.lcm(*(stages[j][1] for j in members))))
      i += len(members)
    return groups

  def apply_stages(self, variables: Mapping[str, Any], x: jax.Array, stages: Sequence[int],
                   *, network_input: Optional[jax.Array] = None) -> jax.Array:
    """Stages ``stages`` in turn on ``x`` (the output of stage ``stages[0] − 1``), in
    inference mode; with ``match_on="input"`` the N³ blocks match on ``network_input``."""
    match = network_input if self.match_on == "input" else None
    for i in stages:
      if i % 2 and self.match_on == "input" and match is None:
        raise ValueError(f"stage {i} (an N³ block, match_on='input') needs network_input")
      x = self.apply(variables, x, train=False, stage=i, match=match if i % 2 else None)
    return x

  def input_channels(self, variables: Mapping[str, Any]) -> Optional[int]:
    """Channels of the network input, read from the first DnCNN (``None``: not there)."""
    params = variables.get("params", {})
    return conv_in_channels(params.get("dncnn_0", {}) if hasattr(params, "get") else {})

  def runnable_size(self, height: int, width: int) -> Tuple[int, int]:
    """A size ``>= (height, width)`` the N³ blocks run on
    (:func:`~n3jax.ops.geometry.n3block_runnable_size`)."""
    return geometry.n3block_runnable_size(height, width, patch_size=self.patch_size,
                                          stride=self.stride, window=self.window, k=self.k)
