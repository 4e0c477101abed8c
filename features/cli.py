"""The command-line convention both stages follow (``python -m extract``, ``python -m classify``).

Exit codes: 0 done; 1 a bug (Python's traceback, left alone so it can be reported); 2 bad input (one
line on stderr naming the problem, no traceback); 130 interrupted (Ctrl-C). Expected errors are the
caller's tuple of exception types plus `UsageError`; anything else is a bug.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable

EXIT_OK = 0
EXIT_BUG = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """Bad input from the command line or the files it names: one line, exit 2."""


def run_cli(body: Callable[[], int], *, expected: tuple[type[BaseException], ...] = (),
            interrupted_note: str = "") -> int:
    """``body``'s exit code under the convention above (``expected``: its bad-input errors)."""
    try:
        return body()
    except KeyboardInterrupt:
        print(f"interrupted{'; ' + interrupted_note if interrupted_note else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, *expected) as error:
        logging.getLogger("cli").debug("expected error", exc_info=True)
        print(f"error: {one_line(str(error))}", file=sys.stderr)
        return EXIT_BAD_INPUT


def one_line(text: str, *, limit: int = 2000) -> str:
    """``text`` fit for one terminal line: newlines shown as ``\\n`` and cut to ``limit`` characters, so
    a crafted file name or id cannot split or flood the message."""
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"
