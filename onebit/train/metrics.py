"""metrics.csv: one row per evaluation, appended as training goes, trimmed (and repaired) on resume."""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from pathlib import Path

from onebit.atomic import atomic_write_text
from onebit.errors import OnebitError

COLUMNS = ("step", "train_loss", "val_loss", "val_ppl", "lr", "tokens_per_s", "elapsed_s")
# columns that a resumed run reproduces exactly (the others measure the machine)
DETERMINISTIC_COLUMNS = ("step", "train_loss", "val_loss", "val_ppl", "lr")


class MetricsError(OnebitError):
    """A metrics.csv that cannot be read."""


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))  # capped: a diverged run should log a number, not inf


def _parse(row: dict) -> dict[str, float]:
    if None in row or None in row.values():  # more or fewer fields than the header
        raise ValueError("wrong number of fields")
    return {k: (int(v) if k == "step" else float(v)) for k, v in row.items()}


def read_metrics(path: Path, repair: bool = False) -> list[dict[str, float]]:
    """Rows of a metrics.csv as floats (step as int).

    repair=True drops a torn last row (what a crash in the middle of an append leaves: no newline,
    too few fields, or bytes that are not a number); a bad row anywhere else is still an error.
    """
    if not path.is_file():
        raise MetricsError(f"{path}: no such metrics file")
    raw = path.read_bytes()
    torn = repair and bool(raw) and not raw.endswith(b"\n")
    if torn:
        raw = raw[: raw.rfind(b"\n") + 1]
    try:
        lines = raw.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        raise MetricsError(f"{path}: not UTF-8 text") from None
    reader = csv.DictReader(lines)
    if reader.fieldnames is None or not {"step", "train_loss", "val_loss"} <= set(reader.fieldnames):
        raise MetricsError(f"{path}: not a metrics.csv (needs step, train_loss, val_loss columns)")
    raw_rows = list(reader)
    rows = []
    for i, row in enumerate(raw_rows):
        try:
            rows.append(_parse(row))
        except (TypeError, ValueError) as e:
            if repair and i == len(raw_rows) - 1:
                torn = True
                break
            raise MetricsError(f"{path}: bad value in row {i + 1} ({e})") from None
    if torn:
        print(f"{path}: dropped a torn last row (an interrupted write)", file=sys.stderr)
    return rows


class MetricsLog:
    """Appends rows to metrics.csv, each one flushed to disk, so a killed run keeps its curve."""

    def __init__(self, path: Path, resume_step: int | None = None, source: Path | None = None):
        """A fresh log, or (resume_step given) the rows of `source` (default: path) up to that step."""
        self.path = path
        source = source if source is not None else path
        if resume_step is None or not source.exists():
            self._rewrite([])
        else:
            # rows past the checkpoint belong to the interrupted tail that is about to be redone
            self._rewrite([r for r in read_metrics(source, repair=True) if r["step"] <= resume_step])

    def _rewrite(self, rows: list[dict]) -> None:
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(self._format(row))
        atomic_write_text(self.path, buffer.getvalue())

    @staticmethod
    def _format(row: dict) -> dict:
        return {k: (row[k] if k == "step" else f"{float(row[k]):.6g}") for k in COLUMNS}

    def append(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore").writerow(self._format(row))
            f.flush()
            # the checkpoint that follows is fsynced: a row it has passed must not vanish in a power cut
            os.fsync(f.fileno())
