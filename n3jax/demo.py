"""``n3jax-demo`` / ``python -m n3jax.demo``: add noise to an image, denoise it, report PSNR.

Runs with no downloads. With N³Net weights (``--checkpoint DIR``, an installed model from
``n3jax-convert FILE --install``, or the official ``.t7`` in ``$N3JAX_PRETRAINED_DIR`` or
``../shared/pretrained``) it runs N³Net. Without them it says where to get them and runs a
training-free stand-in built from the same pure ops: soft k-nearest-neighbour patch
averaging (non-local means with the continuous kNN of ``n3jax.ops``). The image is Set12
``01.png`` under the data root, or scikit-image's bundled camera photo. To denoise your own
noisy photos, use ``n3jax-denoise``.

The panel is written to ``--out`` (default ``n3jax_demo.png``). An existing file is replaced
only if the demo wrote it (a PNG tagged ``Software: n3jax-demo``) or with ``--overwrite``;
the input image never.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from n3jax import ops, pretrained
from n3jax.atomic import OutputExistsError, atomic_file
from n3jax.data import images
from n3jax.data.noise import add_gaussian_noise, check_sigma
from n3jax.cli_errors import one_line_errors
from n3jax.evaluate import metrics
from n3jax.evaluate.denoise import image_key

SOFTWARE_TAG = "n3jax-demo"  # PNG text chunk marking the demo's own output


def written_by_demo(path: str) -> bool:
  """Whether ``path`` is a PNG the demo wrote (tagged ``Software: n3jax-demo``)."""
  try:
    with Image.open(path) as im:
      return im.format == "PNG" and im.info.get("Software") == SOFTWARE_TAG
  except (OSError, ValueError):
    return False


def knn_patch_denoise(noisy: jax.Array, sigma: float, *, k: int = 16, patch_size: int = 8,
                      stride: int = 2, window: int = 15, temperature_scale: float = 0.5
                      ) -> jax.Array:
  """Training-free denoiser from the pure ops: soft k-NN averaging of noisy patches.

  Each patch is replaced by the mean of itself and its ``k`` continuous nearest neighbours
  among the patches of its search window; patches are folded back by averaging. The
  temperature is ``temperature_scale`` times the expected squared distance between two
  noisy copies of the same patch, ``2 σ² P²``.

  Args:
    noisy: ``[H, W]`` gray image in [0, 1]; ``sigma``: noise level on the 0-255 scale.

  Returns:
    ``[H, W]`` estimate.
  """
  x = noisy[None, :, :, None]
  xp = ops.pad_for_patches(x, patch_size, stride)
  grid = ops.extract_patches(xp, patch_size, stride)  # [1, n1, n2, P²]
  _, n1, n2, f = grid.shape
  d = ops.windowed_sq_distances(grid, window)
  t = temperature_scale * 2 * (sigma / 255.0) ** 2 * patch_size ** 2
  w = ops.continuous_knn_weights(-d, t, k=min(k, d.shape[-1]))
  vols = ops.windowed_aggregate(w, grid, window)  # [1, M, k, P²]
  est = (vols.sum(axis=2) + grid.reshape(1, n1 * n2, f)) / (vols.shape[2] + 1)
  out = ops.fold_patches(est.reshape(1, n1, n2, f), xp.shape[1], xp.shape[2], patch_size, stride)
  return ops.crop_patch_padding(out, *noisy.shape, patch_size, stride)[0, :, :, 0]


def _load_image(path: str | None):
  if path:
    return os.path.basename(path), images.load_gray(path)
  root = images.default_data_root()
  if root and os.path.isfile(os.path.join(root, "Set12", "01.png")):
    return "Set12/01.png", images.load_gray(os.path.join(root, "Set12", "01.png"))
  try:
    name, img = images.builtin_gray_images()[0]
  except ImportError:
    raise SystemExit("error: the demo's sample photo comes with scikit-image: "
                     "pip install 'n3jax[data]', or pass --image FILE") from None
  return f"skimage.data.{name}", img


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="n3jax-demo", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--image", help="gray or RGB image file (default: Set12/01.png or camera)")
  p.add_argument("--sigma", type=float, default=25.0, help="noise level, 0-255 scale")
  p.add_argument("--checkpoint", help="n3jax model directory (n3jax-convert, train.py)")
  p.add_argument("--pretrained-dir", help=f"folder with the official .t7 files "
                 f"(default ${pretrained.PRETRAINED_ENV} or ../shared/pretrained)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="n3jax_demo.png", help="clean | noisy | denoised, as PNG")
  p.add_argument("--overwrite", action="store_true",
                 help="replace --out if it exists and the demo did not write it")
  p.add_argument("--debug", action="store_true", help="full tracebacks on errors")
  args = p.parse_args(argv)
  return one_line_errors(lambda _: _run(args), [], debug=args.debug)


def _run(args: argparse.Namespace) -> int:
  check_sigma(args.sigma, name="--sigma")
  if os.path.splitext(args.out)[1].lower() not in Image.registered_extensions():
    raise ValueError(f"--out {args.out}: not an image file name (use e.g. .png)")
  if args.image and os.path.exists(args.out) and os.path.samefile(args.image, args.out):
    raise OutputExistsError(f"--out {args.out} is the input image (never overwritten)")
  if os.path.lexists(args.out) and not (args.overwrite or written_by_demo(args.out)):
    raise OutputExistsError(f"--out {args.out} exists and was not written by the demo; "
                            "pass --overwrite to replace it, or choose another --out")
  name, clean = _load_image(args.image)
  # The same noise as eval.py gives this file (key folded from the seed and the name).
  key = image_key(args.seed, os.path.basename(name))
  noisy = add_gaussian_noise(jnp.asarray(clean), args.sigma, key)
  model = variables = None
  if args.checkpoint:
    from n3jax.checkpoint import load_model
    model, variables, _ = load_model(args.checkpoint)
    method = f"N³Net ({args.checkpoint})"
  elif (installed := pretrained.installed_denoisers().get(args.sigma)):
    from n3jax.checkpoint import load_model
    model, variables, _ = load_model(installed)
    method = f"N³Net ({installed})"
  elif (official := pretrained.official_files(args.pretrained_dir).get(args.sigma)):
    from n3jax.convert import load_official
    model, variables, _ = load_official(official, task="denoise")
    method = f"N³Net (official weights {os.path.basename(official)})"
  else:
    print(f"No N³Net weights for σ={args.sigma:g}: {pretrained.how_to_get_weights()}\n"
          "Running the training-free soft-kNN patch denoiser from n3jax.ops instead.")
    method = "soft-kNN patch averaging (n3jax.ops, no training)"
  print(f"image {name} {clean.shape[1]}x{clean.shape[0]}, σ={args.sigma:g}: {method}")
  if model is not None:
    from n3jax import infer
    start = time.perf_counter()
    pred = infer.denoise(model, variables, noisy).block_until_ready()
  else:
    fn = jax.jit(lambda x: knn_patch_denoise(x, args.sigma))
    start = time.perf_counter()
    pred = fn(noisy).block_until_ready()
  seconds = time.perf_counter() - start
  if not np.isfinite(np.asarray(pred)).all():
    raise FloatingPointError(f"{method} produced NaN/inf on {name}; the weights are broken")
  p_noisy = float(metrics.psnr(noisy, jnp.asarray(clean)))
  p_pred = float(metrics.psnr(pred, jnp.asarray(clean)))
  try:
    ssim = f"SSIM {metrics.ssim(np.asarray(pred), clean):.4f}; "
  except ImportError:  # SSIM comes from scikit-image (the data extra)
    ssim = ""
  print(f"PSNR noisy {p_noisy:.2f} dB -> denoised {p_pred:.2f} dB "
        f"({ssim}{seconds:.1f} s incl. compile)")
  panel = np.concatenate([clean, np.asarray(noisy), np.asarray(pred)], axis=1)
  fmt = Image.registered_extensions()[os.path.splitext(args.out)[1].lower()]
  extra = {}
  if fmt == "PNG":
    from PIL import PngImagePlugin
    extra["pnginfo"] = PngImagePlugin.PngInfo()
    extra["pnginfo"].add_text("Software", SOFTWARE_TAG)
  with atomic_file(args.out, overwrite=True) as tmp:
    Image.fromarray((np.clip(panel, 0, 1) * 255 + 0.5).astype(np.uint8)).save(
        tmp, format=fmt, **extra)
  print(f"wrote {args.out} (clean | noisy | denoised)")
  return 0


def run() -> None:
  """Console-script entry point (exits)."""
  sys.exit(main())


if __name__ == "__main__":
  run()
