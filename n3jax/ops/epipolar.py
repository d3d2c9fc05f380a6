"""Two-view geometry in pure JAX: essential matrices, epipolar distances, the weighted
eight-point solve.

Conventions: correspondences are ``[..., N, 4]`` rows ``(x1, y1, x2, y2)`` of coordinates
normalized by the cameras' intrinsics; the second camera sees ``X2 = R X1 + t``; the
essential matrix ``E = [t]_x R`` satisfies ``x2ᵀ E x1 = 0`` for homogeneous ``x = (x, y, 1)``
and is flattened row-major, ``e = E.ravel()``, so that ``x2ᵀ E x1 = kron(x2, x1) · e``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Geometry in full float32 on every backend (GPUs would otherwise use TF32 matmuls).
HIGHEST = jax.lax.Precision.HIGHEST


def skew(t: jax.Array) -> jax.Array:
  """``[..., 3] → [..., 3, 3]``: the matrix ``[t]_x`` with ``[t]_x v = t × v``."""
  z = jnp.zeros_like(t[..., 0])
  rows = [jnp.stack([z, -t[..., 2], t[..., 1]], -1),
          jnp.stack([t[..., 2], z, -t[..., 0]], -1),
          jnp.stack([-t[..., 1], t[..., 0], z], -1)]
  return jnp.stack(rows, -2)


def essential_from_pose(rotation: jax.Array, translation: jax.Array) -> jax.Array:
  """``E = [t]_x R`` of unit Frobenius norm: ``[..., 3, 3]``, ``[..., 3]`` → ``[..., 3, 3]``."""
  e = jnp.matmul(skew(translation), rotation, precision=HIGHEST)
  return e / jnp.linalg.norm(e, axis=(-2, -1), keepdims=True)


def _homogeneous(xy: jax.Array) -> jax.Array:
  return jnp.concatenate([xy, jnp.ones_like(xy[..., :1])], axis=-1)


def symmetric_epipolar_distance(correspondences: jax.Array, essential: jax.Array
                                ) -> jax.Array:
  """The squared symmetric epipolar distance of each correspondence, ``[..., N]``.

  ``(x2ᵀ E x1)² · (1 / |(E x1)_{0,1}|² + 1 / |(Eᵀ x2)_{0,1}|²)``: the squared distances
  of each point to the other's epipolar line, in normalized coordinates (as CNNet labels
  inliers: < 1e-4).

  Args:
    correspondences: ``[..., N, 4]``.
    essential: ``[..., 3, 3]``.
  """
  x1 = _homogeneous(correspondences[..., :2])
  x2 = _homogeneous(correspondences[..., 2:])
  ex1 = jnp.einsum("...ij,...nj->...ni", essential, x1, precision=HIGHEST)
  etx2 = jnp.einsum("...ji,...nj->...ni", essential, x2, precision=HIGHEST)
  residual = jnp.sum(x2 * ex1, axis=-1)
  tiny = jnp.finfo(residual.dtype).tiny
  return jnp.square(residual) * (1.0 / jnp.maximum(jnp.sum(jnp.square(ex1[..., :2]), -1), tiny)
                                 + 1.0 / jnp.maximum(jnp.sum(jnp.square(etx2[..., :2]), -1),
                                                     tiny))


def eight_point_weights(logits: jax.Array) -> jax.Array:
  """CNNet's weights of the eight-point solve from inlier logits: ``relu(tanh(logits))``."""
  return jax.nn.relu(jnp.tanh(logits))


def weighted_eight_point(correspondences: jax.Array, weights: jax.Array) -> jax.Array:
  """The essential matrix that the weighted correspondences agree on, ``[..., 3, 3]``.

  The eigenvector of the smallest eigenvalue of ``Xᵀ diag(w) X``, ``X = [kron(x2, x1)]``
  (Yi et al. 2018's differentiable solve), of unit norm and sign-ambiguous: compare with
  :func:`essential_distance`. Needs at least 8 correspondences of positive weight in
  general position; differentiable in ``weights`` where the smallest eigenvalue is
  simple.

  Args:
    correspondences: ``[..., N, 4]``.
    weights: ``[..., N]``, non-negative.
  """
  if correspondences.shape[-1] != 4 or weights.shape != correspondences.shape[:-1]:
    raise ValueError(f"need correspondences [..., N, 4] and weights [..., N], got "
                     f"{correspondences.shape} and {weights.shape}")
  x1 = _homogeneous(correspondences[..., :2])
  x2 = _homogeneous(correspondences[..., 2:])
  rows = (x2[..., :, None] * x1[..., None, :]).reshape(*x1.shape[:-1], 9)
  gram = jnp.einsum("...ni,...n,...nj->...ij", rows, weights, rows, precision=HIGHEST)
  _, vectors = jnp.linalg.eigh(gram)
  e = vectors[..., :, 0]
  return (e / jnp.linalg.norm(e, axis=-1, keepdims=True)).reshape(*e.shape[:-1], 3, 3)


def essential_distance(estimate: jax.Array, truth: jax.Array) -> jax.Array:
  """``min(|ê − e|², |ê + e|²)`` of unit-norm flattened essential matrices, ``[...]``: the
  essential-matrix loss, blind to the sign that :func:`weighted_eight_point` cannot fix."""
  a = estimate.reshape(*estimate.shape[:-2], 9)
  b = truth.reshape(*truth.shape[:-2], 9)
  a = a / jnp.linalg.norm(a, axis=-1, keepdims=True)
  b = b / jnp.linalg.norm(b, axis=-1, keepdims=True)
  return jnp.minimum(jnp.sum(jnp.square(a - b), -1), jnp.sum(jnp.square(a + b), -1))
