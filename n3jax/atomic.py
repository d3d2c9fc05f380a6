"""Atomic writes: a reader sees the old file (or none) or the new one, never half of one,
and nothing is replaced unless the caller says so.

A file or folder is written under a temporary name beside its destination and renamed
into place at the end; if anything fails on the way, the temporary is removed and the
destination is untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator


class OutputExistsError(FileExistsError):
  """The destination exists and replacing it was not asked for."""


def _umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def _temp_name(path: str, suffix: str = "") -> str:
  directory, base = os.path.split(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{suffix}", dir=directory)
  os.close(fd)
  os.chmod(tmp, 0o666 & ~_umask())  # the permissions a plain open() would give
  return tmp


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[str]:
  """Yields a temporary path to write; on success it becomes ``path``.

  Args:
    path: the destination file; its folder must exist.
    overwrite: replace an existing ``path``; otherwise :class:`OutputExistsError` is raised
      (before writing if it exists already, or at the end if it appeared meanwhile).

  The temporary keeps ``path``'s extension, so writers that pick a format by extension work.
  """
  path = os.fspath(path)
  if not overwrite and os.path.lexists(path):
    raise OutputExistsError(f"{path} exists (not overwritten)")
  tmp = _temp_name(path, os.path.splitext(path)[1])
  if overwrite and os.path.isfile(path):
    os.chmod(tmp, os.stat(path).st_mode & 0o7777)  # replacing keeps the file's permissions
  try:
    yield tmp
    if overwrite:
      os.replace(tmp, path)
    else:
      try:
        os.link(tmp, path)  # fails if path appeared meanwhile: never clobbers
      except FileExistsError:
        raise OutputExistsError(f"{path} exists (not overwritten)") from None
      except OSError:  # file systems without hard links
        if os.path.lexists(path):
          raise OutputExistsError(f"{path} exists (not overwritten)") from None
        os.replace(tmp, path)
  finally:
    if os.path.lexists(tmp):
      os.unlink(tmp)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[str]:
  """Yields a temporary folder to fill; on success it becomes ``path``.

  Args:
    path: the destination folder. An existing empty folder is replaced.
    overwrite: replace an existing non-empty ``path`` (it is moved aside, the new folder
      moved in, and only then the old one deleted); otherwise :class:`OutputExistsError`.
  """
  path = os.path.abspath(os.fspath(path))
  def occupied() -> bool:
    return os.path.lexists(path) and not (os.path.isdir(path) and not os.listdir(path))
  if occupied() and not overwrite:
    raise OutputExistsError(f"{path} exists and is not empty (not overwritten; pass "
                            "--overwrite to replace it)")
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
  os.chmod(tmp, 0o777 & ~_umask())
  try:
    yield tmp
    old = None
    if os.path.lexists(path):
      if occupied() and not overwrite:
        raise OutputExistsError(f"{path} appeared while writing (not overwritten)")
      old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".old", dir=parent)
      os.rmdir(old)
      os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
      if os.path.isdir(old) and not os.path.islink(old):
        shutil.rmtree(old)
      else:
        os.unlink(old)  # a file, or a link (its target is left alone)
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp)
