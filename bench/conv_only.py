"""The benchmarks' conv-only stand-in: N³Net with the non-local part of its N³ blocks removed.

``conv_only_standin(create_model("n3net"))`` is the same network with every N³ block
replaced by :class:`ConvOnlyN3Block`: the embedding and temperature CNNs run as in the
block, then patch extraction, distances, the k relaxation steps, aggregation and folding
are replaced by an elementwise map of equal output shape. It has the N³Net's variables
(same names and shapes), so it measures what the network costs without its non-local
part (``bench/inference.py``). It is not a model: its output means nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from n3jax.nn import N3Block, N3Net


class ConvOnlyN3Block(N3Block):
  """An :class:`~n3jax.nn.N3Block` whose non-local part is an elementwise map."""

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               match: Optional[jax.Array] = None) -> jax.Array:
    """``[B, H, W, c]`` → ``[B, H, W, (k + 1)·c]``, as the block's output layout."""
    embed = self._embedding(x, train, match)
    log_temp = self._log_temperature(x, train)
    v = x * jnp.exp(log_temp) + jnp.mean(embed, axis=-1, keepdims=True).astype(x.dtype)
    return jnp.concatenate([x, jnp.tile(v, (1, 1, 1, self.k)).astype(x.dtype)], axis=-1)


class ConvOnlyN3Net(N3Net):
  """:class:`~n3jax.nn.N3Net` built with :class:`ConvOnlyN3Block` s."""
  block_cls = ConvOnlyN3Block


def conv_only_standin(model: N3Net) -> ConvOnlyN3Net:
  """The conv-only stand-in of ``model`` (e.g. ``create_model("n3net")``): its attributes,
  the non-local part of its N³ blocks replaced."""
  if not isinstance(model, N3Net):
    raise TypeError(f"the conv-only stand-in replaces an N3Net's blocks, got "
                    f"{type(model).__name__}")
  fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
            if f.init and f.name not in ("parent", "name")}
  return ConvOnlyN3Net(**fields)


__all__ = ["ConvOnlyN3Block", "ConvOnlyN3Net", "conv_only_standin"]
