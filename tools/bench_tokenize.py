"""Memory and speed of tokenizing a big corpus into shards (onebit.train.shards), measured from outside.

Builds a corpus of --size-mb MB (tinyshakespeare repeated, split into --files files) unless --corpus
is given, then runs the trainer's data preparation in a child process and samples the resident
memory of that process and all of its workers together (/proc, every 0.1 s). Prints the machine,
the command, the peak RSS, the wall time and the throughput, for docs/BENCHMARKS.md.

    ONEBIT_DATA_DIR=../shared/data .venv/bin/python tools/bench_tokenize.py --size-mb 2048 --workers 2
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
from machine import cpu_name  # tools/machine.py

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import sys, time
from pathlib import Path
from onebit.tokenizer import make_tokenizer
from onebit.train.data import resolve_corpus
from onebit.train.shards import prepare_shards
corpus = resolve_corpus(sys.argv[1])
tokenizer = make_tokenizer(sys.argv[3], corpus[:1], int(sys.argv[4]))
t0 = time.perf_counter()
stream = prepare_shards(corpus, tokenizer, Path(sys.argv[2]), workers=int(sys.argv[5]))
print(len(stream), time.perf_counter() - t0)
"""


def tree_rss(pid: int) -> int:
    """Resident bytes of pid and every descendant."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def make_corpus(folder: Path, size_mb: int, files: int) -> None:
    source = Path(os.environ.get("ONEBIT_DATA_DIR", "data")) / "tinyshakespeare.txt"
    text = source.read_bytes()
    per_file = size_mb * (1 << 20) // files
    for i in range(files):
        with open(folder / f"part{i:03d}.txt", "wb") as f:
            written = 0
            while written < per_file:
                f.write(text)
                written += len(text)


def machine() -> str:
    cpu = cpu_name()
    return f"{cpu}, {os.cpu_count()} cores"


@click.command()
@click.option("--corpus", type=click.Path(path_type=Path), default=None,
              help="Folder of .txt files to tokenize.  [default: a generated one of --size-mb]")
@click.option("--size-mb", type=int, default=2048, show_default=True, help="Size of the generated corpus.")
@click.option("--files", type=int, default=16, show_default=True, help="Files of the generated corpus.")
@click.option("--tokenizer", default="char", show_default=True, help="char, bpe (trained on the first file), or a path.")
@click.option("--vocab-size", type=int, default=4096, show_default=True, help="BPE vocabulary size.")
@click.option("--workers", type=int, default=2, show_default=True, help="Tokenizing processes.")
@click.option("--work-dir", type=click.Path(path_type=Path), default=None,
              help="Where the generated corpus and the shards go (removed after).  [default: a temp dir]")
def main(corpus: Path | None, size_mb: int, files: int, tokenizer: str, vocab_size: int, workers: int,
         work_dir: Path | None) -> None:
    """Tokenize a corpus into shards and report the peak memory of all processes together."""
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tmp_path = Path(tmp)
        if corpus is None:
            corpus = tmp_path / "corpus"
            corpus.mkdir()
            make_corpus(corpus, size_mb, files)
        texts = list(corpus.rglob("*.txt"))
        size = sum(p.stat().st_size for p in texts)
        cmd = [sys.executable, "-c", CHILD, str(corpus), str(tmp_path / "cache"), tokenizer, str(vocab_size),
               str(workers)]
        t0, peak = time.perf_counter(), 0
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        while proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.1)
        wall = time.perf_counter() - t0
        out = proc.stdout.read().split() if proc.stdout else []
        if proc.returncode != 0 or len(out) != 2:
            raise click.ClickException(f"tokenizing failed (exit {proc.returncode})")
        n_tokens, tok_s = int(out[0]), float(out[1])
    click.echo(f"Machine: {machine()}.")
    click.echo(f"Command: {shlex.join(['tools/bench_tokenize.py', '--size-mb', str(size_mb), '--files', str(files), '--tokenizer', tokenizer, '--workers', str(workers)])}")
    click.echo(f"corpus {size / 2**20:,.0f} MiB in {len(texts)} files, "
               f"{tokenizer} tokenizer, {workers} workers: {n_tokens:,} tokens in {tok_s:.1f} s "
               f"({size / 2**20 / tok_s:.1f} MiB/s); peak RSS of all processes {peak / 2**20:,.0f} MiB "
               f"({peak / size:.2f} x the corpus); wall {wall:.1f} s including startup")


if __name__ == "__main__":
    main()
