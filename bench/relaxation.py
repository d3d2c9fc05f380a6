"""Differentiable k-nearest selection in JAX, side by side: n3jax's relaxation and its peers.

  python bench/relaxation.py                         # N=4096, M=1024, E=16, D=32, k=8
  python bench/relaxation.py --repeats=5 --json=bench/results/relaxation.json

Every method solves the same task: for ``M`` query embeddings ``[M, E]`` find the ``k``
nearest of ``N`` candidate embeddings ``[N, E]`` (squared Euclidean distance) and return
the ``k`` neighbour volumes ``[M, k, D]`` of the candidates' values ``[N, D]``; the
forward + backward pass differentiates ``Σ volumes · G`` (a fixed random ``G``) with
respect to the queries, the candidates and the values. Methods:

- ``n3jax``: :func:`n3jax.ops.neural_nearest_neighbors` (fused: distances → weights →
  aggregation per chunk of queries, never holding ``[M, N, k]``);
- ``n3jax (weights, then aggregate)``: :func:`~n3jax.ops.continuous_knn_weights` then
  :func:`~n3jax.ops.aggregate`, the composable two-call form;
- ``softsort``: SoftSort (Prillo & Eisenschlos, ICML 2020) restricted to the top k rows,
  ``P[m, j, n] = softmax_n(−|s_(j) − s_n| / τ)`` with ``s = −distances`` and ``s_(j)``
  the j-th largest, written here from the paper (softjax, which ships it, has no release
  on PyPI to install: ``pip install softjax`` finds no distribution);
- ``ott-jax topk_mask``: ``ott.tools.soft_sort.topk_mask`` (a soft set mask from
  regularized optimal transport; no order, so its volume is the mask-weighted mean
  repeated k times), when ott-jax is installed;
- ``lax.top_k (hard)``: exact selection, gradients reach the values only.

All run at the same temperature (``--temperature``, on the squared-distance scale).
Times are medians of ``--repeats`` calls of the jitted function taken round-robin (one
call of every method per round), temp memory is XLA's ``temp_size_in_bytes`` of the
compiled program, and recovery is the share of the true k nearest candidates among the
candidates each method weights most (per neighbour slot for the ordered methods, the k
largest mask entries for ott-jax).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, Dict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import machine, median, write_json  # noqa: E402
from n3jax import ops  # noqa: E402

MIB = 2 ** 20


def _softsort_rows(scores: jax.Array, k: int, tau: float) -> jax.Array:
  """SoftSort's first k rows ``[M, k, N]`` (the paper's formula; descending order)."""
  top = jax.lax.top_k(scores, k)[0]  # [M, k], s_(1) >= s_(2) >= ...
  return jax.nn.softmax(-jnp.abs(top[..., :, None] - scores[..., None, :]) / tau, axis=-1)


def methods(k: int, t: float) -> Dict[str, Dict[str, Callable]]:
  """Name → {"volumes": (q, c, v) → [M, k, D], "weights": (q, c) → [M, k, N]}."""
  def scores(q, c):
    return -ops.pairwise_sq_distances(q, c)

  out: Dict[str, Dict[str, Callable]] = {}
  out["n3jax"] = {
      "volumes": lambda q, c, v: ops.neural_nearest_neighbors(q, c, v, t, k=k),
      # The fused path's own weights: the volumes of the identity's rows.
      "weights": lambda q, c: ops.neural_nearest_neighbors(q, c, jnp.eye(c.shape[0]), t,
                                                           k=k)}
  out["n3jax (weights, then aggregate)"] = {
      "volumes": lambda q, c, v: ops.aggregate(
          ops.continuous_knn_weights(scores(q, c), t, k=k), v),
      "weights": lambda q, c: jnp.swapaxes(
          ops.continuous_knn_weights(scores(q, c), t, k=k), -1, -2)}
  name, rows = "softsort (paper formula)", lambda s: _softsort_rows(s, k, t)
  out[name] = {"volumes": lambda q, c, v: jnp.einsum("mjn,nd->mjd", rows(scores(q, c)), v),
               "weights": lambda q, c: rows(scores(q, c))}
  try:
    from ott.tools import soft_sort
  except ImportError:
    pass
  else:
    def ott_mask(q, c):
      return soft_sort.topk_mask(scores(q, c), axis=-1, k=k)

    def ott_volumes(q, c, v):
      mask = ott_mask(q, c)
      mean = (mask @ v) / k
      return jnp.repeat(mean[:, None, :], k, axis=1)

    out["ott-jax topk_mask (unordered)"] = {
        "volumes": ott_volumes,
        "weights": lambda q, c: jnp.repeat(ott_mask(q, c)[:, None, :], k, axis=1)}

  def hard(q, c, v):
    idx = jax.lax.top_k(jax.lax.stop_gradient(scores(q, c)), k)[1]  # [M, k]
    return v[idx]

  out["lax.top_k (hard)"] = {
      "volumes": hard,
      "weights": lambda q, c: jnp.swapaxes(ops.hard_knn_weights(scores(q, c), k=k), -1, -2)}
  return out


def recovery(weights: jax.Array, truth: np.ndarray, *, unordered: bool) -> float:
  """Share of the true k nearest among the candidates weighted most (``[M, k, N]``)."""
  k = truth.shape[-1]
  if unordered:
    picked = np.asarray(jax.lax.top_k(weights[:, 0], k)[1])
  else:
    picked = np.asarray(jnp.argmax(weights, axis=-1))  # [M, k]
  hits = [len(set(p) & set(t)) for p, t in zip(picked.tolist(), truth.tolist())]
  return float(np.sum(hits)) / truth.size


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--candidates", type=int, default=4096, help="N")
  parser.add_argument("--queries", type=int, default=1024, help="M")
  parser.add_argument("--embed", type=int, default=16, help="E")
  parser.add_argument("--values", type=int, default=32, help="D")
  parser.add_argument("--k", type=int, default=8)
  parser.add_argument("--temperature", type=float, default=1e-4)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--only", default="", help="comma-separated method name prefixes")
  parser.add_argument("--json", default="", help="also write the figures here")
  args = parser.parse_args(argv)

  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  q = jax.random.normal(keys[0], (args.queries, args.embed))
  c = jax.random.normal(keys[1], (args.candidates, args.embed))
  v = jax.random.normal(keys[2], (args.candidates, args.values))
  g = jax.random.normal(keys[3], (args.queries, args.k, args.values))
  truth = np.asarray(jax.lax.top_k(-ops.pairwise_sq_distances(q, c), args.k)[1])

  table = methods(args.k, args.temperature)
  if args.only:
    prefixes = [p.strip() for p in args.only.split(",")]
    table = {n: m for n, m in table.items() if any(n.startswith(p) for p in prefixes)}
  compiled, rows = {}, {}
  for name, m in table.items():
    fwd = jax.jit(m["volumes"])
    loss = lambda q_, c_, v_, f=m["volumes"]: jnp.vdot(f(q_, c_, v_), g)
    bwd = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    compiled[name] = {}
    rows[name] = {}
    for kind, fn in (("fwd", fwd), ("fwd+bwd", bwd)):
      exe = fn.lower(q, c, v).compile()
      mem = exe.memory_analysis()
      rows[name][f"{kind} temp MiB"] = (mem.temp_size_in_bytes / MIB if mem is not None
                                        else float("nan"))
      compiled[name][kind] = exe
      jax.block_until_ready(exe(q, c, v))  # warm up
    _, grads = compiled[name]["fwd+bwd"](q, c, v)
    rows[name]["finite grads"] = bool(all(jnp.isfinite(x).all() for x in grads))
    rows[name]["recovered %"] = 100 * recovery(jax.jit(m["weights"])(q, c), truth,
                                               unordered="unordered" in name)

  times = {name: {"fwd": [], "fwd+bwd": []} for name in table}
  for _ in range(args.repeats):
    for name in table:
      for kind in ("fwd", "fwd+bwd"):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled[name][kind](q, c, v))
        times[name][kind].append(time.perf_counter() - t0)
  for name in table:
    for kind in ("fwd", "fwd+bwd"):
      rows[name][f"{kind} ms"] = 1e3 * median(times[name][kind])

  print(f"N={args.candidates} M={args.queries} E={args.embed} D={args.values} k={args.k} "
        f"t={args.temperature:g}; median of {args.repeats} rounds; {machine()}")
  print("| method | fwd ms | fwd+bwd ms | temp MiB fwd / fwd+bwd | recovered | finite grads |")
  print("| --- | --- | --- | --- | --- | --- |")
  for name, r in rows.items():
    print(f"| {name} | {r['fwd ms']:.1f} | {r['fwd+bwd ms']:.1f} | "
          f"{r['fwd temp MiB']:.0f} / {r['fwd+bwd temp MiB']:.0f} | "
          f"{r['recovered %']:.1f} % | {'yes' if r['finite grads'] else 'NO'} |")
  write_json(args.json, {"machine": machine(), "args": vars(args), "rows": rows,
                         "times_s": times})
  return rows


if __name__ == "__main__":
  main()
