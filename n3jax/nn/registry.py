"""Models by name: ``create_model(config.model.name, **config.model.kwargs)``."""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict

import flax.linen as nn

from n3jax.nn.dncnn import DnCNN
from n3jax.nn.n3net import N3Net

MODELS: Dict[str, Callable[..., nn.Module]] = {
    # The paper's Gaussian denoiser: 3 DnCNNs (depth 6) and 2 N³ blocks (k = 7).
    "n3net": N3Net,
    # The "light" variant: 2 DnCNNs and one N³ block.
    "n3net_light": functools.partial(N3Net, num_dncnns=2),
    # The DnCNN-17 baseline (Zhang et al. 2017).
    "dncnn17": functools.partial(DnCNN, out_channels=1, depth=17),
    # A tiny N³Net for tests and smoke runs.
    "n3net_tiny": functools.partial(N3Net, interm_channels=2, features=8, depth=3, k=2,
                                    embed_features=8, embed_depth=2, window=5),
}


def create_model(name: str, **kwargs: Any) -> nn.Module:
  """Builds the model registered as ``name`` with ``kwargs`` overriding its defaults.

  Raises:
    KeyError: for an unknown name (the message lists the known ones).
  """
  if name not in MODELS:
    raise KeyError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
  return MODELS[name](**kwargs)
