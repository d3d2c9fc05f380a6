"""Super-resolution evaluation as the SR literature does it, written as JSON and Markdown.

Protocol (SRCNN/VDSR test code, reproduced by :mod:`n3jax.data.bicubic`): crop the HR
image to a multiple of the scale; take its Y channel (BT.601, ``[16, 235]``; gray images
are their own Y) in double precision; the network input is ``imresize(imresize(Y, 1/s), s)``
(MATLAB bicubic, antialiased downscale); prediction and target are rounded to uint8 and
compared by PSNR (peak 255) and SSIM after shaving ``s`` pixels off every border.
With the identity as the model, this gives the standard bicubic figures (Set5 ×2 33.66 dB).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from n3jax import infer
from n3jax.data.bicubic import imresize, luminance, modcrop, to_uint8
from n3jax.data.images import load_sr_set
from n3jax.evaluate import metrics, report

log = logging.getLogger(__name__)

PEAK = 255.0
BICUBIC = "bicubic"  # eval.py --checkpoint=bicubic: plain bicubic upsampling


def degrade(hr: np.ndarray, scale: int) -> Tuple[np.ndarray, np.ndarray]:
  """``(target, bicubic)``: the uint8 Y target ``[H', W']`` and the float64 bicubic input.

  ``hr`` is ``uint8 [H, W]`` or ``[H, W, 3]``; ``H', W'`` are ``H, W`` cropped to multiples
  of ``scale``; the bicubic Y is on the ``[0, 255]`` scale, unrounded.

  Raises:
    ValueError: the image is smaller than a few LR pixels.
  """
  hr = modcrop(np.asarray(hr), scale)
  if min(hr.shape[:2]) < 4 * scale:
    raise ValueError(f"image of {hr.shape[0]}x{hr.shape[1]} is too small for ×{scale}")
  y = luminance(hr)
  low = imresize(y / PEAK, 1.0 / scale)
  bicubic = imresize(low, float(scale)) * PEAK
  return to_uint8(y), bicubic


def shave(x: np.ndarray, border: int) -> np.ndarray:
  return x[border:-border, border:-border] if border else x


def sr_scores(pred: np.ndarray, target: np.ndarray, scale: int) -> Tuple[float, float]:
  """PSNR and SSIM of ``pred`` (float ``[0, 255]``, rounded here) against the uint8 target."""
  p = shave(to_uint8(pred), scale).astype(np.float64)
  t = shave(np.asarray(target), scale).astype(np.float64)
  mse = np.mean(np.square(p - t))
  psnr = float("inf") if mse == 0 else float(10.0 * np.log10(PEAK ** 2 / mse))
  return psnr, metrics.ssim(p, t, data_range=PEAK)


def make_sr_fn(model: nn.Module) -> Callable[[Any, jax.Array], jax.Array]:
  """A jit-compiled ``(variables, bicubic Y [H, W] in [0, 1]) → restored Y [H, W]``.

  Runs through :func:`n3jax.infer.restore`: images of any size, tiled when large.
  """

  @jax.jit
  def upscale(variables, x):
    return infer.restore(model, variables, x)

  return upscale


def super_resolve(sr_fn: Optional[Callable], variables: Any, bicubic: np.ndarray) -> np.ndarray:
  """The model's Y (``[0, 255]``) from the bicubic Y; ``sr_fn=None`` is bicubic itself."""
  if sr_fn is None:
    return bicubic
  pred = np.asarray(sr_fn(variables, jnp.asarray(bicubic / PEAK, jnp.float32)), np.float64)
  if not np.isfinite(pred).all():
    raise FloatingPointError("the model produced NaN/inf")
  return pred * PEAK


def evaluate_sr(model: Optional[nn.Module], variables: Optional[Mapping[str, Any]], *,
                datasets: Sequence[str], scales: Sequence[int], data_root: Optional[str],
                output_dir: Optional[str] = None, run_info: Optional[Mapping[str, Any]] = None,
                progress: bool = True, overwrite: bool = False) -> Dict[str, Any]:
  """PSNR/SSIM per set and scale; ``model=None`` evaluates bicubic upsampling.

  Writes ``results.json`` (after every image) and ``results.md`` to ``output_dir``; sets
  measured there before (same model and scales) are kept, as in
  :func:`n3jax.evaluate.denoise.evaluate_denoising`.

  Returns:
    ``{"scales", "datasets": {name: {"x2": {"mean_psnr", "mean_ssim", "mean_bicubic_psnr",
    "num_done", "images": [{"name", "shape", "psnr", "ssim", "bicubic_psnr"}]}, ...}}}``.
  """
  run_info = dict(run_info or {})
  kind = BICUBIC if model is None else "network"
  kept = report.previous_datasets(
      output_dir, {"task": "sisr", "scales": list(scales), "model": kind,
                   "checkpoint_metadata": run_info.get("checkpoint_metadata")},
      list(datasets), overwrite=overwrite,
      complete=lambda e: bool(e) and all(report.is_complete(v) for v in e.values()))
  results: Dict[str, Any] = {**run_info, "task": "sisr", "scales": list(scales),
                             "model": kind, "datasets": dict(kept)}
  sr_fn = None if model is None else make_sr_fn(model)
  if output_dir:
    os.makedirs(output_dir, exist_ok=True)
  for name in datasets:
    images = load_sr_set(name, data_root)
    results["datasets"][name] = {}
    for scale in scales:
      entry: Dict[str, Any] = {"num_images": len(images), "images": []}
      results["datasets"][name][f"x{scale}"] = entry
      start = time.perf_counter()
      bar = tqdm(images, desc=f"{name} ×{scale}", unit="img", disable=not progress)
      for fname, hr in bar:
        target, bicubic = degrade(hr, scale)
        try:
          pred = super_resolve(sr_fn, variables, bicubic)
        except FloatingPointError as e:
          raise FloatingPointError(f"{name}/{fname} ×{scale}: {e}") from None
        psnr, ssim = sr_scores(pred, target, scale)
        bic_psnr = psnr if sr_fn is None else sr_scores(bicubic, target, scale)[0]
        entry["images"].append({"name": fname, "shape": list(target.shape), "psnr": psnr,
                                "ssim": ssim, "bicubic_psnr": bic_psnr})
        report.summarize(entry, ("psnr", "ssim", "bicubic_psnr"))
        bar.set_postfix(psnr=f"{entry['mean_psnr']:.3f}")
        if output_dir:
          report.write_json(os.path.join(output_dir, "results.json"), results)
      entry["seconds"] = time.perf_counter() - start
      log.info("%s ×%d: PSNR %.3f dB, SSIM %.4f (bicubic %.3f dB)", name, scale,
               entry["mean_psnr"], entry["mean_ssim"], entry["mean_bicubic_psnr"])
  report.write_results(output_dir, results, results_markdown(results))
  return results


def results_markdown(results: Mapping[str, Any]) -> str:
  """A Markdown table, one row per set, PSNR/SSIM per scale."""
  scales = results["scales"]
  what = "bicubic upsampling" if results.get("model") == BICUBIC else (
      f"checkpoint `{results.get('checkpoint', '?')}`")
  lines = [f"# Super-resolution results (Y channel, {what})", "",
           "| dataset | " + " | ".join(f"×{s} PSNR / SSIM" for s in scales) + " |",
           "| --- |" + " --- |" * len(scales)]
  for name, per_scale in results["datasets"].items():
    cells = []
    for s in scales:
      e = per_scale.get(f"x{s}")
      cells.append(f"{e['mean_psnr']:.3f} / {e['mean_ssim']:.4f}" if e and e.get("num_done")
                   else "–")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"
