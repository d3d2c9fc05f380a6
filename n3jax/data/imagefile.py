"""Reading and writing a user's image files at the bit depth they are stored in.

What :func:`read_picture` returns, for each kind of file:

* 8-bit gray / RGB / gray+alpha / RGBA (PNG, JPEG, TIFF, BMP, WebP): ``uint8`` samples.
* 16-bit gray or colour PNG and TIFF: ``uint16`` samples (the file's bit depth decides
  the scale, never its largest value: a 16-bit file whose values are all ≤ 255 is a
  very dark 16-bit image).
* 32-bit float TIFF: ``float32`` samples as stored (expected in [0, 1]).
* Palette images become RGB (RGBA when the palette has transparency), bilevel images
  8-bit gray, CMYK and YCbCr images RGB; such files are written back in the converted
  mode (a palette cannot hold denoised values).

The EXIF orientation is applied, so samples are in display orientation (and written
without an orientation tag). :func:`write_picture` writes samples of the same kind back
in the format its file name asks for, atomically and without replacing an existing file
unless told to. Pillow reads and writes everything it holds exactly; 16-bit colour,
which Pillow reduces to 8 bits, goes through ``tifffile`` (TIFF) or ``pypng`` (PNG).
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from typing import Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from n3jax.atomic import atomic_file

EXIF_ORIENTATION = 274  # EXIF / TIFF tag
JPEG_QUALITY = 95  # of written JPEGs (4:4:4, no chroma subsampling)
# What Pillow decodes exactly: mode → channels (8-bit unless noted).
EXACT_MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "I;16": 1, "I;16B": 1, "I;16L": 1, "F": 1}
# Modes converted on reading, and what they become.
CONVERTED_MODES = {"P": None, "PA": "RGBA", "1": "L", "CMYK": "RGB", "YCbCr": "RGB",
                   "LAB": "RGB", "HSV": "RGB", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB"}


class ImageFileError(ValueError):
  """A file that cannot be read or written as an image; the message names the file."""


@dataclasses.dataclass
class Picture:
  """An image as stored in its file, in display orientation.

  Attributes:
    samples: ``[H, W, C]``, ``uint8``, ``uint16`` or ``float32``; ``C`` is 1 (gray),
      2 (gray + alpha), 3 (RGB) or 4 (RGBA).
    format: the file format, e.g. ``"PNG"``, ``"JPEG"``, ``"TIFF"``.
    note: conversions made on reading (e.g. ``"palette → RGB"``), or ``""``.
    icc_profile: the embedded colour profile, written back where the format allows.
  """
  samples: np.ndarray
  format: str
  note: str = ""
  icc_profile: Optional[bytes] = None

  @property
  def has_alpha(self) -> bool:
    return self.samples.shape[-1] in (2, 4)

  @property
  def color(self) -> np.ndarray:
    """The colour (or gray) channels, without alpha: ``[H, W, 1 or 3]``."""
    return self.samples[..., :3] if self.samples.shape[-1] >= 3 else self.samples[..., :1]

  @property
  def bit_depth(self) -> Optional[int]:
    """8 or 16 for integer samples, ``None`` for float."""
    return None if self.samples.dtype.kind == "f" else 8 * self.samples.dtype.itemsize


def orient(samples: np.ndarray, orientation: int) -> np.ndarray:
  """Applies an EXIF orientation (1–8) to ``[H, W, ...]`` samples: stored → displayed."""
  ops = {1: lambda a: a,
         2: lambda a: a[:, ::-1],
         3: lambda a: a[::-1, ::-1],
         4: lambda a: a[::-1],
         5: lambda a: np.swapaxes(a, 0, 1),
         6: lambda a: np.rot90(a, -1),
         7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
         8: lambda a: np.rot90(a, 1)}
  return np.ascontiguousarray(ops.get(orientation, ops[1])(samples))


def to_unit(samples: np.ndarray) -> np.ndarray:
  """Integer samples → float32 in [0, 1] by their bit depth; float samples unchanged."""
  if samples.dtype.kind == "f":
    return samples.astype(np.float32)
  return samples.astype(np.float32) / np.float32(np.iinfo(samples.dtype).max)


def from_unit(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
  """Inverse of :func:`to_unit`: rounds and clips to ``dtype``'s range (floats unchanged)."""
  dtype = np.dtype(dtype)
  if dtype.kind == "f":
    return x.astype(dtype)
  top = np.iinfo(dtype).max  # ≤ 65535: exact in float32, so no float64 copies are needed
  y = np.multiply(x, np.float32(top), dtype=np.float32)
  np.rint(y, out=y)
  np.clip(y, 0, top, out=y)
  return y.astype(dtype)


# Raw modes of unsigned 16-bit gray samples (signed ones are not supported).
UNSIGNED_16 = ("I;16", "I;16B", "I;16L", "I;16N")


def _raw_mode(im: Image.Image) -> str:
  """How the file stores its samples (only known before the image is loaded)."""
  raw = im.tile[0].args if im.tile else None
  raw = raw[0] if isinstance(raw, tuple) else raw
  return raw if isinstance(raw, str) else ""


def _tiff_needs_tifffile(im: Image.Image) -> bool:
  """TIFFs that Pillow would not decode exactly: more than 8 bits in several samples
  (Pillow keeps 8), planar (channel-by-channel) layouts, signed integers."""
  bits = im.tag_v2.get(258, (8,))
  bits = bits if isinstance(bits, tuple) else (bits,)
  planar = im.tag_v2.get(284, 1)
  sample_format = im.tag_v2.get(339, (1,))
  sample_format = sample_format if isinstance(sample_format, tuple) else (sample_format,)
  return ((max(bits) > 8 and len(bits) > 1) or (planar == 2 and len(bits) > 1)
          or 2 in sample_format)


def _read_with_tifffile(path: str) -> np.ndarray:
  import tifffile
  try:
    with tifffile.TiffFile(path) as tif:
      page = tif.pages[0]
      arr = page.asarray()
      if arr.ndim == 3 and page.planarconfig == tifffile.PLANARCONFIG.SEPARATE:
        arr = np.moveaxis(arr, 0, -1)
  except ValueError as e:  # e.g. LZW without the optional imagecodecs package
    raise ImageFileError(f"{path}: cannot decode this TIFF ({e})") from e
  if arr.dtype.kind == "i":
    raise ImageFileError(f"{path}: signed integer samples ({arr.dtype}) are not supported; "
                         "save as unsigned 8/16-bit or float")
  if arr.dtype == np.float64:
    arr = arr.astype(np.float32)
  if arr.dtype not in (np.uint8, np.uint16, np.float32):
    raise ImageFileError(f"{path}: unsupported TIFF samples {arr.dtype}")
  arr = arr[:, :, None] if arr.ndim == 2 else arr
  if arr.ndim != 3 or arr.shape[-1] > 4:
    raise ImageFileError(f"{path}: unsupported TIFF layout {arr.shape}")
  return arr


def _read_16bit_png(path: str) -> np.ndarray:
  import png
  width, height, rows, info = png.Reader(filename=path).asDirect()
  return np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(
      height, width, info["planes"])


def read_picture(path: str | os.PathLike) -> Picture:
  """Reads an image file at its own bit depth, in display orientation (see module doc).

  Raises:
    ImageFileError: missing, unreadable, corrupt or unsupported files (the message names
      the file and says why).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ImageFileError(f"{path}: no such file")
  try:
    with Image.open(path) as im:
      fmt = im.format or "?"
      raw = _raw_mode(im)  # before getexif(), which loads PNGs
      other_reader = (_tiff_needs_tifffile(im) if fmt == "TIFF" else
                      fmt == "PNG" and im.mode in ("LA", "RGB", "RGBA") and "16" in raw)
      orientation = int(im.getexif().get(EXIF_ORIENTATION, 1) or 1)
      icc = im.info.get("icc_profile")
      note = ""
      if other_reader:
        samples = _read_with_tifffile(path) if fmt == "TIFF" else _read_16bit_png(path)
      else:
        im.load()
        mode = im.mode
        if mode == "P" or (mode in ("L", "RGB") and "transparency" in im.info):
          target = {"P": "RGBA", "L": "LA", "RGB": "RGBA"}[mode]
          if mode == "P" and "transparency" not in im.info:
            target = "RGB"
          im, note = im.convert(target), ("palette" if mode == "P" else mode) + f" → {target}"
        elif mode in CONVERTED_MODES:
          im, note = im.convert(CONVERTED_MODES[mode]), f"{mode} → {CONVERTED_MODES[mode]}"
          if icc and mode not in ("1", "La", "RGBa", "RGBX", "PA"):
            icc, note = None, note + ", colour profile dropped"  # it described the old mode
        elif mode == "I" and raw in UNSIGNED_16:
          im = im.convert("I;16")
        elif mode not in EXACT_MODES:
          raise ImageFileError(f"{path}: unsupported image mode {mode!r} (raw {raw!r})")
        samples = np.asarray(im)
        if im.mode.startswith("I;16"):
          samples = samples.astype(np.uint16)
        if samples.ndim == 2:
          samples = samples[:, :, None]
  except ImageFileError:
    raise
  except (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError) as e:
    raise ImageFileError(f"{path}: not a readable image ({e})") from e
  if samples.dtype == np.float64:
    samples = samples.astype(np.float32)
  return Picture(orient(samples, orientation), fmt, note, icc)


# What each output extension is written as; formats that cannot hold the samples exactly
# (GIF's palette) are not offered. WebP is written lossless.
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF",
                  ".tiff": "TIFF", ".bmp": "BMP", ".webp": "WEBP"}


def check_writable(path: str, samples_dtype: Optional[np.dtype] = None,
                   channels: Optional[int] = None) -> str:
  """The format ``path`` would be written in; ``ImageFileError`` if it cannot hold the
  samples (16-bit: PNG or TIFF; float: TIFF; alpha: not JPEG) or is not an image format."""
  ext = os.path.splitext(path)[1].lower()
  fmt = OUTPUT_FORMATS.get(ext)
  if fmt is None:
    raise ImageFileError(f"{path}: cannot write {ext or 'files without an extension'}; "
                         f"use one of {', '.join(sorted(OUTPUT_FORMATS))}")
  dtype = np.dtype(samples_dtype) if samples_dtype is not None else None
  if dtype == np.uint16 and fmt not in ("PNG", "TIFF"):
    raise ImageFileError(f"{path}: 16-bit samples can only be written as PNG or TIFF")
  if dtype is not None and dtype.kind == "f" and fmt != "TIFF":
    raise ImageFileError(f"{path}: float samples can only be written as TIFF")
  if channels in (2, 4) and fmt == "JPEG":
    raise ImageFileError(f"{path}: JPEG cannot hold an alpha channel; write PNG or TIFF")
  return fmt


def write_picture(path: str | os.PathLike, picture: Picture, *, overwrite: bool = False,
                  jpeg_quality: int = JPEG_QUALITY) -> None:
  """Writes ``picture.samples`` to ``path`` in the format of its extension, atomically.

  Raises:
    n3jax.atomic.OutputExistsError: ``path`` exists and ``overwrite`` is False.
    ImageFileError: the format cannot hold these samples (see :func:`check_writable`).
  """
  path = os.fspath(path)
  samples = picture.samples
  channels = samples.shape[-1]
  fmt = check_writable(path, samples.dtype, channels)
  with atomic_file(path, overwrite=overwrite) as tmp:
    try:
      if samples.dtype == np.uint16 and channels > 1 and fmt == "PNG":
        _write_16bit_png(tmp, samples, picture.icc_profile)
      elif (samples.dtype == np.uint16 and channels > 1) or (
          samples.dtype == np.float32 and channels > 1):
        import tifffile
        tifffile.imwrite(tmp, samples, photometric="rgb" if channels >= 3 else "minisblack",
                         extrasamples=("unassalpha",) if channels in (2, 4) else None,
                         compression="zlib", iccprofile=picture.icc_profile)
      else:
        _write_with_pillow(tmp, fmt, samples, picture, jpeg_quality)
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise ImageFileError(f"{path}: cannot write this image ({e})") from e


def _write_16bit_png(path: str, samples: np.ndarray, icc_profile: Optional[bytes]) -> None:
  import png
  channels = samples.shape[-1]
  writer = png.Writer(samples.shape[1], samples.shape[0], greyscale=channels == 2,
                      alpha=channels in (2, 4), bitdepth=16)
  with open(path, "wb") as f:
    writer.write(f, samples.reshape(samples.shape[0], -1))
  if icc_profile:  # pypng writes no iCCP chunk: add it after IHDR
    chunks = list(png.Reader(filename=path).chunks())
    chunks.insert(1, (b"iCCP", b"ICC profile\0\0" + zlib.compress(icc_profile)))
    with open(path, "wb") as f:
      png.write_chunks(f, chunks)


def _write_with_pillow(tmp: str, fmt: str, samples: np.ndarray, picture: Picture,
                       jpeg_quality: int) -> None:
  channels = samples.shape[-1]
  im = Image.fromarray(samples[..., 0] if channels == 1 else samples)  # uint16 → I;16
  options = {}
  if picture.icc_profile and fmt in ("PNG", "JPEG", "TIFF", "WEBP"):
    options["icc_profile"] = picture.icc_profile
  if fmt == "JPEG":
    options.update(quality=jpeg_quality, subsampling=0)
  elif fmt == "WEBP":
    options.update(lossless=True)
  im.save(tmp, format=fmt, **options)
