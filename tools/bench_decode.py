"""Decode / prefill speed of the C runtime against PyTorch eager fp32 on a 125M-parameter shape.

Writes a `.1bit` with random packed ternary weights straight through onebit.format (no training):
dim 768, 12 layers, 12 heads, ffn 2048, vocab 32000 (the 134M llama shape of ../shared/ANCHORS.md), then
times, in one run, `onebit-run --bench` and a KV-cached PyTorch decode of the same model with
its ternary weights dequantized to fp32 (the eager baseline), each at 1 and 2 threads.

    .venv/bin/python tools/bench_decode.py [--threads 1,2] [--tokens 128] [--runs 3] [--pack t2] [--embed-dtype i8]

The machine is shared, so each engine / thread count is run --runs times (interleaved) and the best
run is kept; the load average is printed before and after.  Besides decoding after the prompt
(positions tokens..2*tokens, the PyTorch comparison), the C runtime is also timed decoding
`tokens` tokens from an empty context ("tg" column), which is what llama-bench's tg128 measures.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch

from onebit import packing
from onebit.config import ModelConfig
from onebit.format import TensorData, bitlinear_shapes, write_1bit
from onebit.train.model import Transformer

REPO = Path(__file__).resolve().parent.parent
CLI = REPO / "runtime_c" / "build" / "onebit-run"
SHAPE = dict(vocab_size=32000, dim=768, n_layers=12, n_heads=12, n_kv_heads=12, ffn_dim=2048, max_seq_len=512,
             activation="silu", gated=True, subln=False, tie_embeddings=False)


@dataclass
class Result:
    engine: str
    threads: int
    prefill_tok_s: float
    decode_tok_s: float
    tg_tok_s: float | None = None


def random_model(path: Path, pack: str, embed_dtype: str, seed: int = 0) -> tuple[ModelConfig, dict]:
    """Write the .1bit; return its config and the dequantized BitLinear weights for PyTorch."""
    cfg = ModelConfig(**SHAPE).validate()
    rng = np.random.default_rng(seed)
    pack_fn = packing.PACKERS[pack][0]
    dtype = {"t2": "T2", "t1.6": "T1_6"}[pack]
    tensors, dense = [], {}
    for name, (n, k) in bitlinear_shapes(cfg.to_dict()).items():
        codes = rng.integers(-1, 2, size=(n, k), dtype=np.int8)
        scale = float(rng.uniform(0.01, 0.03))
        tensors.append(TensorData(name, dtype, (n, k), pack_fn(codes), scale))
        dense[name] = codes.astype(np.float32) * np.float32(scale)
    for name in ("embed.weight", "head.weight"):
        w = rng.standard_normal((cfg.vocab_size, cfg.dim), dtype=np.float32)
        dense[name] = w
        if embed_dtype == "i8":
            q, s = packing.quantize_rows_i8(w)
            tensors += [TensorData(name, "I8", w.shape, q), TensorData(name + ".scale", "F32", s.shape, s)]
            dense[name] = q.astype(np.float32) * s[:, None]
        else:
            tensors.append(TensorData(name, embed_dtype.upper(), w.shape, w.astype(np.float16 if embed_dtype == "f16" else np.float32)))
    ones = np.ones(cfg.dim, dtype=np.float32)
    for i in range(cfg.n_layers):
        for norm in ("attn_norm", "mlp_norm"):
            tensors.append(TensorData(f"layers.{i}.{norm}.weight", "F32", (cfg.dim,), ones))
    tensors.append(TensorData("norm.weight", "F32", (cfg.dim,), ones))
    # a byte-level vocabulary: <|endoftext|>, the 256 bytes, then stand-in multi-byte tokens
    pieces = [b"<|endoftext|>"] + [bytes([b]) for b in range(256)]
    pieces += [f"t{i}".encode() for i in range(cfg.vocab_size - len(pieces))]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(np.int32)
    tensors += [TensorData("tokenizer.tokens", "U8", (offsets[-1],), np.frombuffer(b"".join(pieces), np.uint8)),
                TensorData("tokenizer.offsets", "I32", offsets.shape, offsets)]
    meta = {"config": cfg.to_dict(),
            "quant": {"weights": "ternary", "pack": pack, "activations": "int8-absmax-per-token",
                      "embed_dtype": embed_dtype},
            "tokenizer": {"type": "bpe", "vocab_size": cfg.vocab_size, "pretokenizer": "gpt2-bytelevel",
                          "special_tokens": {"<|endoftext|>": 0}},
            "provenance": {"onebit_version": "bench", "step": 0, "val_loss": None, "source": "random"}}
    write_1bit(path, meta, tensors)
    return cfg, dense


def run_c(path: Path, threads: int, prompt: int, n: int) -> dict:
    done = subprocess.run([str(CLI), "-m", str(path), "--bench", "--prompt-tokens", str(prompt), "-n",
                           str(n), "--temperature", "0", "--threads", str(threads)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    err = done.stderr.decode("utf-8", "replace")
    line = err.strip().splitlines()[-1]
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)}


def bench_c(path: Path, threads: int, tokens: int) -> Result:
    got = run_c(path, threads, tokens, tokens + 1)
    tg = run_c(path, threads, 1, tokens + 1)  # decode from an empty context (llama-bench tg)
    return Result("onebit-run", threads, got["prefill_tok_s"], got["decode_tok_s"], tg["decode_tok_s"])


def best(results: list[Result]) -> Result:
    r = results[0]
    return Result(r.engine, r.threads, max(x.prefill_tok_s for x in results), max(x.decode_tok_s for x in results),
                  max(x.tg_tok_s for x in results) if r.tg_tok_s is not None else None)


@torch.no_grad()
def bench_torch(cfg: ModelConfig, dense: dict, threads: int, tokens: int) -> Result:
    torch.set_num_threads(threads)
    model = Transformer(ModelConfig(**{**cfg.to_dict(), "quant": "none"})).eval()
    params = dict(model.named_parameters())
    for name, w in dense.items():
        params[name].copy_(torch.from_numpy(w))
    prompt = torch.randint(0, cfg.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    logits, past = model(prompt, None, 0)
    t1 = time.perf_counter()
    tok = logits[:, -1:].argmax(-1)
    for i in range(tokens):
        logits, past = model(tok, past, tokens + i)
        tok = logits[:, -1:].argmax(-1)
    t2 = time.perf_counter()
    return Result("pytorch eager fp32", threads, tokens / (t1 - t0), tokens / (t2 - t1))


@click.command()
@click.option("--threads", default="1,2", show_default=True, help="comma-separated thread counts")
@click.option("--tokens", default=128, show_default=True, help="prompt tokens and decoded tokens")
@click.option("--runs", default=3, show_default=True, help="runs per engine and thread count (best kept)")
@click.option("--pack", type=click.Choice(["t2", "t1.6"]), default="t2", show_default=True)
@click.option("--embed-dtype", type=click.Choice(["f32", "f16", "i8"]), default="i8", show_default=True)
def main(threads: str, tokens: int, runs: int, pack: str, embed_dtype: str) -> None:
    """Print a markdown table: C runtime vs PyTorch eager, same model, same run."""
    subprocess.run(["make", "-C", str(REPO / "runtime_c"), "all"], check=True, capture_output=True)
    counts = [int(t) for t in threads.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench125m.1bit"
        cfg, dense = random_model(path, pack, embed_dtype)
        size = path.stat().st_size
        load0 = os.getloadavg()
        results = []
        for n in counts:
            cs, ts = [], []
            for _ in range(runs):
                cs.append(bench_c(path, n, tokens))
                ts.append(bench_torch(cfg, dense, n, tokens))
            results += [best(cs), best(ts)]
        load1 = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {json.dumps(SHAPE)}")
    print(f"load average (1, 5, 15 min): before {' '.join(f'{x:.2f}' for x in load0)}, "
          f"after {' '.join(f'{x:.2f}' for x in load1)}; best of {runs} runs")
    print(f"file: {size / 2**20:.1f} MiB ({pack}, embed/head {embed_dtype}); {tokens}-token prompt, "
          f"{tokens} decoded tokens, greedy")
    print("\n| engine | threads | prefill tok/s | decode tok/s | decode vs PyTorch | tg tok/s (empty context) |")
    print("|---|---|---|---|---|---|")
    for n in counts:
        c, t = [r for r in results if r.threads == n]
        for r in (c, t):
            tg = f"{r.tg_tok_s:.1f}" if r.tg_tok_s is not None else "-"
            print(f"| {r.engine} | {n} | {r.prefill_tok_s:.1f} | {r.decode_tok_s:.1f} | "
                  f"{r.decode_tok_s / t.decode_tok_s:.2f}x | {tg} |")


if __name__ == "__main__":
    main()
