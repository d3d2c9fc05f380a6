"""Denoising evaluation: PSNR/SSIM of a model on benchmark sets, written as JSON and Markdown.

Protocol (shared/docs/reference-n3net.md): gray images in [0, 1], Gaussian noise
``σ/255 · N(0, 1)`` from a fixed seed, the network sees the unclipped noisy image, PSNR
with peak 1 and SSIM (Gaussian window) per image, averaged per set.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import time
import zlib
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from n3jax.data.images import DENOISING_SETS, load_denoising_set
from n3jax.data.noise import add_gaussian_noise, check_sigma
from n3jax import infer
from n3jax.evaluate import metrics, report
from n3jax.overlap_tiles import restore_overlapping

log = logging.getLogger(__name__)


def image_key(seed: int, name: str) -> jax.Array:
  """The noise key of one image: ``fold_in(PRNGKey(seed), crc32(name))``.

  Tied to the file name, so an image gets the same noise whatever subset is evaluated.
  """
  return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(name.encode()) & 0x7FFFFFFF)


PROTOCOLS = ("whole", "tiles")


def make_denoise_fn(model: nn.Module, sigma: float, *, protocol: str = "whole"
                    ) -> Callable[..., Tuple[jax.Array, ...]]:
  """A jit-compiled ``(variables, clean [H, W], key) → (denoised, noisy_psnr, psnr)``.

  The function is compiled once per image shape; evaluate images grouped by shape.
  ``protocol``: ``"whole"`` runs the model through :func:`n3jax.infer.restore` (any size,
  tiled exactly when large); ``"tiles"`` through the official NLRN test protocol
  (:func:`n3jax.overlap_tiles.restore_overlapping`: 43×43 tiles at stride 7, averaged).
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")

  @functools.partial(jax.jit, compiler_options=infer.COMPILER_OPTIONS)
  def denoise(variables, clean, key):
    noisy = add_gaussian_noise(clean, sigma, key)
    if protocol == "whole":
      pred = infer.restore(model, variables, noisy)
    else:
      pred = restore_overlapping(model, variables, noisy)
    return pred, metrics.psnr(noisy, clean), metrics.psnr(pred, clean)

  return denoise


def evaluate_denoising(model: nn.Module, variables: Mapping[str, Any], *, sigma: float,
                       datasets: Sequence[str], data_root: Optional[str], seed: int,
                       output_dir: Optional[str] = None,
                       run_info: Optional[Mapping[str, Any]] = None,
                       progress: bool = True, overwrite: bool = False,
                       protocol: str = "whole") -> Dict[str, Any]:
  """Evaluates ``model`` on each set; writes ``results.json`` (after every image) and ``results.md``.

  ``protocol``: how a whole image is run (:func:`make_denoise_fn`).

  An ``output_dir`` that already holds results of the same model, σ and seed gets the new
  sets added; the sets measured before are kept (:func:`report.previous_datasets`; a set
  measured completely before, or results of another evaluation, need ``overwrite``).

  Raises:
    ValueError: σ outside (0, 255], or an image with NaN/inf.
    OutputExistsError: see above (raised before anything is computed).

  Returns:
    ``{"datasets": {name: {"mean_psnr", "mean_ssim", "mean_noisy_psnr", "num_images",
    "images": [{"name", "shape", "psnr", "ssim", "noisy_psnr"}]}}, ...run_info}``.
  """
  sigma = check_sigma(sigma)
  run_info = dict(run_info or {})
  kept = report.previous_datasets(
      output_dir, {"sigma": sigma, "seed": seed, "protocol": protocol,
                   "checkpoint_metadata": run_info.get("checkpoint_metadata")},
      list(datasets), overwrite=overwrite)
  results: Dict[str, Any] = {**run_info, "sigma": sigma, "seed": seed, "protocol": protocol,
                             "datasets": dict(kept)}
  denoise = make_denoise_fn(model, sigma, protocol=protocol)
  if output_dir:
    os.makedirs(output_dir, exist_ok=True)
  for name in datasets:
    images = load_denoising_set(name, data_root)
    # Group by shape so that each distinct shape is compiled once.
    order = sorted(range(len(images)), key=lambda i: (images[i][1].shape, images[i][0]))
    shapes = collections.Counter(im.shape for _, im in images)
    log.info("%s: %d images, %d distinct shapes", name, len(images), len(shapes))
    rows: List[Dict[str, Any]] = [None] * len(images)  # type: ignore[list-item]
    entry = results["datasets"][name] = {"num_images": len(images),
                                         "num_shapes": len(shapes), "images": []}
    start = time.perf_counter()
    bar = tqdm(order, desc=f"{name} σ={sigma:g}", unit="img", disable=not progress)
    for i in bar:
      fname, clean = images[i]
      if not np.isfinite(clean).all():
        raise ValueError(f"{name}/{fname}: image has non-finite values")
      pred, noisy_psnr, psnr = denoise(variables, jnp.asarray(clean), image_key(seed, fname))
      pred = np.asarray(pred)
      if not np.isfinite(pred).all():
        raise FloatingPointError(f"{name}/{fname}: the model produced NaN/inf")
      rows[i] = {"name": fname, "shape": list(clean.shape), "psnr": float(psnr),
                 "ssim": metrics.ssim(pred, clean), "noisy_psnr": float(noisy_psnr)}
      done = [r for r in rows if r is not None]
      bar.set_postfix(psnr=f"{np.mean([r['psnr'] for r in done]):.3f}")
      entry["images"] = done
      report.summarize(entry, ("psnr", "ssim", "noisy_psnr"))
      if output_dir:
        report.write_json(os.path.join(output_dir, "results.json"), results)
    entry["images"] = rows
    entry["seconds"] = time.perf_counter() - start
    report.summarize(entry, ("psnr", "ssim", "noisy_psnr"))
    log.info("%s σ=%g: PSNR %.3f dB, SSIM %.4f", name, sigma, entry["mean_psnr"],
             entry["mean_ssim"])
  report.write_results(output_dir, results, results_markdown(results))
  return results


def results_markdown(results: Mapping[str, Any]) -> str:
  """A Markdown table of the per-set means of :func:`evaluate_denoising`'s results."""
  lines = [f"# Denoising results, σ = {results['sigma']:g}", "",
           f"checkpoint: `{results.get('checkpoint', '?')}`, noise seed {results['seed']}"
           + ("" if results.get("protocol", "whole") == "whole" else
              f", protocol: {results['protocol']}"), "",
           "| dataset | images | PSNR (dB) | SSIM | noisy input PSNR (dB) |",
           "| --- | --- | --- | --- | --- |"]
  for name, e in results["datasets"].items():
    lines.append(f"| {name} | {e['num_done']} | {e['mean_psnr']:.3f} | {e['mean_ssim']:.4f} "
                 f"| {e['mean_noisy_psnr']:.3f} |")
  return "\n".join(lines) + "\n"


__all__ = ["evaluate_denoising", "make_denoise_fn", "PROTOCOLS", "image_key", "results_markdown",
           "DENOISING_SETS"]
