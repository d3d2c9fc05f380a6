"""The README's code examples run as written."""

import os
import re

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def test_readme_python_examples_run():
  text = open(README, encoding="utf-8").read()
  blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
  assert blocks, "README has no python example"
  for block in blocks:
    exec(compile(block, "README.md", "exec"), {})


def test_ci_runs_exactly_the_readme_test_command():
  text = open(README, encoding="utf-8").read()
  ci = open(os.path.join(os.path.dirname(README), ".ci", "run"), encoding="utf-8").read()
  command = ci.strip().splitlines()[-1]
  assert f"\n{command}\n" in text, f"README does not show the CI command {command!r}"
