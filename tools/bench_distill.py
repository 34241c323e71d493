"""Distillation benchmark: the tiny preset as full precision, plain ternary, and ternary taught by that FP run.

Per seed, three runs on the same machine: `--quant none` (the teacher), `--quant ternary`, and
`--quant ternary --teacher <the none run> --kd-weight W --kd-temperature T`. Prints a markdown table
for docs/BENCHMARKS.md (## Distillation): each val loss and its gap to the full-precision one.

    ONEBIT_DATA_DIR=../shared/data .venv/bin/python tools/bench_distill.py --seed 1337 --seed 1338
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
from machine import cpu_name  # tools/machine.py

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onebit.train.metrics import read_metrics  # noqa: E402


def machine() -> str:
    cpu = cpu_name()
    return f"{cpu}, {os.cpu_count()} cores, 1 torch thread per run"


def args_for(kind: str, out: Path, seed: int, kd: tuple[float, float], extra: tuple[str, ...]) -> list[str]:
    quant = "none" if kind == "fp" else "ternary"
    args = ["--preset", "tiny", "--quant", quant, *extra, "--seed", str(seed), "--out", str(out / f"{kind}-{seed}")]
    if kind == "distilled":
        args += ["--teacher", str(out / f"fp-{seed}"), "--kd-weight", str(kd[0]), "--kd-temperature", str(kd[1])]
    return args


def run(kind: str, out: Path, seed: int, kd: tuple[float, float], extra: tuple[str, ...]) -> None:
    env = {**os.environ, "ONEBIT_THREADS": "1", "OMP_NUM_THREADS": "1"}
    log_path = out / f"{kind}-{seed}.log"
    with log_path.open("w") as log:
        code = subprocess.call([sys.executable, "-m", "onebit.train", *args_for(kind, out, seed, kd, extra), "--quiet"],
                               stdout=log, stderr=log, env=env, cwd=ROOT)
    if code != 0:
        raise click.ClickException(f"{kind} seed {seed} failed (see {log_path})")


def val_loss(metrics: Path, step: int | None) -> float:
    rows = read_metrics(metrics) if metrics.is_file() else []
    if step is None:
        if not rows:
            raise click.ClickException(f"{metrics}: no evaluation logged yet")
        return rows[-1]["val_loss"]
    for row in rows:
        if row["step"] == step:
            return row["val_loss"]
    raise click.ClickException(f"{metrics}: no evaluation at step {step}")


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/bench_distill"), show_default=True,
              help="Folder of the runs and their logs.")
@click.option("--seed", "seeds", type=int, multiple=True, help="Seeds to run.  [default: 1337]")
@click.option("--kd-weight", type=float, default=1.0, show_default=True, help="Weight of the KL term.")
@click.option("--kd-temperature", type=float, default=1.0, show_default=True, help="Softmax temperature.")
@click.option("--jobs", type=int, default=2, show_default=True, help="Runs at the same time (1 thread each).")
@click.option("--extra", default="", show_default=True, help="Extra onebit train flags for every run.")
@click.option("--table-only", is_flag=True, help="Tabulate the runs already in --out without training.")
@click.option("--at-step", type=int, default=None,
              help="Tabulate the val loss every run logged at this step (runs still going, or stopped "
                   "early).  [default: each run's last row]")
def main(out: Path, seeds: tuple[int, ...], kd_weight: float, kd_temperature: float, jobs: int, extra: str,
         table_only: bool, at_step: int | None) -> None:
    """Train FP, ternary and distilled ternary (tiny preset) per seed and print the table."""
    seeds = seeds or (1337,)
    out.mkdir(parents=True, exist_ok=True)
    kd, flags = (kd_weight, kd_temperature), tuple(shlex.split(extra))
    if not table_only:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            # the teachers and the plain ternary runs first; each distilled run needs its teacher
            list(pool.map(lambda job: run(job[0], out, job[1], kd, flags),
                          [(k, s) for s in seeds for k in ("fp", "ternary")]))
            list(pool.map(lambda s: run("distilled", out, s, kd, flags), seeds))
    lines = [f"Machine: {machine()}.", "",
             "| seed | full precision | ternary | ternary distilled | ternary gap to FP | distilled gap to FP |",
             "|---|---|---|---|---|---|"]
    for s in seeds:
        fp, tern, dist = (val_loss(out / f"{k}-{s}" / "metrics.csv", at_step) for k in ("fp", "ternary", "distilled"))
        lines.append(f"| {s} | {fp:.4f} | {tern:.4f} | {dist:.4f} | {100 * (tern / fp - 1):+.1f} % | "
                     f"{100 * (dist / fp - 1):+.1f} % |")
    command = shlex.join(["onebit", "train", *args_for("distilled", out, seeds[0], kd, flags)])
    lines += ["", f"Distilled rows: `{command}` (teacher: the same seed's full-precision run)."]
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
