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


def release_architecture(state: Mapping[str, Any]) -> Tuple[str, Dict[str, Any], int]:
  """The model an official state dict holds, read from its names and shapes.

  Returns:
    ``(model_name, kwargs, input_channels)``: ``"n3net"`` when the network takes as many
    channels as it outputs (the Gaussian denoisers), ``"n3net_pg"`` when it takes two more
    (the Poisson-Gaussian release: the noise map); ``kwargs`` holds only what differs from
    the registered model's defaults (``{}`` for both released files).

  Raises:
    ValueError: the names do not describe an N³Net (the message says what is missing).
  """
  def shape(name: str) -> Tuple[int, ...]:
    if name not in state:
      raise ValueError(f"no {name} in the state dict: not an official N³Net checkpoint")
    return tuple(np.shape(state[name]))

  num_dncnns = len({k.split(".")[1] for k in state
                    if k.startswith("blocks.") and k.endswith(".conv1.weight")})
  if num_dncnns < 1:
    raise ValueError("no blocks.N.conv1.weight in the state dict: not an official N³Net "
                     "checkpoint")
  first, last = shape("blocks.0.conv1.weight"), shape(f"blocks.{num_dncnns - 1}.conv2.weight")
  layer1 = {k.split(".")[3] for k in state
            if k.startswith("blocks.0.layer1.") and k.endswith(".weight")
            and len(shape(k)) == 4}
  in_channels, out_channels = first[1], last[0]
  kwargs: Dict[str, Any] = dict(num_dncnns=num_dncnns, depth=len(layer1) + 2,
                                features=first[0], out_channels=out_channels)
  if num_dncnns > 1:
    interm = shape("blocks.0.conv2.weight")[0]
    if interm < 1:
      raise ValueError(f"blocks.0.conv2.weight {shape('blocks.0.conv2.weight')} has no channels")
    k, rest = divmod(shape("blocks.1.conv1.weight")[1], interm)
    embed = [k_ for k_ in state if k_.startswith("nls.0.embedcnn.") and k_.endswith(".weight")
             and len(shape(k_)) == 4]
    embed.sort(key=lambda n: int(n.split(".")[3]))
    if rest or not embed:
      raise ValueError("the N³ block's shapes do not fit an N³Net (blocks.1.conv1.weight "
                       f"{shape('blocks.1.conv1.weight')}, interm {interm})")
    kwargs.update(interm_channels=interm, k=k - 1, embed_depth=len(embed),
                  embed_features=shape(embed[0])[0], embed_channels=shape(embed[-1])[0])
  if in_channels == out_channels:
    name = "n3net"
  elif in_channels == out_channels + 2:
    name = "n3net_pg"
  else:
    raise ValueError(f"the network takes {in_channels} channels and outputs {out_channels}: "
                     "neither a Gaussian (same) nor a noise-map model (two more)")
  defaults = create_model(name)
  if getattr(defaults, "embed_channels", None) is None and kwargs.get("embed_channels") == \
      kwargs.get("interm_channels"):
    kwargs.pop("embed_channels")
  differ = {k: v for k, v in kwargs.items() if getattr(defaults, k) != v}
  return name, differ, in_channels


def state_dict_to_variables(state: Mapping[str, np.ndarray], *, model_name: str = "n3net",
                            model_kwargs: Optional[Mapping[str, Any]] = None
                            ) -> Dict[str, Any]:
  """Converts an official N³Net state dict to ``{"params", "batch_stats"}`` for ``model_name``
  (:func:`release_architecture` tells which model a state dict holds).

  Every name must be mapped or known to be unused, every shape must match the Flax
  model's, and every value must be finite; otherwise a ``ValueError`` lists the problems.
  """
  first = state.get("blocks.0.conv1.weight")
  in_channels = int(np.shape(first)[1]) if first is not None and np.ndim(first) == 4 else 1
  model_kwargs = dict(model_kwargs or {})
  model = create_model(model_name, **model_kwargs)
  rows, unused = key_mapping(num_dncnns=model.num_dncnns, depth=model.depth,
                             embed_depth=model.embed_depth)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, 80, 80, in_channels)), train=False))
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
  """Reads an official checkpoint and returns ``(variables, metadata)``.

  The Gaussian denoisers (``n3net_gauss_sigma*.t7``) give an ``n3net`` model with
  ``metadata["task"] == "denoise"`` and its σ; the Poisson-Gaussian release
  (``results_poissongaussian_denoising/pretrained/checkpoint/051_ckpt.t7``) an ``n3net_pg``
  model with ``metadata["task"]`` ``"realnoise"``. ``metadata["model_name"]``/``["model_kwargs"]`` say
  which (the kwargs: what differs from the registered model).
  """
  obj = load_legacy_checkpoint(path)
  state = obj.get("net", obj) if isinstance(obj, dict) else None
  if not isinstance(state, Mapping):
    raise ValueError(f"{path} holds no state dict")
  try:
    name, kwargs, _ = release_architecture(state)
    variables = state_dict_to_variables(state, model_name=name, model_kwargs=kwargs)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from None
  digest = file_sha256(path)
  common = {"source": os.path.basename(os.fspath(path)), "sha256": digest,
            "epoch": obj.get("epoch") if isinstance(obj, dict) else None,
            "model_name": name, "model_kwargs": kwargs}
  if name == "n3net_pg":
    return variables, {**common, "task": "realnoise", "noise": "poisson_gaussian",
                       "official": False}
  sigma = OFFICIAL_SHA256.get(digest)
  if sigma is None:
    # e.g. n3net_gauss_sigma25.t7, or the official repository's
    # results_gaussian_denoising/pretrained_sigma25/checkpoint/051_ckpt.t7
    match = re.search(r"sigma(\d+)", os.path.abspath(os.fspath(path)))
    sigma = int(match.group(1)) if match else None
  return variables, {**common, "task": "denoise", "official": digest in OFFICIAL_SHA256,
                     "sigma": sigma}


def load_official(path: str | os.PathLike, *, task: Optional[str] = None
                  ) -> Tuple[Any, Dict[str, Any], Dict[str, Any]]:
  """``(model, variables, metadata)`` of an official checkpoint, the model built as the file
  describes it (:func:`convert_official`).

  Raises:
    ValueError: with ``task``, a file of another task (``"denoise"``: a Gaussian denoiser,
      ``"realnoise"``: the Poisson-Gaussian model), naming the file.
  """
  variables, metadata = convert_official(path)
  if task is not None and metadata["task"] != task:
    kinds = {"denoise": "a Gaussian denoiser", "realnoise": "the Poisson-Gaussian model"}
    raise ValueError(f"{path} holds {kinds.get(metadata['task'], metadata['task'])} "
                     f"({metadata['model_name']}), not {kinds.get(task, task)}")
  model = create_model(metadata["model_name"], **metadata["model_kwargs"])
  return model, variables, metadata
