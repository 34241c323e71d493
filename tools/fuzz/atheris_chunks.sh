#!/usr/bin/env bash
# A long atheris run of tools/fuzz/fuzz_readers.py in chunks, each a fresh process:
#
#     tools/fuzz/atheris_chunks.sh TARGET TOTAL_RUNS CHUNK_RUNS LOG_DIR CORPUS_DIR [SEED_DIR ...]
#
# HF `tokenizers` keeps some memory per tokenizer that encoded, for the life of the thread
# (tools/fuzz/tokenizer_memory.py measures it), so one process of ten million tokenizer runs would
# grow without bound; a chunk of CHUNK_RUNS starts afresh over the corpus grown so far. Each chunk
# appends a line to LOG_DIR/summary (runs, coverage, exit status) and keeps its libFuzzer log; the
# loop stops at TOTAL_RUNS, or at the first chunk that ends on a finding (crash-* or timeout-* in
# LOG_DIR). libFuzzer's rss limit stays on (3 GB) as a finding of its own; -timeout=1800 because a
# frozen (SIGSTOP) background process still counts its time. Chunk i runs with -seed=SEED_BASE+i
# (SEED_BASE defaults to 0: two loops side by side want different ones). Extra flags: $ATHERIS_FLAGS.
set -u
target=$1 total=$2 chunk=$3 logs=$4
shift 4
mkdir -p "$logs"
here=$(cd "$(dirname "$0")" && pwd)
done_runs=0 i=0
while [ "$done_runs" -lt "$total" ]; do
  i=$((i + 1))
  left=$((total - done_runs))
  runs=$((left < chunk ? left : chunk))
  log="$logs/chunk-$i.log"
  python "$here/fuzz_readers.py" "$target" "$@" -runs="$runs" -reload=0 -max_len=16384 -timeout=1800 \
    -rss_limit_mb=3072 -seed=$((${SEED_BASE:-0} + i)) -artifact_prefix="$logs/" -print_final_stats=1 ${ATHERIS_FLAGS:-} >"$log" 2>&1
  rc=$?
  ran=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  [ -n "$ran" ] || ran=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  done_runs=$((done_runs + ${ran:-0}))
  cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+')
  echo "$(date -u +%FT%TZ) chunk $i exit $rc runs ${ran:-0} total $done_runs $cov" >>"$logs/summary"
  if [ "$rc" -ne 0 ]; then
    echo "chunk $i ended on a finding (exit $rc): see $log" >>"$logs/summary"
    exit "$rc"
  fi
done
