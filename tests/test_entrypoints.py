"""Every ``python -m n3jax.…`` entry point answers ``--help``; every console script exists."""

import ast
import importlib.util
import os
import subprocess
import sys
import tomllib

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "n3jax")


def _main_modules():
  """Modules that run as ``python -m``: ``__main__.py`` files and ``if __name__ == "__main__"``."""
  found = []
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      path = os.path.join(folder, name)
      if not name.endswith(".py"):
        continue
      text = open(path, encoding="utf-8").read()
      if name == "__main__.py" or 'if __name__ == "__main__"' in text:
        rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
        found.append(rel[:-len(".__main__")] if rel.endswith(".__main__") else rel)
  return sorted(set(found))


MODULES = _main_modules()


def test_the_entry_points_are_found():
  assert {"n3jax.demo", "n3jax.denoise", "n3jax.convert", "n3jax.train", "n3jax.evaluate",
          "n3jax.evaluate.table"} <= set(MODULES)


@pytest.mark.slow
def test_every_module_entry_point_answers_help():
  env = {**os.environ, "PYTHONPATH": REPO}
  procs = {m: subprocess.Popen([sys.executable, "-m", m, "--help"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for m in MODULES}
  for module, proc in procs.items():
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"python -m {module} --help: {err[-1500:]}"
    assert "Traceback" not in out + err and len(out) > 200, module


def test_console_scripts_point_at_callables():
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    scripts = tomllib.load(f)["project"]["scripts"]
  assert {"n3jax-denoise", "n3jax-convert", "n3jax-train", "n3jax-eval", "n3jax-demo"} <= set(scripts)
  for name, target in scripts.items():
    module, attr = target.split(":")
    # Parsed, not imported: the absl entry points each define --config on import.
    source = open(importlib.util.find_spec(module).origin, encoding="utf-8").read()
    functions = {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
    assert attr in functions, name
