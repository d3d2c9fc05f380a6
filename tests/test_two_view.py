"""The synthetic two-view benchmark and the epipolar ops (paper Sec. 5.5's geometry)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from n3jax.data.two_view import TwoViewSpec, make_batch, make_pair, rotation_from_axis_angle
from n3jax.ops import epipolar

SMALL = TwoViewSpec(num_points=400, split_sizes=(10, 3, 3))


def test_pairs_are_a_pure_function_of_seed_split_and_index():
  a = make_pair(2, split="val", seed=5, spec=SMALL)
  b = make_pair(2, split="val", seed=5, spec=SMALL)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  other = [make_pair(2, split="test", seed=5, spec=SMALL), make_pair(1, split="val", seed=5,
                                                                     spec=SMALL),
           make_pair(2, split="val", seed=6, spec=SMALL)]
  for o in other:
    assert not np.array_equal(o["xs"], a["xs"])
  with pytest.raises(IndexError, match="val has 3 pairs"):
    make_pair(3, split="val", spec=SMALL)
  with pytest.raises(ValueError, match="split"):
    make_pair(0, split="training", spec=SMALL)


def test_labels_follow_the_epipolar_constraint():
  spec = TwoViewSpec(num_points=2000, outlier_ratio=0.4, split_sizes=(5, 1, 1))
  for i in range(3):
    p = make_pair(i, spec=spec)
    assert p["xs"].shape == (2000, 4) and p["is_outlier"].sum() == 800
    inliers, outliers = ~p["is_outlier"], p["is_outlier"]
    # With 1 px of noise the true matches stay within the threshold; random pairs mostly not.
    assert p["label"][inliers].mean() > 0.97
    assert p["label"][outliers].mean() < 0.05
    # Without noise the true matches satisfy x2ᵀ E x1 = 0 to float precision.
    exact = make_pair(i, spec=TwoViewSpec(num_points=2000, outlier_ratio=0.4, pixel_noise=0.0,
                                          split_sizes=(5, 1, 1)))
    d = np.asarray(epipolar.symmetric_epipolar_distance(jnp.asarray(exact["xs"]),
                                                        jnp.asarray(exact["E"], jnp.float32)))
    assert d[~exact["is_outlier"]].max() < 1e-9
    np.testing.assert_allclose(exact["R"] @ exact["R"].T, np.eye(3), atol=1e-12)
    assert np.linalg.norm(exact["E"]) == pytest.approx(1.0, rel=1e-6)


def test_eight_point_recovers_the_essential_matrix_from_noise_free_inliers():
  spec = TwoViewSpec(num_points=500, pixel_noise=0.0, split_sizes=(4, 1, 1))
  batch = make_batch(range(4), spec=spec)
  outlier = np.stack([make_pair(i, spec=spec)["is_outlier"] for i in range(4)])
  xs, truth = jnp.asarray(batch["xs"]), jnp.asarray(batch["E"], jnp.float32)
  estimate = epipolar.weighted_eight_point(xs, jnp.asarray(~outlier, jnp.float32))
  assert float(jnp.max(epipolar.essential_distance(estimate, truth))) < 1e-6
  # Uniform weights over inliers and outliers do not find it: the weights matter.
  uniform = epipolar.weighted_eight_point(xs, jnp.ones(outlier.shape))
  assert float(jnp.min(epipolar.essential_distance(uniform, truth))) > 1e-2
  # Exactly eight noise-free inliers are enough.
  idx = np.flatnonzero(~outlier[0])[:8]
  eight = epipolar.weighted_eight_point(xs[0, idx], jnp.ones(8))
  assert float(epipolar.essential_distance(eight, truth[0])) < 1e-4


def test_eight_point_is_differentiable_in_the_weights():
  spec = TwoViewSpec(num_points=200, pixel_noise=0.5, split_sizes=(1, 1, 1))
  p = make_pair(0, spec=spec)
  xs, truth = jnp.asarray(p["xs"]), jnp.asarray(p["E"], jnp.float32)
  logits = jnp.zeros(200)
  loss = lambda z: epipolar.essential_distance(  # noqa: E731
      epipolar.weighted_eight_point(xs, jax.nn.sigmoid(z)), truth)
  g = jax.grad(loss)(logits)
  assert bool(jnp.all(jnp.isfinite(g)))
  # One gradient step on the weights lowers the essential-matrix loss.
  assert float(loss(logits - 50.0 * g)) < float(loss(logits))
  # The loss is blind to the sign of E.
  assert float(epipolar.essential_distance(-truth, truth)) == pytest.approx(0.0, abs=1e-12)


def test_essential_from_pose_and_skew():
  r = jnp.asarray(rotation_from_axis_angle(np.array([0, 0, 1.0]), 0.3), jnp.float32)
  t = jnp.asarray([0.2, -0.1, 1.0])
  v = jnp.asarray([0.5, 2.0, -1.0])
  np.testing.assert_allclose(np.asarray(epipolar.skew(t) @ v), np.cross(t, v), atol=1e-6)
  e = epipolar.essential_from_pose(r, t)
  assert float(jnp.linalg.norm(e)) == pytest.approx(1.0, rel=1e-6)
  sv = np.linalg.svd(np.asarray(e), compute_uv=False)  # an essential matrix: (s, s, 0)
  assert sv[0] == pytest.approx(sv[1], rel=1e-5) and sv[2] < 1e-6


def test_pose_is_recovered_from_the_true_essential_matrix_and_scored():
  from n3jax.evaluate.pose import pose_errors, pose_map, recover_pose
  spec = TwoViewSpec(num_points=300, pixel_noise=0.0, split_sizes=(6, 1, 1))
  for i in range(6):
    p = make_pair(i, spec=spec)
    r, t = recover_pose(p["E"], p["xs"], ~p["is_outlier"])
    err_r, err_t = pose_errors(r, t, p["R"], p["t"])
    assert err_r < 1e-3 and err_t < 1e-3  # degrees: the cheirality test picks the true pose
    # A wrong candidate (the twisted pair) is far off.
    assert pose_errors(r.T, t, p["R"], p["t"])[0] > 1 or np.allclose(p["R"], np.eye(3))
  scores = pose_map([(1, 2), (7, 3), (30, 1), (float("nan"), 0)])
  assert scores == {"map5": 0.25, "map10": 0.375, "map20": 0.4375}
  # A failed pose (NaN anywhere) never counts as a success.
  assert pose_map([(0.0, float("nan")), (float("nan"), 0.0)])["map20"] == 0.0


def test_classification_scores():
  from n3jax.evaluate.pose import classification_scores
  s = classification_scores(np.array([1.0, -1, 2, -3, 0.5]), np.array([1, 1, 0, 0, 1]))
  assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
  assert s["f1"] == pytest.approx(2 / 3)
  assert classification_scores(np.array([-1.0]), np.array([0]))["f1"] == 0.0


@pytest.mark.parametrize("name", ["cnnet", "cnnet_n3"])
def test_set_models_are_permutation_equivariant(name):
  from n3jax.nn import create_model
  model = create_model(name, features=16, num_blocks=4, **(
      {"n3_after": 2, "embed_features": 8} if name == "cnnet_n3" else {}))
  xs = jnp.asarray(make_batch(range(2), spec=SMALL)["xs"][:, :64])
  variables = model.init(jax.random.PRNGKey(0), xs)
  perm = np.random.default_rng(0).permutation(64)
  for train in (False, True):
    def run(x, train=train):
      out = model.apply(variables, x, train=train, mutable=["batch_stats"] if train else False)
      return out[0] if train else out
    logits = run(xs)
    assert logits.shape == (2, 64) and bool(jnp.all(jnp.isfinite(logits)))
    np.testing.assert_allclose(np.asarray(run(xs[:, perm])), np.asarray(logits)[:, perm],
                               rtol=1e-4, atol=1e-5)


def test_cnnet_n3_has_the_release_shape():
  from n3jax.nn import create_model
  model = create_model("cnnet_n3")
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 4))))
  p = shapes["params"]
  assert p["block_6"]["dense_0"]["kernel"].shape == (128, 32)  # 128 / (k + 1)
  assert p["block_7"]["dense_0"]["kernel"].shape == (128, 128)  # concatenated back
  assert p["n3block"]["embed"]["dense_out"]["kernel"].shape[-1] == 32
  assert len([k for k in p if k.startswith("block_")]) == 12
  assert "n3block" not in jax.eval_shape(lambda: create_model("cnnet").init(
      jax.random.PRNGKey(0), jnp.zeros((1, 32, 4))))["params"]
  with pytest.raises(ValueError, match="divisible"):
    create_model("cnnet_n3", features=130).init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 4)))


def test_benchmark_spec_is_checked():
  for bad, message in ((dict(depth_range=(5, 1)), "depth_range"),
                       (dict(image_size=(0, 10)), "image_size"),
                       (dict(inlier_threshold=0), "inlier_threshold"),
                       (dict(outlier_ratio=1.0), "outlier_ratio")):
    with pytest.raises(ValueError, match=message):
      TwoViewSpec(**bad)
  # A scene the second camera cannot see fails in bounded time, saying what to change.
  blind = TwoViewSpec(num_points=50, outlier_ratio=0.0, depth_range=(0.01, 0.02),
                      baseline_range=(50.0, 60.0), split_sizes=(1, 1, 1))
  with pytest.raises(ValueError, match="too few scene points"):
    make_pair(0, spec=blind)
