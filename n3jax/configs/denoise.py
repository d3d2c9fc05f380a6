"""Gaussian denoising with N³Net and its ablations (paper Sec. 5.1-5.2, Tables 1 and 3).

Train (the paper's protocol: 400 BSDS500 images in gray, 80×80 crops, batch 32, flips and
rotations, fresh noise every step, Adam 1e-3 decayed by 10^-3 over 50 epochs of 1,600
steps, L2 weight decay 1e-4 on weights and BN scales):

  python train.py --config=configs/denoise.py --workdir=runs/n3net_s25
  python train.py --config=configs/denoise.py --config.sigma=50 --workdir=runs/n3net_s50

The config argument picks a model of paper Table 1, optionally with ``smoke``:

  full (default)  N³Net: 3 DnCNNs (d=6) + 2 N³ blocks (k=7)        → Table 3 (below)
  light           N³Net light: 2 DnCNNs + 1 N³ block
  concrete        N³Net light with the stochastic Concrete block (Gumbel-softmax)
  knn             2 DnCNNs + a hard kNN block matching patches of the noisy input
  dncnn17         DnCNN, 17 layers (Zhang et al.: BSD68 29.23 dB at σ=25, Set12 30.44)
  dncnn18         DnCNN, 18 layers

  python train.py --config=configs/denoise.py:light --workdir=runs/light
  python train.py --config=configs/denoise.py:smoke --workdir=/tmp/smoke        # CPU, ~2 min
  python train.py --config=configs/denoise.py:dncnn17,smoke --workdir=/tmp/smoke_dncnn

Paper Table 1 ranks them (σ=25, PSNR): DnCNN-17 < DnCNN-18 < kNN on the noisy input <
Concrete < N³Net light < N³Net. The full protocol (80k steps) is a GPU job; a ``smoke``
variant trains a small model of the same kind for a few hundred steps on 40×40 crops and
should pass 25.2 dB on Set12 at σ=25 (noisy input 20.2 dB); see README for measured numbers.

Evaluate converted official weights (the numbers of paper Table 3) or a trained model:

  python -m n3jax.convert ../shared/pretrained/n3net_gauss_sigma25.t7 --out ckpt/sigma25
  python eval.py --config=configs/denoise.py --config.sigma=25 --checkpoint=ckpt/sigma25 \
      --datasets=set12,bsd68,urban100 --output=results/sigma25
  python eval.py --config=configs/denoise.py --checkpoint=runs/n3net_s25/model --output=...

Expected PSNR at σ = 25 / 50 / 70: Set12 30.55 / 27.43 / 25.90, BSD68 29.30 / 26.39 /
25.14, Urban100 30.19 / 26.82 / 25.15 (paper). Measured by n3jax with the converted
weights (seed 0): Set12 30.50 / 27.41 / 25.89, BSD68 29.29 / 26.38 / 25.12,
Urban100 30.19 / 26.83 / 25.15 (results/table3/, README).
"""

import ml_collections

from n3jax.configs import parse_arg

# The paper's N³Net (Sec. 5.1; the official Gaussian denoiser, shared/docs/reference-n3net.md).
# These equal the defaults of n3jax.nn.N3Net / N3Block (tests/test_configs.py checks it).
PAPER_N3NET = dict(
    num_dncnns=3,  # DnCNN stages; an N³ block between each two ("light": 2)
    depth=6,  # conv layers per DnCNN stage
    features=64,  # channels of the DnCNN stages
    interm_channels=8,  # channels between stages = N³ embedding channels
    k=7,  # neighbours per patch
    patch_size=10,  # N³ patches, pixels per side
    stride=5,  # between patches
    window=15,  # search window, in patch-grid positions per side (224 candidates)
    embed_features=64,  # hidden channels of the embedding and temperature CNNs
    embed_depth=3,  # conv layers of the embedding and temperature CNNs
    temp_bias=0.1,  # the learned temperature is multiplied by this
)
# The knobs that describe a variant's N³ block(s) (the DnCNN baselines have none).
N3_KNOBS = ("depth", "features", "interm_channels", "k", "patch_size", "stride", "window",
            "embed_features", "embed_depth", "temp_bias")

# Config argument -> (registry name, smoke-size keyword arguments).
VARIANTS = {
    "full": ("n3net", dict(features=24, depth=4, k=3, embed_features=16, window=9)),
    "light": ("n3net_light", dict(features=24, depth=4, k=3, embed_features=16, window=9)),
    "concrete": ("concrete_light", dict(features=24, depth=4, k=3, embed_features=16,
                                        window=9)),
    "knn": ("knn_input", dict(features=24, depth=4, k=3, window=9)),
    "dncnn17": ("dncnn17", dict(features=24, depth=8)),
    "dncnn18": ("dncnn18", dict(features=24, depth=9)),
}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """``arg``: comma-separated, a key of :data:`VARIANTS` and/or ``smoke``."""
  variant, smoke = parse_arg(arg, VARIANTS, default="full")
  name, smoke_kwargs = VARIANTS[variant]

  config = ml_collections.ConfigDict()
  # Model: a name from n3jax.nn.MODELS plus keyword arguments.
  config.model = ml_collections.ConfigDict()
  config.model.name = name
  # Every knob of the paper's N³ block(s) is written out (the Table 1 variants share them;
  # "light" and the ablations fix num_dncnns=2 in the registry); smoke shrinks some.
  paper = {k: PAPER_N3NET[k] for k in N3_KNOBS} if name not in ("dncnn17", "dncnn18") else {}
  config.model.kwargs = ml_collections.ConfigDict({**paper, **(smoke_kwargs if smoke else {})})
  # Precision of the convolutions, training and eval.py: "float32" or "bfloat16" (mixed:
  # parameters, optimizer, BN statistics, the non-local part and outputs stay float32;
  # see n3jax.nn.precision). Not stored with an exported model: choose it at load time.
  config.dtype = "float32"
  # Noise standard deviation on the 0-255 scale (training and evaluation).
  config.sigma = 25.0
  # Seed of the evaluation/validation noise (each image's key is folded from it and its
  # file name, so eval.py and validation agree).
  config.seed = 0
  # Seed of training: initialization, data order, crops and training noise.
  config.train_seed = 0

  # --- data ---
  # Folder holding BSDS500/, Set12/, ...; empty: $N3JAX_DATA_ROOT or ../shared/data. With
  # neither, training falls back to scikit-image's sample photos.
  config.data_root = ""
  # Where prepared array_record files go; empty: $N3JAX_TFDS_DIR or ~/.cache/n3jax/tfds.
  config.tfds_dir = ""
  config.train_set = "bsds400"  # a key of n3jax.data.records.TRAINING_SETS
  config.channels = 1  # gray
  config.crop_size = 80
  config.flips = True  # random up-down flips
  config.rotations = True  # random quarter turns
  config.prefetch = 2  # batches prepared and copied to the devices ahead, by a host thread

  # --- optimization (reference protocol) ---
  config.batch_size = 32  # global, split over all devices
  config.steps_per_epoch = 1600  # 128 passes over 400 images at batch 32
  config.num_epochs = 50
  config.num_train_steps = -1  # > 0 overrides num_epochs * steps_per_epoch
  config.learning_rate = 1e-3
  config.lr_total_decay = 1e-3  # lr falls by this factor over num_epochs, once per epoch
  config.adam_b1 = 0.9
  config.adam_b2 = 0.999
  config.adam_eps = 1e-8
  config.weight_decay = 1e-4  # L2 on the gradient of all but biases
  # "epochs": lr_total_decay over num_epochs (above); "piecewise": times lr_factor at each
  # step of lr_boundaries (NLRN's protocol).
  config.lr_schedule = "epochs"
  config.lr_boundaries = ()
  config.lr_factor = 0.5
  config.clip_grad_norm_per_tensor = 0.0  # > 0: clip every gradient tensor to this norm
  # "reference": N³Net's 0.5 · Σ (pred − clean)² · 1600 / (H·W); "mse": the mean, on the
  # central loss_center² pixels of each crop when loss_center > 0 (NLRN's).
  config.loss = "reference"
  config.loss_center = 0
  # Initialize from an n3jax model directory (e.g. converted official weights) to fine-tune.
  config.init_checkpoint = ""

  # --- bookkeeping ---
  config.log_every = 100
  config.checkpoint_every = 1000
  config.keep_checkpoints = 3
  config.val_every = 1600  # 0: no validation
  config.val_dataset = "set12"
  config.val_max_images = 0  # 0: all
  config.progress = True

  # --- multi-host (jax.distributed); one process per host ---
  config.distributed = ml_collections.ConfigDict()
  config.distributed.num_processes = 1
  config.distributed.process_id = 0
  config.distributed.coordinator_address = ""  # e.g. "10.0.0.1:1234"
  config.distributed.local_device_ids = ()
  config.distributed.cpu_collectives = ""  # "gloo" for CPU-only multi-process runs

  # --- evaluation (eval.py) ---
  # Benchmarks for eval.py when --datasets is not given.
  config.eval_datasets = ("set12", "bsd68", "urban100")
  # Patches the N³ blocks process at a time in their gather steps: bounds memory on large
  # images (a 1024² image has ~42k patches) without changing results.
  config.query_chunk = 512
  # N³ blocks compute windowed distances/aggregation in tiles of tile x tile patches with
  # matmuls (0: per-patch gathers instead). Same results; 6 is fastest on CPU.
  config.tile = 6

  if smoke:
    # The reference's BN momentum (0.001) needs thousands of steps to settle the running
    # statistics that inference uses; a few hundred steps need a faster average.
    config.model.kwargs.bn_momentum = 0.05
    config.crop_size = 40
    config.batch_size = 16
    config.steps_per_epoch = 50
    config.num_epochs = 4
    config.learning_rate = 2e-3
    config.lr_total_decay = 0.3
    config.log_every = 25
    config.checkpoint_every = 100
    config.val_every = 200
  return config
