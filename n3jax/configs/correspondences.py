"""Correspondence classification on sets with CNNet and CNNet + N³ (paper Sec. 5.5, Table 6),
on the synthetic two-view benchmark (:mod:`n3jax.data.two_view`).

The paper's datasets (St. Peter's, Brown, …) are large downloads; the benchmark here makes
pairs of calibrated views of random 3-D scenes with the same code path: 2,000 putative
correspondences per pair, a controlled outlier ratio, pixel noise, coordinates normalized
by the intrinsics, inlier labels by symmetric epipolar distance < 1e-4.

  python train.py --config=configs/correspondences.py:n3 --workdir=runs/cnnet_n3
  python train.py --config=configs/correspondences.py:cnnet --workdir=runs/cnnet
  python train.py --config=configs/correspondences.py:n3,smoke --workdir=/tmp/corr_n3   # CPU
  python eval.py --config=configs/correspondences.py:n3 --checkpoint=runs/cnnet_n3/model \\
      --output=results/correspondences/n3

The release's protocol: Adam 1e-3, batch 32, 2,000 keypoints; the loss is the balanced
binary cross-entropy on the inlier labels plus, after 20k steps, 0.1 × the
essential-matrix loss of the weighted eight-point solve. Metrics: precision, recall, F1
of the classification, and the mAP of the recovered pose at 5°/10°/20°. Paper Table 6
(St. Peter's → St. Peter's, mAP 5°/10°/20°): CNNet + N³ 0.316/0.431/0.574, CNNet
0.271/0.379/0.522. The ``smoke`` variants train small models on 500 correspondences per
pair for 1,200 steps (the essential-matrix loss from step 600); README lists measured
numbers.
"""

import dataclasses

import ml_collections

from n3jax.configs import denoise, parse_arg
from n3jax.data.two_view import TwoViewSpec

# Config argument -> (registry name, smoke-size keyword arguments).
VARIANTS = {
    "n3": ("cnnet_n3", dict(features=32, num_blocks=6, n3_after=3, embed_features=32)),
    "cnnet": ("cnnet", dict(features=32, num_blocks=6)),
}
# The image tasks' fields, not used by this task.
IMAGE_FIELDS = ("sigma", "train_set", "channels", "crop_size", "flips", "rotations", "tfds_dir",
                "loss", "loss_center", "query_chunk", "tile", "val_dataset",
                "val_max_images")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """``arg``: comma-separated, one of :data:`VARIANTS` (default ``n3``) and/or ``smoke``."""
  variant, smoke = parse_arg(arg, VARIANTS, default="n3")
  name, smoke_kwargs = VARIANTS[variant]

  config = denoise.get_config()
  for field in IMAGE_FIELDS:
    del config[field]
  config.task = "correspondences"
  config.model.name = name
  config.model.kwargs = ml_collections.ConfigDict(dict(smoke_kwargs) if smoke else {})

  # --- data: the synthetic benchmark (n3jax.data.two_view.TwoViewSpec's fields) ---
  config.data = ml_collections.ConfigDict(dataclasses.asdict(TwoViewSpec()))
  config.data_seed = 0  # the benchmark's pairs (training order and init: train_seed)
  config.val_pairs = 200  # validation during training: the first pairs of the val split
  config.eval_pairs = 1000  # eval.py: the first pairs of the test split
  config.eval_datasets = ("two_view_test",)

  # --- optimization (the release's) ---
  config.batch_size = 32
  config.learning_rate = 1e-3
  config.lr_total_decay = 1.0  # constant
  config.weight_decay = 0.0
  config.steps_per_epoch = 1000
  config.num_epochs = 500  # 500k steps
  config.essential_loss_weight = 0.1
  config.essential_loss_start = 20000
  config.log_every = 100
  config.checkpoint_every = 5000
  config.val_every = 5000

  if smoke:
    config.data.num_points = 500
    config.batch_size = 16
    config.steps_per_epoch = 100
    config.num_epochs = 12
    config.essential_loss_start = 600
    config.val_pairs = 100
    config.eval_pairs = 500
    config.log_every = 100
    config.checkpoint_every = 600
    config.val_every = 1200
  return config
