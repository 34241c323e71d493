"""Decode speed of onebit.wasm against onnxruntime-web's WASM backend, 1 thread, on the same model,
in one run, under Node and in headless Chromium.

For each shape, a seeded random checkpoint (no training: speed does not depend on the weights) is
exported to a .1bit and to three onnxruntime-web graphs (`web`: float MatMul on the ternary codes;
`web_int8`: MatMulInteger; `native`: MatMulNBits, 2-bit weights with int8 activations); then,
interleaved --runs times, each engine is timed with one protocol (a prefill of half the context,
then single-token decode steps): under Node by `examples/web/bench_wasm.mjs` (ONNX) and
`tools/bench_wasm_onebit.mjs` (.1bit), in Chromium by `examples/web/bench.html` driven by
`examples/web/bench_browser.mjs` through `examples/web/server.mjs`.  The best run of each is
kept; the ratio is onebit.wasm's decode tokens/s over the fastest onnxruntime-web graph's, in the
same place.

    .venv/bin/python tools/bench_wasm.py [--shape tiny --shape 134m] [--where node --where chromium]
                                         [--steps 16] [--runs 3]

Needs `make -C runtime_c wasm` and `make setup-web` (examples/web/node_modules, Debian chromium).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import torch
from machine import cpu_name  # tools/machine.py

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
    cpu = cpu_name()
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, node {node}"


GRAPHS = {  # name: export options
    "web": ("--onnx-graphs", "web", "--onnx-web-matmul", "float"),
    "web_int8": ("--onnx-graphs", "web", "--onnx-web-matmul", "int8"),
    "native": ("--onnx-graphs", "native"),
}


def make_model(shape: str, out: Path) -> tuple[Path, dict[str, Path]]:
    text = "".join(chr(0x20 + i) for i in range(VOCAB[shape] - 1)) + "\n"
    if shape == "134m":  # a char tokenizer cannot reach 32000 ids: use code points past ASCII
        text = "\n" + "".join(chr(0x100 + i) for i in range(VOCAB[shape] - 1))
    tokenizer = train_char_tokenizer(text)
    cfg = ModelConfig(**SHAPES[shape], vocab_size=tokenizer.vocab_size)
    torch.manual_seed(0)
    ckpt = out / "ckpt"
    save_checkpoint(ckpt, Transformer(cfg), tokenizer, {"step": 0, "val_loss": None})
    run = lambda *a: subprocess.run(["onebit", "export", str(ckpt), *a], check=True, capture_output=True)
    run("-o", str(out / "model.1bit"))
    graphs = {}
    for name, options in GRAPHS.items():
        run("--format", "onnx", *options, "-o", str(out / name))
        graphs[name] = out / name / ("model.onnx" if name == "native" else "model_web.onnx")
    return out / "model.1bit", graphs


@contextmanager
def server(root: Path) -> Iterator[str]:
    """examples/web/server.mjs serving root at /model/ on a free port; yields the page's URL."""
    proc = subprocess.Popen(["node", str(WEB / "server.mjs"), "--model", str(root), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("serving "):
            raise click.ClickException(f"server.mjs did not start: {line}{proc.stderr.read()}")
        yield line.split()[1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def commands(where: str, url: str, model: Path, graphs: dict[str, Path], steps: int) -> dict[str, list[str]]:
    if where == "node":
        cmds = {"onebit.wasm": ["node", str(REPO / "tools" / "bench_wasm_onebit.mjs"), str(model), str(steps)]}
        for name, path in graphs.items():
            cmds[f"onnxruntime-web {name}"] = ["node", "bench_wasm.mjs", str(path), str(steps)]
        return cmds
    browse = ["node", "bench_browser.mjs", "--url", url, "--steps", str(steps), "--engine"]
    cmds = {"onebit.wasm": [*browse, "onebit", "--file", model.name]}
    for name, path in graphs.items():
        cmds[f"onnxruntime-web {name}"] = [*browse, "ort", "--file", str(path.relative_to(model.parent))]
    return cmds


def node_json(cmd: list[str], cwd: Path) -> dict:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise click.ClickException(f"{' '.join(cmd)} failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@click.command()
@click.option("--shape", "shapes", multiple=True, type=click.Choice(sorted(SHAPES)), default=["tiny", "134m"],
              show_default=True, help="Model shapes to time (repeat the option).")
@click.option("--where", "places", multiple=True, type=click.Choice(["node", "chromium"]),
              default=["node", "chromium"], show_default=True,
              help="Where to run both engines: under Node and/or in headless Chromium (repeat the option).")
@click.option("--steps", default=16, show_default=True, help="Decode steps per run.")
@click.option("--runs", default=3, show_default=True, help="Interleaved runs per engine; the best is kept.")
@click.option("--models", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the exported models in this folder and reuse them on the next call  [default: a "
                   "temporary folder].")
def main(shapes: tuple[str, ...], places: tuple[str, ...], steps: int, runs: int, models: Path | None) -> None:
    """Time onebit.wasm and onnxruntime-web on the same models under Node and in Chromium."""
    print(f"machine: {machine()}")
    chromium = subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True, text=True,
                              check=False).stdout.strip()
    if "chromium" in places:
        print(f"browser: {chromium}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = []
    for shape in shapes:
        with tempfile.TemporaryDirectory() as tmp:
            root = (models / shape) if models else Path(tmp)
            root.mkdir(parents=True, exist_ok=True)
            if (root / "model.1bit").is_file() and all((root / n).is_dir() for n in GRAPHS):
                model = root / "model.1bit"
                graphs = {n: root / n / ("model.onnx" if n == "native" else "model_web.onnx") for n in GRAPHS}
            else:
                model, graphs = make_model(shape, root)
            for where in places:
                with server(root) as url:
                    cmds = commands(where, url, model, graphs, steps)
                    best: dict[str, dict] = {}
                    for _ in range(runs):
                        for engine, cmd in cmds.items():
                            r = node_json(cmd, WEB)
                            if engine not in best or r["tokens_per_s"] > best[engine]["tokens_per_s"]:
                                best[engine] = r
                for engine, cmd in cmds.items():
                    print(f"command ({shape}, {where}, {engine}): {' '.join(cmd)}")
                peer = max((r for e, r in best.items() if e != "onebit.wasm"), key=lambda r: r["tokens_per_s"])
                for engine, r in best.items():
                    rows.append((shape, where, engine, r, best["onebit.wasm"]["tokens_per_s"] / peer["tokens_per_s"]
                                 if engine == "onebit.wasm" else None))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| shape | where | engine | load ms | prefill ms (tokens) | decode ms/token | decode tok/s | "
          "vs fastest ort-web |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for shape, where, engine, r, ratio in rows:
        print(f"| {shape} | {where} | {engine}{' (' + r['isa'] + ')' if 'isa' in r else ''} | {r['load_ms']:.0f} | "
              f"{r['prefill_ms']:.1f} ({r['prefill_tokens']}) | {r['decode_ms_per_token']:.3f} | "
              f"{r['tokens_per_s']:.1f} | {f'**{ratio:.2f}x**' if ratio else '-'} |")


if __name__ == "__main__":
    main()
