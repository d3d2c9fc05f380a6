"""Running the absl entry points that take ``--config`` (n3jax-train, n3jax-eval).

They resolve shipped config names (``--config=denoise.py``) and report failures as one
line (:mod:`n3jax.cli_errors`), with the traceback only under ``--debug``.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Callable, Optional, Sequence

from absl import app, flags

from n3jax.cli_errors import DEBUG_FLAG, EXIT_ERROR, one_line_errors
from n3jax.configs import resolve_config_flags


def run_app(main: Callable[[Sequence[str]], int], module: ModuleType,
            argv: Optional[Sequence[str]] = None) -> None:
  """``app.run(main)`` with shipped config names resolved and one-line errors (exits).

  ``--help`` prints ``module``'s docstring and its own flags (absl would show those of the
  ``__main__`` module, which is a console-script stub); ``--helpfull`` lists all flags.
  ``--debug`` gives full tracebacks.
  """
  argv = resolve_config_flags(sys.argv if argv is None else argv)
  if any(a in ("-h", "--help", "-help") for a in argv[1:]):
    print(module.__doc__)
    print(flags.FLAGS.module_help(module))
    sys.exit(0)
  debug = DEBUG_FLAG in argv[1:]
  argv = [a for a in argv if a != DEBUG_FLAG]

  def parse_flags(args: Sequence[str]) -> Sequence[str]:
    try:
      return flags.FLAGS(args)
    except Exception as e:  # noqa: BLE001 - bad flags, a config file that fails to load
      if debug:
        raise
      lines = [line.strip() for line in str(e).splitlines() if line.strip()]
      # config_flags puts the config's own error on the last line, after a traceback.
      text = lines[0] if len(lines) < 2 else f"{lines[0]} {lines[-1]}"
      if isinstance(e, (KeyError, AttributeError)):  # a --config.<name> override
        text = f"the config has no field {text.strip(chr(34) + chr(39))!r}"
      print(f"error: {text}", file=sys.stderr)
      sys.exit(EXIT_ERROR)

  app.run(lambda a: one_line_errors(main, a, debug=debug), argv=argv, flags_parser=parse_flags)
