"""A/B of two onebit-run builds on one model, interleaved: the tool behind BENCHMARKS.md's
"before / after" figures.

    python tools/bench_ab.py --a OLD/onebit-run --b NEW/onebit-run -m model.1bit \
        [--threads 1,2] [--rounds 6] [--test tg128] [--kv f16]

Each round runs A and B (then the next thread count) with `--bench` and the same arguments, A first
in odd rounds and B first in even ones, so both builds see the same machine state and neither always
runs second; it prints every sample, then per thread count the best and the median of each build,
B / A of the medians, and the median and quartiles of the per-round B / A ratios (the spread that a
same-build A / A run shows is the noise to read them against). Tests: tg128 (one prompt token, 128
decoded, as llama-bench's tg128), tg128@d512 (after a 512-token prompt), pp128, pp512. To build the
"before": `git worktree add /tmp/old COMMIT && make -C /tmp/old/runtime_c`. With --model-b, B runs
that file instead (e.g. one build, --a and --b the same binary, on two exports of one model); with
--kv-b, B runs that KV-cache type (one build and one model, f32 against f16); with --env-a / --env-b
NAME=VALUE, that side runs with that environment variable (one build, ONEBIT_REPACK=0 against the
default: the file's T2 layout against the load-time T2X repack).
"""

from __future__ import annotations

import os
import re
import statistics
import shlex
import subprocess
import sys
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name  # noqa: E402

TESTS = {"tg128": (1, 129, "decode_tok_s"), "tg128@d512": (512, 129, "decode_tok_s"),
         "pp128": (128, 1, "prefill_tok_s"), "pp512": (512, 1, "prefill_tok_s")}


def one(binary: Path, model: Path, threads: int, test: str, kv: str, env: dict[str, str]) -> float:
    prompt, n, key = TESTS[test]
    cmd = [str(binary), "-m", str(model), "--bench", "--prompt-tokens", str(prompt), "-n", str(n), "--temperature",
           "0", "--threads", str(threads), "--ctx", str(prompt + n), "--kv", kv]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, **env})
    m = re.search(key + r"=([\d.]+)", done.stderr)
    if done.returncode != 0 or not m:
        raise click.ClickException(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    return float(m.group(1))


@click.command()
@click.option("--a", "a", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="build A (the baseline) onebit-run")
@click.option("--b", "b", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="build B (the change) onebit-run")
@click.option("-m", "--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help=".1bit model")
@click.option("--model-b", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="the .1bit model B runs  [default: --model]")
@click.option("--threads", default="1,2", show_default=True, help="comma-separated thread counts")
@click.option("--rounds", default=6, show_default=True, type=click.IntRange(1, 100), help="interleaved rounds")
@click.option("--test", type=click.Choice(list(TESTS)), default="tg128", show_default=True, help="what to time")
@click.option("--kv", type=click.Choice(["f32", "f16"]), default="f16", show_default=True, help="KV-cache type")
@click.option("--kv-b", type=click.Choice(["f32", "f16"]), default=None, help="the KV-cache type B runs  [default: --kv]")
@click.option("--env-a", default=None, help="NAME=VALUE set in A's environment  [default: none]")
@click.option("--env-b", default=None, help="NAME=VALUE set in B's environment  [default: none]")
def main(a: Path, b: Path, model: Path, model_b: Path | None, threads: str, rounds: int, test: str, kv: str,
         kv_b: str | None, env_a: str | None, env_b: str | None) -> None:
    """Interleaved A/B of two onebit-run builds; tok/s, best / median, and B / A."""
    envs = {}
    for k, e in (("A", env_a), ("B", env_b)):
        if e is not None and ("=" not in e or not e.split("=", 1)[0]):
            raise click.BadParameter(f"{e!r} is not NAME=VALUE", param_hint=f"--env-{k.lower()}")
        envs[k] = dict([e.split("=", 1)]) if e else {}
    counts = [int(t) for t in threads.split(",")]
    got: dict[tuple[str, int], list[float]] = {(k, n): [] for k in "AB" for n in counts}
    for r in range(rounds):
        for n in counts:
            sides = (("A", a, model, kv), ("B", b, model_b or model, kv_b or kv))
            for k, binary, m, cache in sides if r % 2 == 0 else sides[::-1]:
                got[(k, n)].append(one(binary, m, n, test, cache, envs[k]))
                click.echo(f"round {r + 1} threads {n} {k} {got[(k, n)][-1]:.1f} tok/s", err=True)
    models = model.name if model_b is None else f"A {model.name}, B {model_b.name}"
    caches = kv if kv_b is None else f"A {kv}, B {kv_b}"
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs\ncommand: python tools/bench_ab.py "
          f"{' '.join(shlex.quote(x) for x in sys.argv[1:])}")
    print(f"A/B {test} --kv {caches}, {rounds} interleaved rounds, model {models}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")
    print(f"A: {a}\nB: {b}")
    print("| threads | A best / median | B best / median | B / A (medians) | B / A per round: median (quartiles) |\n"
          "|---|---|---|---|---|")
    for n in counts:
        xa, xb = got[("A", n)], got[("B", n)]
        ratios = [y / x for x, y in zip(xa, xb)]
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        print(f"| {n} | {max(xa):.1f} / {statistics.median(xa):.1f} | {max(xb):.1f} / {statistics.median(xb):.1f} | "
              f"{statistics.median(xb) / statistics.median(xa):.2f} | {q[1]:.2f} ({q[0]:.2f}-{q[2]:.2f}) |")


if __name__ == "__main__":
    main()
