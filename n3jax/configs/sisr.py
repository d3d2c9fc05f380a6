"""Single-image super-resolution with N³Net-SISR (paper Sec. 5.4, Table 5).

N³Net-SISR: three VDSR stages (depth 7, 64 channels, no BatchNorm) interleaved with two N³
blocks (k = 7); input the bicubically upsampled luminance (BT.601 Y), every stage adds its
residual. One model for ×2, ×3 and ×4 together (the scale is drawn per example), trained on
T91 + BSDS500 train (the 291 images of VDSR) from the data root:

  python train.py --config=configs/sisr.py --workdir=runs/n3net_sisr
  python train.py --config=configs/sisr.py --config.batch_size=8 --workdir=runs/sisr_b8
  python train.py --config=configs/sisr.py:smoke --workdir=/tmp/sisr_smoke   # CPU, < 5 min

Evaluate (Y channel, ``scale`` pixels shaved, MATLAB-compatible bicubic degradation; see
n3jax/evaluate/sisr.py), or evaluate plain bicubic upsampling as the baseline:

  python eval.py --config=configs/sisr.py --checkpoint=runs/n3net_sisr/model \
      --datasets=set5,set14,bsd100,urban100 --output=results/sisr
  python eval.py --config=configs/sisr.py --checkpoint=bicubic \
      --datasets=set5,set14,bsd100,urban100 --output=results/bicubic

Expected (paper Table 5, PSNR ×2 / ×3 / ×4): Set5 37.57 / 33.84 / 31.50 (VDSR: 37.53 /
33.66 / 31.35; bicubic: 33.66 / 30.39 / 28.42, which n3jax's bicubic baseline reproduces).
The paper's training details beyond the architecture and data are not in the reference
release; the optimization below (Adam, 48×48 HR crops, batch 32, 80k steps) follows our
denoising protocol and is our choice. The ``smoke`` variant trains a small N³Net-SISR for ×2
only (400 steps, 36×36 crops) on CPU in under 5 minutes and should beat bicubic on Set5 ×2
by more than 0.5 dB (measured: 35.98 vs 33.66 dB; README).
"""

import ml_collections

from n3jax.configs import denoise  # shared training/bookkeeping defaults

# Smoke-size keyword arguments per model.
SMOKE_KWARGS = {
    "n3net_sisr": dict(features=24, depth=3, k=3, embed_features=16, window=9),
    "vdsr": dict(features=24, depth=8),
}


def get_config(arg: str = "", model: str = "n3net_sisr"):
  """``arg``: empty or ``smoke``."""
  if arg not in ("", "smoke"):
    raise ValueError(f"unknown config argument {arg!r}; use '' or 'smoke'")
  smoke = arg == "smoke"
  config = denoise.get_config()
  del config.sigma
  config.task = "sisr"
  config.model.name = model
  config.model.kwargs = ml_collections.ConfigDict(SMOKE_KWARGS[model] if smoke else {})
  # Upscaling factors trained together (one drawn per example) and evaluated.
  config.scales = (2, 3, 4)

  # --- data: RGB records, Y computed on the host ---
  config.train_set = "t91_bsds200"
  config.channels = 3
  config.crop_size = 48  # HR crop; divisible by every scale

  # --- optimization ---
  config.learning_rate = 1e-4
  config.lr_total_decay = 1e-1

  # --- validation during training and eval.py defaults ---
  config.val_dataset = "set5"
  config.val_scales = (2,)
  config.eval_datasets = ("set5", "set14", "bsd100", "urban100")

  if smoke:
    if model == "n3net_sisr":
      # The N³ blocks' BatchNorm: a few hundred steps need a faster average than 0.001.
      config.model.kwargs.bn_momentum = 0.05
    # ×2 only: within a CPU budget of minutes a joint ×2/×3/×4 model gains only
    # 0.3-0.6 dB over bicubic on Set5 ×2 (measured: 400-600 steps), a ×2 model ~2 dB.
    config.scales = (2,)
    config.crop_size = 36
    config.batch_size = 16
    config.steps_per_epoch = 100
    config.num_epochs = 4
    config.learning_rate = 2e-3
    config.lr_total_decay = 0.3
    config.log_every = 50
    config.checkpoint_every = 200
    config.val_every = 400
  return config
