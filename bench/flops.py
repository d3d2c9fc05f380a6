"""FLOPs of a JAX function by kind, counted on its jaxpr with loop trip counts.

XLA's cost analysis (``jit(f).lower(...).compile().cost_analysis()``) counts the body of a
loop once, whatever its trip count; the N³ block's non-local part runs in loops (tiles
with ``lax.map``, the k relaxation steps with ``lax.scan``). This counter walks the jaxpr
instead and multiplies every ``scan`` body by its length:

- ``conv``: ``conv_general_dilated``, 2 · output elements · kernel window · input channels
  per group;
- ``matmul``: ``dot_general``, 2 · output elements · contracted size;
- ``elementwise``: one per output element of every other arithmetic primitive
  (transcendentals included, data movement excluded), one per input element of a
  reduction; of a ``cond`` only the costliest branch counts.

On a loop-free function the total agrees with XLA's cost analysis (``xla_flops``;
``bench/inference.py`` prints both for the conv-only network).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable, Dict

import jax
import jax.extend.core

# Primitives that move or select data: no arithmetic.
_NO_FLOPS = {
    "reshape", "broadcast_in_dim", "transpose", "slice", "dynamic_slice",
    "dynamic_update_slice", "concatenate", "pad", "gather", "scatter", "squeeze",
    "expand_dims", "convert_element_type", "copy", "copy_p", "iota", "select_n", "rev",
    "stop_gradient", "device_put", "sharding_constraint", "split", "eq", "ne", "lt", "le",
    "gt", "ge", "and", "or", "not", "argmax", "argmin", "sort", "top_k", "clamp",
    "random_bits", "random_wrap", "random_unwrap", "random_seed", "threefry2x32",
    "shift_right_logical", "shift_left", "pjit", "closed_call", "custom_jvp_call",
    "custom_vjp_call", "remat", "checkpoint", "scan", "while", "cond", "xla_call",
    "is_finite", "convert", "bitcast_convert_type", "reduce_precision",
}


def _size(aval) -> int:
  return math.prod(getattr(aval, "shape", ()) or (1,))


def _count(jaxpr, mult: float, out: Counter) -> None:
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "scan":
      _count(eqn.params["jaxpr"].jaxpr, mult * eqn.params["length"], out)
      continue
    if name == "while":
      out["unknown_trip_count_loops"] += 1  # counted once
    if name == "cond":  # one branch runs: count the costliest
      branches = []
      for branch in eqn.params["branches"]:
        counted: Counter = Counter()
        _count(branch.jaxpr, mult, counted)
        branches.append(counted)
      out.update(max(branches, key=lambda c: sum(c.values())))
      continue
    subs = list(_subjaxprs(eqn))
    if subs:
      for sub in subs:
        _count(sub, mult, out)
      continue
    if name == "conv_general_dilated":
      lhs, rhs = (v.aval for v in eqn.invars)
      dn = eqn.params["dimension_numbers"]
      kernel_window = math.prod(rhs.shape[d] for d in dn.rhs_spec[2:])
      in_per_group = rhs.shape[dn.rhs_spec[1]]
      out["conv"] += mult * 2 * _size(eqn.outvars[0].aval) * kernel_window * in_per_group
    elif name == "dot_general":
      (lc, _), _ = eqn.params["dimension_numbers"]
      contracted = math.prod(eqn.invars[0].aval.shape[d] for d in lc)
      out["matmul"] += mult * 2 * _size(eqn.outvars[0].aval) * contracted
    elif name.startswith("reduce_") or name in ("cumsum", "cumprod", "cummax", "cumlogsumexp"):
      out["elementwise"] += mult * sum(_size(v.aval) for v in eqn.invars)  # per input
    elif name not in _NO_FLOPS:
      out["elementwise"] += mult * sum(_size(v.aval) for v in eqn.outvars)


def _subjaxprs(eqn):
  """The jaxprs an equation calls (pjit, remat, custom_jvp/vjp calls, cond branches)."""
  for value in eqn.params.values():
    for v in (value if isinstance(value, (tuple, list)) else (value,)):
      if isinstance(v, jax.extend.core.ClosedJaxpr):
        yield v.jaxpr
      elif isinstance(v, jax.extend.core.Jaxpr):
        yield v


def jaxpr_flops(fn: Callable[..., Any], *args: Any) -> Dict[str, float]:
  """``{"conv", "matmul", "elementwise", "total"}`` FLOPs of ``fn(*args)``."""
  out: Counter = Counter()
  _count(jax.make_jaxpr(fn)(*args).jaxpr, 1.0, out)
  result = {k: float(out.get(k, 0.0)) for k in ("conv", "matmul", "elementwise")}
  result["total"] = sum(result.values())
  if out.get("unknown_trip_count_loops"):
    result["unknown_trip_count_loops"] = float(out["unknown_trip_count_loops"])
  return result


def compiled_flops(compiled: Any) -> float:
  """XLA's cost-analysis FLOPs of a compiled program (loop bodies counted once)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", float("nan")))


def xla_flops(fn: Callable[..., Any], *args: Any) -> float:
  """:func:`compiled_flops` of ``jit(fn)`` compiled for ``args``."""
  return compiled_flops(jax.jit(fn).lower(*args).compile())
