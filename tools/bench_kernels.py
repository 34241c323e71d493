#!/usr/bin/env python3
"""Run runtime_c/build/bench_kernels several times and keep, per (ISA, case), the run with the best
time (on a shared machine the fastest run is the one least disturbed by other processes).

    python3 tools/bench_kernels.py --runs 3 [-- extra bench_kernels args]

Prints the merged markdown table; "vs scalar" is recomputed from the best scalar times."""
import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_time(s):
    v, unit = s.split()
    return float(v) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("rest", nargs="*", help="arguments for bench_kernels (after --)")
    args = ap.parse_args()
    subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "runtime_c"), "bench"], check=True,
                   stdout=sys.stderr)
    exe = os.path.join(ROOT, "runtime_c", "build", "bench_kernels")
    header, best, order = [], {}, []
    for i in range(args.runs):
        out = subprocess.run([exe] + args.rest, check=True, capture_output=True, text=True).stdout
        print(f"run {i + 1}/{args.runs} done", file=sys.stderr)
        for line in out.splitlines():
            if line.startswith("| ") and not line.startswith("| ISA"):
                cells = [c.strip() for c in line.strip("|").split("|")]
                key = (cells[0], cells[1])
                t = parse_time(cells[4])
                if key not in best:
                    order.append(key)
                if key not in best or t < best[key][0]:
                    best[key] = (t, cells)
            elif i == 0 and not line.startswith("|---"):
                header.append(line)
    cmd = " ".join(["python3 tools/bench_kernels.py", f"--runs {args.runs}"] +
                   (["--"] + args.rest if args.rest else []))
    for line in header:
        if line.startswith("| ISA"):
            print(line)
            print("|" + "---|" * (line.count("|") - 1))
        elif line.startswith("machine:"):
            print(line.split("command:")[0] + f"command: `{cmd}` (best of {args.runs} runs)")
        else:
            print(line)
    for key in order:
        t, cells = best[key]
        st = best.get(("scalar", key[1]))
        cells = list(cells)
        cells[-1] = f"{st[0] / t:.1f}x" if st else "-"
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
