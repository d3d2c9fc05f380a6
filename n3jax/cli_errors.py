"""How every n3jax command-line tool reports failures: one line, ``--debug`` for more.

A failure is printed as ``error: <message>`` on stderr (the message names the file or
argument) and the tool exits 1; ``--debug`` lets the exception propagate with its full
traceback. Only the standard library is used, so the base install's tools can use it.
"""

from __future__ import annotations

import logging
import sys
from typing import Callable, Sequence

DEBUG_FLAG = "--debug"
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


def error_line(e: BaseException) -> str:
  """``error: <message>`` on one line (the first line of a multi-line message)."""
  message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)  # no repr quotes
  text = str(message).strip().split("\n")[0] or type(e).__name__
  return f"error: {text[:1000]}"


def one_line_errors(main: Callable[[Sequence[str]], int], argv: Sequence[str], *,
                    debug: bool) -> int:
  """``main(argv)``, with any exception printed as :func:`error_line` (exit 1).

  With ``debug`` the exception propagates (full traceback). Ctrl-C exits 130 quietly.
  """
  try:
    return main(argv)
  except KeyboardInterrupt:
    if debug:
      raise
    print("interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED
  except Exception as e:  # noqa: BLE001 - every failure becomes one line
    if debug:
      raise
    for handler in logging.getLogger().handlers:  # what was logged comes first
      handler.flush()
    print(error_line(e), file=sys.stderr)
    return EXIT_ERROR
