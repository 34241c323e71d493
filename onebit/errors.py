"""The one exception family that the command-line tools turn into a one-line error and exit 1."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


class OnebitError(Exception):
    """Bad input the user can fix: a missing file, a corrupt checkpoint, a wrong option."""


def os_error_message(e: OSError) -> str:
    """"PATH: No such file or directory" rather than "[Errno 2] No such file or directory: 'PATH'"."""
    if e.strerror and e.filename is not None:
        other = f" -> {e.filename2}" if e.filename2 is not None else ""
        return f"{e.filename}{other}: {e.strerror}"
    return e.strerror or str(e) or type(e).__name__


def _close_progress_bars() -> None:
    """A tqdm bar left open redraws itself at exit, after the error line: close it first."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


def cli_errors(fn: F) -> F:
    """Run a CLI body; report OnebitError, OSError (a missing file, a full disk) and MemoryError on one
    stderr line, exit 1; Ctrl-C is one line too, exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OnebitError as e:
            _close_progress_bars()
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        except OSError as e:  # a missing file, a directory, no permission, a full or read-only disk
            _close_progress_bars()
            print(f"error: {os_error_message(e)}", file=sys.stderr)
            sys.exit(1)
        except MemoryError:
            _close_progress_bars()
            print("error: out of memory (a size or count too large for this machine?)", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            _close_progress_bars()
            print("error: interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
