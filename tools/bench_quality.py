"""Training-quality benchmark: the tiny preset as ternary, full precision and binary, same machine.

Each row is `onebit-train --preset tiny --quant X` with nothing else, so the preset's per-quant
defaults are what is measured. Prints a markdown table for docs/BENCHMARKS.md (## Training quality).

    ONEBIT_DATA_DIR=../shared/data .venv/bin/python tools/bench_quality.py --out runs/bench
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import click
from machine import cpu_name  # tools/machine.py

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onebit import packing  # noqa: E402
from onebit.train.checkpoint import load_checkpoint  # noqa: E402
from onebit.train.metrics import read_metrics  # noqa: E402
from onebit.train.presets import preset_config  # noqa: E402

QUANTS = ("ternary", "none", "binary")
PACKED_FORMAT = {"ternary": "T1.6", "binary": "B1", "none": "f32"}


@dataclass
class Row:
    quant: str
    command: str
    val_loss: float
    wall_s: float
    tokens_per_s: float
    params: int
    quantized_bytes: int


def machine() -> str:
    cpu = cpu_name()
    return f"{cpu}, {os.cpu_count()} cores, 1 torch thread"


def quantized_bytes(run_dir: Path) -> int:
    """Bytes of the BitLinear weights as packed in .1bit (T1.6 for ternary, B1 for binary)."""
    model = load_checkpoint(run_dir).model
    total = 0
    for m in model.bitlinears():
        rows, k = m.weight.shape
        if m.quant == "ternary":
            total += rows * packing.t16_row_stride(k)
        elif m.quant == "binary":
            total += rows * packing.b1_row_stride(k)
        else:
            total += rows * k * 4
    return total


def command(kind: str, run_dir: Path, seed: int, extra: tuple[str, ...]) -> list[str]:
    return ["onebit-train", "--preset", "tiny", "--quant", kind, *extra, "--seed", str(seed), "--out", str(run_dir)]


def train_one(kind: str, out: Path, seed: int, extra: tuple[str, ...]) -> None:
    env = {**os.environ, "ONEBIT_THREADS": "1"}
    args = command(kind, out / kind, seed, extra)
    with (out / f"{kind}.log").open("w") as log:
        code = subprocess.call([sys.executable, "-m", "onebit.train", *args[1:], "--quiet"], stderr=log,
                               stdout=log, env=env, cwd=ROOT)
    if code != 0:
        raise click.ClickException(f"{kind} run failed (see {out / f'{kind}.log'})")


def measure(kind: str, out: Path, seed: int, extra: tuple[str, ...]) -> Row:
    """The row of a finished run; wall time is the training loop's own clock (metrics.csv)."""
    run_dir = out / kind
    rows = read_metrics(run_dir / "metrics.csv")
    last = rows[-1]
    ckpt = load_checkpoint(run_dir)
    if not extra:
        # a row must be what `onebit-train --preset tiny --quant X` alone reproduces
        expected = preset_config("tiny", kind)
        expected.seed = seed
        if ckpt.meta.get("train_config") != expected.to_dict():
            raise click.ClickException(f"{run_dir} was not trained with the tiny preset's {kind} defaults")
    model = ckpt.model
    tokens = sum(r["tokens_per_s"] for r in rows) / len(rows)
    return Row(quant=kind, command=shlex.join(command(kind, run_dir, seed, extra)), val_loss=last["val_loss"],
               wall_s=last["elapsed_s"], tokens_per_s=tokens, params=model.param_stats()["total_params"],
               quantized_bytes=quantized_bytes(run_dir))


def table(rows: list[Row]) -> str:
    fp = next((r.val_loss for r in rows if r.quant == "none"), None)
    lines = [f"Machine: {machine()}.", "",
             "| quant | command | val loss | perplexity | train time | tokens/s | params | quantized weights | "
             "loss / full-precision loss |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r.val_loss / fp:.3f}" if fp else "n/a"
        lines.append(f"| {r.quant} | `{r.command}` | {r.val_loss:.4f} | {2.718281828 ** r.val_loss:.2f} | "
                     f"{r.wall_s:.0f} s | {r.tokens_per_s:,.0f} | {r.params:,} | "
                     f"{r.quantized_bytes:,} B ({PACKED_FORMAT[r.quant]}) | {ratio} |")
    return "\n".join(lines)


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/bench"), show_default=True)
@click.option("--quant", "quants", multiple=True, type=click.Choice(QUANTS), help="rows to run [default: all]")
@click.option("--seed", type=int, default=1337, show_default=True)
@click.option("--jobs", type=int, default=2, show_default=True, help="runs at the same time (1 thread each)")
@click.option("--extra", default="", help="extra onebit-train flags for every row (e.g. '--max-steps 200')")
@click.option("--table-only", is_flag=True, help="tabulate the runs already in --out without training")
def main(out: Path, quants: tuple[str, ...], seed: int, jobs: int, extra: str, table_only: bool) -> None:
    """Train the tiny preset per quant kind and print the quality table."""
    out.mkdir(parents=True, exist_ok=True)
    kinds = quants or QUANTS
    flags = tuple(shlex.split(extra))
    if not table_only:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(lambda k: train_one(k, out, seed, flags), kinds))
    click.echo(table([measure(k, out, seed, flags) for k in kinds]))


if __name__ == "__main__":
    main()
