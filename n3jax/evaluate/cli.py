"""``n3jax-eval`` / ``python -m n3jax.evaluate`` / ``python eval.py``: evaluate a model on
benchmark sets and write OUTPUT/results.json and OUTPUT/results.md.

  python eval.py --config=configs/denoise.py --config.sigma=25 --checkpoint=DIR \
      --datasets=set12,bsd68,urban100 --output=OUTDIR
  python eval.py --config=configs/sisr.py --checkpoint=DIR \
      --datasets=set5,set14,bsd100,urban100 --output=OUTDIR
  python eval.py --config=configs/sisr.py --checkpoint=bicubic --output=OUTDIR  # baseline
  python eval.py --config=configs/realnoise.py --checkpoint=DIR --output=OUTDIR
"""

import json
import logging
import os
import sys
from typing import Optional, Sequence

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from n3jax.entry import run_app
from n3jax.checkpoint import load_model, read_model_name
from n3jax.nn.precision import compute_dtype
from n3jax.nn import model_fields
from n3jax.evaluate import sisr
from n3jax.data.poisson_gaussian import RealNoiseProtocol
from n3jax.evaluate.denoise import evaluate_denoising
from n3jax.evaluate.realnoise import evaluate_realnoise

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "experiment config file, or the name of a "
                                "shipped one (denoise.py, sisr.py, vdsr.py, nlrn.py, "
                                "realnoise.py), with :ARG",
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
  task = config.get("task", "denoise")
  datasets = FLAGS.datasets or list(config.eval_datasets)
  if task == "sisr" and FLAGS.checkpoint == sisr.BICUBIC:
    sisr.evaluate_sr(None, None, datasets=datasets, scales=list(config.scales),
                     data_root=config.data_root or None, output_dir=FLAGS.output,
                     run_info={"checkpoint": sisr.BICUBIC}, overwrite=FLAGS.overwrite)
    print(open(os.path.join(FLAGS.output, "results.md")).read())
    return 0
  name = read_model_name(FLAGS.checkpoint)
  if name != config.model.name:
    raise ValueError(f"{FLAGS.checkpoint} holds a {name!r} model but the config "
                     f"asks for {config.model.name!r} (set --config.model.name)")
  # Inference-only knobs, for the models (and configs) that have them.
  inference = {k: v for k, v in (("query_chunk", config.get("query_chunk")),
                                 ("tile", config.get("tile", 0) or None),
                                 ("dtype", compute_dtype(config.get("dtype", "float32"),
                                                         field="config.dtype")))
               if k in model_fields(name) and (k == "dtype" or k in config)}
  # The architecture is the checkpoint's (its model.json); the config may only change
  # inference knobs. A config that describes another architecture is reported, not applied.
  model, variables, meta = load_model(FLAGS.checkpoint, **inference)
  differ = {k: v for k, v in config.model.kwargs.items() if getattr(model, k, v) != v}
  if differ:
    logging.warning("evaluating %s as stored (%s); the config's %s are not applied",
                    FLAGS.checkpoint, name, differ)
  run_info = {"checkpoint": os.path.abspath(FLAGS.checkpoint), "checkpoint_metadata": meta,
              "config": json.loads(config.to_json())}
  if task == "sisr":
    sisr.evaluate_sr(model, variables, datasets=datasets, scales=list(config.scales),
                     data_root=config.data_root or None, output_dir=FLAGS.output,
                     run_info=run_info, overwrite=FLAGS.overwrite)
    print(open(os.path.join(FLAGS.output, "results.md")).read())
    return 0
  if (task == "realnoise") != (meta.get("task") == "realnoise"):
    raise ValueError(f"{FLAGS.checkpoint} holds a model for task {meta.get('task', 'denoise')!r}"
                     f" but the config evaluates {task!r}")
  if task == "realnoise":
    evaluate_realnoise(
        model, variables, levels=config.eval_levels, datasets=datasets,
        data_root=config.data_root or None, seed=config.seed,
        protocol=RealNoiseProtocol.from_config(config.noise), output_dir=FLAGS.output,
        run_info=run_info, overwrite=FLAGS.overwrite)
    print(open(os.path.join(FLAGS.output, "results.md")).read())
    return 0
  if meta.get("sigma") is not None and float(meta["sigma"]) != float(config.sigma):
    logging.warning("checkpoint was trained for σ=%s but evaluating at σ=%s "
                    "(set --config.sigma)", meta["sigma"], config.sigma)
  evaluate_denoising(
      model, variables, sigma=config.sigma, datasets=datasets,
      data_root=config.data_root or None, seed=config.seed, output_dir=FLAGS.output,
      run_info=run_info, overwrite=FLAGS.overwrite,
      protocol=config.get("eval_protocol", "whole"))
  print(open(os.path.join(FLAGS.output, "results.md")).read())
  return 0


def run(argv: Optional[Sequence[str]] = None) -> None:
  """Console-script entry point (exits)."""
  run_app(main, sys.modules[__name__], argv)
