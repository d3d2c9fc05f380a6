"""Patches: the reference's padding rule, extraction, fold∘unfold = id (windows: test_geometry)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from n3jax import ops


def _numpy_patches(x, p, s):
  b, h, w, c = x.shape
  n1, n2 = (h - p) // s + 1, (w - p) // s + 1
  out = np.zeros((b, n1, n2, p * p * c), x.dtype)
  for i in range(n1):
    for j in range(n2):
      out[:, i, j] = x[:, i * s:i * s + p, j * s:j * s + p, :].reshape(b, -1)
  return out


def test_padding_rule_of_the_reference():
  # pad = (-(size - 10)) mod 5; floor half before, ceil half after.
  assert ops.patch_padding(96, 10, 5) == (2, 2)  # 96 -> 100: 19 patches
  assert ops.patch_padding(481, 10, 5) == (2, 2)
  assert ops.patch_padding(321, 10, 5) == (2, 2)
  assert ops.patch_padding(256, 10, 5) == (2, 2)
  assert ops.patch_padding(100, 10, 5) == (0, 0)
  assert ops.patch_padding(97, 10, 5) == (1, 2)
  assert ops.patch_padding(99, 10, 5) == (0, 1)
  assert ops.grid_size(96, 10, 5) == 19
  with pytest.raises(ValueError, match="smaller than the patch size"):
    ops.patch_padding(8, 10, 5)


@pytest.mark.parametrize("p,s", [(10, 5), (4, 2), (5, 3), (3, 1), (6, 6)])
def test_extract_matches_numpy(p, s):
  rng = np.random.default_rng(0)
  h = p + 4 * s
  w = p + 3 * s
  x = rng.normal(size=(2, h, w, 3)).astype(np.float32)
  got = jax.jit(lambda x: ops.extract_patches(x, p, s))(x)
  np.testing.assert_array_equal(np.asarray(got), _numpy_patches(x, p, s))


@pytest.mark.parametrize("p,s", [(10, 5), (5, 3), (4, 4)])
@pytest.mark.parametrize("size", [(40, 40), (37, 53), (96, 81)])
def test_fold_of_unfold_is_identity(p, s, size):
  x = jax.random.uniform(jax.random.PRNGKey(1), (2, *size, 3))
  xp = ops.pad_for_patches(x, p, s)
  patches = ops.extract_patches(xp, p, s)
  back = ops.fold_patches(patches, xp.shape[1], xp.shape[2], p, s)
  back = ops.crop_patch_padding(back, size[0], size[1], p, s)
  np.testing.assert_allclose(np.asarray(back), np.asarray(x), rtol=1e-6, atol=1e-6)


def test_fold_averages_overlaps():
  # Patches that are constant c_m: every pixel becomes the mean of the c_m covering it.
  p, s, h = 4, 2, 8
  n = (h - p) // s + 1
  vals = np.arange(n * n, dtype=np.float32).reshape(1, n, n, 1)
  folded = np.asarray(ops.fold_patches(jnp.asarray(np.repeat(vals, p * p, -1)), h, h, p, s))
  expected = np.zeros((h, h))
  count = np.zeros((h, h))
  for i in range(n):
    for j in range(n):
      expected[i * s:i * s + p, j * s:j * s + p] += vals[0, i, j, 0]
      count[i * s:i * s + p, j * s:j * s + p] += 1
  np.testing.assert_allclose(folded[0, :, :, 0], expected / count, rtol=1e-6)
