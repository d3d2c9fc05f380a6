"""Gaussian denoising with NLRN (Liu et al., NeurIPS 2018), the official code's protocol.

Train (shared/docs/reference-family.md §3: 43×43 gray crops of the 400 BSDS images, flips
and quarter turns, batch 16, Adam 1e-3 halved at 100k/200k/300k/400k/450k of 500k steps,
every gradient tensor clipped to norm 2.5, MSE on the central 5×5 of each crop):

  python train.py --config=configs/nlrn.py --workdir=runs/nlrn_s25
  python train.py --config=configs/nlrn.py --config.sigma=50 --workdir=runs/nlrn_s50

The config argument picks a network of paper Table 2, optionally with ``smoke``:

  full (default)  NLRN: 12 states sharing weights, non-local windows of 45, correlation
                  propagation                                      → Set12 σ=25: 30.80
  unshared        every state its own convolutions                  → 30.65
  plain           the same RNN without the non-local module         → 30.61
  nopropagation   no correlation propagation                        → 30.78
  fullpatch       the loss on the whole crop instead of its central 5×5 (the "v0" code)

  python train.py --config=configs/nlrn.py:smoke --workdir=/tmp/nlrn_smoke    # CPU, < 5 min

Paper Table 4 (gray, σ = 15 / 25 / 50): Set12 33.16 / 30.80 / 27.64, BSD68 31.88 / 29.41 /
26.47, Urban100 33.45 / 30.94 / 27.49. The full protocol (500k steps) is a GPU job; no
official weights exist. ``smoke`` trains a small NLRN (4 states of 32 channels, 15-pixel
windows, loss on the whole crop) for a few hundred steps and should pass 25.2 dB on Set12
at σ=25 (noisy input 20.2 dB); see README for measured numbers.

Evaluate a trained model on whole images (windowed attention, tiled exactly):

  python eval.py --config=configs/nlrn.py --checkpoint=runs/nlrn_s25/model \\
      --datasets=set12,bsd68,urban100 --output=results/nlrn_s25
  # the official protocol, for comparison (43×43 tiles at stride 7, averaged; ~30x slower)
  python eval.py --config=configs/nlrn.py --config.eval_protocol=tiles ...
"""

import ml_collections

from n3jax.configs import denoise, parse_arg

# The official network (the defaults of n3jax.nn.NLRN; tests/test_configs.py checks it).
PAPER_NLRN = dict(
    features=128,  # channels of the recurrent states
    embed_features=64,  # θ / φ channels of the non-local module
    num_steps=12,  # unrolled recurrent states, sharing their convolutions
    window=45,  # non-local neighbourhood side in pixels (paper Fig. 5: best)
    border="shift",  # windows shifted inward at the border ("circular": the paper's wrap)
    share_weights=True,
    use_nonlocal=True,
    propagate=True,  # correlation propagation
)

# Config argument -> overrides of the model kwargs (paper Table 2) or of the loss.
VARIANTS = {
    "full": {},
    "unshared": dict(share_weights=False),
    "plain": dict(use_nonlocal=False),
    "nopropagation": dict(propagate=False),
    "fullpatch": {},
}
SMOKE_MODEL = dict(features=32, embed_features=16, num_steps=4, window=15)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """``arg``: comma-separated, a key of :data:`VARIANTS` and/or ``smoke``."""
  variant, smoke = parse_arg(arg, VARIANTS, default="full")

  # Everything not set here (data, noise, bookkeeping, multi-host, evaluation) is the
  # denoising config's: one harness for N³Net and NLRN.
  config = denoise.get_config("")
  config.model.name = "nlrn"
  config.model.kwargs = ml_collections.ConfigDict(
      {**PAPER_NLRN, **VARIANTS[variant], **(SMOKE_MODEL if smoke else {})})
  del config.query_chunk, config.tile  # N³ block knobs

  config.crop_size = 43
  config.batch_size = 16
  config.num_train_steps = 500_000
  config.steps_per_epoch = 1_000  # only for the epoch count in logs; the schedule is steps
  config.num_epochs = 500
  config.learning_rate = 1e-3
  config.lr_schedule = "piecewise"
  config.lr_boundaries = (100_000, 200_000, 300_000, 400_000, 450_000)
  config.lr_factor = 0.5
  config.weight_decay = 0.0
  config.clip_grad_norm_per_tensor = 2.5  # tf.clip_by_norm on every gradient tensor
  config.loss = "mse"
  config.loss_center = 0 if variant == "fullpatch" else 5  # central 5×5 of each crop

  # eval.py: "whole" (every pixel's window once over the whole image, tiled exactly when
  # large) or "tiles" (the official test protocol: 43×43 tiles at stride 7, averaged;
  # ~30x the FLOPs, bench/nlrn.py).
  config.eval_protocol = "whole"

  config.log_every = 1_000
  config.checkpoint_every = 20_000
  config.val_every = 20_000

  if smoke:
    config.model.kwargs.bn_momentum = 0.05  # a few hundred steps: faster BN averages
    config.crop_size = 32
    config.batch_size = 16
    config.num_train_steps = 300
    config.steps_per_epoch = 100
    config.num_epochs = 3
    config.learning_rate = 2e-3
    config.lr_boundaries = (200, 260)
    config.loss_center = 0  # 25 pixels a crop learn too slowly for a smoke run
    config.log_every = 25
    config.checkpoint_every = 100
    config.val_every = 300
  return config
