"""Median training-step time of N³Net and of DnCNN-18 at the same batch and crop, and their ratio.

  python bench/train_step.py                       # the paper's batch 32, 80×80 crops
  python bench/train_step.py --batch=8 --repeats=5 --json=bench/results/train_step.json

Both models run the library's own pmapped train step (Adam, L2 decay, synced BN) on all
local devices, on random crops, after ``--warmup`` compiled steps; their steps are timed
round-robin (one step of each per round). It prints steps/s, the FLOPs of one step
(:mod:`bench.flops`, loops counted with their trip counts; XLA's cost analysis of the
compiled step, which counts a loop body once, next to it) and the FLOP/s achieved.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import machine, median, time_calls, write_json  # noqa: E402
from bench.flops import compiled_flops, jaxpr_flops  # noqa: E402
from n3jax.configs.denoise import get_config  # noqa: E402
from n3jax.nn import create_model, model_fields  # noqa: E402
from n3jax.nn.precision import COMPUTE_DTYPES, compute_dtype  # noqa: E402
from n3jax.train import optim  # noqa: E402
from n3jax.train.loop import replicate  # noqa: E402
from n3jax.train.state import create_train_state  # noqa: E402
from n3jax.train.step import AXIS, make_p_train_step  # noqa: E402


def make_step(name: str, *, batch: int, crop: int, dtype: str):
  """A zero-argument function running one training step of ``name``, and its XLA cost."""
  config = get_config()
  kwargs = {"bn_axis_name": AXIS} if "bn_axis_name" in model_fields(name) else {}
  model = create_model(name, **kwargs, dtype=compute_dtype(dtype))
  state = create_train_state(model, optim.make_optimizer(config), key=jax.random.PRNGKey(0),
                             image_shape=(crop, crop, 1))
  p_state = replicate(state)
  n = jax.local_device_count()
  if batch % n:
    raise SystemExit(f"--batch {batch} must be divisible by the {n} local devices")
  clean = np.random.default_rng(0).random((n, batch // n, crop, crop, 1), np.float32)
  p_step = make_p_train_step(model, config.sigma)
  flops = {"xla": compiled_flops(p_step.lower(p_state, clean).compile()),
           **jaxpr_flops(p_step, p_state, clean)}
  holder = {"state": p_state}

  def one():
    holder["state"], metrics = p_step(holder["state"], clean)
    return metrics

  return one, flops


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--crop", type=int, default=80)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--models", default="n3net,dncnn18")
  parser.add_argument("--dtype", default="float32", choices=sorted(COMPUTE_DTYPES),
                      help="compute dtype of the convolutions (the config's dtype)")
  parser.add_argument("--json", default="", help="also write the figures here")
  args = parser.parse_args(argv)
  info = machine()
  print(f"machine: {info}")
  results = {"machine": info, "batch": args.batch, "crop": args.crop, "dtype": args.dtype,
             "models": {}}
  names = args.models.split(",")
  steps = {name: make_step(name, batch=args.batch, crop=args.crop, dtype=args.dtype)
           for name in names}
  for one, _ in steps.values():
    time_calls(one, repeats=0, warmup=args.warmup)
  times: Dict[str, List[float]] = {name: [] for name in names}
  for _ in range(args.repeats):  # round-robin: the models' times are taken side by side
    for name in names:
      times[name] += time_calls(steps[name][0], repeats=1, warmup=0)
  for name in names:
    t, flops = median(times[name]), steps[name][1]
    per_device = flops["total"]
    results["models"][name] = {"median_s": t, "times_s": times[name], "steps_per_s": 1 / t,
                               "flops_per_step_per_device": per_device, "flops": flops,
                               "achieved_flop_per_s": per_device * jax.local_device_count() / t}
    print(f"{name:>10}: median step {t:.3f} s ({1 / t:.3f} steps/s) over {args.repeats} "
          f"rounds, batch {args.batch}, crop {args.crop}, {args.dtype}; "
          f"{per_device / 1e9:.1f} GFLOP/step/device (convolutions {flops['conv'] / 1e9:.1f}, "
          f"matmuls {flops['matmul'] / 1e9:.1f}; XLA's cost analysis, loops once: "
          f"{flops['xla'] / 1e9:.1f}), achieved "
          f"{per_device * jax.local_device_count() / t / 1e9:.1f} GFLOP/s")
  if len(names) == 2:
    ratio = results["models"][names[0]]["median_s"] / results["models"][names[1]]["median_s"]
    results["ratio"] = ratio
    print(f"ratio {names[0]} / {names[1]}: {ratio:.2f}")
  write_json(args.json, results)


if __name__ == "__main__":
  main()
