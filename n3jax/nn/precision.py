"""Compute dtypes: which precision convolutions and matmuls run in.

``"bfloat16"`` is mixed precision: parameters, optimizer state, BatchNorm statistics, the
N³ blocks' distances, relaxation and aggregation, the residual additions and the outputs
of the image models (DnCNN, N3Net, N3Block) stay in float32; only the convolutions and
the activations between them run in bfloat16. (:class:`~n3jax.nn.N3SetBlock` is a layer
for the user's own network: its ``dtype`` is also its output dtype.)
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str, *, field: str = "dtype") -> Any:
  """The jnp dtype named ``name`` (a key of :data:`COMPUTE_DTYPES`).

  Raises:
    ValueError: an unknown name; the message names ``field`` and the choices.
  """
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"{field} must be one of {sorted(COMPUTE_DTYPES)}, got {name!r}")
  return COMPUTE_DTYPES[name]


def at_least_float32(x):
  """``x`` in float32, or in its own dtype when that is wider (float64)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))
