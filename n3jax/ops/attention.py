"""Confined non-local attention (NLRN, Liu et al. 2018): each pixel attends to a window.

Pure JAX, no Flax. For every pixel ``i`` of an image the operation takes the correlations
``θ_i · φ_j`` with the pixels ``j`` of its ``window x window`` neighbourhood (embedded
Gaussian, **no** ``1/√d`` scaling), adds an optional ``prior`` (the accumulated
correlations of the previous recurrent state: NLRN's *correlation propagation*), takes the
softmax over the window and returns ``Σ_j softmax_j · g_j``, and on request the
pre-softmax correlations for the next state.

Window rule at the image border (``border``):

* ``"shift"`` (default): the window is shifted inward at the border, never cropped, as the
  N³ block's search window (:func:`n3jax.ops.window_start`): every pixel has
  ``min(window, H) · min(window, W)`` neighbours. A window at least as large as the image
  is the whole image, which is what the official NLRN code computes on its 43×43
  training patches (attention over the whole patch).
* ``"circular"``: the window is centred on the pixel and wraps around the image (the
  paper's circular padding); its side is clipped to the image side, so no pixel is
  counted twice.

Window positions are numbered row-major, ``o = o1 · w2 + o2`` with ``(o1, o2)`` the offset
from the window's top-left corner (``w = min(window, side)`` per axis); ``prior`` and the
returned correlations are ``[..., H, W, w1 · w2]`` in that order.

Computation: the pixels are cut into ``tile x tile`` query tiles; the windows of a tile
lie inside one *region* of ``(tile + w − 1)²`` pixels, so a tile's correlations and its
output are two dense matmuls against the region, with the pixels outside each query's
window masked out. Tiles are mapped with ``lax.map`` and rematerialized in the backward
pass: apart from ``prior`` and the returned correlations (which the caller asks for),
memory is bounded by one tile, not by ``[H·W, window²]``.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from n3jax.ops.batching import broadcast_leading, merge_leading, split_leading
from n3jax.ops.chunking import map_tiles, untile
from n3jax.ops.geometry import check_border, pixel_window_tiles, window_side

DEFAULT_TILE = 8  # query pixels per tile side


def _check(q, k, v, prior, window, border, tile, return_logits):
  check_border(border)
  if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
    raise ValueError(f"window must be a positive (static, Python) integer, got {window!r}")
  if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
    raise ValueError(f"tile must be a positive integer, got {tile!r}")
  if not isinstance(return_logits, bool):
    raise TypeError(f"return_logits must be a bool, got {return_logits!r}")
  named = (("q", q), ("k", k), ("v", v)) + ((("prior", prior),) if prior is not None else ())
  for name, a in named:
    if a.ndim < 3:
      raise ValueError(f"{name} must be [..., H, W, C], got shape {a.shape}")
    if 0 in a.shape:
      raise ValueError(f"{name} is empty (shape {a.shape})")
    if not (jnp.issubdtype(a.dtype, jnp.floating) or jnp.issubdtype(a.dtype, jnp.integer)
            or a.dtype == jnp.bool_):
      raise TypeError(f"{name} must be real, got dtype {a.dtype}")
  h, w = q.shape[-3:-1]
  if k.shape[-3:-1] != (h, w) or v.shape[-3:-1] != (h, w):
    raise ValueError(f"q {q.shape}, k {k.shape} and v {v.shape} must share their image "
                     "size")
  if k.shape[-1] != q.shape[-1]:
    raise ValueError(f"q and k need the same channels, got {q.shape[-1]} and "
                     f"{k.shape[-1]}")
  o = window_side(h, window) * window_side(w, window)
  if prior is not None and prior.shape[-3:] != (h, w, o):
    raise ValueError(f"prior must be [..., {h}, {w}, {o}] (a {window}-window on a {h}x{w} "
                     f"image), got shape {prior.shape}")


def local_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, window: int,
                    border: str = "shift", prior: Optional[jax.Array] = None,
                    return_logits: bool = False, tile: int = DEFAULT_TILE
                    ) -> Union[jax.Array, Tuple[jax.Array, jax.Array]]:
  """Windowed softmax attention of every pixel over its neighbourhood.

  Args:
    q: ``[..., H, W, E]`` queries (NLRN: ``θ(x)``); any leading axes, none included.
    k: ``[..., H, W, E]`` keys (``φ(x)``).
    v: ``[..., H, W, C]`` values (``g(x)``). Leading axes of the inputs broadcast.
    window: neighbourhood side in pixels (NLRN: 45; odd for a centred window).
    border: ``"shift"`` or ``"circular"``, see the module docstring.
    prior: optional ``[..., H, W, O]`` correlations added before the softmax
      (``O = min(window, H) · min(window, W)``, window order).
    return_logits: also return the pre-softmax correlations (``prior`` included).
    tile: query pixels per tile side, at most the image's longer side (memory and speed
      only: results do not depend on it, for finite inputs; a NaN/inf in ``k`` or ``v``
      reaches every query of the tiles whose region holds it, not only its window's).

  Returns:
    ``[..., H, W, C]`` attention output, in at least float32 (and ``[..., H, W, O]``
    correlations with ``return_logits``).
  """
  q, k, v = (jnp.asarray(a) for a in (q, k, v))
  prior = None if prior is None else jnp.asarray(prior)
  _check(q, k, v, prior, window, border, tile, return_logits)
  arrays = [(q, 3, "q"), (k, 3, "k"), (v, 3, "v")]
  if prior is not None:
    arrays.append((prior, 3, "prior"))
  lead = broadcast_leading(arrays)
  merged = [merge_leading(a, 3, lead) for a, _, _ in arrays]
  out = _local_attention(*merged[:3], merged[3] if prior is not None else None,
                         window=window, border=border, tile=tile,
                         return_logits=return_logits)
  return split_leading(out, lead)


def _local_attention(query, key, value, prior, *, window, border, tile, return_logits):
  """:func:`local_attention` on ``[B, H, W, ·]`` arrays."""
  b, h, w, _ = query.shape
  tile = min(tile, max(h, w))  # a larger tile only pads with dropped queries
  dtypes = [a.dtype for a in (query, key, value, prior) if a is not None]
  acc = jnp.result_type(*dtypes, jnp.float32)
  w1, w2 = window_side(h, window), window_side(w, window)
  t1, reg1, st1 = pixel_window_tiles(h, window, tile, border=border)
  t2, reg2, st2 = pixel_window_tiles(w, window, tile, border=border)
  r1, r2 = reg1.shape[1], reg2.shape[1]
  reg1, reg2, st1, st2 = (jnp.asarray(a, jnp.int32) for a in (reg1, reg2, st1, st2))
  o1, o2 = jnp.arange(r1), jnp.arange(r2)

  def pad_queries(x):  # [B, H, W, F] → [B, t1·T, t2·T, F], the last row/column repeated
    return jnp.pad(x, ((0, 0), (0, t1 * tile - h), (0, t2 * tile - w), (0, 0)), mode="edge")

  q_pad = pad_queries(query.astype(acc))

  def tile_fn(i, j):
    q = jax.lax.dynamic_slice_in_dim(q_pad, i * tile, tile, 1)
    q = jax.lax.dynamic_slice_in_dim(q, j * tile, tile, 2).reshape(b, tile * tile, -1)

    def region(x):  # [B, R1·R2, F]: the tile's region of x
      x = jnp.take(jnp.take(x, reg1[i], axis=1), reg2[j], axis=2)
      return x.reshape(b, r1 * r2, -1).astype(acc)

    # Window position (d1, d2) of region pixel (r1, r2) for each query; inside iff both in
    # range. [T, R1] and [T, R2], separable.
    d1 = o1[None, :] - st1[i][:, None]
    d2 = o2[None, :] - st2[j][:, None]
    in1, in2 = (d1 >= 0) & (d1 < w1), (d2 >= 0) & (d2 < w2)
    inside = (in1[:, None, :, None] & in2[None, :, None, :]).reshape(tile * tile, r1 * r2)
    logits = jnp.einsum("bqe,bre->bqr", q, region(key), preferred_element_type=acc)
    if prior is not None:
      # The tile's rows of the prior (the last row/column repeated past the image), taken
      # without a padded copy of the whole [H, W, O] volume.
      rows = jnp.minimum(i * tile + jnp.arange(tile), h - 1)
      cols = jnp.minimum(j * tile + jnp.arange(tile), w - 1)
      pr = jnp.take(jnp.take(prior, rows, axis=1), cols, axis=2).astype(acc)  # [B, T, T, O]
      flat = (jnp.clip(d1, 0, w1 - 1)[:, None, :, None] * w2
              + jnp.clip(d2, 0, w2 - 1)[None, :, None, :])  # [T, T, R1, R2]
      flat = flat.reshape(tile * tile, r1 * r2)
      logits = logits + jnp.take_along_axis(pr.reshape(b, tile * tile, -1), flat[None],
                                            axis=2)
    logits = jnp.where(inside[None], logits, -jnp.inf)
    weights = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bqr,brc->bqc", weights, region(value), preferred_element_type=acc)
    out = out.reshape(b, tile, tile, -1)
    if not return_logits:
      return out
    # Back to window order: window position o of query t is region pixel start + offset.
    win1 = st1[i][:, None] + jnp.arange(w1)[None, :]  # [T, w1]
    win2 = st2[j][:, None] + jnp.arange(w2)[None, :]  # [T, w2]
    idx = (win1[:, None, :, None] * r2 + win2[None, :, None, :]).reshape(tile * tile, -1)
    corr = jnp.take_along_axis(logits, idx[None], axis=2)  # [B, T², O]
    return out, corr.reshape(b, tile, tile, -1)

  result = map_tiles(tile_fn, t1, t2)
  if not return_logits:
    return untile(result, h, w)
  out, corr = result
  return untile(out, h, w), untile(corr, h, w)


def local_attention_flops(height: int, width: int, *, window: int, embed: int,
                          channels: int) -> int:
  """Multiply-adds × 2 of one :func:`local_attention` on an ``H x W`` image, counting only
  the window entries (``O = min(window, H) · min(window, W)`` per pixel): correlations
  ``2·O·E`` and aggregation ``2·O·C`` per pixel."""
  o = window_side(height, window) * window_side(width, window)
  return 2 * height * width * o * (embed + channels)


__all__ = ["local_attention", "local_attention_flops", "DEFAULT_TILE"]
