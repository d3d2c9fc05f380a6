"""``n3jax-train`` / ``python -m n3jax.train`` / ``python train.py``: train a model.

  n3jax-train --config=denoise.py:smoke --workdir=/tmp/smoke          # a shipped config
  python train.py --config=configs/denoise.py --workdir=runs/n3net    # from a checkout
  n3jax-train --config=my_config.py --config.batch_size=64 --workdir=runs/mine

Configs: the shipped ``denoise.py[:variant]`` (Gaussian denoising, paper Tables 1 and 3),
``sisr.py`` and ``vdsr.py`` (super-resolution, Table 5), each with ``:smoke``; or any
``ml_collections`` config file. Running again with the same ``--workdir`` resumes from its
latest checkpoint. SIGTERM or Ctrl-C saves a checkpoint first and exits with 128 + the
signal number.
"""

import logging
import sys
from typing import Optional, Sequence

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from n3jax.entry import run_app

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "experiment config file, or the name of a "
                                "shipped one (denoise.py, sisr.py, vdsr.py, nlrn.py, "
                                "realnoise.py, correspondences.py), with :ARG",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "directory for checkpoints, logs and the final model")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: Sequence[str]) -> int:
  del argv
  # Our progress at INFO; the libraries' (orbax, tfds) chatter only from WARNING up.
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("n3jax").setLevel(logging.INFO)
  # Imported here so that jax.distributed can be initialized before any backend use.
  from n3jax.train.loop import TrainingInterrupted, train_and_evaluate
  try:
    summary = train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except TrainingInterrupted as e:
    logging.warning("%s", e)
    return 128 + e.signum
  last_val = summary["val"][max(summary["val"])] if summary["val"] else None
  if last_val:
    from n3jax.tasks import task_of
    print(f"step {summary['step']}: {task_of(FLAGS.config).summary_line(last_val)}")
  print(f"model: {FLAGS.workdir}/model (evaluate with n3jax-eval or eval.py --checkpoint)")
  return 0


def run(argv: Optional[Sequence[str]] = None) -> None:
  """Console-script entry point (exits)."""
  run_app(main, sys.modules[__name__], argv)
