#!/usr/bin/env python3
"""Where the time of a decoded token goes, per kernel: runtime_c/build/profile_decode (tools/
profile_decode.c) on the random T2 model of tools/bench_peers.py, with the machine and the command.

    python tools/profile_decode.py --shape 134m --kv f16 [--tokens 128] [--rounds 3] [--isa avx512]
    python tools/profile_decode.py --model FILE.1bit ...

The model file is bench_peers' `model-t2.1bit` of that shape (int8 head), cached under
~/.cache/onebit/bench_peers and written here if it is missing.  One thread; run it under
/work/notes/bin/quiet: the shares are timings.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

from machine import cpu_name  # noqa: E402


def shape_model(shape: str, seed: int) -> Path:
    import bench_peers as bp

    d = bp.CACHE / "bench_peers" / f"{shape}-seed{seed}-v{bp.MODEL_VERSION}"
    path = d / "model-t2.1bit"
    if not path.exists():
        d.mkdir(parents=True, exist_ok=True)
        print(f"writing {path} ...", file=sys.stderr)
        bp.write_atomic(path, lambda p: bp.write_onebit(p, bp.SHAPES[shape], "t2", seed))
    return path


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--shape", type=click.Choice(["134m", "2b4t"]), default="134m", show_default=True,
              help="bench_peers' random model of this shape (T2 layers, int8 head).")
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Profile this .1bit file instead.")
@click.option("--seed", type=int, default=0, show_default=True, help="bench_peers' model seed.")
@click.option("--tokens", type=int, default=128, show_default=True, help="Greedy tokens decoded per pass.")
@click.option("--prompt-tokens", type=int, default=1, show_default=True, help="Prompt tokens prefilled first.")
@click.option("--kv", type=click.Choice(["f32", "f16"]), default="f16", show_default=True, help="KV-cache type.")
@click.option("--isa", default=None, help="Kernel set (default: the best this CPU runs).")
@click.option("--rounds", type=int, default=3, show_default=True, help="Rounds (plain + instrumented each); best kept.")
def main(shape: str, model: Path | None, seed: int, tokens: int, prompt_tokens: int, kv: str, isa: str | None,
         rounds: int) -> None:
    """Per-kernel profile of 1-thread decode, without perf."""
    done = subprocess.run(["make", "-s", "-C", str(REPO / "runtime_c"), "profile"], capture_output=True, text=True)
    if done.returncode:
        raise click.ClickException(f"make -C runtime_c profile failed:\n{done.stderr[-2000:]}")
    path = model or shape_model(shape, seed)
    cmd = [str(REPO / "runtime_c" / "build" / "profile_decode"), "-m", str(path), "-n", str(tokens),
           "--prompt-tokens", str(prompt_tokens), "--kv", kv, "--rounds", str(rounds)] + (["--isa", isa] if isa else [])
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at the start")
    print(f"command: {' '.join(shlex.quote(a) for a in sys.argv)}")
    print(f"runs: {' '.join(shlex.quote(a) for a in cmd)}", flush=True)
    done = subprocess.run(cmd)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
