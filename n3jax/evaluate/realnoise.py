"""Real-noise evaluation: PSNR/SSIM per set and per Poisson-Gaussian noise level (a, b).

Protocol: the release's test transform (``experiment_pg.create_test_dataloaders``): gray
images in [0, 1] made raw-like with the power 2.5 and an intensity scale drawn from
{0.5, 1}; noise ``sqrt(a·x + b) · N(0, 1)`` added and clipped to [0, 1]; the network sees
the noisy image with the noise map (a, b); PSNR (peak 1) and SSIM against the raw-like
clean image. The release's test loop draws (a, b) per image from the training
distribution (its ``testnlf`` default, (0.01, 0.0001), is parsed but unused); we report a
fixed grid of levels instead (``config.eval_levels``), so that results can be compared per
level. Each image's draws (its scale and its noise) come from ``image_key(seed, file
name)``, the same at every level, so levels differ only in (a, b).
"""

from __future__ import annotations

import functools
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
from n3jax.data.images import load_denoising_set
from n3jax.data.poisson_gaussian import RealNoiseProtocol, check_noise_levels, corrupt_for_test
from n3jax.evaluate import metrics, report
from n3jax.evaluate.denoise import image_key

log = logging.getLogger(__name__)

TASK = "realnoise"


def level_name(a: float, b: float) -> str:
  """The key of a noise level in the results: ``"a=0.01,b=0.0001"``."""
  return f"a={a:g},b={b:g}"


def check_levels(levels: Sequence[Sequence[float]], *, name: str = "levels"
                 ) -> Tuple[Tuple[float, float], ...]:
  """``levels`` as ``((a, b), …)``, each checked (:func:`check_noise_levels`)."""
  out = []
  for level in levels:
    try:
      a, b = level
    except (TypeError, ValueError):
      raise ValueError(f"{name} must hold (a, b) pairs, got {level!r}") from None
    try:
      out.append(check_noise_levels(a, b))
    except ValueError as e:
      raise ValueError(f"{name}: {e}") from None
  if not out:
    raise ValueError(f"{name} is empty: give at least one (a, b)")
  if len(set(out)) != len(out):
    raise ValueError(f"{name} repeats a level: {out}")
  return tuple(out)


def make_realnoise_fn(model: nn.Module, *, protocol: RealNoiseProtocol = RealNoiseProtocol()
                      ) -> Callable[..., Tuple[jax.Array, ...]]:
  """A jit-compiled ``(variables, clean [H, W], key, a, b) → (denoised, noisy_psnr, psnr,
  target)``: the test transform and noise of ``key`` at level (a, b), the model through
  :func:`n3jax.infer.restore`. ``target`` is the raw-like clean image ``[H, W]``.

  Compiled once per image shape (``a`` and ``b`` are traced).
  """

  @functools.partial(jax.jit, compiler_options=infer.COMPILER_OPTIONS)
  def run(variables, clean, key, a, b):
    x, target = corrupt_for_test(clean[..., None], a, b, key, protocol=protocol)
    pred = infer.restore(model, variables, x)[..., 0]
    target = target[..., 0]
    return pred, metrics.psnr(x[..., 0], target), metrics.psnr(pred, target), target

  return run


def evaluate_realnoise(model: nn.Module, variables: Mapping[str, Any], *,
                       levels: Sequence[Sequence[float]], datasets: Sequence[str],
                       data_root: Optional[str], seed: int,
                       protocol: RealNoiseProtocol = RealNoiseProtocol(),
                       output_dir: Optional[str] = None,
                       run_info: Optional[Mapping[str, Any]] = None, progress: bool = True,
                       overwrite: bool = False) -> Dict[str, Any]:
  """PSNR/SSIM of ``model`` per set and level; writes ``results.json`` (after every
  image) and ``results.md`` to ``output_dir``, keeping sets measured there before (same
  model, levels, seed and protocol), as :func:`n3jax.evaluate.denoise.evaluate_denoising`.

  Returns:
    ``{"levels": [[a, b], …], "datasets": {name: {"a=0.01,b=0.0001": {"mean_psnr",
    "mean_ssim", "mean_noisy_psnr", "num_done", "images": [{"name", "shape", "psnr",
    "ssim", "noisy_psnr"}]}, …}}, …run_info}``.
  """
  levels = check_levels(levels)
  run_info = dict(run_info or {})
  identity = {"task": TASK, "levels": [list(lv) for lv in levels], "seed": seed,
              "noise_protocol": _protocol_json(protocol),
              "checkpoint_metadata": run_info.get("checkpoint_metadata")}
  kept = report.previous_datasets(
      output_dir, identity, list(datasets), overwrite=overwrite,
      complete=lambda e: bool(e) and all(report.is_complete(v) for v in e.values()))
  results: Dict[str, Any] = {**run_info, **identity, "datasets": dict(kept)}
  run = make_realnoise_fn(model, protocol=protocol)
  if output_dir:
    os.makedirs(output_dir, exist_ok=True)
  for name in datasets:
    images = load_denoising_set(name, data_root)
    order = sorted(images, key=lambda t: (t[1].shape, t[0]))  # one compile per shape
    results["datasets"][name] = {}
    for a, b in levels:
      entry: Dict[str, Any] = {"a": a, "b": b, "num_images": len(images), "images": []}
      results["datasets"][name][level_name(a, b)] = entry
      start = time.perf_counter()
      bar = tqdm(order, desc=f"{name} {level_name(a, b)}", unit="img", disable=not progress)
      for fname, clean in bar:
        if not np.isfinite(clean).all():
          raise ValueError(f"{name}/{fname}: image has non-finite values")
        pred, noisy_psnr, psnr, target = run(variables, jnp.asarray(clean),
                                             image_key(seed, fname), a, b)
        pred = np.asarray(pred)
        if not np.isfinite(pred).all():
          raise FloatingPointError(f"{name}/{fname} at {level_name(a, b)}: the model "
                                   "produced NaN/inf")
        entry["images"].append({"name": fname, "shape": list(clean.shape),
                                "psnr": float(psnr), "noisy_psnr": float(noisy_psnr),
                                "ssim": metrics.ssim(pred, np.asarray(target))})
        report.summarize(entry, ("psnr", "ssim", "noisy_psnr"))
        bar.set_postfix(psnr=f"{entry['mean_psnr']:.3f}")
        if output_dir:
          report.write_json(os.path.join(output_dir, report.RESULTS_FILE), results)
      entry["seconds"] = time.perf_counter() - start
      log.info("%s %s: PSNR %.3f dB, SSIM %.4f (noisy %.3f dB)", name, level_name(a, b),
               entry["mean_psnr"], entry["mean_ssim"], entry["mean_noisy_psnr"])
  report.write_results(output_dir, results, results_markdown(results))
  return results


def _protocol_json(protocol: RealNoiseProtocol) -> Dict[str, Any]:
  return {"test_power": protocol.test_power, "test_scales": list(protocol.test_scales),
          "clip": protocol.clip}


def results_markdown(results: Mapping[str, Any]) -> str:
  """A Markdown table: one row per set and level, PSNR / SSIM and the noisy input's PSNR."""
  proto = results.get("noise_protocol", {})
  lines = ["# Real-noise (Poisson-Gaussian) results", "",
           f"checkpoint: `{results.get('checkpoint', '?')}`, seed {results['seed']}; "
           f"test transform x^{proto.get('test_power', '?')} · s, s ∈ "
           f"{proto.get('test_scales', '?')}, clipped: {proto.get('clip', '?')}", "",
           "| dataset | a | b | images | PSNR (dB) | SSIM | noisy input PSNR (dB) |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
  for name, per_level in results["datasets"].items():
    for e in per_level.values():
      if not e.get("num_done"):
        continue
      lines.append(f"| {name} | {e['a']:g} | {e['b']:g} | {e['num_done']} | "
                   f"{e['mean_psnr']:.3f} | {e['mean_ssim']:.4f} | {e['mean_noisy_psnr']:.3f} |")
  return "\n".join(lines) + "\n"
