"""Patches and windows: the reference's padding rule, fold∘unfold = id, window indices."""

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


def _numpy_window(n1, n2, window):
  w1, w2 = min(window, n1), min(window, n2)
  rows = []
  for i in range(n1):
    for j in range(n2):
      t = min(max(i - window // 2, 0), n1 - w1)
      l = min(max(j - window // 2, 0), n2 - w2)
      rows.append([(t + a) * n2 + (l + b) for a in range(w1) for b in range(w2)
                   if (t + a, l + b) != (i, j)])
  return np.array(rows)


@pytest.mark.parametrize("n1,n2", [(15, 15), (19, 23), (40, 17), (7, 7), (3, 20), (1, 5)])
def test_window_indices_match_the_rule(n1, n2):
  idx = np.asarray(ops.window_indices(n1, n2, 15))
  np.testing.assert_array_equal(idx, _numpy_window(n1, n2, 15))
  m = np.arange(n1 * n2)[:, None]
  assert idx.shape == (n1 * n2, min(15, n1) * min(15, n2) - 1)
  assert (idx != m).all(), "the query itself must not be a candidate"
  assert idx.min() >= 0 and idx.max() < n1 * n2
  assert all(len(set(r)) == len(r) for r in idx.tolist()), "no duplicate candidates"


def test_window_is_shifted_inward_at_borders_not_cropped():
  n1 = n2 = 30
  idx = np.asarray(ops.window_indices(n1, n2, 15))
  # Corner (0, 0): window rows/cols 0..14, still 224 candidates.
  corner = idx[0]
  assert corner.shape == (224,)
  assert set(corner // n2) == set(range(15)) and set(corner % n2) == set(range(15))
  # Interior (10, 12): rows 3..17, cols 5..19 (centred).
  interior = idx[10 * n2 + 12]
  assert set(interior // n2) == set(range(3, 18)) and set(interior % n2) == set(range(5, 20))
  # Bottom-right corner: rows/cols 15..29.
  last = idx[-1]
  assert set(last // n2) == set(range(15, 30)) and set(last % n2) == set(range(15, 30))


def test_small_grid_shrinks_the_window():
  # A 40x40 image gives a 7x7 grid: the window becomes the whole grid, 48 candidates.
  n = ops.grid_size(40, 10, 5)
  assert n == 7
  idx = np.asarray(ops.window_indices(n, n, 15))
  assert idx.shape == (49, 48)
  with pytest.raises(ValueError, match="no candidate"):
    ops.window_indices(1, 1, 15)
