"""Runs a tiny training job and prints its per-step losses as JSON (for subprocess tests).

  python -m tests.helpers.tiny_run DATA_ROOT WORKDIR STEPS [key=value ...]

``key=value`` pairs override config fields (dotted names allowed, values parsed as JSON
when possible). Set XLA_FLAGS before running to force several CPU devices.
"""

import json
import sys

from tests.helpers.tiny_config import tiny_config


def main(argv):
  root, workdir, steps = argv[1], argv[2], int(argv[3])
  config = tiny_config(root, steps)
  for kv in argv[4:]:
    key, value = kv.split("=", 1)
    try:
      value = json.loads(value)
    except json.JSONDecodeError:
      pass
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  from n3jax.train.loop import train_and_evaluate  # after any jax.distributed settings
  summary = train_and_evaluate(config, workdir)
  print("LOSSES " + json.dumps({str(k): v for k, v in sorted(summary["train_loss"].items())}))
  print("DEVICES " + json.dumps([summary["num_devices"], summary["num_processes"]]))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
