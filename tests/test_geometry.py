"""The search-window geometry (n3jax.ops.geometry): windows against a NumPy rendering of the
rule, tile regions against brute force, receptive radii and runnable sizes."""

import jax
import numpy as np
import pytest

from n3jax import ops
from n3jax.ops import geometry


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


@pytest.mark.parametrize("n,window,tile,reach", [
    (19, 15, 6, 0), (19, 15, 4, 1), (7, 15, 6, 0), (7, 15, 3, 2), (30, 5, 1, 0),
    (23, 5, 4, 1), (1, 3, 2, 0), (41, 15, 4, 1), (12, 3, 5, 2)])
def test_tile_regions_hold_the_windows_of_every_query_of_the_tile(n, window, tile, reach):
  num, region, start = geometry.tile_regions(n, window, tile, reach=reach)
  start = np.asarray(start)
  assert num == -(-(n + reach) // tile) and start.shape == (num,)
  assert region == min(tile + reach + min(window, n) - 1, n)
  w = min(window, n)
  for t in range(num):
    assert 0 <= start[t] <= n - region
    for p in range(max(t * tile - reach, 0), min((t + 1) * tile, n)):
      ws = int(geometry.window_start(p, n, window))
      assert start[t] <= ws and ws + w <= start[t] + region, (t, p)


def test_tile_regions_reject_bad_sizes():
  with pytest.raises(ValueError, match="tile=0"):
    geometry.tile_regions(10, 5, 0)
  with pytest.raises(ValueError, match="reach=-1"):
    geometry.tile_regions(10, 5, 3, reach=-1)


def test_window_candidates_of_traced_positions_equal_window_indices():
  n1, n2 = 9, 13
  idx = np.asarray(ops.window_indices(n1, n2, 5))
  rows, cols = jax.jit(lambda a, b: geometry.window_candidates(a, b, n1, n2, 5))(
      np.arange(n1)[:, None], np.arange(n2)[None, :])
  np.testing.assert_array_equal(np.asarray(rows * n2 + cols).reshape(n1 * n2, -1), idx)


def test_receptive_radii():
  assert geometry.conv_radius(6) == 6 and geometry.conv_radius(4, kernel_size=5) == 8
  # The paper's N³ block: 10x10 patches at stride 5, 15x15 windows, embedding depth 3.
  assert geometry.n3block_radius(10, 5, 15, 3) == 9 + 35 + 3 == 47
  with pytest.raises(ValueError, match="depth"):
    geometry.conv_radius(-1)


@pytest.mark.parametrize("size,kw,expected", [
    ((5, 5), dict(patch_size=10, stride=5, window=15, k=7), (20, 20)),
    ((40, 3), dict(patch_size=10, stride=5, window=15, k=7), (40, 20)),
    ((64, 64), dict(patch_size=10, stride=5, window=15, k=7), (64, 64)),
    ((5, 5), dict(patch_size=10, stride=5, window=5, k=2), (15, 15)),
])
def test_n3block_runnable_size_has_k_candidates_per_patch(size, kw, expected):
  h, w = geometry.n3block_runnable_size(*size, **kw)
  assert (h, w) == expected
  p, s = kw["patch_size"], kw["stride"]
  assert ops.num_candidates(ops.grid_size(h, p, s), ops.grid_size(w, p, s), kw["window"]) >= kw["k"]



@pytest.mark.parametrize("border", ["shift", "circular"])
@pytest.mark.parametrize("n,window,tile", [(13, 5, 4), (7, 9, 3), (20, 7, 8), (5, 3, 1)])
def test_pixel_window_tiles_give_each_querys_window(border, n, window, tile):
  """Brute force: the window of pixel p read through its tile's region is the rule's."""
  from tests.helpers.dense_attention import _window_offsets
  off, w = _window_offsets(n, window, border)
  num_tiles, region, start = geometry.pixel_window_tiles(n, window, tile, border=border)
  assert num_tiles == -(-n // tile) and w == geometry.window_side(n, window)
  for i in range(num_tiles):
    for t in range(min(tile, n - i * tile)):  # the padding queries' results are dropped
      p = i * tile + t
      got = region[i, start[i, t]:start[i, t] + w]
      want = np.argsort(np.where(off[p] >= 0, off[p], n + 1))[:w]  # pixels by window offset
      np.testing.assert_array_equal(got, want)


def test_attention_radius_and_borders():
  assert geometry.attention_radius(45, border="shift") == 22
  assert geometry.attention_radius(45, border="circular") == geometry.INFINITE_RADIUS
  with pytest.raises(ValueError, match="border"):
    geometry.pixel_window_tiles(10, 3, 2, border="reflect")
  with pytest.raises(ValueError, match="border"):
    geometry.attention_radius(3, border="zero")
