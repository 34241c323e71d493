"""tqdm progress bars that suit both a terminal and a log file.

On a terminal the bar redraws ten times a second; when stderr is a file or a pipe (a CI log, nohup)
tqdm cannot redraw in place and every refresh becomes a new line, so it refreshes every 30 s.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


def progress_bar(**kwargs: Any) -> tqdm:
    """tqdm on stderr, throttled to one line per LOG_INTERVAL_S when stderr is not a terminal."""
    out = kwargs.setdefault("file", sys.stderr)
    if not (hasattr(out, "isatty") and out.isatty()):
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("maxinterval", LOG_INTERVAL_S)
    return tqdm(**kwargs)
