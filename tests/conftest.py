"""Shared test fixtures. Tests that need ../shared skip cleanly where it is absent."""

import os

import pytest

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
