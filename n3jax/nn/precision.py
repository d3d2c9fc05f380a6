"""Compute dtypes: which precision convolutions and matmuls run in.

``"bfloat16"`` is mixed precision: parameters, optimizer state, BatchNorm statistics, the
N³ blocks' distances, relaxation and aggregation, the residual additions and every model
output stay in float32; only the convolutions (and the set block's dense layers) and the
activations between them run in bfloat16.
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
