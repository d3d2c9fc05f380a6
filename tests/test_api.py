"""The public API: the pure core imports no Flax, and every public op is documented, takes
its optional arguments by keyword only and names its PRNG key ``key`` (the dm-pix
conventions)."""

import inspect
import subprocess
import sys

import pytest

from n3jax import ops

PUBLIC_FUNCTIONS = sorted(n for n in ops.__all__ if callable(getattr(ops, n)))


def test_pure_core_does_not_import_flax():
  code = "import sys, n3jax.ops; sys.exit(1 if any(m.startswith('flax') for m in sys.modules) else 0)"
  assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("name", PUBLIC_FUNCTIONS)
def test_public_ops_are_documented_with_shapes_or_values(name):
  doc = inspect.getdoc(getattr(ops, name)) or ""
  assert len(doc) > 40, f"n3jax.ops.{name} needs a docstring"


@pytest.mark.parametrize("name", PUBLIC_FUNCTIONS)
def test_optional_arguments_are_keyword_only(name):
  sig = inspect.signature(getattr(ops, name))
  positional_with_default = [
      p.name for p in sig.parameters.values()
      if p.default is not inspect.Parameter.empty
      and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
  assert not positional_with_default, (
      f"n3jax.ops.{name}: optional arguments {positional_with_default} must be keyword-only")


@pytest.mark.parametrize("name", PUBLIC_FUNCTIONS)
def test_random_ops_take_a_keyword_key(name):
  params = inspect.signature(getattr(ops, name)).parameters
  assert not {"rng", "seed", "prng", "rng_key"} & set(params), f"n3jax.ops.{name}: call it key"
  if "key" in params:
    assert params["key"].kind is inspect.Parameter.KEYWORD_ONLY


def test_the_api_test_sees_every_public_function():
  # A guard for the tests above: they must not pass by inspecting nothing.
  assert {"continuous_knn_weights", "aggregate", "neural_nearest_neighbors",
          "extract_patches", "windowed_aggregate"} <= set(PUBLIC_FUNCTIONS)
  assert "x" in inspect.signature(ops.extract_patches).parameters  # decorators keep signatures
