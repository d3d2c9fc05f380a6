"""Every public op works on unbatched input, with several leading axes, and under vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from n3jax import ops

KEY = jax.random.PRNGKey(0)


def _normal(i, shape):
  return jax.random.normal(jax.random.fold_in(KEY, i), shape)


def _cases():
  """``name -> (fn, batched args [B=3 leading], per-argument core rank or None)``."""
  n1 = n2 = 6
  window = 3
  o = ops.num_candidates(n1, n2, window)
  idx = ops.window_indices(n1, n2, window)  # [36, O]
  w_win = jax.nn.softmax(_normal(1, (3, n1 * n2, o, 2)), axis=-2)
  grid = _normal(2, (3, n1, n2, 4))
  blocks = _normal(3, (3, n1 + 1, n2 + 1, 5))  # q = 2 → 6x6 patches
  w_blk = jax.nn.softmax(_normal(4, (3, n1 * n2, o, 2)), axis=-2)
  img = _normal(5, (3, 13, 11, 2))
  return {
      "pairwise_sq_distances": (ops.pairwise_sq_distances,
                                (_normal(6, (3, 7, 4)), _normal(7, (3, 9, 4))), (2, 2)),
      "gather_candidates": (ops.gather_candidates,
                            (_normal(8, (3, 9, 4)), jax.random.randint(KEY, (3, 7, 5), 0, 9)),
                            (2, 2)),
      "indexed_sq_distances": (lambda q, d, i: ops.indexed_sq_distances(q, d, i, query_chunk=3),
                               (_normal(9, (3, 7, 4)), _normal(10, (3, 9, 4)),
                                jax.random.randint(KEY, (3, 7, 5), 0, 9)), (2, 2, 2)),
      "continuous_knn_weights": (lambda l, t: ops.continuous_knn_weights(l, t, k=3),
                                 (_normal(11, (3, 7, 9)), jnp.full((3, 7), 0.5)), (2, 1)),
      "hard_knn_weights": (lambda l: ops.hard_knn_weights(l, k=3), (_normal(12, (3, 7, 9)),),
                           (2,)),
      "aggregate": (ops.aggregate, (jax.nn.softmax(_normal(14, (3, 7, 9, 2)), axis=-2),
                                    _normal(15, (3, 9, 4))), (3, 2)),
      "aggregate(indices)": (lambda w, d: ops.aggregate(w, d, indices=idx, query_chunk=5),
                             (w_win, _normal(16, (3, n1 * n2, 4))), (3, 2)),
      "neural_nearest_neighbors": (
          lambda q, v: ops.neural_nearest_neighbors(q, q, v, 0.5, k=2, exclude_self=True),
          (_normal(17, (3, 8, 4)), _normal(18, (3, 8, 2))), (2, 2)),
      "pad_for_patches": (lambda x: ops.pad_for_patches(x, 5, 3), (img,), (3,)),
      "extract_patches": (lambda x: ops.extract_patches(ops.pad_for_patches(x, 5, 3), 5, 3),
                          (img,), (3,)),
      "fold_patches": (lambda p: ops.fold_patches(p, 14, 11, 5, 3),
                       (_normal(19, (3, 4, 3, 50)),), (3,)),
      "crop_patch_padding": (lambda x: ops.crop_patch_padding(x, 13, 11, 5, 3),
                             (_normal(20, (3, 14, 11, 2)),), (3,)),
      "windowed_sq_distances": (lambda g: ops.windowed_sq_distances(g, window, tile=4),
                                (grid,), (3,)),
      "windowed_aggregate": (lambda w, g: ops.windowed_aggregate(w, g, window, tile=4),
                             (w_win, grid), (3, 3)),
      "to_blocks": (lambda x: ops.to_blocks(x, 2), (_normal(21, (3, 8, 6, 2)),), (3,)),
      "from_blocks": (lambda b: ops.from_blocks(b, 2), (_normal(22, (3, 4, 3, 8)),), (3,)),
      "block_sq_distances": (lambda b: ops.block_sq_distances(b, 2, window, tile=4),
                             (blocks,), (3,)),
      "block_aggregate_sum": (lambda w, b: ops.block_aggregate_sum(w, b, 2, window, tile=3),
                              (w_blk, blocks), (3, 3)),
  }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_unbatched_vmapped_and_two_axis_input_equal_the_batched_op(name):
  fn, args, _ = CASES[name]
  batched = np.asarray(fn(*args))
  check = lambda got, want: np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5,
                                                       atol=1e-5)
  check(fn(*(a[1] for a in args)), batched[1])  # no leading axis at all
  check(jax.vmap(fn)(*args), batched)
  check(fn(*(a[None] for a in args))[0], batched)  # [3, ...] → [1, 3, ...]


def test_shared_indices_are_not_copied_per_batch_item():
  # [M, O] indices serve every leading axis; per-item [..., M, O] indices may differ.
  db = _normal(30, (2, 9, 4))
  shared = jax.random.randint(KEY, (7, 5), 0, 9)
  per_item = jnp.stack([shared, (shared + 1) % 9])
  a = ops.gather_candidates(db, shared)
  b = ops.gather_candidates(db, per_item)
  np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
  np.testing.assert_array_equal(np.asarray(b[1]), np.asarray(db[1][(shared + 1) % 9]))


def test_concrete_weights_take_any_leading_axes_and_per_item_keys_under_vmap():
  # Random: the noise is drawn for the shape it is given, so the equalities above do not
  # hold; each call is the deterministic relaxation of its own perturbed logits.
  logits, keys = _normal(13, (3, 7, 9)), jax.random.split(KEY, 3)
  fn = lambda l, key: ops.concrete_knn_weights(l, 0.5, k=3, key=key)
  for w in (fn(logits[0, 0], keys[0]), fn(logits, keys[0]), jax.vmap(fn)(logits, keys)):
    assert w.shape[-2:] == (9, 3)
    np.testing.assert_allclose(np.asarray(w.sum(axis=-2)), 1.0, rtol=1e-5)


def test_batched_ops_take_their_arrays_by_keyword_too():
  img = _normal(40, (13, 11, 2))
  by_name = ops.extract_patches(x=ops.pad_for_patches(img, 5, 3), patch_size=5, stride=3)
  np.testing.assert_array_equal(np.asarray(by_name),
                                np.asarray(ops.extract_patches(ops.pad_for_patches(img, 5, 3), 5, 3)))
