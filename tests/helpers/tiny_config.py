"""A tiny training config and a fake data root, shared by the training tests."""

import os

import numpy as np
from PIL import Image

from n3jax.configs.denoise import get_config


def make_fake_data_root(root: str, *, num_train: int = 8, size: int = 48, seed: int = 0) -> str:
  """Writes smooth random gray images as Train400/ (training) and Set12/ (validation)."""
  rng = np.random.default_rng(seed)
  for folder, count in (("Train400", num_train), ("Set12", 2)):
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    for i in range(count):
      coarse = rng.random((size // 8, size // 8))
      img = np.kron(coarse, np.ones((8, 8)))  # blocky structure to learn from
      img = (255 * np.clip(img + 0.05 * rng.standard_normal(img.shape), 0, 1)).astype(np.uint8)
      Image.fromarray(img).save(os.path.join(root, folder, f"{i:02d}.png"))
  return root


def tiny_config(root: str, steps: int):
  """n3net_tiny on 24×24 crops, batch 4, a log entry and a checkpoint every step."""
  config = get_config()
  config.model.name = "n3net_tiny"
  config.data_root = root
  config.tfds_dir = os.path.join(root, "_tfds")
  config.train_set = "train400"
  config.crop_size = 24
  config.batch_size = 4
  config.steps_per_epoch = max(steps, 1)
  config.num_epochs = 1
  config.num_train_steps = steps
  config.log_every = 1
  config.checkpoint_every = 1
  config.keep_checkpoints = 2
  config.val_every = 0
  config.progress = False
  config.model.kwargs.bn_momentum = 0.1
  return config
