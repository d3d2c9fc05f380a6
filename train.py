"""Training entry point: data-parallel training of N³Net and its baselines.

Not implemented yet: it arrives with issue #3 (train loop, configs, checkpoints, resume).
Until then, evaluate the official weights with eval.py (see README).
"""

import sys

if __name__ == "__main__":
  print("train.py: training is not implemented yet (issue #3). "
        "See README for evaluation of the official weights.", file=sys.stderr)
  sys.exit(2)
