#!/usr/bin/env python3
"""Where a decoded token's time goes in onebit-run and in llama.cpp's llama-bench, side by side:
both engines under `perf record` on bench_peers' random model of a shape, interleaved, one thread.

    python tools/profile_peers.py --shape 134m [--rounds 3] [--tokens 128]

For every symbol: its samples / perf's sample rate / the tokens decoded = microseconds per token
(load and warm-up samples land in other symbols, so the GEMVs' figures are per decoded token; one
extra token is counted for llama-bench's warm-up). Prints the machine, the command, each round's
tok/s and the median over rounds of the top symbols. Needs Linux `perf` (Debian: linux-perf) with
permission to sample user code; run it under /work/notes/bin/quiet: these are timings.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import bench_peers as bp  # noqa: E402
from machine import cpu_name  # noqa: E402

FREQ = 4000  # samples per second of CPU time


def perf_symbols(cmd: list[str], data: Path) -> tuple[str, dict[str, int]]:
    """Run cmd under perf record; its stdout + stderr and {symbol: samples}."""
    done = subprocess.run(["perf", "record", "-q", "-F", str(FREQ), "-o", str(data), "--", *cmd],
                          capture_output=True, text=True)
    if done.returncode:
        raise click.ClickException(f"{shlex.join(cmd)} under perf failed ({done.returncode}): "
                                   f"{(done.stderr or done.stdout).strip()[-300:]}")
    report = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "-q", "-n", "--no-children",
                             "--sort", "symbol"], capture_output=True, text=True, check=True).stdout
    samples: dict[str, int] = {}
    for line in report.splitlines():
        m = re.match(r"\s*[\d.]+%\s+(\d+)\s+\[[.k]\]\s+(\S+)", line)
        if m:
            samples[m.group(2)] = samples.get(m.group(2), 0) + int(m.group(1))
    return done.stdout + done.stderr, samples


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--shape", type=click.Choice(["134m", "2b4t"]), default="134m", show_default=True,
              help="bench_peers' random model of this shape (onebit T2 / int8 head, llama.cpp TQ2_0 / Q8_0 head).")
@click.option("--seed", type=int, default=0, show_default=True, help="bench_peers' model seed.")
@click.option("--tokens", type=int, default=128, show_default=True, help="Tokens decoded per run (tg N).")
@click.option("--rounds", type=int, default=3, show_default=True, help="Interleaved rounds; medians reported.")
@click.option("--top", type=int, default=8, show_default=True, help="Symbols shown per engine.")
def main(shape: str, seed: int, tokens: int, rounds: int, top: int) -> None:
    """perf profile of 1-thread decode in onebit-run and llama-bench, in microseconds per token."""
    if shutil.which("perf") is None:
        raise click.ClickException("perf not found (Debian: apt-get install linux-perf)")
    llama = bp.build_llama()
    done = subprocess.run(["make", "-s", "-C", str(REPO / "runtime_c")], capture_output=True, text=True)
    if done.returncode:
        raise click.ClickException(f"make -C runtime_c failed:\n{done.stderr[-2000:]}")
    folder, files = bp.models(shape, seed, ["onebit T2", "llama.cpp TQ2_0"])
    onebit_file, gguf = (folder / files[e]["file"] for e in ("onebit T2", "llama.cpp TQ2_0"))
    engines = {
        "onebit T2": ([str(REPO / "runtime_c" / "build" / "onebit-run"), "-m", str(onebit_file), "--bench",
                       "--prompt-tokens", "1", "-n", str(tokens), "--temperature", "0", "--threads", "1",
                       "--ctx", str(tokens + 1), "--kv", "f16"], r"decode_tok_s=([\d.]+)", tokens),
        "llama.cpp TQ2_0": ([str(llama.bench), "-m", str(gguf), "-p", "0", "-n", str(tokens), "-t", "1", "-r", "1"],
                            r"tg\d+\s*\|\s*([\d.]+)", tokens + 1),
    }
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at the start")
    print(f"command: python tools/profile_peers.py {shlex.join(sys.argv[1:])}")
    print(f"llama.cpp commit {llama.commit}; files in {folder}")
    us: dict[str, dict[str, list[float]]] = {e: {} for e in engines}
    speed: dict[str, list[float]] = {e: [] for e in engines}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name, (cmd, pattern, n) in engines.items():
                out, samples = perf_symbols(cmd, Path(tmp) / "perf.data")
                m = re.search(pattern, out)
                if not m:
                    raise click.ClickException(f"no speed in the output of {shlex.join(cmd)}")
                speed[name].append(float(m.group(1)))
                for sym, k in samples.items():
                    us[name].setdefault(sym, []).append(k / FREQ / n * 1e6)
                print(f"round {r + 1}: {name} {speed[name][-1]:.1f} tok/s", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end\n")
    print("| engine | tg tok/s (median) | symbol | us per token (median) | share of 1 / tok/s |\n|---|---|---|---|---|")
    for name in engines:
        tok_s = statistics.median(speed[name])
        rows = sorted(((statistics.median(v + [0.0] * (rounds - len(v))), s) for s, v in us[name].items()),
                      reverse=True)[:top]
        for t, sym in rows:
            print(f"| {name} | {tok_s:.1f} | `{sym}` | {t:.0f} | {100 * t * tok_s / 1e6:.1f} % |")


if __name__ == "__main__":
    main()
