"""The pure training step, mapped over devices with ``jax.pmap``.

Randomness is folded from the state's key: the noise of example ``g`` of the global batch
at step ``s`` uses ``fold_in(fold_in(fold_in(key, s), NOISE), g)``, so the noise does not
depend on how the batch is split over devices or hosts; model randomness (the Concrete
block's Gumbel noise) uses ``fold_in(fold_in(fold_in(key, s), MODEL), device)``.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from n3jax.data.noise import PIXEL_SCALE
from n3jax.train.state import TrainState

AXIS = "batch"
# The reference scales the per-image sum of squared errors as if every crop had 1600
# pixels: loss = 0.5 · Σ (pred − clean)² · 1600 / (H·W), averaged over the batch.
REFERENCE_LOSS_PIXELS = 1600
_NOISE, _MODEL = 0, 1


def denoising_loss(pred: jax.Array, clean: jax.Array) -> jax.Array:
  """Per-image reference loss ``0.5 · Σ (pred − clean)² · 1600 / (H·W)``, ``[B]``."""
  h, w = clean.shape[1:3]
  sq = jnp.sum(jnp.square(pred.astype(jnp.float32) - clean), axis=(1, 2, 3))
  return 0.5 * sq * (REFERENCE_LOSS_PIXELS / (h * w))


def add_training_noise(clean: jax.Array, sigma: float, step_key: jax.Array,
                       first_example: jax.Array) -> jax.Array:
  """``clean [b, H, W, C]`` plus Gaussian noise keyed by each example's global index."""
  noise_key = jax.random.fold_in(step_key, _NOISE)
  index = first_example + jnp.arange(clean.shape[0])
  noise = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(noise_key, i),
                                               clean.shape[1:], jnp.float32))(index)
  return clean + (sigma / PIXEL_SCALE) * noise


def train_step(state: TrainState, clean: jax.Array, *, model: nn.Module, sigma: float
               ) -> Tuple[TrainState, Dict[str, jax.Array]]:
  """One step on this device's ``clean [b, H, W, C]``; call inside ``pmap(axis_name=AXIS)``.

  Gradients, BatchNorm statistics (synchronized in the model through ``bn_axis_name``) and
  metrics are averaged over all devices.

  Returns:
    the new state and ``{"loss", "psnr", "noisy_psnr"}`` (means over all devices).
  """
  device = jax.lax.axis_index(AXIS)
  step_key = jax.random.fold_in(state.key, state.step)
  noisy = add_training_noise(clean, sigma, step_key, device * clean.shape[0])
  model_key = jax.random.fold_in(jax.random.fold_in(step_key, _MODEL), device)

  def loss_fn(params):
    pred, updates = model.apply({"params": params, "batch_stats": state.batch_stats}, noisy,
                                train=True, mutable=["batch_stats"], rngs={"gumbel": model_key})
    return denoising_loss(pred, clean).mean(), (updates, pred)

  (loss, (updates, pred)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads = jax.lax.pmean(grads, AXIS)
  batch_stats = jax.lax.pmean(updates.get("batch_stats", {}), AXIS)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)

  def psnr(x):
    mse = jnp.mean(jnp.square(x - clean), axis=(1, 2, 3))
    return jnp.mean(-10.0 * jnp.log10(mse))

  metrics = {"loss": loss, "psnr": psnr(pred.astype(jnp.float32)), "noisy_psnr": psnr(noisy)}
  metrics = jax.lax.pmean(metrics, AXIS)
  return new_state, metrics


def make_p_train_step(model: nn.Module, sigma: float):
  """``train_step`` partialled and ``pmap``-ed over the local devices, state donated."""
  return jax.pmap(functools.partial(train_step, model=model, sigma=sigma), axis_name=AXIS,
                  donate_argnums=(0,))
