#!/usr/bin/env python3
"""Run runtime_c/build/bench_kernels several times and keep, per (ISA, case), the run with the best
time (on a shared machine the fastest run is the one least disturbed by other processes).

    python3 tools/bench_kernels.py --runs 3 [-- extra bench_kernels args]
    python3 tools/bench_kernels.py --vs-ort [--threads 1] [--runs 3] [--reps 50]

Prints the merged markdown table; "vs scalar" is recomputed from the best scalar times."""
import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_time(s):
    v, unit = s.split()
    return float(v) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]


# The BitNet b1.58 2B4T matrices (N x K): q/o, k/v, gate/up, down.
SHAPES_2B4T = [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912)]


def ort_matmulnbits(n, k, threads, reps):
    """Best and median seconds of one token through onnxruntime's MatMulNBits (bits 2, block 128,
    accuracy level 4: int8 compute), random 2-bit codes, one thread pool of `threads`."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    nb = -(-k // 128)
    b = rng.integers(0, 256, size=(n, nb, 32), dtype=np.uint8)
    scales = rng.uniform(0.01, 0.03, size=(n * nb,)).astype(np.float32)
    node = helper.make_node("MatMulNBits", ["A", "B", "scales"], ["Y"], domain="com.microsoft", K=k, N=n, bits=2,
                            block_size=128, accuracy_level=4)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, n])],
                              [helper.make_tensor("B", TensorProto.UINT8, b.shape, b.tobytes(), raw=True),
                               helper.make_tensor("scales", TensorProto.FLOAT, scales.shape, scales.tobytes(), raw=True)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    a = rng.standard_normal((1, k), dtype=np.float32)
    sess.run(None, {"A": a})
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        sess.run(None, {"A": a})
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[0], times[len(times) // 2], ort.__version__


def vs_ort(exe, threads, rounds, reps):
    """T2 GEMV (bench_kernels --gemv-t2) against MatMulNBits at the 2B4T shapes, interleaved."""
    rows = {}
    version = "?"
    for _ in range(rounds):
        for n, k in SHAPES_2B4T:
            out = subprocess.run([exe, "--gemv-t2", str(n), str(k), "--threads", str(threads), "--reps", str(reps)],
                                 check=True, capture_output=True, text=True).stdout
            best = float(out.split("best_us=")[1].split()[0]) * 1e-6
            isa = out.split("isa=")[1].split()[0] + ", layout " + out.split("layout=")[1].split()[0]
            ob, _, version = ort_matmulnbits(n, k, threads, reps)
            r = rows.setdefault((n, k), [1e9, 1e9, isa])
            r[0], r[1] = min(r[0], best), min(r[1], ob)
    print(f"T2 GEMV (onebit, isa {rows[SHAPES_2B4T[0]][2]}) vs onnxruntime {version} MatMulNBits (bits 2, block 128, "
          f"accuracy level 4), one token, {threads} thread(s), best of {rounds} interleaved rounds x {reps} calls; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| N x K | onebit T2 us | MatMulNBits us | onebit speed-up |")
    print("|---|---|---|---|")
    for (n, k), (t2, ob, _) in rows.items():
        print(f"| {n}x{k} | {t2 * 1e6:.1f} | {ob * 1e6:.1f} | {ob / t2:.2f}x |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3, help="full runs of bench_kernels, best kept (default 3)")
    ap.add_argument("--vs-ort", action="store_true",
                    help="instead: T2 GEMV against onnxruntime MatMulNBits at the 2B4T matrix shapes")
    ap.add_argument("--threads", type=int, default=1, help="threads for --vs-ort (default 1)")
    ap.add_argument("--reps", type=int, default=50, help="calls per shape and round for --vs-ort (default 50)")
    ap.add_argument("rest", nargs="*", help="arguments for bench_kernels (after --)")
    args = ap.parse_args()
    if args.vs_ort:
        subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "runtime_c"), "bench"], check=True, stdout=sys.stderr)
        vs_ort(os.path.join(ROOT, "runtime_c", "build", "bench_kernels"), args.threads, args.runs, args.reps)
        return
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
