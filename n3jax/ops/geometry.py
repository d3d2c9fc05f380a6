"""Where the N³ block searches for neighbours, and how far any output pixel can see.

Pure JAX, no Flax. Every rule about search windows lives here; the ops that compute
distances and aggregate (:mod:`n3jax.ops.distances`, :mod:`n3jax.ops.windowed`,
:mod:`n3jax.ops.blockwise`) and whole-image tiling (:mod:`n3jax.infer`) only apply it.

The rules, on a patch grid of ``n1 x n2`` items (numbered row-major, ``m = i·n2 + j``):

* **Window.** The candidates of the item at ``(i, j)`` are the ``w1 x w2`` grid
  positions whose top-left corner is ``(window_start(i, n1), window_start(j, n2))``, with
  ``w = min(window, n)`` per axis and ``window_start(p, n) = clip(p − window // 2, 0,
  n − w)``: the window is centred where it fits, *shifted inward* (not cropped) at the
  borders, and shrinks to the grid when the grid is smaller. Candidates are listed in
  row-major window order, the query itself left out (``exclude_self``), so every item
  has ``O = w1·w2 − 1`` of them (:func:`num_candidates`).
* **Tiles and regions.** Tiled ops process ``tile`` consecutive grid positions per axis
  at once. ``window_start`` is non-decreasing and grows by at most one per position, so
  the windows of the queries of a tile lie in one *region* of at most
  ``tile + reach + w − 1`` positions (``reach``: how many positions before the tile its
  queries may start, e.g. ``q − 1`` for the patches covering a tile of blocks), which
  starts where the window of the tile's first query starts, shifted inward at the end
  of the grid (:func:`tile_regions`).
* **Pixel windows** (the confined attention of NLRN, :mod:`n3jax.ops.attention`): the
  same rule on the pixel grid of an image, with ``border="shift"`` (as above, so a
  window at least as large as the image is the whole image) or ``border="circular"``
  (centred, wrapping around the image, its side clipped to the image side). A tile of
  ``tile`` query pixels per axis reads one region: ``tile_regions`` for shifted windows,
  ``tile + w − 1`` pixels modulo the side for circular ones
  (:func:`pixel_window_tiles`).
* **Receptive radius** (in pixels): ``depth · (kernel_size // 2)`` for ``depth``
  convolutions (:func:`conv_radius`); for an N³ block, candidate pixels lie within
  ``(patch_size − 1) + stride · (window // 2)`` of an output pixel, and their
  embeddings add the embedding CNN's radius (:func:`n3block_radius`).
"""

from __future__ import annotations

import math
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from n3jax.ops.patches import grid_size


def window_start(pos: jax.Array, n: int, window: int) -> jax.Array:
  """First row (or column) of the search window of grid row (or column) ``pos``.

  The window is shifted inward at the borders of an axis of length ``n`` rather than
  cropped, and shrinks to ``n`` when the axis is shorter than it.
  """
  return jnp.clip(pos - window // 2, 0, n - min(window, n))


def window_candidates(p1: jax.Array, p2: jax.Array, n1: int, n2: int, window: int, *,
                      exclude_self: bool = True) -> Tuple[jax.Array, jax.Array]:
  """Grid rows and columns of the window candidates of the items at ``(p1, p2)``.

  The rule of :func:`window_indices`, for any (traced) positions, e.g. one tile's.

  Args:
    p1, p2: int arrays broadcastable to a common shape ``S`` (in-range grid positions).

  Returns:
    ``(rows, cols)``, broadcastable to ``S + (O,)``, in the order of :func:`window_indices`.
  """
  w1, w2 = min(window, n1), min(window, n2)
  top, left = window_start(p1, n1, window), window_start(p2, n2, window)
  o = jnp.arange(w1 * w2 - int(exclude_self))
  if exclude_self:
    self_pos = (p1 - top) * w2 + (p2 - left)
    o = o + (o >= self_pos[..., None])
  return top[..., None] + o // w2, left[..., None] + o % w2


def window_indices(n1: int, n2: int, window: int, *, exclude_self: bool = True) -> jax.Array:
  """Candidate indices of the border-shifted square search window on an ``n1 x n2`` grid.

  For the item at grid position ``(i, j)`` the window is the ``w1 x w2`` block of grid
  positions whose top-left corner is ``(window_start(i, n1, window),
  window_start(j, n2, window))``, with ``w1 = min(window, n1)`` and
  ``w2 = min(window, n2)`` (see the module docstring). Candidates are listed in
  row-major window order; with ``exclude_self`` the query itself is dropped.

  Returns:
    int32 ``[n1 * n2, O]`` with ``O = w1 * w2 - 1`` (``w1 * w2`` if not excluding self).

  Raises:
    ValueError: non-positive sizes, or no candidate besides the query itself.
  """
  if n1 < 1 or n2 < 1 or window < 1:
    raise ValueError(f"grid {n1}x{n2} and window {window} must be positive")
  if exclude_self and min(window, n1) * min(window, n2) < 2:
    raise ValueError(f"a {n1}x{n2} grid has no candidate besides the query itself")
  rows, cols = window_candidates(jnp.arange(n1)[:, None], jnp.arange(n2)[None, :], n1, n2,
                                 window, exclude_self=exclude_self)  # [n1, n2, O]
  return (rows * n2 + cols).reshape(n1 * n2, -1).astype(jnp.int32)


def num_candidates(n1: int, n2: int, window: int, *, exclude_self: bool = True) -> int:
  """``O`` of :func:`window_indices` for an ``n1 x n2`` grid."""
  return min(window, n1) * min(window, n2) - int(exclude_self)


def tile_regions(n: int, window: int, tile: int, *, reach: int = 0
                 ) -> Tuple[int, int, jax.Array]:
  """Tiles along one grid axis of length ``n`` and the candidate region of each.

  Tile ``t`` holds positions ``[t·tile, (t + 1)·tile)`` of ``n + reach`` positions; its
  queries are the grid positions ``[t·tile − reach, (t + 1)·tile)`` inside ``[0, n)``.
  Every window of those queries lies in ``[start[t], start[t] + region)``.

  Args:
    n: grid positions along the axis.
    window: search window side (see :func:`window_start`).
    tile: positions per tile.
    reach: how many positions before its tile a query may lie (0 when the tile's
      positions are the queries themselves).

  Returns:
    ``(num_tiles, region, start)``: ``num_tiles = ceil((n + reach) / tile)``; ``region
    = min(tile + reach + min(window, n) − 1, n)``; int ``start [num_tiles]``.

  Raises:
    ValueError: non-positive ``n``, ``window`` or ``tile``, or negative ``reach``.
  """
  if n < 1 or window < 1 or tile < 1 or reach < 0:
    raise ValueError(f"n={n}, window={window} and tile={tile} must be positive and "
                     f"reach={reach} non-negative")
  num_tiles = -(-(n + reach) // tile)
  region = min(tile + reach + min(window, n) - 1, n)
  first = jnp.clip(jnp.arange(num_tiles) * tile - reach, 0, n - 1)  # first query
  return num_tiles, region, jnp.minimum(window_start(first, n, window), n - region)


BORDERS = ("shift", "circular")
# The receptive radius of an operation whose output pixels depend on the whole image.
INFINITE_RADIUS = 2 ** 30


def check_border(border: str) -> None:
  """Raises ``ValueError`` unless ``border`` is one of :data:`BORDERS`."""
  if border not in BORDERS:
    raise ValueError(f"border must be one of {BORDERS}, got {border!r}")


def window_side(size: int, window: int) -> int:
  """The side of a window along an axis of ``size`` positions: ``min(window, size)``."""
  return min(window, size)


def pixel_window_tiles(n: int, window: int, tile: int, *, border: str
                       ) -> Tuple[int, np.ndarray, np.ndarray]:
  """Query tiles along one image axis of ``n`` pixels, and the pixels their windows read.

  Returns ``(num_tiles, region [num_tiles, R], start [num_tiles, tile])`` (NumPy, static):
  query ``t`` of tile ``i`` (pixel ``i·tile + t``, when ``< n``) has its window at positions
  ``start[i, t] … start[i, t] + min(window, n) − 1`` of ``region[i]``, the pixel indices
  the tile reads (``R = min(tile + w − 1, n)`` for ``"shift"``, ``tile + w − 1`` for
  ``"circular"``, whose indices wrap modulo ``n``).
  """
  check_border(border)
  w = min(window, n)
  if border == "shift":
    with jax.ensure_compile_time_eval():  # static geometry, also under jit
      num_tiles, reg, r0 = tile_regions(n, window, tile)
      pos = np.minimum(np.arange(num_tiles)[:, None] * tile + np.arange(tile), n - 1)
      starts = np.asarray(window_start(jnp.asarray(pos), n, window))
      r0 = np.asarray(r0)
    return num_tiles, r0[:, None] + np.arange(reg), starts - r0[:, None]
  num_tiles = -(-n // tile)
  region = (np.arange(num_tiles)[:, None] * tile - w // 2 + np.arange(tile + w - 1)) % n
  return num_tiles, region, np.broadcast_to(np.arange(tile), (num_tiles, tile)).copy()


def attention_radius(window: int, *, border: str) -> int:
  """Receptive radius of one confined attention with ``window``-pixel windows: a pixel
  reads at most ``window // 2`` pixels away (a shifted window at the border stays inside
  the image and is the same in any tile that reaches that border); circular windows wrap
  around the image (:data:`INFINITE_RADIUS`)."""
  check_border(border)
  return window // 2 if border == "shift" else INFINITE_RADIUS


def conv_radius(depth: int, *, kernel_size: int = 3) -> int:
  """Receptive radius of ``depth`` stacked ``kernel_size``² convolutions, in pixels."""
  if depth < 0 or kernel_size < 1:
    raise ValueError(f"depth {depth} and kernel_size {kernel_size} must be >= 0 and >= 1")
  return depth * (kernel_size // 2)


def n3block_radius(patch_size: int, stride: int, window: int, embed_depth: int, *,
                   kernel_size: int = 3) -> int:
  """Receptive radius of an N³ block, in pixels of its input.

  A pixel's output averages candidates of the patches covering it: a covering patch
  starts at most ``patch_size − 1`` before the pixel, its candidates start at most
  ``stride · (window // 2)`` before that and extend ``patch_size − 1`` after their start,
  so candidate pixels lie within ``(patch_size − 1) + stride · (window // 2)`` of the
  pixel; their embeddings (and temperatures) add the radius of the ``embed_depth``-layer
  CNNs. The same margin keeps the window of every query whose output is kept centred,
  or shifted at the image border exactly as in the whole image.
  """
  return ((patch_size - 1) + stride * (window // 2)
          + conv_radius(embed_depth, kernel_size=kernel_size))


def n3block_runnable_size(height: int, width: int, *, patch_size: int, stride: int,
                          window: int, k: int) -> Tuple[int, int]:
  """A size ``(H, W) >= (height, width)`` on which an N³ block finds ``k`` neighbours.

  The image needs sides of at least ``patch_size`` and a patch grid with ``k``
  candidates per patch besides the patch itself. Returns ``(height, width)`` when that
  fits, else those sides raised to ``patch_size``, else to a square grid of ``k + 1``
  patches (a 20x20 image for the paper's block).
  """
  def fits(h, w):
    return min(h, w) >= patch_size and num_candidates(
        grid_size(h, patch_size, stride), grid_size(w, patch_size, stride), window) >= k
  if fits(height, width):
    return height, width
  h, w = max(height, patch_size), max(width, patch_size)
  if fits(h, w):
    return h, w
  side = patch_size + stride * (math.ceil(math.sqrt(k + 1)) - 1)
  return max(h, side), max(w, side)


__all__ = ["window_start", "window_candidates", "window_indices", "num_candidates",
           "tile_regions", "check_border", "window_side", "pixel_window_tiles", "attention_radius", "BORDERS",
           "INFINITE_RADIUS", "conv_radius", "n3block_radius", "n3block_runnable_size"]
