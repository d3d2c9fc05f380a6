"""Flax modules of n3jax: DnCNN, N³ blocks (images, sets), N³Net, and the model registry."""

from n3jax.nn.dncnn import DnCNN, EmbeddingCNN
from n3jax.nn.n3block import IMPLS, MLP, N3Block, N3SetBlock, resolve_impl
from n3jax.nn.n3net import N3Net
from n3jax.nn.registry import MODELS, count_parameters, create_model, model_fields

__all__ = ["DnCNN", "EmbeddingCNN", "MLP", "N3Block", "N3SetBlock", "N3Net", "MODELS",
           "count_parameters", "create_model", "model_fields", "IMPLS", "resolve_impl"]
