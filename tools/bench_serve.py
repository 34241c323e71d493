"""Bounded load test of `onebit serve` on 127.0.0.1: throughput and latency at --parallel 1 and 2.

Writes a `.1bit` with random weights (no training; speed does not depend on the values) of the
`small` preset's shape with a char vocabulary, starts `onebit serve` on a free port of 127.0.0.1
for each --parallel value, and sends a fixed number of streaming completion requests from a
fixed number of client threads (a new request as soon as one finishes), stopping early at the
time limit. Each configuration runs --runs times, interleaved, and the run with the best
throughput is kept (the machine is shared). CPU time per generated token (the server process's,
from /proc, against the in-process loop's) shows the server's own cost even when other jobs
steal wall-clock time. Peer measured in the same run: the same generations called in-process through
`onebit.run.c` one after another (no HTTP), so the ratio shows the server's cost and its
parallel speed-up.

    .venv/bin/python tools/bench_serve.py [--requests 32] [--clients 4] [--max-tokens 64] [--parallel 1,2]
                                          [--runs 3] [--time-limit 120]
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import click
import torch
from machine import cpu_name  # tools/machine.py

from onebit.compile.export import ExportOptions, export_1bit
from onebit.config import ModelConfig
from onebit.run.c import Model
from onebit.tokenizer import train_char_tokenizer
from onebit.train.checkpoint import save_checkpoint
from onebit.train.model import Transformer
from onebit.train.presets import SMALL_MODEL

PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks? It is the east, and Juliet is the sun.\n"


def make_model(out: Path) -> Path:
    tokenizer = train_char_tokenizer("\n" + "".join(chr(c) for c in range(0x20, 0x7F)))
    cfg = ModelConfig(**{**SMALL_MODEL, "vocab_size": tokenizer.vocab_size})
    torch.manual_seed(0)
    save_checkpoint(out / "ck", Transformer(cfg), tokenizer, {"step": 0, "val_loss": None})
    return export_1bit(out / "ck", out / "bench.1bit", ExportOptions()) and out / "bench.1bit"


@dataclass
class Outcome:
    latency: float  # request sent -> last event
    first: float  # request sent -> first text
    tokens: int


def request(port: int, seed: int, max_tokens: int) -> Outcome:
    body = json.dumps({"model": "bench", "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0.8,
                       "seed": seed, "stream": True, "stream_options": {"include_usage": True}})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.read()[:200]!r}")
    first, tokens = None, 0
    for line in response:
        if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
            continue
        event = json.loads(line[6:])
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
        elif first is None and event["choices"][0]["text"]:
            first = time.perf_counter() - start
    conn.close()
    return Outcome(time.perf_counter() - start, first or 0.0, tokens)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def load_test(model: Path, parallel: int, requests: int, clients: int, max_tokens: int, limit: float) -> dict:
    server = subprocess.Popen([sys.executable, "-m", "onebit.run.serve", "-m", str(model), "--port", "0",
                               "--parallel", str(parallel), "--queue", str(clients)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        if not line.startswith("serving "):
            raise RuntimeError(f"the server did not start: {line}{server.stderr.read()}")
        port = int(line.split()[3].rstrip("/").rsplit(":", 1)[1])
        request(port, 0, 4)  # warm-up
        cpu_start = cpu_seconds(server.pid)
        outcomes: list[Outcome] = []
        seeds = iter(range(requests))
        lock = threading.Lock()
        deadline = time.perf_counter() + limit

        def client() -> None:
            while time.perf_counter() < deadline:
                with lock:
                    seed = next(seeds, None)
                if seed is None:
                    return
                outcome = request(port, seed, max_tokens)
                with lock:
                    outcomes.append(outcome)

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            for f in [pool.submit(client) for _ in range(clients)]:
                f.result()
        wall = time.perf_counter() - start
        cpu = cpu_seconds(server.pid) - cpu_start
    finally:
        server.terminate()
        server.wait(timeout=30)
    tokens = sum(o.tokens for o in outcomes)
    return {"parallel": parallel, "requests": len(outcomes), "wall_s": wall, "req_s": len(outcomes) / wall,
            "tok_s": tokens / wall, "p50_s": percentile([o.latency for o in outcomes], 50),
            "p99_s": percentile([o.latency for o in outcomes], 99),
            "ttft_p50_s": percentile([o.first for o in outcomes], 50), "cpu_ms_tok": 1e3 * cpu / max(tokens, 1)}


def direct(model: Path, requests: int, max_tokens: int) -> dict:
    """The same generations in-process, one after another: the peer without HTTP."""
    m = Model(model)
    start, cpu_start = time.perf_counter(), time.process_time()
    for seed in range(requests):
        m.generate(PROMPT, max_tokens, temperature=0.8, seed=seed)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"requests": requests, "wall_s": wall, "req_s": requests / wall, "tok_s": requests * max_tokens / wall,
            "cpu_ms_tok": 1e3 * cpu / (requests * max_tokens)}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--requests", type=int, default=32, show_default=True, help="Requests per --parallel value.")
@click.option("--clients", type=int, default=4, show_default=True, help="Client threads sending them.")
@click.option("--max-tokens", type=int, default=64, show_default=True, help="Tokens per request.")
@click.option("--parallel", default="1,2", show_default=True, help="Comma-separated --parallel values to test.")
@click.option("--runs", type=int, default=3, show_default=True,
              help="Runs of each configuration, interleaved; the best throughput is kept.")
@click.option("--time-limit", type=float, default=120.0, show_default=True,
              help="Seconds per run of a --parallel value; requests not started by then are not sent.")
def main(requests: int, clients: int, max_tokens: int, parallel: str, runs: int, time_limit: float) -> None:
    """Load-test onebit serve on 127.0.0.1 (bounded: fixed requests and a time limit)."""
    cpu = cpu_name()
    print(f"machine: {cpu}, {os.cpu_count()} cores, load average before {os.getloadavg()[0]:.2f}")
    print(f"command: {' '.join(sys.argv)}")
    shape = ", ".join(f"{k} {v}" for k, v in SMALL_MODEL.items())
    print(f"model: random weights, small preset shape ({shape}), char vocab 96, ternary t2; prompt "
          f"{len(PROMPT)} tokens, {max_tokens} new tokens, temperature 0.8, streaming")
    values = [int(x) for x in parallel.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(Path(tmp))
        peer, best = None, {}
        for _ in range(runs):
            r = direct(model, requests, max_tokens)
            peer = r if peer is None or r["tok_s"] > peer["tok_s"] else peer
            for p in values:
                r = load_test(model, p, requests, clients, max_tokens, time_limit)
                best[p] = r if p not in best or r["tok_s"] > best[p]["tok_s"] else best[p]
        print(f"in-process onebit.run.c, sequential: {peer['req_s']:.2f} req/s, {peer['tok_s']:.0f} tok/s, "
              f"{peer['cpu_ms_tok']:.2f} CPU ms/token (best of {runs})")
        print("| --parallel | clients | requests | wall s | req/s | tok/s | p50 latency s | p99 latency s | "
              "p50 first token s | tok/s vs in-process | server CPU ms/token | CPU vs in-process |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for p in values:
            r = best[p]
            print(f"| {p} | {clients} | {r['requests']} | {r['wall_s']:.1f} | {r['req_s']:.2f} | {r['tok_s']:.0f} | "
                  f"{r['p50_s']:.3f} | {r['p99_s']:.3f} | {r['ttft_p50_s']:.3f} | {r['tok_s'] / peer['tok_s']:.2f} | "
                  f"{r['cpu_ms_tok']:.2f} | {r['cpu_ms_tok'] / peer['cpu_ms_tok']:.2f} |")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
