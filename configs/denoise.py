"""Gaussian denoising with N³Net (paper Sec. 5.1-5.2, Table 3).

Evaluate converted official weights (the numbers of paper Table 3):

  python -m n3jax.convert ../shared/pretrained/n3net_gauss_sigma25.t7 --out ckpt/sigma25
  python eval.py --config=configs/denoise.py --config.sigma=25 --checkpoint=ckpt/sigma25 \
      --datasets=set12,bsd68,urban100 --output=results/sigma25

Expected PSNR at σ = 25 / 50 / 70: Set12 30.55 / 27.43 / 25.90, BSD68 29.30 / 26.39 /
25.14, Urban100 30.19 / 26.82 / 25.15 (paper). Measured by n3jax with the converted
weights (seed 0): Set12 30.50 / 27.41 / 25.89, BSD68 29.29 / 26.38 / 25.12,
Urban100 30.19 / 26.83 / 25.15 (results/table3/, README).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Model: a name from n3jax.nn.MODELS plus keyword arguments.
  config.model = ml_collections.ConfigDict()
  config.model.name = "n3net"
  config.model.kwargs = ml_collections.ConfigDict()
  # Noise standard deviation on the 0-255 scale.
  config.sigma = 25.0
  # Seed of the evaluation noise (each image's key is folded from it and its file name).
  config.seed = 0
  # Folder holding Set12/, BSD68/, Urban100/ ...; empty: $N3JAX_DATA_ROOT or ../shared/data.
  config.data_root = ""
  # Benchmarks for eval.py when --datasets is not given.
  config.eval_datasets = ("set12", "bsd68", "urban100")
  # Patches the N³ blocks process at a time in their gather steps: bounds memory on large
  # images (a 1024² image has ~42k patches) without changing results.
  config.query_chunk = 512
  # N³ blocks compute windowed distances/aggregation in tiles of tile x tile patches with
  # matmuls (0: per-patch gathers instead). Same results; 6 is fastest on CPU.
  config.tile = 6
  return config
