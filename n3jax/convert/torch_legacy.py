"""Reading PyTorch's legacy (pre-1.6, non-zip) checkpoints without PyTorch, safely.

The format (shared/docs/reference-n3net.md) is a stream of pickles: a magic number, a
protocol version, a system-info dict, the object (tensors refer to storages through
pickle's persistent ids), the list of storage keys, then each storage's raw data.

The object pickle is read by a restricted unpickler that resolves exactly the globals a
float32 state dict needs (``collections.OrderedDict``, ``torch.FloatStorage``,
``torch._utils._rebuild_tensor`` and its v2 variant) and refuses every other global
*before* anything is called, so a hostile file cannot run code.

Hostile files also cannot exhaust memory or the stack: the file is streamed (storage sizes
are checked against the bytes left before reading), and building the result visits at most
:data:`MAX_OBJECTS` objects at a depth of at most :data:`MAX_DEPTH` and creates at most
:data:`MAX_EXPANSION` times the storages' elements. A "billion laughs" pickle (lists that
refer to the previous list many times over) or a deeply nested one is refused in
milliseconds with a :class:`CorruptCheckpointError`.
"""

from __future__ import annotations

import collections
import math
import os
import pickle
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO, Dict, Tuple

import numpy as np

LEGACY_MAGIC = 119547037146038801333356
LEGACY_PROTOCOL = 1001
# A state dict is a flat mapping of a few hundred tensors (the official N³Net: 106).
MAX_OBJECTS = 100_000  # containers and values visited while building the result
MAX_DEPTH = 32  # nesting of containers
MAX_EXPANSION = 4  # elements created / elements stored (views may overlap, not explode)


class UnsafeCheckpointError(pickle.UnpicklingError):
  """The file asks for a global that a plain tensor checkpoint never needs."""


class CorruptCheckpointError(ValueError):
  """The file is truncated or not in the legacy PyTorch format."""


@dataclass(frozen=True)
class _StorageType:
  name: str
  dtype: np.dtype

  def __call__(self, *args, **kwargs):  # pragma: no cover - refuses to be used as a factory
    raise UnsafeCheckpointError(f"torch.{self.name} may only appear in a storage id")


_STORAGE_TYPES = {"FloatStorage": _StorageType("FloatStorage", np.dtype("<f4"))}


@dataclass(frozen=True)
class _StorageRef:
  key: str
  storage_type: _StorageType
  numel: int


@dataclass(frozen=True)
class _TensorRef:
  storage: _StorageRef
  offset: int
  size: Tuple[int, ...]
  stride: Tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused) -> _TensorRef:
  if not isinstance(storage, _StorageRef):
    raise UnsafeCheckpointError("_rebuild_tensor called on something that is not a storage")
  size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
  if len(size) != len(stride) or any(s < 0 for s in size + stride) or storage_offset < 0:
    raise CorruptCheckpointError(f"bad tensor geometry size={size} stride={stride}")
  return _TensorRef(storage, int(storage_offset), size, stride)


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    **{("torch", name): t for name, t in _STORAGE_TYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only :data:`_ALLOWED_GLOBALS`; storages become :class:`_StorageRef`."""

  def find_class(self, module: str, name: str) -> Any:
    try:
      return _ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise UnsafeCheckpointError(
          f"refusing to load global {module}.{name}: a tensor checkpoint needs only "
          f"{sorted('.'.join(k) for k in _ALLOWED_GLOBALS)}; this file may be malicious"
      ) from None

  def persistent_load(self, pid: Any) -> _StorageRef:
    if (not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage"
        or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str)
        or not isinstance(pid[4], int)):
      raise UnsafeCheckpointError(f"unexpected persistent id (a {type(pid).__name__})")
    return _StorageRef(key=pid[2], storage_type=pid[1], numel=pid[4])


def _load_one(f: BinaryIO) -> Any:
  try:
    return _RestrictedUnpickler(f).load()
  except (UnsafeCheckpointError, CorruptCheckpointError):
    raise
  except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError,
          AttributeError, KeyError, struct.error, UnicodeDecodeError) as e:
    raise CorruptCheckpointError(f"not a readable legacy PyTorch checkpoint: {_short(e)}") from e


class _Budget:
  """Counts what :func:`_materialize` creates, failing once a limit is passed."""

  def __init__(self, stored_elements: int):
    self.objects = 0
    self.elements = 0
    self.max_elements = MAX_EXPANSION * stored_elements + 1024

  def visit(self, depth: int) -> None:
    self.objects += 1
    if self.objects > MAX_OBJECTS:
      raise CorruptCheckpointError(f"holds more than {MAX_OBJECTS:,} objects (or refers to "
                                   "the same ones over and over); not a state dict")
    if depth > MAX_DEPTH:
      raise CorruptCheckpointError(f"nested deeper than {MAX_DEPTH} levels; not a state dict")

  def create(self, n: int) -> None:
    self.elements += n
    if self.elements > self.max_elements:
      raise CorruptCheckpointError(f"its tensors would hold {self.elements:,}+ elements, more "
                                   f"than {MAX_EXPANSION}x the data stored in the file")


def _materialize(obj: Any, storages: Dict[str, np.ndarray], budget: _Budget,
                 depth: int = 0) -> Any:
  budget.visit(depth)
  if isinstance(obj, _TensorRef):
    data = storages[obj.storage.key]
    if not obj.size:
      return np.array(data[obj.offset])
    budget.create(math.prod(obj.size))
    last = obj.offset + sum((n - 1) * s for n, s in zip(obj.size, obj.stride) if n > 0)
    if any(n == 0 for n in obj.size):
      return np.zeros(obj.size, data.dtype)
    if last >= data.size:
      raise CorruptCheckpointError(f"tensor of size {obj.size} overruns its storage "
                                   f"{obj.storage.key} ({data.size} elements)")
    item = data.itemsize
    view = np.lib.stride_tricks.as_strided(data[obj.offset:], shape=obj.size,
                                           strides=[s * item for s in obj.stride])
    return np.array(view, dtype=data.dtype.newbyteorder("="))
  if isinstance(obj, dict):
    return type(obj)((k, _materialize(v, storages, budget, depth + 1)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialize(v, storages, budget, depth + 1) for v in obj)
  return obj


def load_legacy_checkpoint(path: str | os.PathLike) -> Any:
  """Reads a legacy-format PyTorch checkpoint into NumPy arrays, running no code from it.

  Args:
    path: the ``.t7`` / ``.pth`` file (legacy, non-zip serialization).

  Returns:
    The saved object with every tensor replaced by a ``np.ndarray`` (e.g. for the official
    N³Net files ``{"net": OrderedDict[name -> array], "epoch": 51}``).

  Raises:
    UnsafeCheckpointError: the file references a global outside the allow-list.
    CorruptCheckpointError: the file is truncated or not in this format.
  """
  with open(path, "rb") as f:
    try:
      return _read(f, os.fstat(f.fileno()).st_size)
    except CorruptCheckpointError as e:
      raise CorruptCheckpointError(f"{path}: {e}") from None
    except UnsafeCheckpointError as e:
      raise UnsafeCheckpointError(f"{path}: {e}") from None


def _read(f: BinaryIO, file_size: int) -> Any:
  if f.read(2) == b"PK":
    raise CorruptCheckpointError("a zip-format PyTorch checkpoint (torch >= 1.6); only the "
                                 "legacy format is supported")
  f.seek(0)
  if _load_one(f) != LEGACY_MAGIC:
    raise CorruptCheckpointError("not a legacy PyTorch checkpoint (bad magic number)")
  if _load_one(f) != LEGACY_PROTOCOL:
    raise CorruptCheckpointError("unsupported legacy protocol version")
  sys_info = _load_one(f)
  if not isinstance(sys_info, dict) or sys_info.get("little_endian", False) is not True:
    raise CorruptCheckpointError("only little-endian checkpoints are supported")
  # The object itself: collect the storages it refers to.
  refs: Dict[str, _StorageRef] = {}

  class _Collect(_RestrictedUnpickler):

    def persistent_load(self, pid):
      ref = super().persistent_load(pid)
      refs.setdefault(ref.key, ref)
      return ref

  try:
    obj = _Collect(f).load()
  except (UnsafeCheckpointError, CorruptCheckpointError):
    raise
  except Exception as e:  # malformed pickle data of any kind
    raise CorruptCheckpointError(f"unreadable object pickle: {_short(e)}") from e
  keys = _load_one(f)
  if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
    raise CorruptCheckpointError("bad storage key list")
  storages: Dict[str, np.ndarray] = {}
  for key in keys:
    header = f.read(8)
    if len(header) != 8:
      raise CorruptCheckpointError(f"truncated (storage {key[:40]} missing)")
    (numel,) = struct.unpack("<q", header)
    ref = refs.get(key)
    dtype = ref.storage_type.dtype if ref else np.dtype("<f4")
    if ref is not None and numel != ref.numel:
      raise CorruptCheckpointError(f"storage {key[:40]} holds {numel} elements, "
                                   f"expected {ref.numel}")
    if numel < 0 or numel * dtype.itemsize > file_size - f.tell():
      raise CorruptCheckpointError(f"truncated (storage {key[:40]} claims {numel} elements)")
    storages[key] = np.frombuffer(f.read(numel * dtype.itemsize), dtype=dtype)
  missing = set(refs) - set(storages)
  if missing:
    raise CorruptCheckpointError(f"storages {sorted(missing)[:5]} have no data")
  return _materialize(obj, storages, _Budget(sum(a.size for a in storages.values())))


def _short(e: BaseException) -> str:
  text = str(e).splitlines()
  return text[0][:200] if text else type(e).__name__
