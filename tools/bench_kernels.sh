#!/bin/sh
# Build and run the kernel microbenchmark; prints a markdown table (see docs/BENCHMARKS.md).
#   tools/bench_kernels.sh [--quick] [--reps N] [--isa scalar|avx2|avx512|neon]
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
make -s -C "$root/runtime_c" bench >&2
exec "$root/runtime_c/build/bench_kernels" "$@"
