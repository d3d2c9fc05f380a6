"""``python -m n3jax.verify trainstep``: check n3jax's training math against the official code.

  python -m n3jax.verify trainstep --fixture n3net_sigma25_trainstep.npz \
      --weights n3net_gauss_sigma25.t7
  python -m n3jax.verify trainstep --fixture n3net_sigma25_trainstep_f64.npz \
      --weights n3net_gauss_sigma25.t7 --x64

The fixture holds one training step of the official PyTorch N³Net on a fixed batch, with the
official σ=25 weights (``shared/pretrained/fixtures/TRAINSTEP.md``). This runs n3jax's own
training forward and backward (train-mode BatchNorm, the reference loss) from the same
weights on the same batch and compares, per group, the largest error with its tolerance:
the loss, the prediction, every gradient (through the state-dict name mapping), the
BatchNorm running statistics after the step, and one Adam step with the weight-decay mask
fed the fixture's gradients. Run it on a new backend (GPU, TPU) to check that n3jax
computes the right thing there. Exit status 1 when a group is out of tolerance.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

# Gradients that are zero in exact math (TRAINSTEP.md): compared with an absolute tolerance.
ZERO_GRADIENTS = ("nls.0.embedcnn.6.bias", "nls.1.embedcnn.6.bias",
                  "nls.0.n3aggregation.aggregation.nnn.bn.bias",
                  "nls.1.n3aggregation.aggregation.nnn.bn.bias")
ZERO_GRADIENT_ATOL = 1e-5
# Tolerances (TRAINSTEP.md, measured on the reference itself): float64 ports agree to 1e-6;
# float32 runs of the official code differ from its float64 run by the amounts below.
TOLERANCES = {
    True: {"loss": 1e-6, "prediction": 1e-6, "gradients": 1e-6, "bn_statistics": 1e-6,
           "adam": 1e-6},
    False: {"loss": 1e-5, "prediction": 1e-4, "gradients": 5e-2, "bn_statistics": 1e-5,
            "adam": 1e-5},
}
# The reference's optimizer: Adam with L2 weight decay added to the gradient.
ADAM = dict(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4)


@dataclasses.dataclass
class Check:
  """One group: the largest error (``where``: which tensor) against ``tolerance``."""
  group: str
  error: float
  tolerance: float
  where: str
  measure: str

  @property
  def ok(self) -> bool:
    return bool(self.error <= self.tolerance)


def _get(tree: Mapping[str, Any], path: Tuple[str, ...]) -> np.ndarray:
  for key in path:
    tree = tree[key]
  return np.asarray(tree)


def _to_torch(value: np.ndarray, layout: str) -> np.ndarray:
  return value.transpose(3, 2, 0, 1) if layout == "oihw" else value


def _rel(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def trainstep_checks(fixture: Mapping[str, np.ndarray], weights: str, *, x64: bool
                     ) -> List[Check]:
  """Runs one n3jax training step on the fixture's batch and compares it, group by group.

  Args:
    fixture: the loaded ``.npz`` (``clean``, ``noisy`` ``[N, 1, H, W]``, ``train/loss``,
      ``train/pred``, ``grad/<name>``, ``bn_after/<name>``, optionally ``adam_torch2/<name>``).
    weights: the official checkpoint the fixture's step started from.
    x64: compute in float64 (``jax_enable_x64`` must already be on).
  """
  import jax
  import jax.numpy as jnp
  import optax

  from n3jax.convert import load_official
  from n3jax.convert.n3net import key_mapping
  from n3jax.train.optim import decay_mask
  from n3jax.train.step import denoising_loss

  dtype = np.float64 if x64 else np.float32
  if x64 and not jax.config.jax_enable_x64:
    raise ValueError("x64 needs jax_enable_x64 on before any array is made")
  tol = TOLERANCES[x64]
  model, variables, _ = load_official(weights, task="denoise")
  variables = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), variables)
  nhwc = lambda a: jnp.asarray(np.transpose(a, (0, 2, 3, 1)), dtype)  # noqa: E731
  noisy, clean = nhwc(fixture["noisy"]), nhwc(fixture["clean"])

  def loss_fn(params):
    pred, updates = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                noisy, train=True, mutable=["batch_stats"])
    return jnp.mean(denoising_loss(pred, clean)), (pred, updates["batch_stats"])

  (loss, (pred, stats)), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
      variables["params"])
  ref_loss = float(fixture["train/loss"])
  checks = [Check("loss", abs(float(loss) - ref_loss) / ref_loss, tol["loss"], "train/loss",
                  "relative"),
            Check("prediction", float(np.abs(np.transpose(np.asarray(pred), (0, 3, 1, 2))
                                             - fixture["train/pred"]).max()),
                  tol["prediction"], "train/pred", "max |Δ|")]
  rows, _ = key_mapping()
  grad_errors, zero_errors, bn_errors = [], [], []
  for name, col, path, layout in rows:
    if col == "params":
      g, ref = _to_torch(_get(grads, path), layout), fixture["grad/" + name]
      if name in ZERO_GRADIENTS:
        zero_errors.append((float(np.abs(g - ref).max()), name))
      else:
        grad_errors.append((float(np.linalg.norm(g - ref) / max(np.linalg.norm(ref), 1e-30)),
                            name))
    else:
      bn_errors.append((_rel(_get(stats, path), fixture["bn_after/" + name]), name))
  checks.append(Check("gradients", max(grad_errors)[0], tol["gradients"],
                      max(grad_errors)[1], "per-tensor relative L2"))
  checks.append(Check("zero gradients", max(zero_errors)[0], ZERO_GRADIENT_ATOL,
                      max(zero_errors)[1], "max |Δ| (zero in exact math)"))
  checks.append(Check("bn_statistics", max(bn_errors)[0], tol["bn_statistics"],
                      max(bn_errors)[1], "relative"))
  if any(k.startswith("adam_torch2/") for k in fixture):
    # One Adam step fed the fixture's own gradients (step 1 is ≈ lr·sign(g), so feeding
    # n3jax's gradients would test those again, amplified where |g| is tiny).
    params = variables["params"]
    fed = jax.tree_util.tree_map(np.zeros_like, jax.tree_util.tree_map(np.asarray, params))
    for name, col, path, layout in rows:
      if col == "params":
        node = fed
        for key in path[:-1]:
          node = node[key]
        g = fixture["grad/" + name].astype(dtype)
        node[path[-1]] = g.transpose(2, 3, 1, 0) if layout == "oihw" else g
    tx = optax.chain(optax.add_decayed_weights(ADAM["weight_decay"], mask=decay_mask),
                     optax.adam(ADAM["learning_rate"], b1=ADAM["b1"], b2=ADAM["b2"],
                                eps=ADAM["eps"]))
    updates, _ = tx.update(fed, tx.init(params), params)
    stepped = optax.apply_updates(params, updates)
    adam_errors = [(_rel(_to_torch(_get(stepped, path), layout),
                         fixture["adam_torch2/" + name]), name)
                   for name, col, path, layout in rows if col == "params"]
    checks.append(Check("adam", max(adam_errors)[0], tol["adam"], max(adam_errors)[1],
                        "relative"))
  return checks


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m n3jax.verify", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  ts = sub.add_parser("trainstep", help="one training step against the official code")
  ts.add_argument("--fixture", required=True, help="n3net_sigma25_trainstep[_f64].npz")
  ts.add_argument("--weights", required=True, help="the official n3net_gauss_sigma25.t7")
  ts.add_argument("--x64", action="store_true", help="compute in float64 (use the _f64 file)")
  args = parser.parse_args(argv)
  import jax
  if args.x64:
    jax.config.update("jax_enable_x64", True)
  try:
    with np.load(args.fixture, allow_pickle=False) as f:
      fixture: Dict[str, np.ndarray] = {k: f[k] for k in f.files}
  except (OSError, ValueError) as e:
    print(f"error: --fixture {args.fixture}: {e}", file=sys.stderr)
    return 1
  checks = trainstep_checks(fixture, args.weights, x64=args.x64)
  print(f"n3jax training step vs the official code ({'float64' if args.x64 else 'float32'}, "
        f"{jax.default_backend()})")
  for c in checks:
    print(f"  {c.group:15s} {c.error:10.3g}  (tolerance {c.tolerance:.0e}, {c.measure}; "
          f"worst: {c.where})  {'ok' if c.ok else 'OUT OF TOLERANCE'}")
  return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
  sys.exit(main())
