"""The N³ block: neural nearest neighbours for images (windowed) and for sets (all pairs)."""

from __future__ import annotations

import functools
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from n3jax import ops
from n3jax.nn.dncnn import EmbeddingCNN
from n3jax.nn.layers import BN_MOMENTUM, DISTANCE_BN_MOMENTUM, batch_norm
from n3jax.nn.precision import at_least_float32


SELECTIONS = ("continuous", "hard", "concrete")
IMPLS = ("auto", "gather", "windowed", "blockwise")


def resolve_impl(impl: str, *, patch_size: int, stride: int, tile: Optional[int]) -> str:
  """The non-local implementation an :class:`N3Block` with these attributes runs.

  ``"auto"`` is ``"blockwise"`` when ``patch_size % stride == 0`` and a ``tile`` is set,
  ``"windowed"`` with a tile otherwise, and ``"gather"`` when ``tile`` is ``0`` or
  ``None`` (what model folders of older versions meant by ``tile: 0``).

  Raises:
    ValueError: an unknown ``impl``; ``"blockwise"`` with ``patch_size % stride != 0``;
      ``"windowed"``/``"blockwise"`` without a positive ``tile``.
  """
  if impl not in IMPLS:
    raise ValueError(f"unknown impl {impl!r}; expected one of {IMPLS}")
  if impl == "auto":
    if not tile:
      return "gather"
    impl = "blockwise" if patch_size % stride == 0 else "windowed"
  if impl == "blockwise" and patch_size % stride:
    raise ValueError(f"impl='blockwise' needs patch_size % stride == 0, got patch_size="
                     f"{patch_size}, stride={stride}; use impl='windowed' or 'gather'")
  if impl != "gather" and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
    raise ValueError(f"impl={impl!r} needs a positive tile, got tile={tile!r}")
  return impl


def _window_logits(impl: str, embed: jax.Array, *, patch_size: int, stride: int,
                   window: int, tile: Optional[int], query_chunk: Optional[int]) -> jax.Array:
  """``embed [B, H, W, E]`` → negated squared patch distances ``[B, M, O]`` (window order)."""
  p, s = patch_size, stride
  padded = ops.pad_for_patches(embed, p, s)
  if impl == "blockwise":
    return -ops.block_sq_distances(ops.to_blocks(padded, s), p // s, window, tile=tile)
  grid = ops.extract_patches(padded, p, s)  # [B, n1, n2, P·P·E]
  if impl == "windowed":
    return -ops.windowed_sq_distances(grid, window, tile=tile)
  b, n1, n2, _ = grid.shape
  flat = grid.reshape(b, n1 * n2, -1)
  return -ops.indexed_sq_distances(flat, flat, ops.window_indices(n1, n2, window),
                                   query_chunk=query_chunk)


def _neighbour_images(impl: str, weights: jax.Array, x: jax.Array, *, patch_size: int,
                      stride: int, window: int, tile: Optional[int],
                      query_chunk: Optional[int]) -> jax.Array:
  """Folded neighbour images: weights ``[B, M, O, k]`` over ``x [B, H, W, c]``'s patches →
  ``[B, H, W, k, c]`` (each pixel averaged over the patches covering it)."""
  p, s = patch_size, stride
  b, h, w, c = x.shape
  k = weights.shape[-1]
  padded = ops.pad_for_patches(x, p, s)
  hp, wp = padded.shape[1:3]
  n1, n2 = ops.grid_size(h, p, s), ops.grid_size(w, p, s)
  if impl == "blockwise":
    q = p // s
    summed = ops.block_aggregate_sum(weights, ops.to_blocks(padded, s), q, window)
    counts = ops.block_cover_counts(n1, n2, q).astype(summed.dtype)  # [B, N1, N2, k, D]
    folded = ops.from_blocks(jnp.moveaxis(summed / counts[:, :, None, None], 3, 1), s)
    folded = folded.reshape(b * k, hp, wp, c)
  else:
    grid = ops.extract_patches(padded, p, s)  # [B, n1, n2, P·P·c]
    if impl == "windowed":
      volumes = ops.windowed_aggregate(weights, grid, window, tile=tile)
    else:
      volumes = ops.aggregate(weights, grid.reshape(b, n1 * n2, -1),
                              indices=ops.window_indices(n1, n2, window),
                              query_chunk=query_chunk)  # [B, M, k, P·P·c]
    volumes = volumes.reshape(b, n1, n2, k, -1).transpose(0, 3, 1, 2, 4)
    folded = ops.fold_patches(volumes.reshape(b * k, n1, n2, -1), hp, wp, p, s)
  images = ops.crop_patch_padding(folded, h, w, p, s)
  return images.reshape(b, k, h, w, c).transpose(0, 2, 3, 1, 4)


class N3Block(nn.Module):
  """N³ block on images (paper Sec. 4, the reference's patch-based version).

  Embeds the input with a CNN, cuts input and embedding into ``patch_size``² patches at
  ``stride``, selects ``k`` continuous nearest neighbours of every patch among the other
  patches of its ``window``² search window (:mod:`n3jax.ops.geometry`), folds each
  neighbour volume back into an image and returns ``concat([x, N_1 − x, …, N_k − x])``.

  Attributes:
    k: number of neighbours. patch_size, stride, window: patch geometry (the window is
      counted in patch-grid positions). embed_features / embed_depth / embed_channels:
      the embedding CNN (the temperature CNN is the same with one output channel).
    temp_bias: multiplies the learned temperature (added as ``log(temp_bias)``).
    distance_bn: BatchNorm over all distances (one channel).
    impl: how the non-local part is computed; all give the same result up to float
      rounding. ``"blockwise"``: on the grid of ``stride``² blocks
      (:mod:`n3jax.ops.blockwise`; needs ``patch_size % stride == 0``), distances in
      tiles of ``tile``² patches, aggregation and folding in one step; ``"windowed"``:
      on patch vectors, tile by tile with matmuls (:mod:`n3jax.ops.windowed`);
      ``"gather"``: per-query gathers of the window candidates
      (:func:`~n3jax.ops.indexed_sq_distances`, :func:`~n3jax.ops.aggregate`),
      ``query_chunk`` patches at a time; ``"auto"`` (default): see :func:`resolve_impl`
      (``tile=0`` or ``None`` still means ``"gather"`` there).
    tile: tile side of ``"windowed"`` and ``"blockwise"``. query_chunk: queries per chunk
      of ``"gather"`` (``None``: all at once).
    selection: how neighbours are selected from the distances: ``"continuous"`` (the N³
      relaxation, the default), ``"hard"`` (plain kNN, no gradient through the choice) or
      ``"concrete"`` (the stochastic Gumbel-softmax relaxation; needs a ``"gumbel"`` RNG
      when ``train=True`` and is the deterministic relaxation otherwise). These are the
      ablations of paper Table 1.
    dtype: computation dtype of the embedding and temperature CNNs (e.g. bfloat16, see
      :mod:`n3jax.nn.precision`); the non-local part always runs in at least float32.
  """
  k: int = 7
  patch_size: int = 10
  stride: int = 5
  window: int = 15
  embed_features: int = 64
  embed_depth: int = 3
  embed_channels: int = 8
  temp_bias: float = 0.1
  distance_bn: bool = True
  bn_momentum: float = BN_MOMENTUM
  distance_bn_momentum: float = DISTANCE_BN_MOMENTUM
  bn_axis_name: Optional[str] = None
  impl: str = "auto"
  query_chunk: Optional[int] = 512
  tile: Optional[int] = ops.windowed.DEFAULT_TILE
  selection: str = "continuous"
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               match: Optional[jax.Array] = None) -> jax.Array:
    """``[B, H, W, c]`` → ``[B, H, W, (k + 1)·c]`` (channel ``j·c + i``, ``j = 0`` is ``x``).

    Args:
      x: the block's input; its patches are what is aggregated.
      train: BatchNorm in training mode (batch statistics), Concrete noise on.
      match: optional ``[B, H, W, C']`` fixed features to match patches on instead of the
        learned embedding of ``x`` (e.g. the noisy network input: classic block matching).
    """
    if self.selection not in SELECTIONS:
      raise ValueError(f"unknown selection {self.selection!r}; expected one of {SELECTIONS}")
    impl = resolve_impl(self.impl, patch_size=self.patch_size, stride=self.stride,
                        tile=self.tile)
    embed = self._embedding(x, train, match)
    b, h, w, c = x.shape
    p, s = self.patch_size, self.stride
    n1, n2 = ops.grid_size(h, p, s), ops.grid_size(w, p, s)
    num_candidates = ops.num_candidates(n1, n2, self.window)
    if self.k > num_candidates:
      raise ValueError(f"k={self.k} neighbours requested but a {h}x{w} image has only "
                       f"{num_candidates} candidates per patch")
    geometry = dict(patch_size=p, stride=s, window=self.window, tile=self.tile,
                    query_chunk=self.query_chunk)
    logits = _window_logits(impl, embed, **geometry)  # [B, M, O]
    if self.selection == "hard":
      weights = ops.hard_knn_weights(logits, k=self.k)  # [B, M, O, k]
    else:
      if self.distance_bn:
        logits = batch_norm(train=train, momentum=self.distance_bn_momentum,
                            axis_name=self.bn_axis_name, scale_init=nn.initializers.ones,
                            name="distance_bn")(logits[..., None])[..., 0]
      log_temp = self._log_temperature(x, train)
      # Per-query temperature: mean log-temperature over the patch (zero padding included).
      log_t = ops.extract_patches(ops.pad_for_patches(log_temp, p, s), p, s)
      log_t = log_t.reshape(b, n1 * n2, -1).mean(axis=-1) + math.log(self.temp_bias)
      temperature = jnp.exp(log_t)
      self.sow("intermediates", "temperature", temperature)  # [B, M], for inspection
      if self.selection == "concrete" and train:
        weights = ops.concrete_knn_weights(logits, temperature, k=self.k,
                                           key=self.make_rng("gumbel"))
      else:
        weights = ops.continuous_knn_weights(logits, temperature, k=self.k)  # [B, M, O, k]
    self.sow("intermediates", "knn_weights", weights)  # [B, M, O, k], window order
    images = _neighbour_images(impl, weights, x, **geometry)  # [B, H, W, k, c]
    diffs = (images - x[..., None, :]).reshape(b, h, w, self.k * c)
    return jnp.concatenate([x, diffs.astype(x.dtype)], axis=-1)

  def receptive_radius(self) -> int:
    """Pixels of input an output pixel depends on, per side
    (:func:`~n3jax.ops.geometry.n3block_radius`: 47 for the paper's block)."""
    return ops.geometry.n3block_radius(self.patch_size, self.stride, self.window,
                                       self.embed_depth)

  def _embedding(self, x: jax.Array, train: bool, match: Optional[jax.Array]) -> jax.Array:
    """Checks the input; ``match`` or the embedding CNN's features of ``x``, in at least
    float32 (distances, the relaxation and the aggregation run in it, also when the CNNs
    compute in bfloat16: bfloat16 distances lose the neighbour order)."""
    if x.ndim != 4:
      raise ValueError(f"N3Block expects [B, H, W, C] images, got shape {x.shape}")
    if match is not None:
      if match.ndim != 4 or match.shape[:3] != x.shape[:3]:
        raise ValueError(f"match features {match.shape} must be [B, H, W, C'] like x {x.shape}")
      return at_least_float32(match)
    embed = EmbeddingCNN(self.embed_channels, self.embed_features, self.embed_depth,
                         bn_momentum=self.bn_momentum, bn_axis_name=self.bn_axis_name,
                         dtype=self.dtype, name="embedcnn")(x, train=train)
    return at_least_float32(embed)

  def _log_temperature(self, x: jax.Array, train: bool) -> jax.Array:
    """The temperature CNN's ``[B, H, W, 1]`` log-temperatures of ``x``, in at least float32."""
    log_temp = EmbeddingCNN(1, self.embed_features, self.embed_depth,
                            bn_momentum=self.bn_momentum, bn_axis_name=self.bn_axis_name,
                            dtype=self.dtype, name="tempcnn")(x, train=train)
    return at_least_float32(log_temp)


class MLP(nn.Module):
  """Per-item MLP: ``(depth − 1) × [Dense → ReLU] → Dense``."""
  out_features: int
  features: int = 64
  depth: int = 3
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    for i in range(self.depth - 1):
      x = nn.relu(dense(self.features, name=f"dense_{i}")(x))
    return dense(self.out_features, name="dense_out")(x)


class N3SetBlock(nn.Module):
  """N³ block on sets: all-pairs continuous kNN among the items of each set.

  Every item's neighbours are searched among all other valid items of its set (no
  window). The output is permutation-equivariant in the items.

  Attributes:
    k: neighbours per item (at most the number of candidates). embed_*: the per-item
      embedding MLP (the log-temperature MLP is the same with one output).
    temp_bias: multiplies the learned temperature, as in :class:`N3Block`.
    residual: return neighbour volumes as differences to ``x`` (as the image block) rather
      than as they are.
    exclude_self: an item is not its own candidate (the paper's choice).
    dtype: computation dtype of the MLPs and of the output (``None``: inferred from the
      input and the parameters, as in Flax). The relaxation always runs in at least
      float32. param_dtype: dtype of the parameters.
  """
  k: int = 3
  embed_features: int = 64
  embed_depth: int = 3
  embed_channels: int = 32
  temp_bias: float = 0.1
  residual: bool = True
  exclude_self: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, mask: Optional[jax.Array] = None) -> jax.Array:
    """``[..., N, C]`` → ``[..., N, (k + 1)·C]``: ``concat([x, V_1, …, V_k])``.

    Args:
      x: sets of ``N`` items with ``C`` features; any leading (batch) axes, none included.
      mask: optional bool ``[..., N]``, True for real items, False for padding. A masked
        item is nobody's neighbour, so the valid items' outputs do not depend on it (they
        equal those of the set without it), and its own ``V_j`` are 0.

    Neighbour ``j`` of an item with fewer than ``j`` candidates (a set with fewer than
    ``k + 1`` valid items) is missing: its ``V_j`` is 0 (also with ``residual``).
    """
    if x.ndim < 2:
      raise ValueError(f"N3SetBlock expects [..., N, C] sets, got shape {x.shape}")
    n, c = x.shape[-2:]
    if not 1 <= self.k <= n - int(self.exclude_self):
      raise ValueError(f"k={self.k} neighbours need sets of at least "
                       f"{self.k + int(self.exclude_self)} items, got {n}")
    if mask is not None:
      mask = jnp.asarray(mask)
      if mask.dtype != jnp.bool_ or mask.shape != x.shape[:-1]:
        raise ValueError(f"mask must be bool {x.shape[:-1]} (True: a real item), got "
                         f"{mask.dtype} {mask.shape}")
    # Padding may hold anything (even NaN): the block reads zeros in its place.
    items = x if mask is None else jnp.where(mask[..., None], x, 0)
    mlp = functools.partial(MLP, features=self.embed_features, depth=self.embed_depth,
                            dtype=self.dtype, param_dtype=self.param_dtype)
    embed = mlp(self.embed_channels, name="embed")(items)
    log_t = mlp(1, name="temp")(items)[..., 0]
    temperature = jnp.exp(at_least_float32(log_t) + math.log(self.temp_bias))
    embed = at_least_float32(embed)  # float16 squared distances would overflow to inf
    # Distances, weights and aggregation fused: neither [..., N, N] masks nor
    # [..., N, N, k] weights are held.
    volumes = ops.neural_nearest_neighbors(
        embed, embed, items.astype(embed.dtype), temperature, k=self.k,
        mask=None if mask is None else mask[..., None, :], exclude_self=self.exclude_self)
    if self.residual:
      volumes = volumes - items[..., None, :].astype(volumes.dtype)
    # Missing neighbours (fewer than j candidates) and masked items contribute 0.
    valid_items = n if mask is None else jnp.sum(mask, axis=-1, keepdims=True)  # [..., 1]
    num_candidates = valid_items - (int(self.exclude_self) if mask is None else
                                    (mask & self.exclude_self).astype(jnp.int32))
    present = jnp.arange(self.k) < jnp.asarray(num_candidates)[..., None]  # [..., N, k]
    if mask is not None:
      present = present & mask[..., None]
    volumes = jnp.where(present[..., None], volumes, 0)
    out_dtype = self.dtype or volumes.dtype
    return jnp.concatenate([x.astype(out_dtype),
                            volumes.reshape(*x.shape[:-1], self.k * c).astype(out_dtype)],
                           axis=-1)
