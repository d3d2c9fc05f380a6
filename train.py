"""Trains a model: ``python train.py --config=configs/denoise.py --workdir=DIR``.

Configs: ``configs/denoise.py[:variant]`` (Gaussian denoising, paper Tables 1 and 3),
``configs/sisr.py`` and ``configs/vdsr.py`` (super-resolution, Table 5); each has ``:smoke``.

Running again with the same ``--workdir`` resumes from its latest checkpoint. SIGTERM or
Ctrl-C saves a checkpoint first and exits with 128 + the signal number.
"""

import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
flags.DEFINE_string("workdir", None, "directory for checkpoints, logs and the final model")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
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
    print(f"step {summary['step']}: validation PSNR {last_val['val_psnr']:.3f} dB "
          f"(SSIM {last_val['val_ssim']:.4f}, input {last_val['val_input_psnr']:.3f} dB)")
  return 0


if __name__ == "__main__":
  sys.exit(app.run(main))
