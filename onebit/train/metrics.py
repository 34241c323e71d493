"""metrics.csv: one row per evaluation, appended as training goes, trimmed on resume."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from onebit.errors import OnebitError

COLUMNS = ("step", "train_loss", "val_loss", "val_ppl", "lr", "tokens_per_s", "elapsed_s")
# columns that a resumed run reproduces exactly (the others measure the machine)
DETERMINISTIC_COLUMNS = ("step", "train_loss", "val_loss", "val_ppl", "lr")


class MetricsError(OnebitError):
    """A metrics.csv that cannot be read."""


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))  # capped: a diverged run should log a number, not inf


def read_metrics(path: Path) -> list[dict[str, float]]:
    """Rows of a metrics.csv as floats (step as int)."""
    if not path.is_file():
        raise MetricsError(f"{path}: no such metrics file")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"step", "train_loss", "val_loss"} <= set(reader.fieldnames):
            raise MetricsError(f"{path}: not a metrics.csv (needs step, train_loss, val_loss columns)")
        try:
            return [{k: (int(v) if k == "step" else float(v)) for k, v in row.items()} for row in reader]
        except (TypeError, ValueError) as e:
            raise MetricsError(f"{path}: bad value ({e})") from None


class MetricsLog:
    """Appends rows to metrics.csv and flushes each one, so a killed run keeps its curve."""

    def __init__(self, path: Path, resume_step: int | None = None, source: Path | None = None):
        """A fresh log, or (resume_step given) the rows of `source` (default: path) up to that step."""
        self.path = path
        source = source if source is not None else path
        if resume_step is None or not source.exists():
            self._rewrite([])
        else:
            # rows past the checkpoint belong to the interrupted tail that is about to be redone
            self._rewrite([r for r in read_metrics(source) if r["step"] <= resume_step])

    def _rewrite(self, rows: list[dict]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow(self._format(row))
        os.replace(tmp, self.path)

    @staticmethod
    def _format(row: dict) -> dict:
        return {k: (row[k] if k == "step" else f"{float(row[k]):.6g}") for k in COLUMNS}

    def append(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore").writerow(self._format(row))
