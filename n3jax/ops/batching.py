"""Leading batch axes: every public op takes any number of them, including none.

Pure JAX, no Flax. An op written for one batch axis (``[B, ...core]``) is called on
``[...lead, ...core]`` by merging the leading axes into one (or adding one when there are
none) and splitting them again on the way out. Unbatched input therefore works, and so
does ``jax.vmap`` of an op, which calls it on the unbatched shapes.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

Shape = Tuple[int, ...]


def leading_shape(x: jax.Array, core_rank: int, name: str) -> Shape:
  """The leading (batch) axes of ``x [...lead, ...core]``; checks ``x.ndim >= core_rank``."""
  if x.ndim < core_rank:
    raise ValueError(f"{name} needs at least {core_rank} axes, got shape {x.shape}")
  return tuple(x.shape[:x.ndim - core_rank])


def merge_leading(x: jax.Array, core_rank: int, lead: Shape) -> jax.Array:
  """``x [...l, ...core]`` (``l`` broadcastable to ``lead``) → ``[prod(lead), ...core]``."""
  core = x.shape[x.ndim - core_rank:]
  return jnp.broadcast_to(x, lead + core).reshape((math.prod(lead),) + core)


def split_leading(y: Any, lead: Shape) -> Any:
  """Inverse of :func:`merge_leading` on every array of ``y``: ``[prod(lead), ...]`` → ``[...lead, ...]``."""
  return jax.tree_util.tree_map(lambda a: a.reshape(lead + a.shape[1:]), y)


def batched(*core_ranks: Optional[int]) -> Callable:
  """Decorator: lets an op written for ``[B, ...core]`` inputs take any leading axes.

  Args:
    core_ranks: for each leading positional argument, the rank of its core (without the
      batch axis), or ``None`` to pass that argument through untouched. The leading
      axes of all batched arguments broadcast together; the op sees them merged into one
      axis and every array it returns has them split again.
  """
  def decorate(fn: Callable) -> Callable:
    signature = inspect.signature(fn)
    names = list(signature.parameters)[:len(core_ranks)]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
      bound = signature.bind(*args, **kwargs)  # positional or by name, as fn accepts them
      arrays = {n: jnp.asarray(bound.arguments[n]) for n, r in zip(names, core_ranks)
                if r is not None and n in bound.arguments}
      lead = broadcast_leading([(arrays[n], r, f"{fn.__name__}: {n}")
                                for n, r in zip(names, core_ranks) if n in arrays])
      for n, r in zip(names, core_ranks):
        if n in arrays:
          bound.arguments[n] = merge_leading(arrays[n], r, lead)
      return split_leading(fn(*bound.args, **bound.kwargs), lead)
    return wrapper
  return decorate


def broadcast_leading(arrays: Sequence[Tuple[jax.Array, int, str]]) -> Shape:
  """The common leading shape of ``[(array, core_rank, name), …]`` (a clear error if none)."""
  leads = [leading_shape(a, r, n) for a, r, n in arrays]
  if not leads:
    return ()
  try:
    return tuple(jnp.broadcast_shapes(*leads))
  except ValueError:
    desc = ", ".join(f"{n} {a.shape}" for a, _, n in arrays)
    raise ValueError(f"leading (batch) axes do not broadcast: {desc}") from None
