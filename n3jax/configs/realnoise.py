"""N³Net for real camera noise (paper Sec. 5.3, Table 4): Poisson-Gaussian noise, raw-like
images, the noise map as input.

Train (the release's protocol, its ``args.pkl``: 80×80 crops, batch 32, Adam 1e-3
decayed by 10^-3 over 50 epochs, weight decay 1e-4; per crop a raw-like transform
``f_c · Y^f_e``, ``f_e ~ U(1.25, 10)``, ``f_c ~ U(0.25, 1)``, and noise
``sqrt(a·x + b) · N(0, 1)`` clipped to [0, 1] with ``log10 a ~ U(−4, −1)``,
``log10 b = log10 a − 2.3 + U(−1.3, 1.3)``; the network sees the noisy crop and (a, b) as
two constant channels):

  python train.py --config=configs/realnoise.py --workdir=runs/n3net_pg
  python train.py --config=configs/realnoise.py:dncnn --workdir=runs/dncnn_pg     # baseline
  python train.py --config=configs/realnoise.py:smoke --workdir=/tmp/pg_smoke     # CPU, < 5 min
  python train.py --config=configs/realnoise.py:dncnn,smoke --workdir=/tmp/pg_smoke_dncnn

The release trains on BSDS500 train+test (400), DIV2K train (800) and Waterloo train
(3,793): ``--config.train_set=bsds400_div2k_waterloo`` once they are under the data root
(README, *Data*); the default is the 400 BSDS images that are here. An epoch keeps the
release's length: 16 passes over its 4,993 images at batch 32.

Evaluate on Set12, BSD68 and Urban100 in gray with the release's test transform (power
2.5, scale 0.5 or 1 per image) at the fixed grid ``eval_levels`` of (a, b), low to high:

  python eval.py --config=configs/realnoise.py --checkpoint=runs/n3net_pg/model --output=OUT

The release's model converts with ``n3jax-convert 051_ckpt.t7 --out ckpt/pg`` (its file:
``results_poissongaussian_denoising/pretrained/checkpoint/051_ckpt.t7`` of
https://github.com/visinf/n3net). Paper Table 4 (DND, raw): N³Net 47.56 dB, DnCNN 47.37,
BM3D 46.64; DND is an online benchmark and is not run here. The ``smoke`` variants train
a small model of each kind for 1,200 steps on 40×40 crops (raw-like powers up to 4, see
below); README lists measured numbers.
"""

import dataclasses

import ml_collections

from n3jax.configs import denoise, parse_arg
from n3jax.data.poisson_gaussian import RealNoiseProtocol

# Config argument -> (registry name, smoke-size keyword arguments). The full variants use
# the registered models' defaults: the release's N³Net (3 DnCNNs of depth 9, 128 features,
# 32 channels between them embedded in 8, k = 3, 10x10 patches at stride 5, window 15) and
# DnCNN-17 as the baseline; both take the noisy image plus the noise map.
VARIANTS = {
    "n3net": ("n3net_pg", dict(features=24, depth=4, interm_channels=8, embed_channels=8,
                               embed_features=16, window=9)),
    "dncnn": ("dncnn_pg", dict(features=24, depth=8)),
}

# The evaluation grid of (a, b), low to high noise: b = a / 100 (log10 b − log10 a = −2, inside
# the training draws' −2.3 ± 1.3). (0.01, 0.0001) is the release's testnlf default (parsed by
# main_pg.py; its test loop draws a level per image instead).
EVAL_LEVELS = ((0.001, 0.00001), (0.01, 0.0001), (0.05, 0.0005), (0.1, 0.001))


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """``arg``: comma-separated, one of :data:`VARIANTS` (default ``n3net``) and/or ``smoke``."""
  variant, smoke = parse_arg(arg, VARIANTS, default="n3net")
  name, smoke_kwargs = VARIANTS[variant]

  config = denoise.get_config()
  del config.sigma
  config.task = "realnoise"
  config.model.name = name
  config.model.kwargs = ml_collections.ConfigDict(dict(smoke_kwargs) if smoke else {})

  # --- noise: the release's Poisson-Gaussian protocol (n3jax.data.poisson_gaussian) ---
  config.noise = ml_collections.ConfigDict(dataclasses.asdict(RealNoiseProtocol()))
  # Validation level during training: the release's testnlf default.
  config.val_a = 0.01
  config.val_b = 0.0001
  config.eval_levels = EVAL_LEVELS

  # --- data ---
  # The release's: "bsds400_div2k_waterloo" (n3jax.data.records.TRAINING_SETS).
  config.train_set = "bsds400"
  config.channels = 1
  config.crop_size = 80
  # The release's epoch: 16 passes (its trainsetiters) over 400 + 800 + 3,793 images.
  config.steps_per_epoch = -(-(400 + 800 + 3793) * 16 // 32)
  config.num_epochs = 50

  if smoke:
    # BatchNorm statistics: a few hundred steps need a faster average than 0.001.
    config.model.kwargs.bn_momentum = 0.05
    # Our choice for a CPU budget of minutes: raw-like powers up to 4 instead of 10 (the
    # release's range spends most crops on nearly black images, which a few minutes of
    # training learn little from; measured on Set12 at (0.01, 0.0001) after 1,200 steps:
    # +5.4 dB with (1.25, 4), +4.5 to +5.0 dB with (1.25, 10)). The noise levels drawn
    # are the release's.
    config.noise.train_power_range = (1.25, 4.0)
    config.crop_size = 40
    config.batch_size = 16
    config.steps_per_epoch = 75
    config.num_epochs = 16
    config.learning_rate = 4e-3
    config.lr_total_decay = 0.3
    config.log_every = 100
    config.checkpoint_every = 400
    config.val_every = 1200
  return config
