"""Shared test fixtures. Tests that need ../shared skip cleanly where it is absent."""

import os
import tempfile

import pytest

# XLA's persistent compilation cache, for this test session only: many tests compile the
# same computations again (train runs in subprocesses, resumed runs, repeated models), and
# a cache hit costs milliseconds instead of seconds. Set before any worker or subprocess
# starts (they inherit it) and before this process compiles anything.
CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"


_created = []  # the cache folder this process made (and removes at the end)


def pytest_configure(config):
  del config
  if not os.environ.get(CACHE_ENV):
    os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="n3jax-tests-xla-cache-")
    _created.append(os.environ[CACHE_ENV])
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
  import jax
  jax.config.update("jax_compilation_cache_dir", os.environ[CACHE_ENV])
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


def pytest_unconfigure(config):
  del config
  import shutil
  for path in _created:
    shutil.rmtree(path, ignore_errors=True)
    os.environ.pop(CACHE_ENV, None)

SHARED_ENV = "N3JAX_SHARED"


def shared_dir():
  path = os.environ.get(SHARED_ENV) or os.path.join(os.path.dirname(__file__), "..", "..",
                                                    "shared")
  return os.path.normpath(path)


@pytest.fixture(scope="session")
def shared():
  path = shared_dir()
  if not os.path.isdir(path):
    pytest.skip(f"{path} (official weights, data) is absent")
  return path


@pytest.fixture(scope="session")
def official_sigma25(shared):
  path = os.path.join(shared, "pretrained", "n3net_gauss_sigma25.t7")
  if not os.path.isfile(path):
    pytest.skip(f"{path} is absent")
  return path


@pytest.fixture(scope="session")
def converted_sigma25(official_sigma25):
  """(model, variables, metadata) of the converted official σ=25 checkpoint."""
  from n3jax.convert import convert_official
  from n3jax.nn import create_model
  variables, meta = convert_official(official_sigma25)
  return create_model("n3net"), variables, meta
