"""Models by name: ``create_model(config.model.name, **config.model.kwargs)``."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from n3jax.nn.cnnet import CNNet
from n3jax.nn.dncnn import DnCNN
from n3jax.nn.n3net import N3Net
from n3jax.nn.nlrn import NLRN

MODELS: Dict[str, Callable[..., nn.Module]] = {
    # The paper's Gaussian denoiser: 3 DnCNNs (depth 6) and 2 N³ blocks (k = 7).
    "n3net": N3Net,
    # The "light" variant: 2 DnCNNs and one N³ block.
    "n3net_light": functools.partial(N3Net, num_dncnns=2),
    # The DnCNN baselines of paper Table 1 (Zhang et al. 2017): depth 17, and depth 18
    # (one layer deeper, to separate the N³ block's gain from added depth).
    "dncnn17": functools.partial(DnCNN, out_channels=1, depth=17),
    "dncnn18": functools.partial(DnCNN, out_channels=1, depth=18),
    # Table 1 ablations of N³Net light's block: hard kNN on patches of the noisy input
    # (classic block matching), and the stochastic Concrete relaxation.
    "knn_input": functools.partial(N3Net, num_dncnns=2, selection="hard", match_on="input"),
    "concrete_light": functools.partial(N3Net, num_dncnns=2, selection="concrete"),
    # Super-resolution (paper Sec. 5.4): VDSR (Kim et al. 2016; 20 conv layers of 64
    # channels, ReLU, global residual, no BatchNorm) and N³Net-SISR: three VDSR stages of
    # depth 7 interleaved with two N³ blocks (k = 7). Input: the bicubically upsampled
    # luminance; every stage adds its residual to the first channel (the image).
    # (Both start as the identity: zero-initialized last convs.)
    "vdsr": functools.partial(DnCNN, out_channels=1, depth=20, use_bn=False,
                              zero_init_out=True),
    "n3net_sisr": functools.partial(N3Net, depth=7, dncnn_bn=False, zero_init_out=True),
    # NLRN (Liu et al. 2018), the official code's network: 12 recurrent states of 128
    # channels sharing their convolutions, non-local windows of 45 pixels, correlation
    # propagation; 330,625 conv weights and biases.
    "nlrn": NLRN,
    # Real camera noise (paper Sec. 5.3), the release's model: the noisy image plus a
    # two-channel noise map (a, b) in, 3 DnCNNs of depth 9 and 128 features, 32 channels
    # between them embedded in 8 for the N³ blocks (k = 3, 10x10 patches, stride 5); the
    # first DnCNN's residual adds to the image channel only. And the DnCNN baseline with
    # the same input (DnCNN-17's depth; its residual likewise adds to the image only).
    "n3net_pg": functools.partial(N3Net, num_dncnns=3, depth=9, features=128,
                                  interm_channels=32, embed_channels=8, k=3),
    "dncnn_pg": functools.partial(DnCNN, out_channels=1, depth=17),
    # Correspondence classification on sets (paper Sec. 5.5): CNNet (Yi et al. 2018; 12
    # ResNet blocks of 128 channels with Context Normalization) and CNNet + N³ (the N³ set
    # block after block 6, k = 3, all pairs, self excluded).
    "cnnet": CNNet,
    "cnnet_n3": functools.partial(CNNet, n3_after=6),
    # A tiny N³Net for tests and smoke runs.
    "n3net_tiny": functools.partial(N3Net, interm_channels=2, features=8, depth=3, k=2,
                                    embed_features=8, embed_depth=2, window=5),
}


def model_fields(name: str) -> frozenset:
  """The attribute names the model registered as ``name`` accepts."""
  if name not in MODELS:
    raise KeyError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
  factory = MODELS[name]
  cls = factory.func if isinstance(factory, functools.partial) else factory
  return frozenset(f.name for f in dataclasses.fields(cls)) - {"parent", "name"}


def count_parameters(params: Any, *, batch_norm: bool = True) -> int:
  """Number of trainable values; ``batch_norm=False`` leaves out the BatchNorms (modules
  named ``bn…`` or ``…_bn``), e.g. NLRN's convolution weights and biases (the paper's
  "330k")."""
  total = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    names = [getattr(p, "key", "") for p in path]
    if not batch_norm and any(str(n).startswith("bn") or str(n).endswith("_bn")
                              for n in names):
      continue
    total += int(jnp.size(leaf))
  return total


def create_model(name: str, **kwargs: Any) -> nn.Module:
  """Builds the model registered as ``name`` with ``kwargs`` overriding its defaults.

  Raises:
    KeyError: for an unknown name (the message lists the known ones).
  """
  if name not in MODELS:
    raise KeyError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
  return MODELS[name](**kwargs)
