"""Users' image files: read at their own bit depth and orientation, written back exactly."""

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms, ImageOps

from n3jax.data import imagefile

RNG = np.random.default_rng(0)


def _u16(*shape):
  return (RNG.random(shape) * 65535).astype(np.uint16)


def _u8(*shape):
  return (RNG.random(shape) * 255).astype(np.uint8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
  exif = Image.Exif()
  exif[imagefile.EXIF_ORIENTATION] = orientation
  Image.fromarray(_u8(5, 7, 3)).save(tmp_path / "o.png", exif=exif.tobytes())
  want = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
  np.testing.assert_array_equal(imagefile.read_picture(tmp_path / "o.png").samples, want)


@pytest.mark.parametrize("name,samples", [
    ("g16.png", _u16(6, 8, 1)), ("la16.png", _u16(6, 8, 2)), ("rgb16.png", _u16(6, 8, 3)),
    ("rgba16.png", _u16(6, 8, 4)), ("g16.tif", _u16(6, 8, 1)), ("rgb16.tif", _u16(6, 8, 3)),
    ("f32.tif", RNG.random((6, 8, 1)).astype(np.float32)), ("la.png", _u8(6, 8, 2)),
    ("rgba.png", _u8(6, 8, 4)), ("rgb.bmp", _u8(6, 8, 3)), ("rgb.webp", _u8(6, 8, 3)),
    ("rgb.tiff", _u8(6, 8, 3))])
def test_round_trips_are_exact(tmp_path, name, samples):
  imagefile.write_picture(tmp_path / name, imagefile.Picture(samples, "?"))
  back = imagefile.read_picture(tmp_path / name)
  assert back.samples.dtype == samples.dtype and back.bit_depth == (
      None if samples.dtype == np.float32 else 8 * samples.itemsize)
  np.testing.assert_array_equal(back.samples, samples)


def test_the_bit_depth_decides_the_scale_not_the_largest_value(tmp_path):
  dark = np.full((4, 4), 200, np.uint16)
  Image.fromarray(dark).save(tmp_path / "dark.png")
  unit = imagefile.to_unit(imagefile.read_picture(tmp_path / "dark.png").samples)
  np.testing.assert_allclose(unit, 200 / 65535)


def test_tiffs_pillow_would_get_wrong_go_through_tifffile(tmp_path):
  planar = _u16(3, 10, 12)
  tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
  np.testing.assert_array_equal(imagefile.read_picture(tmp_path / "planar.tif").samples,
                                np.moveaxis(planar, 0, -1))
  tifffile.imwrite(tmp_path / "signed.tif", np.full((4, 4), -5, np.int16))
  with pytest.raises(imagefile.ImageFileError, match="signed.tif.*signed integer"):
    imagefile.read_picture(tmp_path / "signed.tif")


def test_converted_modes_and_what_they_become(tmp_path):
  rgb = _u8(8, 9, 3)
  Image.fromarray(rgb).quantize(16).save(tmp_path / "p.png")
  Image.fromarray(rgb).save(tmp_path / "trns.png", transparency=(0, 0, 0))
  Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
  Image.fromarray(_u8(8, 9) > 128).save(tmp_path / "bw.png")
  cases = {"p.png": (3, "palette → RGB"), "trns.png": (4, "RGB → RGBA"),
           "cmyk.jpg": (3, "CMYK → RGB"), "bw.png": (1, "1 → L")}
  for name, (channels, note) in cases.items():
    picture = imagefile.read_picture(tmp_path / name)
    assert picture.samples.shape[-1] == channels and picture.samples.dtype == np.uint8, name
    assert picture.note.startswith(note), (name, picture.note)


def test_colour_profiles_are_kept_and_dropped_where_they_no_longer_fit(tmp_path):
  srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
  for name, samples in (("a.png", _u8(6, 7, 3)), ("b.png", _u16(6, 7, 3)),
                        ("c.tif", _u16(6, 7, 3))):
    imagefile.write_picture(tmp_path / name, imagefile.Picture(samples, "?", icc_profile=srgb))
    assert imagefile.read_picture(tmp_path / name).icc_profile == srgb, name
  Image.fromarray(_u8(6, 7, 3)).convert("CMYK").save(tmp_path / "cmyk.jpg", icc_profile=srgb)
  picture = imagefile.read_picture(tmp_path / "cmyk.jpg")
  assert picture.icc_profile is None and "profile dropped" in picture.note


def test_formats_that_cannot_hold_the_samples_are_refused_before_writing(tmp_path):
  for name, samples, match in (("x.jpg", _u16(4, 4, 1), "16-bit"), ("x.png", RNG.random(
      (4, 4, 1)).astype(np.float32), "float"), ("x.jpg", _u8(4, 4, 4), "alpha"),
                               ("x.gif", _u8(4, 4, 3), "cannot write .gif"),
                               ("noext", _u8(4, 4, 3), "without an extension")):
    with pytest.raises(imagefile.ImageFileError, match=match):
      imagefile.write_picture(tmp_path / name, imagefile.Picture(samples, "?"))
  assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 30])
def test_unreadable_files_name_the_file(tmp_path, content):
  (tmp_path / "bad.png").write_bytes(content)
  with pytest.raises(imagefile.ImageFileError, match="bad.png"):
    imagefile.read_picture(tmp_path / "bad.png")
