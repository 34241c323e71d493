"""The one exception family that the command-line tools turn into a one-line error and exit 1."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


class OnebitError(Exception):
    """Bad input the user can fix: a missing file, a corrupt checkpoint, a wrong option."""


def cli_errors(fn: F) -> F:
    """Run a CLI body; report OnebitError (and a missing file) on one stderr line, exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (OnebitError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
