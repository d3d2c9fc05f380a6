"""The image tasks: Gaussian denoising, real (Poisson-Gaussian) noise, super-resolution."""

from __future__ import annotations

import functools
import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import jax.numpy as jnp
import ml_collections
import numpy as np

from n3jax.data import pipeline, poisson_gaussian
from n3jax.data.images import load_denoising_set, load_sr_set
from n3jax.data.records import BUILTIN_VALIDATION, _builtin_image, image_data_source
from n3jax.evaluate import metrics as metrics_lib
from n3jax.evaluate import sisr
from n3jax.evaluate.denoise import evaluate_denoising, image_key, make_denoise_fn
from n3jax.evaluate.realnoise import check_levels, evaluate_realnoise, make_realnoise_fn
from n3jax.tasks.base import Task, Validation, load_for_eval
from n3jax.train.step import make_loss, make_p_train_step

log = logging.getLogger(__name__)


def _validation_images(config, root: Optional[str], *, load, builtin
                       ) -> List[Tuple[str, np.ndarray]]:
  """``config.val_dataset`` read by ``load(name, root)``, or without a data root the
  held-out scikit-image photos as ``builtin(uint8 gray)`` gives them; at most
  ``config.val_max_images`` (0: all)."""
  if root is None:
    images = [(n, builtin(_builtin_image(n, 1)[..., 0])) for n in BUILTIN_VALIDATION]
  else:
    images = load(config.val_dataset, root)
  return images[:config.val_max_images] if config.val_max_images else images


def _gray_validation_images(config, root: Optional[str]) -> List[Tuple[str, np.ndarray]]:
  """Gray validation images in [0, 1] (denoising)."""
  return _validation_images(config, root, load=load_denoising_set,
                            builtin=lambda x: x.astype(np.float32) / 255.0)


def validate(denoise_fn, variables: Mapping[str, Any], images, seed: int, *,
             stop=lambda: False) -> Optional[Dict[str, float]]:
  """Mean PSNR/SSIM (and noisy PSNR) of ``denoise_fn`` over ``images``, as eval.py computes them.

  ``denoise_fn(variables, clean, key)`` gives ``(pred, noisy_psnr, psnr)``, or with a
  fourth value the target that ``pred`` is compared with (default: ``clean``).
  ``None`` when ``stop()`` turned true between two images (a signal: no time to finish).
  """
  psnrs, ssims, noisy = [], [], []
  for name, clean in sorted(images, key=lambda t: (t[1].shape, t[0])):  # one compile per shape
    if stop():
      return None
    out = denoise_fn(variables, jnp.asarray(clean), image_key(seed, name))
    pred, noisy_psnr, psnr = np.asarray(out[0]), out[1], out[2]
    target = np.asarray(out[3]) if len(out) > 3 else clean
    psnrs.append(float(psnr))
    noisy.append(float(noisy_psnr))
    ssims.append(metrics_lib.ssim(pred, target) if np.isfinite(pred).all() else float("nan"))
  return {"val_psnr": float(np.mean(psnrs)), "val_ssim": float(np.mean(ssims)),
          "val_input_psnr": float(np.mean(noisy)), "val_images": len(images)}


def validate_sr(sr_fn, variables: Mapping[str, Any], pairs, *,
                stop=lambda: False) -> Optional[Dict[str, float]]:
  """Mean PSNR/SSIM on Y over the validation pairs, as ``eval.py`` computes them.

  ``None`` when ``stop()`` turned true between two images (a signal: no time to finish).
  """
  rows = []
  for _, scale, target, bicubic, bicubic_psnr in sorted(pairs,
                                                         key=lambda t: (t[2].shape, t[0], t[1])):
    if stop():
      return None
    try:
      pred = sisr.super_resolve(sr_fn, variables, bicubic)
      psnr, ssim = sisr.sr_scores(pred, target, scale)
    except FloatingPointError:
      psnr, ssim = float("nan"), float("nan")
    rows.append((scale, psnr, ssim, bicubic_psnr))
  out = {"val_psnr": float(np.mean([r[1] for r in rows])),
         "val_ssim": float(np.mean([r[2] for r in rows])),
         "val_input_psnr": float(np.mean([r[3] for r in rows])), "val_images": len(rows)}
  for scale in sorted({r[0] for r in rows}):
    out[f"val_psnr_x{scale}"] = float(np.mean([r[1] for r in rows if r[0] == scale]))
    out[f"val_input_psnr_x{scale}"] = float(np.mean([r[3] for r in rows if r[0] == scale]))
  return out


class ImageTask(Task):
  """Training on crops of an image set (records), validation on a benchmark set."""

  def check_config(self, config) -> None:
    from n3jax.train.config_check import check_image_training  # (it imports the tasks)
    check_image_training(config)

  def model_channels(self, config) -> int:
    return config.channels

  def input_shape(self, config) -> Tuple[int, ...]:
    return (config.crop_size, config.crop_size, self.model_channels(config))

  def training_source(self, config, root):
    train_set = config.train_set
    if root is None and train_set != "builtin":
      log.warning("no data root (set $N3JAX_DATA_ROOT or --config.data_root): training on "
                  "scikit-image's sample photos and validating on %s", BUILTIN_VALIDATION)
      train_set = "builtin"
    source = image_data_source(train_set, root=root, channels=config.channels,
                               tfds_dir=config.tfds_dir or None)
    pipeline.check_source(source, config.crop_size)
    return source, train_set

  def host_batch(self, source, step, config, *, shard_index, num_shards):
    return pipeline.make_batch(source, step, **self._crop_args(config, shard_index, num_shards))

  @staticmethod
  def _crop_args(config, shard_index: int, num_shards: int) -> Dict[str, Any]:
    return dict(seed=config.train_seed, batch_size=config.batch_size,
                crop_size=config.crop_size, flips=config.flips, rotations=config.rotations,
                shard_index=shard_index, num_shards=num_shards)

  @staticmethod
  def loss_fn(config):
    return make_loss(config.get("loss", "reference"), center=config.get("loss_center", 0))


class DenoiseTask(ImageTask):
  """Gaussian denoising at ``config.sigma`` (paper Sec. 5.1-5.2)."""
  name = "denoise"

  def check_config(self, config) -> None:
    from n3jax.data.noise import check_sigma
    super().check_config(config)
    check_sigma(config.sigma, name="config.sigma")

  def make_p_step(self, model, config):
    return make_p_train_step(model, config.sigma, loss_fn=self.loss_fn(config))

  def make_validation(self, model, config, root) -> Optional[Validation]:
    images = _gray_validation_images(config, root)
    fn = make_denoise_fn(model, config.sigma)
    return lambda variables, stop: validate(fn, variables, images, config.seed, stop=stop)

  def export_metadata(self, config) -> Dict[str, Any]:
    return {"sigma": config.sigma}

  def evaluate(self, config, checkpoint, *, datasets, output_dir, overwrite) -> None:
    model, variables, run_info = load_for_eval(config, checkpoint, task=self.name)
    meta = run_info["checkpoint_metadata"]
    if meta.get("sigma") is not None and float(meta["sigma"]) != float(config.sigma):
      log.warning("checkpoint was trained for σ=%s but evaluating at σ=%s "
                  "(set --config.sigma)", meta["sigma"], config.sigma)
    evaluate_denoising(model, variables, sigma=config.sigma, datasets=datasets,
                       data_root=config.data_root or None, seed=config.seed,
                       output_dir=output_dir, run_info=run_info, overwrite=overwrite,
                       protocol=config.get("eval_protocol", "whole"))


class RealNoiseTask(ImageTask):
  """Poisson-Gaussian noise on raw-like images, the noise map as input (paper Sec. 5.3)."""
  name = "realnoise"

  def check_config(self, config) -> None:
    super().check_config(config)
    try:
      poisson_gaussian.RealNoiseProtocol.from_config(config.noise)
    except (ValueError, TypeError) as e:
      raise ValueError(f"config.noise: {e}") from None
    try:
      poisson_gaussian.check_noise_levels(config.val_a, config.val_b)
    except ValueError as e:
      raise ValueError(f"config.val_a/val_b: {e}") from None
    check_levels(config.eval_levels, name="config.eval_levels")
    if config.channels != 1:
      raise ValueError(f"config.channels must be 1 for the real-noise task (gray, as the "
                       f"release trains), got {config.channels!r}")

  def model_channels(self, config) -> int:
    return config.channels + poisson_gaussian.NOISE_MAP_CHANNELS

  @staticmethod
  def protocol(config) -> poisson_gaussian.RealNoiseProtocol:
    return poisson_gaussian.RealNoiseProtocol.from_config(config.noise)

  def make_p_step(self, model, config):
    return make_p_train_step(model, None, loss_fn=self.loss_fn(config), corrupt=functools.partial(
        poisson_gaussian.corrupt_for_training, protocol=self.protocol(config)))

  def make_validation(self, model, config, root) -> Optional[Validation]:
    images = _gray_validation_images(config, root)
    fn = make_realnoise_fn(model, protocol=self.protocol(config))
    level = lambda v, clean, key: fn(v, clean, key, config.val_a, config.val_b)  # noqa: E731
    return lambda variables, stop: validate(level, variables, images, config.seed, stop=stop)

  def export_metadata(self, config) -> Dict[str, Any]:
    return {"noise": "poisson_gaussian", "noise_protocol": config.noise.to_dict(),
            "val_a": config.val_a, "val_b": config.val_b}

  def evaluate(self, config, checkpoint, *, datasets, output_dir, overwrite) -> None:
    model, variables, run_info = load_for_eval(config, checkpoint, task=self.name)
    evaluate_realnoise(model, variables, levels=config.eval_levels, datasets=datasets,
                       data_root=config.data_root or None, seed=config.seed,
                       protocol=self.protocol(config), output_dir=output_dir,
                       run_info=run_info, overwrite=overwrite)


class SRTask(ImageTask):
  """Single-image super-resolution on the luminance (paper Sec. 5.4)."""
  name = "sisr"

  def check_config(self, config) -> None:
    super().check_config(config)
    scales: List[Any] = list(config.scales) + list(config.get("val_scales", ()))
    bad = [s for s in scales if isinstance(s, bool) or not isinstance(s, int) or s < 2]
    if bad or not config.scales:
      raise ValueError(f"config.scales / val_scales must be integers >= 2, got "
                       f"{tuple(config.scales)} / {tuple(config.get('val_scales', ()))}")
    odd = [s for s in config.scales if config.crop_size % s]
    if odd:
      raise ValueError(f"config.crop_size={config.crop_size} is not divisible by the "
                       f"scales {odd}")

  def model_channels(self, config) -> int:
    return 1  # the luminance; the records hold RGB to compute it from

  def host_batch(self, source, step, config, *, shard_index, num_shards):
    pairs = pipeline.make_sr_batch(source, step, scales=tuple(config.scales),
                                   **self._crop_args(config, shard_index, num_shards))
    return {k: pairs[k] for k in ("input", "target")}

  def make_p_step(self, model, config):
    return make_p_train_step(model, None, loss_fn=self.loss_fn(config))

  def make_validation(self, model, config, root) -> Optional[Validation]:
    images = _validation_images(config, root, load=load_sr_set, builtin=lambda x: x)
    pairs = [(name, s, *sisr.degrade(hr, s)) for s in config.val_scales for name, hr in images]
    pairs = [(*p, sisr.sr_scores(p[3], p[2], p[1])[0]) for p in pairs]
    fn = sisr.make_sr_fn(model)
    return lambda variables, stop: validate_sr(fn, variables, pairs, stop=stop)

  def export_metadata(self, config) -> Dict[str, Any]:
    return {"scales": list(config.scales)}

  def evaluate(self, config, checkpoint, *, datasets, output_dir, overwrite) -> None:
    common = dict(datasets=datasets, scales=list(config.scales),
                  data_root=config.data_root or None, output_dir=output_dir,
                  overwrite=overwrite)
    if checkpoint == sisr.BICUBIC:
      sisr.evaluate_sr(None, None, run_info={"checkpoint": sisr.BICUBIC}, **common)
      return
    model, variables, run_info = load_for_eval(config, checkpoint, task=self.name)
    sisr.evaluate_sr(model, variables, run_info=run_info, **common)
