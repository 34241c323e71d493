"""Decode speed of onebit.wasm against onnxruntime-web's WASM backend, both under Node, 1 thread,
on the same model, in one run.

For each shape, a seeded random checkpoint (no training: speed does not depend on the weights) is
exported to a .1bit and to onnxruntime-web's graphs (`web`, float MatMul on the ternary codes, and
`web_matmul=int8`, MatMulInteger); then, interleaved --runs times, `node examples/web/bench_wasm.mjs`
times each ONNX graph and `node tools/bench_wasm_onebit.mjs` times the .1bit (same protocol: a
prefill of half the context, then single-token decode steps).  The best run of each is kept; the
ratio is onebit.wasm's decode tokens/s over the fastest onnxruntime-web graph's.

    .venv/bin/python tools/bench_wasm.py [--shape tiny --shape 134m] [--steps 32] [--runs 3]

Needs `make -C runtime_c wasm` and `make setup-web` (examples/web/node_modules).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import click
import torch

from onebit.config import ModelConfig
from onebit.tokenizer import train_char_tokenizer
from onebit.train.checkpoint import save_checkpoint
from onebit.train.model import Transformer
from onebit.train.presets import TINY_MODEL

REPO = Path(__file__).resolve().parent.parent
WEB = REPO / "examples" / "web"
SHAPES = {
    # the tiny preset at its trained width (ternary: ffn 1024), char vocabulary of 65
    "tiny": dict(TINY_MODEL, ffn_dim=1024),
    # ANCHORS.md's 134M llama shape (tools/bench_decode.py), context cut to 256 to bound the run
    "134m": dict(dim=768, n_layers=12, n_heads=12, n_kv_heads=12, ffn_dim=2048, max_seq_len=256,
                 activation="silu", gated=True, subln=False, tie_embeddings=False),
}
VOCAB = {"tiny": 65, "134m": 32000}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, node {node}"


def make_model(shape: str, out: Path) -> tuple[Path, dict[str, Path]]:
    text = "".join(chr(0x20 + i) for i in range(VOCAB[shape] - 1)) + "\n"
    if shape == "134m":  # a char tokenizer cannot reach 32000 ids: use code points past ASCII
        text = "\n" + "".join(chr(0x100 + i) for i in range(VOCAB[shape] - 1))
    tokenizer = train_char_tokenizer(text)
    cfg = ModelConfig(**SHAPES[shape], vocab_size=tokenizer.vocab_size)
    torch.manual_seed(0)
    ckpt = out / "ckpt"
    save_checkpoint(ckpt, Transformer(cfg), tokenizer, {"step": 0, "val_loss": None})
    run = lambda *a: subprocess.run(["onebit", "export", str(ckpt), *a], check=True, capture_output=True)  # noqa: E731
    run("-o", str(out / "model.1bit"))
    graphs = {}
    for name, matmul in (("web", "float"), ("web_int8", "int8")):
        run("--format", "onnx", "--onnx-graphs", "web", "--onnx-web-matmul", matmul, "-o", str(out / name))
        graphs[name] = out / name / "model_web.onnx"
    return out / "model.1bit", graphs


def node_json(cmd: list[str], cwd: Path) -> dict:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise click.ClickException(f"{' '.join(cmd)} failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@click.command()
@click.option("--shape", "shapes", multiple=True, type=click.Choice(sorted(SHAPES)), default=["tiny", "134m"],
              show_default=True, help="Model shapes to time (repeat the option).")
@click.option("--steps", default=32, show_default=True, help="Decode steps per run.")
@click.option("--runs", default=3, show_default=True, help="Interleaved runs per engine; the best is kept.")
def main(shapes: tuple[str, ...], steps: int, runs: int) -> None:
    """Time onebit.wasm and onnxruntime-web on the same models under Node."""
    print(f"machine: {machine()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    rows = []
    for shape in shapes:
        with tempfile.TemporaryDirectory() as tmp:
            model, graphs = make_model(shape, Path(tmp))
            cmds = {"onebit.wasm": ["node", str(REPO / "tools" / "bench_wasm_onebit.mjs"), str(model), str(steps)]}
            for name, path in graphs.items():
                cmds[f"onnxruntime-web {name}"] = ["node", "bench_wasm.mjs", str(path), str(steps)]
            best: dict[str, dict] = {}
            for _ in range(runs):
                for engine, cmd in cmds.items():
                    r = node_json(cmd, WEB)
                    if engine not in best or r["tokens_per_s"] > best[engine]["tokens_per_s"]:
                        best[engine] = r
            for engine, cmd in cmds.items():
                print(f"command ({shape}, {engine}): {' '.join(cmd)}")
            peer = max((r for e, r in best.items() if e != "onebit.wasm"), key=lambda r: r["tokens_per_s"])
            for engine, r in best.items():
                rows.append((shape, engine, r, best["onebit.wasm"]["tokens_per_s"] / peer["tokens_per_s"]
                             if engine == "onebit.wasm" else None))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("| shape | engine | load ms | prefill ms (tokens) | decode ms/token | decode tok/s | vs fastest ort-web |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for shape, engine, r, ratio in rows:
        print(f"| {shape} | {engine}{' (' + r['isa'] + ')' if 'isa' in r else ''} | {r['load_ms']:.0f} | "
              f"{r['prefill_ms']:.1f} ({r['prefill_tokens']}) | {r['decode_ms_per_token']:.3f} | "
              f"{r['tokens_per_s']:.1f} | {f'**{ratio:.2f}x**' if ratio else '-'} |")


if __name__ == "__main__":
    main()
