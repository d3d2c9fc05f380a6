"""N³Net inference time and peak memory by image size, against its conv-only cost and BM3D.

  python bench/inference.py                          # 256², 512², 1024², 2048², 3 runs each
  python bench/inference.py --sizes=256,512 --repeats=5 --json=bench/results/inference.json

For every size it times ``n3jax.infer.restore`` (jit-compiled, tiled stage by stage above
``--tile`` pixels) on a gray image for two networks with the same convolutions:

* ``n3net``: the reference Gaussian denoiser (3 DnCNNs, 2 N³ blocks, k = 7);
* ``conv_only``: the same network with the non-local part of each N³ block (patch
  extraction, distances, the k relaxation steps, aggregation, folding) replaced by an
  elementwise stand-in of equal output shape; embedding and temperature CNNs are kept
  (:mod:`bench.conv_only`).

FLOPs by kind (convolutions, matmuls, elementwise) are counted on the jaxpr with loop trip
counts (:mod:`bench.flops`; XLA's cost analysis counts a loop body once, so it is printed
only for the loop-free conv-only network, as a check).

Peak resident memory (``ru_maxrss``: compiled program, buffers, Python and JAX included)
comes from one call of each (network, size) in a fresh subprocess, so that it is its own.
Times are medians of ``--repeats`` rounds taken afterwards in one process: everything is
compiled first, then each round times every (network, size) once, so the ratios between
networks and between sizes compare runs made side by side on this shared machine. With the
``bm3d`` package installed (``pip install bm3d``) it also times BM3D on the 256² image; with
the official σ=25 weights (``$N3JAX_PRETRAINED_DIR`` or ``../shared/pretrained``) it reports
the PSNR of both on that image (Set12 ``01.png``, or scikit-image's camera at 256²).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench.common import machine, median, time_calls, write_json  # noqa: E402

SIGMA = 25.0
VARIANTS = ("n3net", "conv_only")


def _test_image(size: int, seed: int = 0) -> np.ndarray:
  """A ``size x size`` noisy-looking gray image in [0, 1] (content does not change timing)."""
  rng = np.random.default_rng(seed)
  return rng.random((size, size), np.float32)


def _network(variant: str):
  """A randomly initialized network of ``variant`` and its variables."""
  import jax
  import jax.numpy as jnp
  from n3jax.nn import create_model
  from bench.conv_only import conv_only_standin
  model = create_model("n3net")
  if variant == "conv_only":
    model = conv_only_standin(model)
  return model, model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 1)))


def _restore_fn(variant: str, tile: int):
  """``image [H, W] → restored`` for a randomly initialized network of ``variant``."""
  from n3jax import infer
  model, variables = _network(variant)
  return lambda image: infer.restore(model, variables, image, tile=tile)


def flops_of(variant: str, size: int, tile: int) -> dict:
  """FLOPs of restoring a ``size``² image, by kind (:mod:`bench.flops`, loops counted
  with their trip counts); for the conv-only network at most one tile large (no loops)
  also XLA's cost analysis, as a check of the counter."""
  import jax.numpy as jnp
  from bench.flops import jaxpr_flops, xla_flops
  from n3jax import infer
  model, variables = _network(variant)
  fn = lambda x: infer.restore_unchecked(model, variables, x, tile=tile)  # noqa: E731
  image = jnp.zeros((size, size), jnp.float32)
  out = jaxpr_flops(fn, image)
  if variant == "conv_only" and size <= tile:
    out["xla"] = xla_flops(fn, image)
  return out


def memory_worker(variant: str, size: int, tile: int) -> dict:
  """One (compiling) call in this fresh process: its time and the process's peak RSS."""
  import jax.numpy as jnp
  run, image = _restore_fn(variant, tile), jnp.asarray(_test_image(size))
  first, = time_calls(lambda: run(image), repeats=1, warmup=0)
  return {"first_call_s": first,
          "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def _run_memory_worker(variant: str, size: int, tile: int) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", variant, "--sizes", str(size),
         "--tile", str(tile)]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def time_interleaved(variants, sizes, repeats: int, tile: int) -> dict:
  """``{(variant, size): [seconds, …]}``, all timed in this process, round-robin.

  Every (variant, size) is compiled first; then each round times every size and variant
  once, so slow phases of a shared machine fall on all of them alike and the ratios of
  their medians compare like with like.
  """
  import jax.numpy as jnp
  fns = {v: _restore_fn(v, tile) for v in variants}
  images = {s: jnp.asarray(_test_image(s)) for s in sizes}
  calls = {(v, s): (lambda f=fns[v], x=images[s]: f(x)) for s in sizes for v in variants}
  for call in calls.values():
    time_calls(call, repeats=0, warmup=1)
  times = {key: [] for key in calls}
  for _ in range(repeats):
    for key, call in calls.items():
      times[key] += time_calls(call, repeats=1, warmup=0)
  return times


def bm3d_comparison(repeats: int) -> dict:
  """BM3D vs N³Net (official σ=25 weights when found) on one 256² image: time and PSNR."""
  try:
    import bm3d
  except ImportError:
    return {"skipped": "bm3d not installed (pip install bm3d)"}
  import jax
  import jax.numpy as jnp
  from n3jax import infer
  from n3jax.data import images
  from n3jax.data.noise import add_gaussian_noise
  from n3jax.pretrained import official_files
  from n3jax.evaluate import metrics
  from n3jax.evaluate.denoise import image_key
  from n3jax.nn import create_model
  root = images.default_data_root()
  path = os.path.join(root, "Set12", "01.png") if root else None
  if path and os.path.isfile(path):
    name, clean = "Set12/01.png", images.load_gray(path)
  else:
    from skimage import data
    name, clean = "skimage camera[128:384, 128:384]", data.camera()[128:384, 128:384] / 255.0
  clean = np.asarray(clean, np.float32)
  noisy = np.asarray(add_gaussian_noise(jnp.asarray(clean), SIGMA, image_key(0, "01.png")))
  result = {"image": name, "shape": list(clean.shape), "sigma": SIGMA,
            "noisy_psnr": float(metrics.psnr(noisy, clean))}
  model = create_model("n3net")
  official = official_files().get(float(SIGMA))
  if official:
    from n3jax.convert import convert_official
    variables, _ = convert_official(official)
    weights = os.path.basename(official)
  else:
    variables, weights = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 1))), None
  x = jnp.asarray(noisy)
  calls = {"bm3d": lambda: bm3d.bm3d(noisy, SIGMA / 255.0),
           "n3net": lambda: infer.restore(model, variables, x)}
  outputs = {name: call() for name, call in calls.items()}  # also compiles N³Net
  times = {name: [] for name in calls}
  for _ in range(repeats):  # alternating, so that both see the same machine
    for name, call in calls.items():
      times[name] += time_calls(call, repeats=1, warmup=0)
  psnr = {name: float(metrics.psnr(np.asarray(out, np.float32), clean))
          for name, out in outputs.items()}
  result["bm3d"] = {"times_s": times["bm3d"], "median_s": median(times["bm3d"]),
                    "psnr": psnr["bm3d"]}
  result["n3net"] = {"times_s": times["n3net"], "median_s": median(times["n3net"]),
                     "weights": weights, "psnr": psnr["n3net"] if weights else None}
  result["speedup"] = result["bm3d"]["median_s"] / result["n3net"]["median_s"]
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="256,512,1024,2048")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--tile", type=int, default=None, help="core tile side "
                      "(default n3jax.infer.DEFAULT_TILE)")
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--no-bm3d", action="store_true")
  parser.add_argument("--json", default="", help="also write the figures here")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  sizes = [int(s) for s in args.sizes.split(",")]
  if args.tile is None:
    from n3jax.infer import DEFAULT_TILE
    args.tile = DEFAULT_TILE
  if args.worker:
    print(json.dumps(memory_worker(args.worker, sizes[0], args.tile)))
    return
  info = machine()
  print(f"machine: {info}")
  print(f"tile {args.tile}; peak RSS and first (compiling) call: a fresh process per row; "
        f"times: median of {args.repeats} rounds over all rows in one process")
  results = {"machine": info, "tile": args.tile, "repeats": args.repeats, "runs": []}
  variants = args.variants.split(",")
  memory = {}
  for size in sizes:
    for variant in variants:
      memory[variant, size] = m = _run_memory_worker(variant, size, args.tile)
      print(f"{variant:>9} {size:>5}²: peak RSS {m['peak_rss_gib']:.2f} GiB   "
            f"(first call {m['first_call_s']:.1f} s)", flush=True)
  flops = {}
  for size in sizes:
    for variant in variants:
      flops[variant, size] = f = flops_of(variant, size, args.tile)
      xla = f" (XLA cost analysis: {f['xla'] / 1e9:.1f})" if "xla" in f else ""
      print(f"{variant:>9} {size:>5}²: {f['total'] / 1e9:.1f} GFLOP{xla}: convolutions "
            f"{f['conv'] / 1e9:.1f}, matmuls {f['matmul'] / 1e9:.2f}, elementwise "
            f"{f['elementwise'] / 1e9:.2f}", flush=True)
  times = time_interleaved(variants, sizes, args.repeats, args.tile)
  by = {}
  for size in sizes:
    for variant in variants:
      t = times[variant, size]
      by[variant, size] = r = {"variant": variant, "size": size, "times_s": t,
                               "median_s": median(t), **memory[variant, size],
                               "flops": flops[variant, size]}
      results["runs"].append(r)
      print(f"{variant:>9} {size:>5}²: median {r['median_s']:8.3f} s", flush=True)
    if set(VARIANTS) <= set(variants):
      ratio = by["n3net", size]["median_s"] / by["conv_only", size]["median_s"]
      results.setdefault("n3net_over_conv_only", {})[str(size)] = ratio
      extra = by["n3net", size]["flops"]["total"] - by["conv_only", size]["flops"]["total"]
      results.setdefault("non_local_flop_share", {})[str(size)] = (
          extra / by["n3net", size]["flops"]["total"])
      print(f"{'':>9} {size:>5}²: n3net / conv_only = {ratio:.3f} in time, "
            f"{by['n3net', size]['flops']['total'] / by['conv_only', size]['flops']['total']:.3f}"
            f" in FLOPs (non-local part {extra / 1e9:.1f} GFLOP)", flush=True)
  for a, b in zip(sizes, sizes[1:]):
    if "n3net" in variants:
      ratio = by["n3net", b]["median_s"] / by["n3net", a]["median_s"]
      results.setdefault("scaling", {})[f"{b}/{a}"] = ratio
      print(f"time n3net {b}² / {a}²: {ratio:.2f} (pixels ×{(b / a) ** 2:.0f})")
  if not args.no_bm3d:
    cmp = bm3d_comparison(args.repeats)
    results["bm3d_256"] = cmp
    if "skipped" in cmp:
      print(f"bm3d: {cmp['skipped']}")
    else:
      psnr = cmp["n3net"]["psnr"]
      print(f"{cmp['image']} σ={SIGMA:g} (noisy {cmp['noisy_psnr']:.2f} dB): "
            f"bm3d {cmp['bm3d']['median_s']:.3f} s, {cmp['bm3d']['psnr']:.2f} dB; "
            f"n3net {cmp['n3net']['median_s']:.3f} s, "
            + (f"{psnr:.2f} dB" if psnr is not None else "no official weights, PSNR n/a")
            + f"; bm3d / n3net time = {cmp['speedup']:.2f}")
  write_json(args.json, results)


if __name__ == "__main__":
  main()
