"""Converter: the restricted legacy reader, hostile files, key/shape mapping, CLI."""

import io
import os
import pickle
import struct

import numpy as np
import pytest

from n3jax.convert import (CorruptCheckpointError, UnsafeCheckpointError, key_mapping,
                           load_legacy_checkpoint, state_dict_to_variables)
from n3jax.convert.torch_legacy import LEGACY_MAGIC, LEGACY_PROTOCOL


def _header() -> bytes:
  buf = io.BytesIO()
  for obj in (LEGACY_MAGIC, LEGACY_PROTOCOL,
              {"protocol_version": LEGACY_PROTOCOL, "little_endian": True,
               "type_sizes": {"short": 2, "int": 4, "long": 8}}):
    pickle.dump(obj, buf, protocol=2)
  return buf.getvalue()


def _u(s: str) -> bytes:
  b = s.encode()
  return b"X" + struct.pack("<I", len(b)) + b


def _i(v: int) -> bytes:
  return b"J" + struct.pack("<i", v)


def _ints(vals) -> bytes:
  return b"(" + b"".join(_i(v) for v in vals) + b"t"


def write_legacy(path, tensors, storages, *, numel_override=None):
  """Writes a legacy PyTorch file by hand (pickle opcodes), as torch.save did before 1.6.

  tensors: name -> (storage key, offset, size, stride); storages: key -> float32 array.
  """
  obj = bytearray(b"\x80\x02}" + _u("net") + b"ccollections\nOrderedDict\n)R")
  for name, (key, off, size, stride) in tensors.items():
    numel = (numel_override or {}).get(key, storages[key].size)
    pid = (b"(" + _u("storage") + b"ctorch\nFloatStorage\n" + _u(key) + _u("cpu") + _i(numel)
           + b"tQ")
    obj += (_u(name) + b"ctorch._utils\n_rebuild_tensor\n(" + pid + _i(off) + _ints(size)
            + _ints(stride) + b"tRs")
  obj += b"s" + _u("epoch") + _i(51) + b"s."
  with open(path, "wb") as f:
    f.write(_header() + bytes(obj) + pickle.dumps(list(storages), protocol=2))
    for data in storages.values():
      f.write(struct.pack("<q", data.size) + data.astype("<f4").tobytes())


def test_reads_strided_and_offset_tensors(tmp_path):
  data = np.arange(12, dtype=np.float32)
  path = tmp_path / "ok.t7"
  write_legacy(path, {"a": ("0", 2, (2, 3), (1, 2)), "b": ("0", 0, (4,), (1,)),
                      "c": ("1", 0, (2, 2), (2, 1))},
               {"0": data, "1": np.ones(4, np.float32)})
  obj = load_legacy_checkpoint(path)
  assert obj["epoch"] == 51 and list(obj["net"]) == ["a", "b", "c"]
  np.testing.assert_array_equal(obj["net"]["a"], np.array([[2, 4, 6], [3, 5, 7]], np.float32))
  np.testing.assert_array_equal(obj["net"]["b"], data[:4])
  np.testing.assert_array_equal(obj["net"]["c"], np.ones((2, 2)))


def test_corrupt_files_are_refused_with_clear_errors(tmp_path):
  good = tmp_path / "good.t7"
  write_legacy(good, {"a": ("0", 0, (3,), (1,))}, {"0": np.arange(3, dtype=np.float32)})
  raw = good.read_bytes()
  (tmp_path / "trunc.t7").write_bytes(raw[:-5])
  with pytest.raises(CorruptCheckpointError, match="truncated"):
    load_legacy_checkpoint(tmp_path / "trunc.t7")
  (tmp_path / "junk.t7").write_bytes(os.urandom(64))
  with pytest.raises(CorruptCheckpointError):
    load_legacy_checkpoint(tmp_path / "junk.t7")
  (tmp_path / "empty.t7").write_bytes(b"")
  with pytest.raises(CorruptCheckpointError):
    load_legacy_checkpoint(tmp_path / "empty.t7")
  over = tmp_path / "over.t7"
  write_legacy(over, {"a": ("0", 2, (3,), (1,))}, {"0": np.arange(3, dtype=np.float32)})
  with pytest.raises(CorruptCheckpointError, match="overruns"):
    load_legacy_checkpoint(over)
  bad_numel = tmp_path / "numel.t7"
  write_legacy(bad_numel, {"a": ("0", 0, (3,), (1,))}, {"0": np.arange(3, dtype=np.float32)},
               numel_override={"0": 5})
  with pytest.raises(CorruptCheckpointError, match="expected 5"):
    load_legacy_checkpoint(bad_numel)


class _Evil:

  def __init__(self, func, arg):
    self.func, self.arg = func, arg

  def __reduce__(self):
    return (self.func, (self.arg,))


@pytest.mark.parametrize("where", ["object", "magic", "sysinfo"])
@pytest.mark.parametrize("func", [os.system, eval, exec])
def test_hostile_pickle_is_refused_without_running_anything(tmp_path, where, func):
  marker = tmp_path / "pwned"
  payload = {os.system: f"touch {marker}",
             eval: f"open({str(marker)!r}, 'w').close()",
             exec: f"open({str(marker)!r}, 'w').close()"}[func]
  evil = pickle.dumps({"net": _Evil(func, payload)}, protocol=2)
  magic = pickle.dumps(LEGACY_MAGIC, protocol=2)
  proto = pickle.dumps(LEGACY_PROTOCOL, protocol=2)
  if where == "object":
    raw = _header() + evil
  elif where == "magic":
    raw = evil
  else:
    raw = magic + proto + evil
  path = tmp_path / "hostile.t7"
  path.write_bytes(raw)
  with pytest.raises(UnsafeCheckpointError, match="refusing to load global"):
    load_legacy_checkpoint(path)
  assert not marker.exists(), "the hostile payload ran"


def test_key_mapping_covers_the_official_names():
  rows, unused = key_mapping()
  names = [r[0] for r in rows] + unused
  assert len(names) == len(set(names)) == 140
  assert len(unused) == 12 and all(".bn1." in n for n in unused)
  assert ("blocks.1.layer1.10.running_var", "batch_stats",
          ("dncnn_1", "bn_3", "var"), "") in rows
  assert ("nls.0.tempcnn.6.weight", "params",
          ("n3block_0", "tempcnn", "conv_out", "kernel"), "oihw") in rows


def _synthetic_state(seed=0):
  rng = np.random.default_rng(seed)
  rows, unused = key_mapping()
  from n3jax.nn import create_model
  import jax
  import jax.numpy as jnp
  model = create_model("n3net")
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 80, 80, 1))))
  state = {}
  for name, col, path, layout in rows:
    node = shapes[col]
    for p in path:
      node = node[p]
    shape = node.shape
    if layout == "oihw":
      shape = (shape[3], shape[2], shape[0], shape[1])
    state[name] = rng.normal(size=shape).astype(np.float32)
  for name in unused:
    state[name] = rng.normal(size=(64,)).astype(np.float32)
  return state


def test_state_dict_mapping_transposes_and_places_every_tensor():
  state = _synthetic_state()
  v = state_dict_to_variables(state)
  k = v["params"]["dncnn_1"]["conv_0"]["kernel"]  # from blocks.1.layer1.0.weight (O, I, 3, 3)
  np.testing.assert_array_equal(k[1, 2, 7, 5], state["blocks.1.layer1.0.weight"][5, 7, 1, 2])
  np.testing.assert_array_equal(v["batch_stats"]["n3block_1"]["distance_bn"]["mean"],
                                state["nls.1.n3aggregation.aggregation.nnn.bn.running_mean"])
  np.testing.assert_array_equal(v["params"]["n3block_0"]["embedcnn"]["bn_1"]["scale"],
                                state["nls.0.embedcnn.4.weight"])
  n_values = sum(a.size for col in v.values() for a in _leaves(col))
  assert n_values == 708_843 - 12 * 64


def _leaves(tree):
  for x in tree.values():
    if isinstance(x, dict):
      yield from _leaves(x)
    else:
      yield x


def test_state_dict_mismatches_are_listed():
  state = _synthetic_state()
  state["blocks.0.conv2.weight"] = state["blocks.0.conv2.weight"][:4]
  state["extra.weight"] = np.zeros(3, np.float32)
  del state["nls.1.tempcnn.0.weight"]
  with pytest.raises(ValueError) as e:
    state_dict_to_variables(state)
  msg = str(e.value)
  assert "unexpected key extra.weight" in msg
  assert "missing key nls.1.tempcnn.0.weight" in msg
  assert "blocks.0.conv2.weight: shape (4, 64, 3, 3)" in msg


def test_official_checkpoint_converts_and_round_trips(official_sigma25, tmp_path):
  from n3jax.checkpoint import load_model
  from n3jax.convert.__main__ import main
  state = load_legacy_checkpoint(official_sigma25)["net"]
  assert len(state) == 140 and sum(a.size for a in state.values()) == 708_843
  assert main([official_sigma25, "--out", str(tmp_path / "ck")]) == 0
  model, variables, meta = load_model(tmp_path / "ck")
  assert meta["official"] and meta["sigma"] == 25 and meta["epoch"] == 51
  np.testing.assert_array_equal(
      np.asarray(variables["params"]["dncnn_0"]["conv_in"]["kernel"])[:, :, 0, 9],
      state["blocks.0.conv1.weight"][9, 0])
  np.testing.assert_array_equal(
      np.asarray(variables["batch_stats"]["n3block_0"]["distance_bn"]["var"]),
      state["nls.0.n3aggregation.aggregation.nnn.bn.running_var"])


def test_cli_reports_a_hostile_file_as_an_error(tmp_path, capsys):
  from n3jax.convert.__main__ import main
  path = tmp_path / "hostile.t7"
  path.write_bytes(_header() + pickle.dumps(_Evil(os.system, "true"), protocol=2))
  assert main([str(path), "--out", str(tmp_path / "out")]) == 1
  assert "refusing to load global" in capsys.readouterr().err
  assert not (tmp_path / "out").exists()


def test_install_puts_the_model_where_the_cli_finds_it_and_keeps_what_exists(
    official_sigma25, tmp_path, monkeypatch, capsys):
  from n3jax import pretrained
  from n3jax.convert.__main__ import main
  monkeypatch.setenv(pretrained.MODEL_DIR_ENV, str(tmp_path / "models"))
  assert main([official_sigma25, "--install"]) == 0
  target = tmp_path / "models" / "n3net-gauss-sigma25"
  assert pretrained.installed_denoisers() == {25.0: str(target)}
  # A second install, or --out into a folder with the user's files, changes nothing.
  stamp = (target / "model.json").stat().st_mtime_ns
  assert main([official_sigma25, "--install"]) == 1
  assert "--overwrite" in capsys.readouterr().err
  assert (target / "model.json").stat().st_mtime_ns == stamp
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "notes.txt").write_text("keep me")
  assert main([official_sigma25, "--out", str(mine)]) == 1
  assert sorted(os.listdir(mine)) == ["notes.txt"]
  # --overwrite replaces model folders only, as a whole, leaving no temporary folders.
  assert main([official_sigma25, "--out", str(mine), "--overwrite"]) == 1
  assert "not an n3jax model" in capsys.readouterr().err
  assert sorted(os.listdir(mine)) == ["notes.txt"]
  assert main([official_sigma25, "--install", "--overwrite"]) == 0
  assert (target / "model.json").stat().st_mtime_ns != stamp
  assert sorted(os.listdir(tmp_path / "models")) == ["n3net-gauss-sigma25"]
  assert sorted(os.listdir(tmp_path)) == ["mine", "models"]
  # σ must be known to install; an explicit --sigma may not contradict the checksum.
  assert main([official_sigma25, "--install", "--sigma", "50"]) == 1
  assert "official σ=25" in capsys.readouterr().err
