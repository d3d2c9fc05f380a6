"""Mapping the official N³Net state dict (PyTorch names, OIHW) onto n3jax's Flax variables."""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from n3jax.convert.torch_legacy import load_legacy_checkpoint
from n3jax.nn import create_model

# sha256 of the official checkpoints (shared/docs/reference-n3net.md).
OFFICIAL_SHA256 = {
    "ca3ceea2f9f11cf685a14c0444aeeb3f0841b68deb665133b22c5e9eacf37ff4": 25,
    "ffa39e15ba8a71992103cf2a223b1ef084cfca5c2e2b7724b277c88d2ec04a02": 50,
    "640a2eee3d5c8675fbf89b78f91578f0a8cce5572132c740663a788ecb485d9c": 70,
}

Path = Tuple[str, ...]


def _conv(prefix: str, dest: Path, bias: bool) -> List[Tuple[str, str, Path, str]]:
  rows = [(prefix + ".weight", "params", dest + ("kernel",), "oihw")]
  if bias:
    rows.append((prefix + ".bias", "params", dest + ("bias",), ""))
  return rows


def _bn(prefix: str, dest: Path) -> List[Tuple[str, str, Path, str]]:
  return [(prefix + ".weight", "params", dest + ("scale",), ""),
          (prefix + ".bias", "params", dest + ("bias",), ""),
          (prefix + ".running_mean", "batch_stats", dest + ("mean",), ""),
          (prefix + ".running_var", "batch_stats", dest + ("var",), "")]


def key_mapping(*, num_dncnns: int = 3, depth: int = 6, embed_depth: int = 3
                ) -> Tuple[List[Tuple[str, str, Path, str]], List[str]]:
  """The official names → (collection, Flax path, layout) table, and the unused names.

  Returns:
    ``(rows, unused)``: each row is ``(torch_name, collection, path, layout)`` with layout
    ``"oihw"`` for conv kernels (transposed to HWIO) and ``""`` otherwise; ``unused``
    lists the names present in the file that the forward pass never reads (``bn1``).
  """
  rows, unused = [], []
  for b in range(num_dncnns):
    t, f = f"blocks.{b}", (f"dncnn_{b}",)
    rows += _conv(f"{t}.conv1", f + ("conv_in",), bias=True)
    unused += [f"{t}.bn1.{n}" for n in ("weight", "bias", "running_mean", "running_var")]
    for i in range(depth - 2):
      rows += _conv(f"{t}.layer1.{3 * i}", f + (f"conv_{i}",), bias=False)
      rows += _bn(f"{t}.layer1.{3 * i + 1}", f + (f"bn_{i}",))
    rows += _conv(f"{t}.conv2", f + ("conv_out",), bias=True)
  for n in range(num_dncnns - 1):
    t, f = f"nls.{n}", (f"n3block_{n}",)
    for net in ("embedcnn", "tempcnn"):
      for i in range(embed_depth - 1):
        rows += _conv(f"{t}.{net}.{3 * i}", f + (net, f"conv_{i}"), bias=False)
        rows += _bn(f"{t}.{net}.{3 * i + 1}", f + (net, f"bn_{i}"))
      rows += _conv(f"{t}.{net}.{3 * (embed_depth - 1)}", f + (net, "conv_out"), bias=True)
    rows += _bn(f"{t}.n3aggregation.aggregation.nnn.bn", f + ("distance_bn",))
  return rows, unused


def state_dict_to_variables(state: Mapping[str, np.ndarray], *, model_name: str = "n3net",
                            model_kwargs: Optional[Mapping[str, Any]] = None
                            ) -> Dict[str, Any]:
  """Converts an official N³Net state dict to ``{"params", "batch_stats"}`` for ``model_name``.

  Every name must be mapped or known to be unused, every shape must match the Flax
  model's, and every value must be finite; otherwise a ``ValueError`` lists the problems.
  """
  model_kwargs = dict(model_kwargs or {})
  model = create_model(model_name, **model_kwargs)
  rows, unused = key_mapping(num_dncnns=model.num_dncnns, depth=model.depth,
                             embed_depth=model.embed_depth)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, 80, 80, 1)), train=False))
  expected = {(col,) + path: s.shape
              for col in shapes
              for path, s in _flatten(shapes[col])}
  problems = []
  known = {r[0] for r in rows} | set(unused)
  problems += [f"unexpected key {k}" for k in state if k not in known]
  problems += [f"missing key {r[0]}" for r in rows if r[0] not in state]
  if len(rows) != len(expected):
    problems.append(f"{len(rows)} mapped tensors for {len(expected)} model variables")
  out: Dict[str, Any] = {}
  for name, col, path, layout in rows:
    if name not in state:
      continue
    value = np.asarray(state[name], np.float32)
    source_shape = value.shape
    bad = int(value.size - np.count_nonzero(np.isfinite(value)))
    if bad:
      problems.append(f"{name} holds {bad} NaN/inf values")
      continue
    if layout == "oihw":
      value = value.transpose(2, 3, 1, 0)
    want = expected.get((col,) + path)
    if want is None or tuple(want) != value.shape:
      problems.append(f"{name}: shape {source_shape} ({layout or 'as is'} → {value.shape}) "
                      f"does not fit {col}/{'/'.join(path)} {want}")
      continue
    node = out.setdefault(col, {})
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = value
  if problems:
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    raise ValueError("checkpoint does not fit the model: " + "; ".join(problems[:3]) + more)
  return out


def _flatten(tree, prefix=()):
  for k, v in tree.items():
    if isinstance(v, Mapping):
      yield from _flatten(v, prefix + (k,))
    else:
      yield prefix + (k,), v


def file_sha256(path: str | os.PathLike) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def convert_official(path: str | os.PathLike) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """Reads an official ``n3net_gauss_sigma*.t7`` and returns ``(variables, metadata)``."""
  obj = load_legacy_checkpoint(path)
  state = obj.get("net", obj) if isinstance(obj, dict) else None
  if not isinstance(state, Mapping):
    raise ValueError(f"{path} holds no state dict")
  try:
    variables = state_dict_to_variables(state)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from None
  digest = file_sha256(path)
  sigma = OFFICIAL_SHA256.get(digest)
  if sigma is None:
    # e.g. n3net_gauss_sigma25.t7, or the official repository's
    # results_gaussian_denoising/pretrained_sigma25/checkpoint/051_ckpt.t7
    match = re.search(r"sigma(\d+)", os.path.abspath(os.fspath(path)))
    sigma = int(match.group(1)) if match else None
  metadata = {"source": os.path.basename(os.fspath(path)), "sha256": digest,
              "official": digest in OFFICIAL_SHA256, "sigma": sigma,
              "epoch": obj.get("epoch") if isinstance(obj, dict) else None}
  return variables, metadata
