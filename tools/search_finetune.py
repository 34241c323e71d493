"""The fine-tune that `onebit search` gives its map, for any map and seed: paired comparisons.

docs/BENCHMARKS.md compares a searched map against uniform ternary over several seeds of the same
fine-tune. This runs exactly the search's fine-tune (Search._finetune_config: init from the
checkpoint, steps, lr, schedule, teacher, seed) of one map and exports it the search's way, so
the seeds differ in nothing else. Prints the val loss and the .1bit size.

    python tools/search_finetune.py runs/base2000 --map runs/K1/precision.json --seed 1 \\
        --finetune-steps 500 --finetune-teacher runs/fp2000 --out runs/K1_s1
    python tools/search_finetune.py runs/base2000 --map ternary --seed 1 ... --out runs/T_s1
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import torch

from onebit.compile.search import Search, SearchOptions
from onebit.config import PRECISION_KINDS
from onebit.errors import cli_errors


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--map", "map_", required=True,
              help="A precision.json written by onebit search, or one kind for a uniform map.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder; OUT.1bit is its export.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fine-tune.")
@click.option("--finetune-steps", type=int, default=200, show_default=True, help="As onebit search.")
@click.option("--finetune-lr", type=float, default=1e-3, show_default=True, help="As onebit search.")
@click.option("--finetune-teacher", default=None, help="A checkpoint folder (as onebit search).  [default: none]")
@click.option("--kd-weight", type=float, default=1.0, show_default=True, help="As onebit search.")
@click.option("--kd-temperature", type=float, default=1.0, show_default=True, help="As onebit search.")
@click.option("--pack", type=click.Choice(["t1.6", "t2"]), default="t1.6", show_default=True, help="As onebit search.")
@click.option("--embed-dtype", type=click.Choice(["f32", "f16", "i8"]), default="f16", show_default=True,
              help="As onebit search.")
@cli_errors
def main(checkpoint: Path, map_: str, out: Path, seed: int, finetune_steps: int, finetune_lr: float,
         finetune_teacher: str | None, kd_weight: float, kd_temperature: float, pack: str, embed_dtype: str) -> None:
    threads = os.environ.get("ONEBIT_THREADS", "")
    if threads.isdigit() and int(threads) > 0:  # as onebit search and train do
        torch.set_num_threads(int(threads))
    if finetune_teacher == "anchor":
        raise click.UsageError("--finetune-teacher: give the anchor's folder (SEARCH_OUT/anchor)")
    opts = SearchOptions(max_size=10**12, pack=pack, embed_dtype=embed_dtype, finetune_steps=finetune_steps,
                         finetune_lr=finetune_lr, seed=seed, finetune_teacher=finetune_teacher, kd_weight=kd_weight,
                         kd_temperature=kd_temperature, calib_batches=1, show_progress=False)
    search = Search(checkpoint, out.parent, opts)
    if map_ in PRECISION_KINDS:
        assignment = {n: map_ for n in search.names}
    else:
        assignment = json.loads(Path(map_).read_text())["precision"]
    val_loss, size = search._train(assignment, out)
    print(f"{out}: val loss {val_loss:.4f}, {size:,} bytes, {search.bits_per_weight(assignment):.3f} bits/weight")


if __name__ == "__main__":
    main()
