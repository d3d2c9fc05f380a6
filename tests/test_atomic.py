"""Atomic writes never clobber, never leave half a file and keep what they replace intact."""

import os
import stat

import pytest

from n3jax.atomic import OutputExistsError, atomic_directory, atomic_file


def test_a_file_is_never_clobbered_and_a_failed_write_leaves_nothing(tmp_path):
  path = tmp_path / "out.txt"
  path.write_text("mine")
  with pytest.raises(OutputExistsError):
    with atomic_file(path) as tmp:
      open(tmp, "w").write("new")
  assert path.read_text() == "mine"
  with pytest.raises(RuntimeError):
    with atomic_file(tmp_path / "other.txt") as tmp:
      open(tmp, "w").write("half")
      raise RuntimeError("crash while writing")
  assert sorted(os.listdir(tmp_path)) == ["out.txt"]


def test_overwrite_replaces_and_keeps_the_permissions(tmp_path):
  path = tmp_path / "out.txt"
  path.write_text("old")
  os.chmod(path, 0o600)
  with atomic_file(path, overwrite=True) as tmp:
    open(tmp, "w").write("new")
  assert path.read_text() == "new" and stat.S_IMODE(os.stat(path).st_mode) == 0o600
  with atomic_file(tmp_path / "fresh.txt") as tmp:
    open(tmp, "w").write("x")
  umask = os.umask(0)
  os.umask(umask)
  assert stat.S_IMODE(os.stat(tmp_path / "fresh.txt").st_mode) == 0o666 & ~umask


def test_a_directory_is_replaced_whole_or_not_at_all(tmp_path):
  target = tmp_path / "model"
  target.mkdir()
  (target / "user.txt").write_text("keep")
  with pytest.raises(OutputExistsError):
    with atomic_directory(target) as tmp:
      open(os.path.join(tmp, "a"), "w").write("a")
  assert os.listdir(target) == ["user.txt"]
  with pytest.raises(RuntimeError):
    with atomic_directory(target, overwrite=True) as tmp:
      raise RuntimeError("crash")
  assert os.listdir(target) == ["user.txt"]
  with atomic_directory(target, overwrite=True) as tmp:
    open(os.path.join(tmp, "a"), "w").write("a")
  assert os.listdir(target) == ["a"] and sorted(os.listdir(tmp_path)) == ["model"]


def test_a_link_to_a_folder_is_replaced_and_its_target_left_alone(tmp_path):
  real = tmp_path / "real"
  real.mkdir()
  (real / "x").write_text("x")
  os.symlink(real, tmp_path / "link")
  with atomic_directory(tmp_path / "link", overwrite=True) as tmp:
    open(os.path.join(tmp, "new"), "w").write("n")
  assert os.listdir(tmp_path / "link") == ["new"] and os.listdir(real) == ["x"]
  assert sorted(os.listdir(tmp_path)) == ["link", "real"]
