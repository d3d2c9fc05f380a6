"""The official NLRN test protocol: overlapping fixed-size tiles, outputs averaged.

The official NLRN code (shared/docs/reference-family.md §3) denoises an image by running
the network on every ``43 x 43`` tile at stride 7 (the last tile of a row or column
flush with the border) and averaging the overlapping outputs. Each pixel is computed by
up to ``(43 / 7)² ≈ 38`` tiles, which costs about 30× a single pass over the whole image
with per-pixel windows (:func:`n3jax.infer.restore`). It is offered here to compare the
two protocols in one harness, not as the way to run NLRN.
"""

from __future__ import annotations

import functools
from typing import Any, List, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

OFFICIAL_TILE = 43  # NLRN HEAD (v0: 45)
OFFICIAL_STRIDE = 7
DEFAULT_BATCH = 16  # tiles per network call


def tile_starts(size: int, tile: int, stride: int) -> List[int]:
  """Tile starts along one axis: ``0, stride, 2·stride, …`` and one flush with the end.

  An axis shorter than ``tile`` is one tile (the whole axis).
  """
  if tile < 1 or stride < 1:
    raise ValueError(f"tile and stride must be positive, got {tile}, {stride}")
  if size <= tile:
    return [0]
  starts = list(range(0, size - tile + 1, stride))
  if starts[-1] != size - tile:
    starts.append(size - tile)
  return starts


def num_tiles(height: int, width: int, *, tile: int = OFFICIAL_TILE,
              stride: int = OFFICIAL_STRIDE) -> int:
  """How many network calls (tiles) the protocol makes on an ``H x W`` image."""
  return len(tile_starts(height, tile, stride)) * len(tile_starts(width, tile, stride))


@functools.partial(jax.jit, static_argnames=("model", "tile", "stride", "batch"))
def restore_overlapping(model: nn.Module, variables: Mapping[str, Any], image: jax.Array, *,
                        tile: int = OFFICIAL_TILE, stride: int = OFFICIAL_STRIDE,
                        batch: int = DEFAULT_BATCH) -> jax.Array:
  """Runs ``model`` (inference mode) on overlapping tiles of ``image`` and averages them.

  Args:
    model, variables: any n3jax image model (e.g. ``create_model("nlrn")``).
    image: ``[H, W]``, ``[H, W, C]`` float image (e.g. noisy, in [0, 1]).
    tile, stride: tile side and step (the official 43 / 7).
    batch: tiles per network call (memory only; results do not depend on it).

  Returns:
    The averaged output in the layout of ``image``.
  """
  for name, value in (("tile", tile), ("stride", stride), ("batch", batch)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be a positive integer, got {value!r}")
  x = jnp.asarray(image)
  if x.ndim not in (2, 3):
    raise ValueError(f"image must be [H, W] or [H, W, C], got shape {x.shape}")
  x3 = x[..., None] if x.ndim == 2 else x
  h, w, c = x3.shape
  th, tw = min(tile, h), min(tile, w)
  corners = np.array([(r, q) for r in tile_starts(h, tile, stride)
                      for q in tile_starts(w, tile, stride)], np.int32)
  n = len(corners)
  calls = -(-n // batch)
  # The padding calls repeat the last tile with weight 0.
  padded = np.concatenate([corners, np.repeat(corners[-1:], calls * batch - n, 0)])
  weight = (np.arange(calls * batch) < n).astype(np.float32)
  corners_j = jnp.asarray(padded.reshape(calls, batch, 2), dtype=int)  # default int (x64)
  weight_j = jnp.asarray(weight.reshape(calls, batch))
  out_c = jax.eval_shape(lambda t: model.apply(variables, t, train=False),
                         jax.ShapeDtypeStruct((batch, th, tw, c), x3.dtype)).shape[-1]

  def one_call(carry, args):
    total, count = carry
    pos, wt = args
    tiles = jax.vmap(lambda p: jax.lax.dynamic_slice(x3, (p[0], p[1], 0), (th, tw, c)))(pos)
    out = model.apply(variables, tiles, train=False).astype(total.dtype)

    def add(k, acc):
      total, count = acc
      p = pos[k]
      cur = jax.lax.dynamic_slice(total, (p[0], p[1], 0), (th, tw, out_c))
      total = jax.lax.dynamic_update_slice(total, cur + wt[k] * out[k], (p[0], p[1], 0))
      cnt = jax.lax.dynamic_slice(count, (p[0], p[1], 0), (th, tw, 1))
      count = jax.lax.dynamic_update_slice(count, cnt + wt[k], (p[0], p[1], 0))
      return total, count

    return jax.lax.fori_loop(0, batch, add, (total, count)), None

  dtype = jnp.result_type(x3.dtype, jnp.float32)
  init = (jnp.zeros((h, w, out_c), dtype), jnp.zeros((h, w, 1), dtype))
  (total, count), _ = jax.lax.scan(one_call, init, (corners_j, weight_j))
  y = total / count
  return y[..., 0] if x.ndim == 2 and out_c == 1 else y


__all__ = ["restore_overlapping", "tile_starts", "num_tiles", "OFFICIAL_TILE",
           "OFFICIAL_STRIDE", "DEFAULT_BATCH"]
