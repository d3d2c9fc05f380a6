"""Whole-image inference of any size: jit-compiled, tiled stage by stage, exact.

``restore(model, variables, image)`` (alias ``denoise``) runs a trained model on an image
of any size in bounded memory. Images up to ``tile`` pixels per side run in one piece.
Larger ones are cut into overlapping tiles, *stage by stage*: each group of stages of the
network (a DnCNN; an N³ block together with the DnCNN after it) runs over tiles of the
previous group's full-size output, and keeps from each tile only its core, whose
receptive field lies inside the tile. The overlap a group needs (its *halo*) is its own
receptive radius — 6 pixels for a DnCNN of depth 6, 47 + 6 for the reference N³ block and
its DnCNN — not the whole network's (≈ 110), so tiling costs little extra time, and the
full-size intermediates are the DnCNNs' 8 channels. N³ block tiles start on the block's
patch grid and keep the image's patch padding, so patches, search windows (border-shifted
ones included) and the temperature of every kept pixel are those of the untiled run: the
result equals untiled inference up to float rounding (tests/test_infer.py: within 1e-5 of
the output's scale).

**The tiling protocol.** A model says how it is tiled; this module knows no model class.
Any Flax module with these plain methods (called on the unbound module) can be restored:

* ``model.tiling_groups() -> List[Tuple[Tuple[int, ...], int, int]]``: its stages, in
  order, grouped into those tiled together: ``[(stages, halo, align), …]``. ``stages``
  are the stage indices of the group (any labels the model's ``apply_stages`` accepts);
  ``halo`` its receptive radius in pixels (tiles overlap by it; a number at least as large
  as the image means the group runs in one piece); ``align`` a positive multiple that
  tile starts must be (1 for convolutions, the stride of an N³ block's patch grid). A
  model that runs in one piece gives one group, e.g. a DnCNN ``[((0,), depth, 1)]``.
* ``model.apply_stages(variables, x, stages, *, network_input) -> y``: runs the stages of
  one group in inference mode on ``x [B, h, w, C]`` (the previous group's output over a
  tile; the network input for the first group) and returns ``[B, h, w, C']``.
  ``network_input [B, h, w, C_in]`` is the network's input over the same pixels, for
  models whose later stages read it (N³Net with ``match_on="input"``; a global
  residual); others ignore it.
* ``model.input_channels(variables) -> Optional[int]``: the channels of the input the
  model takes, e.g. read from its first convolution (``None``: unknown, not checked).

Optional: ``model.runnable_size(height, width) -> (H, W)``, the size ``>= (height, width)``
the model runs on (:func:`runnable_size`; default: any size). :func:`stage_groups` raises
a ``TypeError`` naming the missing methods for a model without the protocol.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_TILE = 512  # core tile side (bench/inference.py: 4096² in 2.2 GiB)
DEFAULT_BLOCK = 2048  # restore_large: core block side (a 12-megapixel photo: 2 x 2 blocks)


TILING_PROTOCOL = ("tiling_groups", "apply_stages", "input_channels")


def check_tiling_protocol(model: Any) -> None:
  """Raises ``TypeError`` naming the class and the methods of the tiling protocol (see the
  module docstring) that ``model`` lacks."""
  missing = [m for m in TILING_PROTOCOL if not callable(getattr(model, m, None))]
  if missing:
    raise TypeError(
        f"{type(model).__name__} cannot be tiled by n3jax.infer: it lacks "
        f"{', '.join(missing)}. Define tiling_groups() -> [(stages, halo, align), ...], "
        "apply_stages(variables, x, stages, *, network_input) and "
        "input_channels(variables) (see the n3jax.infer docstring)")


def stage_groups(model: nn.Module) -> List[Tuple[Tuple[int, ...], int, int]]:
  """The stages tiled together, ``[(stages, halo, align), …]`` in order: the model's
  ``tiling_groups()``, checked.

  For N³Net an N³ block is tiled together with the DnCNN after it
  (:meth:`~n3jax.nn.N3Net.tiling_groups`); a DnCNN is one group.

  Raises:
    TypeError: ``model`` lacks the tiling protocol, or its groups are malformed.
  """
  check_tiling_protocol(model)
  groups = [tuple(g) for g in model.tiling_groups()]
  for g in groups:
    ok = (len(g) == 3 and isinstance(g[0], tuple) and g[0]
          and all(isinstance(v, int) and not isinstance(v, bool) for v in g[1:])
          and g[1] >= 0 and g[2] >= 1)
    if not ok:
      raise TypeError(f"{type(model).__name__}.tiling_groups() must give (stages tuple, "
                      f"halo >= 0, align >= 1) per group, got {g!r}")
  if not groups:
    raise TypeError(f"{type(model).__name__}.tiling_groups() gave no group")
  return groups


def axis_tiles(size: int, core: int, halo: int, align: int
               ) -> Tuple[int, int, List[Tuple[int, int]]]:
  """Tiles along one axis: ``(tile_size, core_size, [(tile_start, core_start), …])``.

  Every tile has the same size (one compilation); cores of size ``core_size`` cover
  ``[0, size)`` (the last one shifted inward); each tile covers its core plus ``halo`` on
  each side, or reaches the image border; tile starts are multiples of ``align`` and
  ``tile_size ≡ size (mod align)`` (so an N³ block pads a tile as it pads the image).
  """
  if size <= core:
    return size, size, [(0, 0)]
  tile = core + 2 * halo + align - 1
  tile += (size - tile) % align  # tile ≡ size (mod align)
  if tile >= size:
    return size, size, [(0, 0)]
  starts = list(range(0, size - core, core)) + [size - core]
  out = []
  for cs in starts:
    ts = min(max((cs - halo) // align * align, 0), size - tile)
    assert ts <= max(cs - halo, 0) and ts + tile >= min(cs + core + halo, size), (size, cs)
    out.append((ts, cs))
  return tile, core, out


def _tiled(fn, x: jax.Array, network_input: Optional[jax.Array], *, tile: int, halo: int,
           align: int) -> jax.Array:
  """Applies a stage ``fn(x_tile, network_input_tile)`` over overlapping tiles of
  ``x [B, H, W, C]`` (``network_input``: ``[B, H, W, C_in]`` or ``None``)."""
  b, h, w, c = x.shape
  t1, k1, rows = axis_tiles(h, tile, halo, align)
  t2, k2, cols = axis_tiles(w, tile, halo, align)
  if len(rows) == 1 and len(cols) == 1:
    return fn(x, network_input)
  table = np.array([(r[0], cl[0], r[1], cl[1]) for r in rows for cl in cols], np.int32)
  out_shape = jax.eval_shape(fn, jax.ShapeDtypeStruct((b, t1, t2, c), x.dtype),
                             None if network_input is None else jax.ShapeDtypeStruct(
                                 (b, t1, t2, network_input.shape[-1]), network_input.dtype))
  out = jnp.zeros((b, h, w, out_shape.shape[-1]), out_shape.dtype)
  table = jnp.asarray(table, dtype=int)  # the default int: int64 under jax_enable_x64

  def body(n, out):
    ty, tx, cy, cx = table[n, 0], table[n, 1], table[n, 2], table[n, 3]
    xt = jax.lax.dynamic_slice(x, (0, ty, tx, 0), (b, t1, t2, c))
    nt = None if network_input is None else jax.lax.dynamic_slice(
        network_input, (0, ty, tx, 0), (b, t1, t2, network_input.shape[-1]))
    yt = fn(xt, nt)
    core = jax.lax.dynamic_slice(yt, (0, cy - ty, cx - tx, 0), (b, k1, k2, yt.shape[-1]))
    return jax.lax.dynamic_update_slice(out, core, (0, cy, cx, 0))

  return jax.lax.fori_loop(0, table.shape[0], body, out)


# Noisy images in [0, 1] stay within [-2, 3] (σ = 70 noise: > 7 standard deviations);
# values beyond look like another scale (0-255, 16 bit) and are warned about.
PLAUSIBLE_RANGE = (-2.0, 3.0)


def input_channels(model: nn.Module, variables: Mapping[str, Any]) -> Optional[int]:
  """The channels ``model`` takes: its ``input_channels(variables)`` (``None``: unknown).

  Raises:
    TypeError: ``model`` lacks the tiling protocol.
  """
  check_tiling_protocol(model)
  return model.input_channels(variables)


def check_image(image: Any, *, channels: Optional[int] = None, name: str = "image") -> None:
  """Fails on input a model would turn into garbage; warns on implausible values.

  Rules: the image must be a real floating-point array (integer images are not scaled
  silently: 0-255 and 0-65535 data would both look valid; pass ``x / 255`` or
  :func:`n3jax.data.imagefile.to_unit`); with ``channels``, its last axis must have that
  many channels (``[H, W]`` counts as one); and its values must be finite. Values outside
  :data:`PLAUSIBLE_RANGE` give a warning. Under ``jit`` (a traced image) only the dtype
  and shape are checked.

  Raises:
    TypeError: integer, bool or complex dtype (the message says what to pass).
    ValueError: channel mismatch (naming both counts), or NaN/inf pixels (counted).
  """
  dtype = np.dtype(getattr(image, "dtype", None) or np.asarray(image).dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    hint = (f"scale it: {name}.astype(np.float32) / {np.iinfo(dtype).max} for "
            f"{dtype} data, or n3jax.data.imagefile.to_unit(...)"
            if jnp.issubdtype(dtype, jnp.integer) and dtype != np.bool_ else
            "pass real values in [0, 1]")
    raise TypeError(f"{name} has dtype {dtype}; models take float images in [0, 1] "
                    f"({hint})")
  shape = np.shape(image)
  if len(shape) not in (2, 3, 4):
    raise ValueError(f"{name} must be [H, W], [H, W, C] or [B, H, W, C], got shape {shape}")
  if 0 in shape:
    raise ValueError(f"{name} is empty (shape {shape})")
  have = 1 if len(shape) == 2 else shape[-1]
  if channels is not None and have != channels:
    raise ValueError(f"{name} has {have} channel(s) (shape {shape}) but the model takes "
                     f"{channels}; " + ("convert it to gray, or denoise each channel "
                                        "(n3jax-denoise does)" if channels == 1 else
                                        f"give it {channels} channels"))
  if isinstance(image, jax.core.Tracer):
    return
  x = np.asarray(image)  # on the host: no compilation per image shape
  finite = int(np.count_nonzero(np.isfinite(x)))
  if finite != x.size:
    raise ValueError(f"{name} has {x.size - finite} NaN/inf value(s) of {x.size}; a "
                     "network spreads them over its whole receptive field. Replace them "
                     "first (e.g. np.nan_to_num, or inpaint)")
  lo, hi = float(np.min(x)), float(np.max(x))
  if lo < PLAUSIBLE_RANGE[0] or hi > PLAUSIBLE_RANGE[1]:
    warnings.warn(f"{name} values span [{lo:g}, {hi:g}]; models expect images in [0, 1] "
                  "(plus noise). Is it on a 0-255 scale?", stacklevel=3)


def restore(model: nn.Module, variables: Mapping[str, Any], image: jax.Array, *,
            tile: int = DEFAULT_TILE) -> jax.Array:
  """Runs ``model`` (inference mode) on an image of any size, tiling it when large.

  The image is checked first (:func:`check_image`): float dtype, the model's channel
  count, finite values. Compiled once per model, image shape and ``tile``.

  Args:
    model: any model with the tiling protocol (module docstring): the registry's.
    variables: its variables (``params`` and ``batch_stats``).
    image: ``[H, W]``, ``[H, W, C]`` or ``[B, H, W, C]`` float array (e.g. a noisy
      image in [0, 1]).
    tile: core tile side in pixels; images up to this size per side run in one piece.
      Peak memory grows with ``tile²``, not with the image.

  Returns:
    The model's output in the layout of ``image`` (``[H, W]`` in, ``[H, W]`` out for
    one output channel), equal to ``model.apply(variables, image)`` up to float rounding.

  Raises:
    TypeError, ValueError: see :func:`check_image`; ``tile`` < 1; a model without the
      tiling protocol (:func:`stage_groups`).
  """
  if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
    raise ValueError(f"tile must be a positive integer, got {tile!r}")
  check_image(image, channels=input_channels(model, variables))
  return _restore_fn(variables, image)(model, variables, image, tile=tile)


# XLA:CPU's default scheduler keeps the outputs of consecutive loops alive together: the
# paper's NLRN held all 12 correlation volumes at once (12.8 volumes of temp memory at
# 128², 27 GB at 512²); the memory-optimized scheduler holds 3.4 volumes, and N³Net at
# 512² runs as fast in 0.29 instead of 0.49 GB. Options apply to top-level jits only:
# :func:`restore` uses them when called outside a trace; pass them to your own
# ``jax.jit(..., compiler_options=COMPILER_OPTIONS)`` or ``.compile(COMPILER_OPTIONS)``.
# (Other backends ignore this option.)
COMPILER_OPTIONS = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


@functools.partial(jax.jit, static_argnames=("model", "tile"))
def restore_unchecked(model: nn.Module, variables: Mapping[str, Any], image: jax.Array, *,
                      tile: int = DEFAULT_TILE) -> jax.Array:
  """The jit-compiled core of :func:`restore`, without its input checks.

  For ahead-of-time compilation (``restore_unchecked.lower(model, variables, x).compile()``)
  and for callers that checked the input themselves.
  """
  x = jnp.asarray(image)
  layout = x.ndim
  if layout == 2:
    x = x[None, :, :, None]
  elif layout == 3:
    x = x[None]
  elif layout != 4:
    raise ValueError(f"image must be [H, W], [H, W, C] or [B, H, W, C], got {x.shape}")
  x = x.astype(jnp.result_type(x.dtype, jnp.float32))
  network_input = x
  for members, halo, align in stage_groups(model):
    fn = functools.partial(_apply_stages, model, variables, members)
    x = _tiled(fn, x, network_input, tile=tile, halo=halo, align=align)
  if layout == 2:
    return x[0, :, :, 0] if x.shape[-1] == 1 else x[0]
  return x[0] if layout == 3 else x


def _apply_stages(model: nn.Module, variables, stages: Sequence[int], x: jax.Array,
                  network_input: Optional[jax.Array]) -> jax.Array:
  """One group of stages over a tile: ``model.apply_stages`` as :func:`_tiled` calls it."""
  return model.apply_stages(variables, x, stages, network_input=network_input)


denoise = restore
# restore_unchecked compiled as a top-level program, with COMPILER_OPTIONS.
_restore_top_level = jax.jit(restore_unchecked.__wrapped__, static_argnames=("model", "tile"),
                             compiler_options=COMPILER_OPTIONS)


def _restore_fn(*trees: Any) -> Callable[..., jax.Array]:
  """The compiled core for these arguments: with :data:`COMPILER_OPTIONS` when none of
  them is traced (options are for top-level programs only), else the nestable one."""
  traced = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(trees))
  return restore_unchecked if traced else _restore_top_level


def network_geometry(model: nn.Module) -> Tuple[int, int]:
  """``(halo, align)`` of the whole network: tiles of the input that overlap by ``halo``
  and start at multiples of ``align`` give exactly the untiled result in their cores."""
  groups = stage_groups(model)
  return sum(h for _, h, _ in groups), math.lcm(*(a for _, _, a in groups))


def runnable_size(model: nn.Module, height: int, width: int) -> Tuple[int, int]:
  """A size ``(H, W) >= (height, width)`` the model runs on: ``(height, width)`` itself
  when it does, else the model's ``runnable_size(height, width)``.

  An N³ block needs sides of at least ``patch_size`` and ``k`` candidates per patch
  besides the patch itself (a 20x20 image for the paper's N³Net,
  :func:`~n3jax.ops.geometry.n3block_runnable_size`); a model without a
  ``runnable_size`` method (a DnCNN) runs on any size.
  """
  fn = getattr(model, "runnable_size", None)
  return (height, width) if fn is None else tuple(fn(height, width))


def restore_large(model: nn.Module, variables: Mapping[str, Any], image: np.ndarray, *,
                  block: int = DEFAULT_BLOCK, tile: int = DEFAULT_TILE,
                  progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
  """:func:`restore` for images of any size in memory bounded by ``block``, not the image.

  The image is cut into overlapping blocks of about ``block`` pixels per side, each
  extended by the whole network's receptive radius (:func:`network_geometry`) and aligned
  to the N³ patch grid, so each block's core equals untiled inference. Each block runs
  through :func:`restore` (one compilation: the blocks have one size). Whole-image
  intermediates (8 channels per DnCNN stage in :func:`restore`) therefore never exist;
  the cost is the overlap, about 25 % more work for a 12-megapixel photo at the default
  ``block``.

  Args:
    model, variables: as in :func:`restore`.
    image: ``[H, W]`` or ``[H, W, C]`` float array (e.g. a noisy image in [0, 1]), of any
      size: one too small for the N³ blocks (:func:`runnable_size`) is mirrored out to the
      smallest runnable size and the result cropped.
    block: core block side in pixels. tile: :func:`restore`'s stage tile inside a block.
    progress: called as ``progress(done, total)`` after each block.

  Returns:
    ``numpy`` output of the layout :func:`restore` gives for ``image``.
  """
  x = np.asarray(image)
  if x.ndim not in (2, 3):
    raise ValueError(f"image must be [H, W] or [H, W, C], got shape {x.shape}")
  check_image(x, channels=input_channels(model, variables))
  if isinstance(block, bool) or not isinstance(block, int) or block < 1:
    raise ValueError(f"block must be a positive integer, got {block!r}")
  halo, align = network_geometry(model)
  height, width = x.shape[:2]
  padded = runnable_size(model, height, width)
  if padded != (height, width):  # too small for the N³ blocks: mirror it out, crop after
    pads = [(0, padded[0] - height), (0, padded[1] - width)] + [(0, 0)] * (x.ndim - 2)
    x = np.pad(x, pads, mode="symmetric")

  def tiles(size):
    core = -(-size // -(-size // block))  # equal cores of at most `block`
    return axis_tiles(size, core, halo, align)

  (t1, k1, rows), (t2, k2, cols) = tiles(x.shape[0]), tiles(x.shape[1])
  out = None
  for n, ((ty, cy), (tx, cx)) in enumerate([(r, c) for r in rows for c in cols]):
    y = np.asarray(_restore_top_level(model, variables, x[ty:ty + t1, tx:tx + t2], tile=tile))
    if out is None:
      out = np.empty(x.shape[:2] + y.shape[2:], y.dtype)
    out[cy:cy + k1, cx:cx + k2] = y[cy - ty:cy - ty + k1, cx - tx:cx - tx + k2]
    if progress is not None:
      progress(n + 1, len(rows) * len(cols))
  return out[:height, :width]


__all__ = ["restore", "restore_unchecked", "denoise", "restore_large", "runnable_size",
           "stage_groups", "check_tiling_protocol", "TILING_PROTOCOL",
           "network_geometry", "check_image", "input_channels", "PLAUSIBLE_RANGE",
           "axis_tiles", "COMPILER_OPTIONS", "DEFAULT_TILE", "DEFAULT_BLOCK"]
