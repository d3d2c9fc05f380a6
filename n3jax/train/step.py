"""The pure training step, mapped over devices with ``jax.pmap``.

Randomness is folded from the state's key: the noise of example ``g`` of the global batch
at step ``s`` uses ``fold_in(fold_in(fold_in(key, s), NOISE), g)``, so the noise does not
depend on how the batch is split over devices or hosts; model randomness (the Concrete
block's Gumbel noise) uses ``fold_in(fold_in(fold_in(key, s), MODEL), device)``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from n3jax.data.noise import PIXEL_SCALE
from n3jax.nn.precision import at_least_float32
from n3jax.train.state import TrainState

AXIS = "batch"
# The reference scales the per-image sum of squared errors as if every crop had 1600
# pixels: loss = 0.5 · Σ (pred − clean)² · 1600 / (H·W), averaged over the batch.
REFERENCE_LOSS_PIXELS = 1600
_NOISE, _MODEL = 0, 1
MIN_MSE = 1e-10  # floor of the training-PSNR metric's MSE: 100 dB


def denoising_loss(pred: jax.Array, clean: jax.Array) -> jax.Array:
  """Per-image reference loss of N³Net ``0.5 · Σ (pred − clean)² · 1600 / (H·W)``, ``[B]``."""
  h, w = clean.shape[1:3]
  sq = jnp.sum(jnp.square(at_least_float32(pred) - clean),
               axis=(1, 2, 3))
  return 0.5 * sq * (REFERENCE_LOSS_PIXELS / (h * w))


def mse_loss(pred: jax.Array, clean: jax.Array, *, center: int = 0) -> jax.Array:
  """Per-image mean squared error ``[B]``; with ``center`` > 0 only on the central
  ``center x center`` pixels (NLRN's training loss: the central 5×5 of each 43×43 patch,
  at rows/columns ``H // 2 − center // 2 …``, as the official code crops)."""
  if center:
    h, w = clean.shape[1:3]
    if center > min(h, w):
      raise ValueError(f"loss center {center} is larger than the {h}x{w} crops")
    r, c = h // 2 - center // 2, w // 2 - center // 2
    pred, clean = pred[:, r:r + center, c:c + center], clean[:, r:r + center, c:c + center]
  return jnp.mean(jnp.square(at_least_float32(pred) - clean), axis=(1, 2, 3))


LOSSES = ("reference", "mse")


def make_loss(name: str = "reference", *, center: int = 0):
  """The per-image training loss ``fn(pred, clean) -> [B]`` named by ``config.loss``:
  ``"reference"`` (N³Net's :func:`denoising_loss`) or ``"mse"`` (:func:`mse_loss` with
  ``center``)."""
  if name == "reference":
    if center:
      raise ValueError("config.loss_center applies to loss='mse' only")
    return denoising_loss
  if name == "mse":
    return functools.partial(mse_loss, center=center)
  raise ValueError(f"config.loss must be one of {LOSSES}, got {name!r}")


def add_training_noise(clean: jax.Array, sigma: float, step_key: jax.Array,
                       first_example: jax.Array) -> jax.Array:
  """``clean [b, H, W, C]`` plus Gaussian noise keyed by each example's global index."""
  noise_key = jax.random.fold_in(step_key, _NOISE)
  index = first_example + jnp.arange(clean.shape[0])
  noise = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(noise_key, i),
                                               clean.shape[1:], jnp.float32))(index)
  return clean + (sigma / PIXEL_SCALE) * noise


# One example's corruption: ``(clean [H, W, C], key) -> (input [H, W, C'], target [H, W, C])``.
Corruption = Callable[[jax.Array, jax.Array], Tuple[jax.Array, jax.Array]]


def corrupt_batch(clean: jax.Array, corrupt: Corruption, step_key: jax.Array,
                  first_example: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """``(inputs, targets)`` of ``clean [b, H, W, C]``, example ``i`` corrupted with the key
  of its global index ``first_example + i`` (as :func:`add_training_noise` keys noise)."""
  noise_key = jax.random.fold_in(step_key, _NOISE)
  index = first_example + jnp.arange(clean.shape[0])
  return jax.vmap(lambda x, i: corrupt(x, jax.random.fold_in(noise_key, i)))(clean, index)


def train_step(state: TrainState, batch: Union[jax.Array, Mapping[str, jax.Array]], *,
               model: nn.Module, sigma: Optional[float],
               loss_fn: Callable[[jax.Array, jax.Array], jax.Array] = denoising_loss,
               corrupt: Optional[Corruption] = None
               ) -> Tuple[TrainState, Dict[str, jax.Array]]:
  """One step on this device's part of the batch; call inside ``pmap(axis_name=AXIS)``.

  Args:
    batch: denoising: the clean images ``[b, H, W, C]`` (Gaussian noise of std ``sigma`` on
      the 0-255 scale is added here, keyed by each example's global index; or, with
      ``corrupt``, each example becomes ``corrupt(clean, key)``, e.g. real noise,
      :func:`n3jax.data.poisson_gaussian.corrupt_for_training`); restoration from given
      inputs (super-resolution): ``{"input", "target"}``, both ``[b, H, W, C]``
      (``sigma`` must be ``None``; other keys are ignored).
    loss_fn: per-image loss ``(pred, target) -> [b]`` (:func:`make_loss`), averaged.
    corrupt: see ``batch`` (``sigma`` must then be ``None``).

  Gradients, BatchNorm statistics and metrics are averaged over all devices
  (:func:`gradient_step`).

  Returns:
    the new state and ``{"loss", "psnr", "input_psnr"}`` (means over all devices).
  """
  device = jax.lax.axis_index(AXIS)
  step_key = jax.random.fold_in(state.key, state.step)
  if isinstance(batch, Mapping):
    if sigma is not None or corrupt is not None:
      raise ValueError("a batch of (input, target) pairs takes sigma=None, corrupt=None")
    inputs, target = batch["input"], batch["target"]
  elif corrupt is not None:
    if sigma is not None:
      raise ValueError("corrupt replaces the Gaussian noise: pass sigma=None")
    inputs, target = corrupt_batch(batch, corrupt, step_key, device * batch.shape[0])
  else:
    if sigma is None:
      raise ValueError("a batch of clean images needs the noise level sigma")
    target = batch
    inputs = add_training_noise(target, sigma, step_key, device * target.shape[0])

  def objective(pred, target, inputs, step):
    del step

    def psnr(x):  # per example, capped at 100 dB (flat SR crops are exact after bicubic)
      mse = jnp.mean(jnp.square(x - target), axis=(1, 2, 3))
      return jnp.mean(-10.0 * jnp.log10(jnp.maximum(mse, MIN_MSE)))

    # The input's image channels (a noise map, when there is one, follows them).
    return loss_fn(pred, target).mean(), {
        "psnr": psnr(pred.astype(jnp.float32)),
        "input_psnr": psnr(inputs[..., :target.shape[-1]])}

  return gradient_step(state, inputs, target, model=model, objective=objective)


# ``(pred, target, inputs, step) -> (loss, metrics)``: a scalar loss and scalar metrics.
Objective = Callable[[Any, Any, Any, jax.Array], Tuple[jax.Array, Dict[str, jax.Array]]]


def gradient_step(state: TrainState, inputs: Any, target: Any, *, model: nn.Module,
                  objective: Objective) -> Tuple[TrainState, Dict[str, jax.Array]]:
  """The model on ``inputs`` in training mode, ``objective``'s loss, one optimizer step;
  inside ``pmap(axis_name=AXIS)``. Every task's step ends here.

  Gradients, BatchNorm statistics (synchronized in the model through ``bn_axis_name``) and
  the metrics are averaged over all devices. Model randomness (the Concrete block's Gumbel
  noise) is keyed by the step and the device.

  Returns:
    the new state and ``{"loss", **metrics}`` (means over all devices).
  """
  device = jax.lax.axis_index(AXIS)
  step_key = jax.random.fold_in(state.key, state.step)
  model_key = jax.random.fold_in(jax.random.fold_in(step_key, _MODEL), device)

  def loss_of(params):
    pred, updates = model.apply({"params": params, "batch_stats": state.batch_stats}, inputs,
                                train=True, mutable=["batch_stats"], rngs={"gumbel": model_key})
    loss, metrics = objective(pred, target, inputs, state.step)
    return loss, (updates, metrics)

  (loss, (updates, metrics)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
  grads = jax.lax.pmean(grads, AXIS)
  batch_stats = jax.lax.pmean(updates.get("batch_stats", {}), AXIS)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  return new_state, jax.lax.pmean({"loss": loss, **metrics}, AXIS)


def make_p_train_step(model: nn.Module, sigma: Optional[float], *,
                      loss_fn: Callable[[jax.Array, jax.Array], jax.Array] = denoising_loss,
                      corrupt: Optional[Corruption] = None):
  """``train_step`` partialled and ``pmap``-ed over the local devices, state donated.

  ``sigma``: the denoising noise level, or ``None`` for batches of (input, target) pairs
  or with ``corrupt`` (see :func:`train_step`).
  """
  return jax.pmap(functools.partial(train_step, model=model, sigma=sigma, loss_fn=loss_fn,
                                    corrupt=corrupt),
                  axis_name=AXIS, donate_argnums=(0,))
