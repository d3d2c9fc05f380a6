"""``n3jax-denoise IMAGE...``: remove Gaussian or camera noise from your images with N³Net.

  n3jax-denoise photo.jpg                     # σ estimated, photo_denoised.jpg beside it
  n3jax-denoise scans/*.tif --sigma 25 --out clean/
  python -m n3jax.denoise a.png b.png --checkpoint runs/n3net/model --overwrite
  n3jax-denoise raw.tif --noise pg --a 0.01 --b 0.0001   # Poisson-Gaussian, variance a·x + b

``--noise pg`` uses a real-noise model (``n3net_pg``: the release's converted weights,
installed as ``n3net-pg``, or ``--checkpoint`` of a ``configs/realnoise.py`` run) with the
sensor's noise parameters: the variance of a pixel of intensity ``x`` in [0, 1] is
``a·x + b``. Those models were trained on linear, raw-like intensities (paper Sec. 5.3),
so give them linear data (e.g. a raw or linear TIFF), not gamma-encoded sRGB.

Models: ``--checkpoint DIR`` (a model folder from n3jax-convert or train.py), else the
installed ones (``n3jax-convert FILE --install``, in ``$N3JAX_MODEL_DIR``), else official
``.t7`` files in ``$N3JAX_PRETRAINED_DIR``. ``--sigma`` is the noise level on the 0-255
scale; ``auto`` (the default) estimates it per image and prints it. Either way the model
trained for the nearest available σ is used.

Images: PNG, JPEG, TIFF (also BMP, WebP) of any size, 8 or 16 bits (and float TIFF),
written back with the same bit depth and format as ``NAME_denoised.EXT``. The official
models are gray: a colour image is denoised channel by channel (independent Gaussian noise
per channel is what the model was trained for); an alpha channel is kept as it is.
Palette images are written as RGB(A). The EXIF orientation is applied. Large images are
processed in overlapping blocks (exact, memory bounded by ``--block``).

Nothing is overwritten without ``--overwrite``, and an input never. A file that fails
gets a one-line error and the others are still processed; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from n3jax import infer, pretrained
from n3jax.cli_errors import error_line
from n3jax.atomic import OutputExistsError
from n3jax.data import imagefile
from n3jax.data.noise import check_sigma, estimate_sigma
from n3jax.data.poisson_gaussian import check_noise_levels, with_noise_map

SUFFIX = "_denoised"
# Below this fraction of the model's σ, an image looks too clean for it (oversmoothing).
TOO_CLEAN = 0.5


class Models:
  """The available denoisers by σ, loaded on first use."""

  def __init__(self, checkpoint: Optional[str]):
    self._loaded: Dict[float, Tuple[Any, Any]] = {}
    self.sources: Dict[float, Tuple[str, str]] = {}  # σ → (kind, path)
    if checkpoint:
      from n3jax.checkpoint import load_model
      model, variables, meta = load_model(checkpoint)
      if meta.get("task") == "realnoise":
        raise ValueError(f"{checkpoint} is a Poisson-Gaussian (real-noise) model: use "
                         "--noise pg --a A --b B")
      sigma = float(meta.get("sigma") or 0.0)
      self._loaded[sigma] = (model, variables)
      self.sources[sigma] = ("checkpoint", checkpoint)
      return
    for sigma, path in pretrained.official_files().items():
      self.sources[sigma] = ("official", path)
    for sigma, path in pretrained.installed_denoisers().items():
      self.sources[sigma] = ("installed", path)

  def pick(self, sigma: float) -> float:
    return pretrained.nearest(sigma, self.sources)

  def get(self, sigma: float):
    if sigma not in self._loaded:
      kind, path = self.sources[sigma]
      if kind == "official":
        from n3jax.convert import load_official
        model, variables, _ = load_official(path, task="denoise")
        self._loaded[sigma] = (model, variables)
      else:
        from n3jax.checkpoint import load_model
        model, variables, _ = load_model(path)
        self._loaded[sigma] = (model, variables)
    return self._loaded[sigma]


def output_path(path: str, out_dir: Optional[str]) -> str:
  """``DIR/NAME_denoised.EXT`` (``DIR``: ``out_dir`` or the input's folder)."""
  stem, ext = os.path.splitext(os.path.basename(path))
  return os.path.join(out_dir or os.path.dirname(os.path.abspath(path)), stem + SUFFIX + ext)


def _same_file(a: str, b: str) -> bool:
  if os.path.abspath(a) == os.path.abspath(b):
    return True
  try:
    return os.path.samefile(a, b)
  except OSError:
    return False


def _denoise_channels(picture: imagefile.Picture, restore_channel, *, source: str,
                      progress=None) -> imagefile.Picture:
  """``picture`` with each colour channel replaced by ``restore_channel(x [H, W], step)``
  (alpha kept); ``step(done, total)`` reports the channel's blocks."""
  color = imagefile.to_unit(picture.color)
  channels = color.shape[-1]
  out = np.empty_like(color)
  for c in range(channels):
    def step(done, total, c=c):
      if progress is not None:
        progress(c * total + done, channels * total)
    out[..., c] = restore_channel(color[..., c], step)
  if not np.isfinite(out).all():
    raise FloatingPointError(f"the model ({source}) produced NaN/inf; its weights are broken "
                             "(nothing written)")
  samples = imagefile.from_unit(out, picture.samples.dtype)
  if picture.has_alpha:
    samples = np.concatenate([samples, picture.samples[..., -1:]], axis=-1)
  return imagefile.Picture(samples, picture.format, picture.note, picture.icc_profile)


def _check_finite(picture: imagefile.Picture) -> np.ndarray:
  color = imagefile.to_unit(picture.color)
  if not np.isfinite(color).all():
    raise ValueError("the image holds NaN or infinite values")
  return color


def denoise_picture(picture: imagefile.Picture, models: Models, sigma: Optional[float], *,
                    block: int, tile: int, progress=None) -> Tuple[imagefile.Picture, str]:
  """Denoises the colour channels of ``picture`` (alpha kept); returns it and a report."""
  color = _check_finite(picture)
  notes = []
  if sigma is None:
    estimate = float(np.mean([estimate_sigma(color[..., c]) for c in range(color.shape[-1])]))
    notes.append(f"estimated σ={estimate:.1f}")
    request = estimate
  else:
    request = sigma
  chosen = models.pick(request)
  if models.sources[chosen][0] != "checkpoint" and request < TOO_CLEAN * chosen:
    notes.append(f"looks cleaner than the σ={chosen:g} model expects; it may oversmooth")
  elif chosen > 0 and not TOO_CLEAN * chosen <= request <= chosen / TOO_CLEAN:
    notes.append(f"the model was trained for σ={chosen:g}, not σ={request:g}: expect a poor "
                 "result")
  model, variables = models.get(chosen)
  kind, path = models.sources[chosen]
  result = _denoise_channels(
      picture, lambda x, step: infer.restore_large(model, variables, x, block=block, tile=tile,
                                                   progress=step),
      source=path, progress=progress)
  notes.insert(0, f"model {path}" if kind == "checkpoint" else f"{kind} σ={chosen:g} model")
  return result, ", ".join(notes)


def restore_poisson_gaussian(model: Any, variables: Any, noisy: np.ndarray, *, a: float,
                             b: float, block: int = infer.DEFAULT_BLOCK,
                             tile: int = infer.DEFAULT_TILE, progress=None) -> np.ndarray:
  """Denoises a gray image ``[H, W]`` in [0, 1] with Poisson-Gaussian noise of parameters
  ``(a, b)`` (variance ``a·x + b``) with a noise-map model (``n3net_pg``, ``dncnn_pg``).

  The model sees the image and the noise map (:func:`~n3jax.data.poisson_gaussian.with_noise_map`)
  through :func:`n3jax.infer.restore_large` (any size, bounded memory). Returns ``[H, W]``.
  """
  a, b = check_noise_levels(a, b)
  x = np.asarray(noisy)
  if x.ndim != 2:
    raise ValueError(f"noisy must be a gray [H, W] image, got shape {x.shape}; denoise colour "
                     "images channel by channel")
  infer.check_image(x, channels=1, name="noisy")
  out = infer.restore_large(model, variables, np.asarray(with_noise_map(x[..., None], a, b)),
                            block=block, tile=tile, progress=progress)
  return out[..., 0]


def denoise_picture_pg(picture: imagefile.Picture, model: Any, variables: Any, *, a: float,
                       b: float, source: str, block: int, tile: int, progress=None
                       ) -> Tuple[imagefile.Picture, str]:
  """Denoises the colour channels of ``picture`` with a Poisson-Gaussian model at (a, b)."""
  _check_finite(picture)
  result = _denoise_channels(
      picture, lambda x, step: restore_poisson_gaussian(model, variables, x, a=a, b=b,
                                                        block=block, tile=tile, progress=step),
      source=source, progress=progress)
  return result, f"model {source}, Poisson-Gaussian a={a:g}, b={b:g}"


def load_realnoise_model(checkpoint: Optional[str]) -> Tuple[Any, Any, str]:
  """``(model, variables, source)`` of a Poisson-Gaussian model: ``checkpoint`` (a model
  folder whose metadata says ``"task": "realnoise"``), else the installed one.

  Raises:
    FileNotFoundError: none installed (the message says how to get one).
    ValueError: ``checkpoint`` holds a model of another task.
  """
  from n3jax.checkpoint import load_model
  path = checkpoint or pretrained.installed_realnoise()
  if path is None:
    raise FileNotFoundError(pretrained.how_to_get_realnoise_weights())
  model, variables, meta = load_model(path)
  if meta.get("task") != "realnoise":
    raise ValueError(f"{path} holds a {meta.get('task', 'denoise')!r} model "
                     f"({meta.get('model_name')}), not a Poisson-Gaussian one; --noise pg "
                     "needs a model trained with configs/realnoise.py or the converted release")
  return model, variables, path


def parse_sigma(text: str) -> Optional[float]:
  """``"auto"`` → None; otherwise a number in (0, 255]."""
  if text.strip().lower() == "auto":
    return None
  try:
    return check_sigma(text, name="--sigma")
  except ValueError:
    raise argparse.ArgumentTypeError(f"must be 'auto' or a number in (0, 255] on the 0-255 "
                                     f"scale (e.g. 25), got {text!r}") from None


NOISE_KINDS = ("gaussian", "pg")


def _level(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}") from None
  if not value >= 0 or value == float("inf"):
    raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
  return value


def _positive(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
  return value


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="n3jax-denoise", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
  parser.add_argument("--sigma", type=parse_sigma, default=None, metavar="SIGMA|auto",
                      help="noise level on the 0-255 scale, or auto (default)")
  parser.add_argument("--noise", choices=NOISE_KINDS, default="gaussian",
                      help="the noise model: gaussian (σ, the default) or pg "
                      "(Poisson-Gaussian, variance a·x + b; needs --a and --b)")
  parser.add_argument("--a", type=_level, metavar="A",
                      help="--noise pg: the signal-dependent part (e.g. 0.01)")
  parser.add_argument("--b", type=_level, metavar="B",
                      help="--noise pg: the constant variance (e.g. 0.0001)")
  parser.add_argument("--checkpoint", metavar="DIR", help="n3jax model folder to use")
  parser.add_argument("--out", metavar="DIR", help="output folder (default: beside each input)")
  parser.add_argument("--tile", type=_positive, default=infer.DEFAULT_TILE,
                      help=f"stage tile side in pixels (default {infer.DEFAULT_TILE})")
  parser.add_argument("--block", type=_positive, default=infer.DEFAULT_BLOCK,
                      help=f"block side bounding memory (default {infer.DEFAULT_BLOCK})")
  parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
  parser.add_argument("--no-progress", action="store_true", help="no progress bars")
  parser.add_argument("--debug", action="store_true", help="full tracebacks on errors")
  args = parser.parse_args(argv)
  pg = args.noise == "pg"
  if pg and (args.a is None or args.b is None):
    parser.error("--noise pg needs the noise parameters --a and --b")
  if pg and args.sigma is not None:
    parser.error("--sigma is for Gaussian noise; --noise pg takes --a and --b")
  if not pg and (args.a is not None or args.b is not None):
    parser.error("--a and --b are Poisson-Gaussian parameters: add --noise pg")
  if pg:
    try:
      check_noise_levels(args.a, args.b)
    except ValueError as e:
      parser.error(str(e))

  from tqdm import tqdm

  try:
    if pg:
      pg_model = load_realnoise_model(args.checkpoint)
    else:
      models = Models(args.checkpoint)
  except (OSError, ValueError, KeyError) as e:
    if args.debug:
      raise
    if pg and args.checkpoint is None:  # none installed: how to get one
      print(f"error: {e}", file=sys.stderr)
      return 2
    message = error_line(e)
    print(message if str(args.checkpoint) in message else
          message.replace("error: ", f"error: {args.checkpoint}: ", 1), file=sys.stderr)
    return 2
  if not pg and not models.sources:
    print(f"error: {pretrained.how_to_get_weights()}", file=sys.stderr)
    return 2
  if args.out:
    try:
      os.makedirs(args.out, exist_ok=True)
    except OSError as e:
      print(f"error: --out {args.out}: {e.strerror or e}", file=sys.stderr)
      return 2

  failures = 0
  written = set()  # outputs of this run: a later input may not replace them
  # Inputs are the files that exist now: one made by this run is not read as an input.
  present = {os.path.abspath(p) for p in args.images if os.path.isfile(p)}
  # Progress bars only on a terminal (None: tqdm decides), so that a redirected stderr
  # holds one line per error.
  bars = True if args.no_progress else None
  files = tqdm(args.images, desc="images", unit="image",
               disable=True if len(args.images) < 2 else bars)
  for path in files:
    start = time.perf_counter()
    target = output_path(path, args.out)
    blocks = tqdm(total=1, desc=os.path.basename(path), unit="block", leave=False,
                  disable=bars)

    def progress(done, total):
      blocks.total = total
      blocks.n = done
      blocks.refresh()

    try:
      if os.path.isdir(path):
        raise imagefile.ImageFileError(f"{path} is a folder, not an image")
      if os.path.abspath(path) not in present:
        raise imagefile.ImageFileError(f"{path}: no such file")
      if any(_same_file(target, p) for p in args.images):
        raise OutputExistsError(f"{target} is an input (never overwritten)")
      if os.path.abspath(target) in written:
        raise OutputExistsError(f"{target} was written from another input of this run")
      if os.path.lexists(target) and not args.overwrite:
        raise OutputExistsError(f"{target} exists (pass --overwrite to replace it)")
      imagefile.check_writable(target)
      picture = imagefile.read_picture(path)
      if pg:
        result, report = denoise_picture_pg(picture, pg_model[0], pg_model[1], a=args.a,
                                            b=args.b, source=pg_model[2], block=args.block,
                                            tile=args.tile, progress=progress)
      else:
        result, report = denoise_picture(picture, models, args.sigma, block=args.block,
                                         tile=args.tile, progress=progress)
      imagefile.write_picture(target, result, overwrite=args.overwrite)
      written.add(os.path.abspath(target))
      h, w, c = picture.samples.shape
      depth = f"{picture.bit_depth} bit" if picture.bit_depth else "float"
      tqdm.write(f"{path} → {target} ({w}x{h}, {c} channel{'s' * (c > 1)}, {depth}"
                 f"{', ' + picture.note if picture.note else ''}; {report}; "
                 f"{time.perf_counter() - start:.1f} s)")
    except KeyboardInterrupt:  # outputs are written atomically: nothing half-written stays
      blocks.close()
      print(f"interrupted at {path}; {len(written)} image(s) written", file=sys.stderr)
      return 130
    except Exception as e:  # one line per failed file; the others go on
      failures += 1
      blocks.close()
      if args.debug:
        traceback.print_exc()
      message = str(e).replace("\n", " ")
      print(f"error: {path}: {message}" if path not in message else f"error: {message}",
            file=sys.stderr)
    finally:
      blocks.close()
  if failures and len(args.images) > 1:
    print(f"{failures} of {len(args.images)} images failed", file=sys.stderr)
  return 1 if failures else 0


def run() -> None:
  """Console-script entry point (exits)."""
  sys.exit(main())


if __name__ == "__main__":
  run()
