"""``n3jax-eval`` / ``python -m n3jax.evaluate`` / ``python eval.py``: evaluate a model on
benchmark sets and write OUTPUT/results.json and OUTPUT/results.md.

  python eval.py --config=configs/denoise.py --config.sigma=25 --checkpoint=DIR \
      --datasets=set12,bsd68,urban100 --output=OUTDIR
  python eval.py --config=configs/sisr.py --checkpoint=DIR \
      --datasets=set5,set14,bsd100,urban100 --output=OUTDIR
  python eval.py --config=configs/sisr.py --checkpoint=bicubic --output=OUTDIR  # baseline
  python eval.py --config=configs/realnoise.py --checkpoint=DIR --output=OUTDIR
  python eval.py --config=configs/correspondences.py:n3 --checkpoint=DIR --output=OUTDIR

The task (``config.task``) evaluates: see :mod:`n3jax.tasks`.
"""

import logging
import os
import sys
from typing import Optional, Sequence

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from n3jax.entry import run_app
from n3jax.tasks import task_of

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "experiment config file, or the name of a "
                                "shipped one (denoise.py, sisr.py, vdsr.py, nlrn.py, "
                                "realnoise.py, correspondences.py), with :ARG",
                                lock_config=True)
flags.DEFINE_string("checkpoint", None, "n3jax model directory (see python -m n3jax.convert); "
                    "with an SR config, 'bicubic' evaluates bicubic upsampling")
flags.DEFINE_list("datasets", None, "benchmarks, e.g. set12,bsd68,urban100 (default: config)")
flags.DEFINE_string("output", None, "directory for results.json and results.md; results "
                    "already there (same model, σ, seed) are kept and the new sets added")
flags.DEFINE_bool("overwrite", False, "measure sets again that --output already holds "
                  "complete, or replace results of another evaluation there")
flags.mark_flags_as_required(["config", "checkpoint", "output"])


def main(argv: Sequence[str]) -> int:
  del argv
  # Our progress at INFO; the libraries' (orbax, tfds) chatter only from WARNING up.
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("n3jax").setLevel(logging.INFO)
  config = FLAGS.config
  task = task_of(config)
  datasets = FLAGS.datasets or list(config.eval_datasets)
  task.evaluate(config, FLAGS.checkpoint, datasets=datasets, output_dir=FLAGS.output,
                overwrite=FLAGS.overwrite)
  print(open(os.path.join(FLAGS.output, "results.md")).read())
  return 0


def run(argv: Optional[Sequence[str]] = None) -> None:
  """Console-script entry point (exits)."""
  run_app(main, sys.modules[__name__], argv)
