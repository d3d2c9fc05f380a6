"""Brute-force references for the windowed attention: every key, the window as a mask."""

import jax
import jax.numpy as jnp
import numpy as np


def _window_offsets(n, window, border):
  """NumPy rule, written independently: ``off[i, y]`` = window offset of pixel y in the
  window of pixel i along one axis, or -1 when outside."""
  w = min(window, n)
  off = -np.ones((n, n), np.int64)
  for i in range(n):
    if border == "shift":
      start = min(max(i - window // 2, 0), n - w)
      for o in range(w):
        off[i, start + o] = o
    else:
      for o in range(w):
        off[i, (i - w // 2 + o) % n] = o
  return off, w


def dense_reference(q, k, v, window, border, prior=None):
  """Brute force: all H·W keys, the window as a mask, the prior scattered into place."""
  b, h, w, _ = q.shape
  off1, w1 = _window_offsets(h, window, border)
  off2, w2 = _window_offsets(w, window, border)
  inside = (off1[:, None, :, None] >= 0) & (off2[None, :, None, :] >= 0)  # [h, w, h, w]
  logits = jnp.einsum("bije,byxe->bijyx", q, k)
  if prior is not None:
    o = np.clip(off1, 0, None)[:, None, :, None] * w2 + np.clip(off2, 0, None)[None, :, None, :]
    logits = logits + jnp.take_along_axis(
        prior.reshape(b, h, w, 1, 1, -1),
        jnp.asarray(o)[None, :, :, :, :, None], axis=5)[..., 0]
  logits = jnp.where(jnp.asarray(inside)[None], logits, -jnp.inf)
  wts = jax.nn.softmax(logits.reshape(b, h, w, h * w), axis=-1)
  out = jnp.einsum("bijn,bnc->bijc", wts, v.reshape(b, h * w, -1))
  # correlations in window order
  idx1 = np.stack([np.flatnonzero(off1[i] >= 0)[np.argsort(off1[i][off1[i] >= 0])]
                   for i in range(h)])  # [h, w1]
  idx2 = np.stack([np.flatnonzero(off2[j] >= 0)[np.argsort(off2[j][off2[j] >= 0])]
                   for j in range(w)])
  win = logits[:, np.arange(h)[:, None, None, None], np.arange(w)[None, :, None, None],
               idx1[:, None, :, None], idx2[None, :, None, :]]  # [b, h, w, w1, w2]
  return out, win.reshape(b, h, w, w1 * w2)
