"""Median training-step time of N³Net and of DnCNN-18 at the same batch and crop, and their ratio.

  python bench/train_step.py                       # the paper's batch 32, 80×80 crops
  python bench/train_step.py --batch=8 --repeats=5 --json=bench/results/train_step.json

Both models run the library's own pmapped train step (Adam, L2 decay, synced BN) on all
local devices, on random crops, after ``--warmup`` compiled steps.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import machine, median, time_calls, write_json  # noqa: E402
from n3jax.configs.denoise import get_config  # noqa: E402
from n3jax.nn import create_model, model_fields  # noqa: E402
from n3jax.train import optim  # noqa: E402
from n3jax.train.loop import replicate  # noqa: E402
from n3jax.train.state import create_train_state  # noqa: E402
from n3jax.train.step import AXIS, make_p_train_step  # noqa: E402


def step_times(name: str, *, batch: int, crop: int, repeats: int, warmup: int):
  config = get_config()
  kwargs = {"bn_axis_name": AXIS} if "bn_axis_name" in model_fields(name) else {}
  model = create_model(name, **kwargs)
  state = create_train_state(model, optim.make_optimizer(config), key=jax.random.PRNGKey(0),
                             image_shape=(crop, crop, 1))
  p_state = replicate(state)
  n = jax.local_device_count()
  if batch % n:
    raise SystemExit(f"--batch {batch} must be divisible by the {n} local devices")
  clean = np.random.default_rng(0).random((n, batch // n, crop, crop, 1), np.float32)
  p_step = make_p_train_step(model, config.sigma)
  holder = {"state": p_state}

  def one():
    holder["state"], metrics = p_step(holder["state"], clean)
    return metrics

  return time_calls(one, repeats=repeats, warmup=warmup)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--crop", type=int, default=80)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--models", default="n3net,dncnn18")
  parser.add_argument("--json", default="", help="also write the figures here")
  args = parser.parse_args(argv)
  info = machine()
  print(f"machine: {info}")
  results = {"machine": info, "batch": args.batch, "crop": args.crop, "models": {}}
  for name in args.models.split(","):
    times = step_times(name, batch=args.batch, crop=args.crop, repeats=args.repeats,
                       warmup=args.warmup)
    results["models"][name] = {"median_s": median(times), "times_s": times,
                               "steps_per_s": 1.0 / median(times)}
    print(f"{name:>10}: median step {median(times):.3f} s ({1 / median(times):.2f} steps/s) "
          f"over {args.repeats} steps, batch {args.batch}, crop {args.crop}")
  names = args.models.split(",")
  if len(names) == 2:
    ratio = results["models"][names[0]]["median_s"] / results["models"][names[1]]["median_s"]
    results["ratio"] = ratio
    print(f"ratio {names[0]} / {names[1]}: {ratio:.2f}")
  write_json(args.json, results)


if __name__ == "__main__":
  main()
