"""Running the absl entry points that take ``--config`` (n3jax-train, n3jax-eval)."""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Callable, Optional, Sequence

from absl import app, flags

from n3jax.configs import resolve_config_flags


def run_app(main: Callable[[Sequence[str]], int], module: ModuleType,
            argv: Optional[Sequence[str]] = None) -> None:
  """``app.run(main)`` with shipped config names resolved (exits).

  ``--help`` prints ``module``'s docstring and its own flags (absl would show those of the
  ``__main__`` module, which is a console-script stub); ``--helpfull`` lists all flags.
  """
  argv = resolve_config_flags(sys.argv if argv is None else argv)
  if any(a in ("-h", "--help", "-help") for a in argv[1:]):
    print(module.__doc__)
    print(flags.FLAGS.module_help(module))
    sys.exit(0)
  app.run(main, argv=argv)
