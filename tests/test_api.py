"""The public API: the pure core imports no Flax, and every public function is documented."""

import inspect
import subprocess
import sys

from n3jax import ops


def test_pure_core_does_not_import_flax():
  code = "import sys, n3jax.ops; sys.exit(1 if any(m.startswith('flax') for m in sys.modules) else 0)"
  assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_public_ops_are_documented_with_shapes_or_values():
  for name in ops.__all__:
    obj = getattr(ops, name)
    if inspect.isfunction(obj) or hasattr(obj, "__wrapped__"):
      doc = inspect.getdoc(obj) or ""
      assert len(doc) > 40, f"n3jax.ops.{name} needs a docstring"
