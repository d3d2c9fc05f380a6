"""NLRN inference: whole-image windowed attention against the official tile protocol.

  python bench/nlrn.py --sizes=256,512 --repeats=3 --memory-sizes=256,512 \\
      --json=bench/results/nlrn.json

For each image size:

* FLOPs of both protocols, counted on the jaxpr with loop trip counts (:mod:`bench.flops`):
  ``whole`` is :func:`n3jax.infer.restore` (every pixel attends to its 45 x 45 window once),
  ``tiles`` is :func:`n3jax.overlap_tiles.restore_overlapping` (43 x 43 tiles at stride 7,
  averaged; the official code's test protocol);
* CPU time: ``whole`` measured (median of ``--repeats`` calls after a compiling one);
  ``tiles`` measured on ``--tile-calls`` network calls of 16 tiles and *projected* to all
  tiles of the image (its FLOPs are ~30x larger: a full run takes hours on this CPU);
* peak RSS of one (compiling) ``whole`` call in a fresh process per size
  (``--memory-sizes``; ``--memory-variant`` picks the model, e.g. ``nopropagation``);
* with ``--compare=256``: the papers' N³Net and NLRN side by side (parameters, FLOPs per
  pixel, whole-image time in round-robin rounds):

  python bench/nlrn.py --sizes= --compare=256 --repeats=5

The network is the paper's (``create_model("nlrn")``), randomly initialized with a
non-zero ``g`` (the timing does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench.common import machine, median, time_calls, write_json  # noqa: E402

VARIANTS = {"paper": {}, "nopropagation": {"propagate": False}}
BATCH = 16  # tiles per network call of the tile protocol


def _network(variant: str = "paper"):
  import jax
  import jax.numpy as jnp
  from n3jax.nn import create_model
  model = create_model("nlrn", **VARIANTS[variant])
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 1)))
  # g starts at zero; give it weights so that nothing is trivially zero.
  g = variables["params"]["nonlocal"]["g"]
  g["kernel"] = 0.01 * jax.random.normal(jax.random.PRNGKey(1), g["kernel"].shape)
  return model, variables


def _image(size: int) -> np.ndarray:
  return np.random.default_rng(0).random((size, size), np.float32)


def flops(size: int) -> dict:
  """FLOPs of both protocols on a ``size``² image."""
  import jax.numpy as jnp
  from bench.flops import jaxpr_flops
  from n3jax import infer
  from n3jax.overlap_tiles import restore_overlapping
  model, variables = _network()
  x = jnp.zeros((size, size), jnp.float32)
  whole = jaxpr_flops(lambda x: infer.restore_unchecked(model, variables, x), x)
  tiles = jaxpr_flops(lambda x: restore_overlapping(model, variables, x, batch=BATCH), x)
  return {"whole": whole, "tiles": tiles}


def times(sizes, repeats: int, tile_calls: int) -> dict:
  """Measured whole-image times and the tile protocol's time per call, projected."""
  import jax
  import jax.numpy as jnp
  from n3jax import infer
  from n3jax.overlap_tiles import OFFICIAL_TILE, num_tiles
  model, variables = _network()
  out = {}
  tiles = jnp.asarray(np.random.default_rng(1).random((BATCH, OFFICIAL_TILE, OFFICIAL_TILE, 1),
                                                      np.float32))
  call = jax.jit(lambda v, t: model.apply(v, t, train=False))
  per_call = time_calls(lambda: call(variables, tiles), repeats=tile_calls, warmup=1)
  for size in sizes:
    image = jnp.asarray(_image(size))
    whole = time_calls(lambda: infer.restore(model, variables, image), repeats=repeats,
                       warmup=1)
    calls = -(-num_tiles(size, size) // BATCH)
    out[size] = {"whole_s": whole, "whole_median_s": median(whole),
                 "tile_call_s": per_call, "tile_calls": calls,
                 "tiles_projected_s": median(per_call) * calls}
  return out


def compare_with_n3net(size: int, repeats: int) -> dict:
  """N³Net and NLRN (the papers' networks) side by side on a ``size``² image: parameters,
  FLOPs per pixel and whole-image CPU time (round-robin rounds in this process)."""
  import jax
  import jax.numpy as jnp
  from bench.flops import jaxpr_flops
  from n3jax import infer
  from n3jax.nn import create_model
  from n3jax.nn import count_parameters
  nets = {"n3net": create_model("n3net"), "nlrn": create_model("nlrn")}
  variables = {"n3net": nets["n3net"].init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 1))),
               "nlrn": _network()[1]}
  image = jnp.asarray(_image(size))
  out = {}
  for name, model in nets.items():
    f = jaxpr_flops(lambda x, m=model, v=variables[name]: infer.restore_unchecked(m, v, x),
                    image)
    out[name] = {"parameters": count_parameters(variables[name]["params"]),
                 "conv_parameters": count_parameters(variables[name]["params"],
                                                     batch_norm=False),
                 "flops_per_pixel": f["total"] / size ** 2, "times_s": []}
    time_calls(lambda m=model, v=variables[name]: infer.restore(m, v, image), repeats=0,
               warmup=1)
  for _ in range(repeats):
    for name, model in nets.items():
      out[name]["times_s"] += time_calls(
          lambda m=model, v=variables[name]: infer.restore(m, v, image), repeats=1, warmup=0)
  for name in nets:
    out[name]["median_s"] = median(out[name]["times_s"])
  return out


def memory_worker(size: int, variant: str) -> dict:
  """One compiling whole-image call in this fresh process: time and peak RSS."""
  import jax.numpy as jnp
  from n3jax import infer
  model, variables = _network(variant)
  image = jnp.asarray(_image(size))
  first, = time_calls(lambda: infer.restore(model, variables, image), repeats=1, warmup=0)
  return {"first_call_s": first,
          "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def _run_memory_worker(size: int, variant: str) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(size),
         "--memory-variant", variant]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="256,512", help="image sides to time and count")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--tile-calls", type=int, default=3,
                      help="timed network calls of the tile protocol (16 tiles each)")
  parser.add_argument("--memory-sizes", default="", help="image sides for peak RSS")
  parser.add_argument("--memory-variant", default="paper", choices=sorted(VARIANTS))
  parser.add_argument("--no-time", action="store_true", help="FLOPs and memory only")
  parser.add_argument("--compare", type=int, default=0,
                      help="image side for N³Net vs NLRN (parameters, FLOPs/pixel, time)")
  parser.add_argument("--json", default="", help="write the results here")
  parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    print(json.dumps(memory_worker(args.worker, args.memory_variant)))
    return 0
  sizes = [int(s) for s in args.sizes.split(",") if s]
  if args.compare and not sizes:
    args.no_time = True
  results = {"machine": machine(), "flops": {}, "times": {}, "memory": {}}
  print("machine:", results["machine"])
  # Fresh processes first: a child's peak RSS starts at this process's size when forked.
  for size in [int(s) for s in args.memory_sizes.split(",") if s]:
    m = _run_memory_worker(size, args.memory_variant)
    results["memory"][f"{args.memory_variant}/{size}"] = m
    print(f"{size:>5}² ({args.memory_variant}): peak RSS {m['peak_rss_gib']:.2f} GiB "
          f"(first call {m['first_call_s']:.1f} s)")
  for size in sizes:
    f = flops(size)
    results["flops"][size] = f
    ratio = f["tiles"]["total"] / f["whole"]["total"]
    print(f"{size:>5}²: whole image {f['whole']['total'] / 1e12:8.3f} TFLOP, official tiles "
          f"{f['tiles']['total'] / 1e12:8.3f} TFLOP: whole / tiles = 1/{ratio:.1f}")
  if not args.no_time:
    results["times"] = times(sizes, args.repeats, args.tile_calls)
    for size, t in results["times"].items():
      print(f"{size:>5}²: whole image {t['whole_median_s']:8.2f} s (median of "
            f"{len(t['whole_s'])}); official tiles {t['tiles_projected_s']:9.1f} s projected "
            f"({t['tile_calls']} calls x {median(t['tile_call_s']):.2f} s, median of "
            f"{len(t['tile_call_s'])})")
  if args.compare:
    results["compare"] = c = compare_with_n3net(args.compare, args.repeats)
    for name, r in c.items():
      print(f"{name:>6} {args.compare}²: {r['parameters']:,} parameters "
            f"({r['conv_parameters']:,} without BN), {r['flops_per_pixel'] / 1e6:.2f} "
            f"MFLOP/pixel, {r['median_s']:.2f} s (median of {len(r['times_s'])})")
  if args.json:
    write_json(args.json, results)
  return 0


if __name__ == "__main__":
  sys.exit(main())
