"""The ONNX export on onnxruntime (CPU) against PyTorch eager, in one run (docs/BENCHMARKS.md, ## ONNX).

    ONEBIT_DATA_DIR=../shared/data .venv/bin/python tools/bench_onnx.py [--checkpoint RUN] [--shape tiny]
        [--steps 32] [--runs 3] [--windows 32]

Speed: the model (a trained RUN, or a seeded random model of --shape: speed does not depend on the
weights) is exported as the native graph (MatMulNBits, block 128, accuracy level 4, and the same at
level 0) and the web graph; each engine, one intra-op thread, times a 15-token prefill followed by
--steps single-token decode steps with the KV-cache, and a 32-token prefill.  Engines run
interleaved --runs times and the best run of each is kept; the ratio is PyTorch's ms/token over
each graph's.  Sizes: the graph files, with block 128 and block 32.

Fidelity (with --checkpoint): over --windows random 64-token windows of the run's validation split,
the largest and mean |logit difference| from PyTorch, how often the argmax agrees, and the mean
next-token loss, for the web graph and the native graph at block 128 and 32.  Deterministic.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onebit.compile.onnx_export import OnnxOptions, export_model  # noqa: E402
from onebit.config import ModelConfig  # noqa: E402
from onebit.run.ort import OrtDecoder  # noqa: E402
from onebit.tokenizer import train_char_tokenizer  # noqa: E402
from onebit.train.checkpoint import load_checkpoint  # noqa: E402
from onebit.train.data import _resolve_shakespeare, default_cache_dir, load_token_data  # noqa: E402
from onebit.train.model import Transformer  # noqa: E402
from onebit.train.presets import SMALL_MODEL, TINY_MODEL  # noqa: E402

SHAPES = {"tiny": {**TINY_MODEL, "ffn_dim": 1024}, "small": SMALL_MODEL}  # tiny: the ternary preset's ffn
PROMPT, PREFILL = 15, 32
# name, export options, graph file
ENGINES = [("onnxruntime native (MatMulNBits, level 4, block 128)", OnnxOptions(("native",)), "native"),
           ("onnxruntime native, accuracy level 0", OnnxOptions(("native",), accuracy_level=0), "native"),
           ("onnxruntime web (fp32 MatMul on unpacked codes)", OnnxOptions(("web",)), "web")]


def torch_timer(model: Transformer, steps: int):
    def run(tokens: np.ndarray) -> tuple[float, float]:
        x = torch.from_numpy(tokens)[None]
        with torch.no_grad():
            t0 = time.perf_counter()
            model(x[:, :PREFILL])
            prefill = time.perf_counter() - t0
            _, past = model(x[:, :PROMPT])
            t0 = time.perf_counter()
            for i in range(steps):
                _, past = model(x[:, PROMPT + i:PROMPT + i + 1], past, PROMPT + i)
            return prefill, (time.perf_counter() - t0) / steps
    return run


def ort_timer(decoder: OrtDecoder, steps: int):
    def run(tokens: np.ndarray) -> tuple[float, float]:
        t0 = time.perf_counter()
        decoder.forward(tokens[None, :PREFILL], decoder.empty_past())
        prefill = time.perf_counter() - t0
        _, past = decoder.forward(tokens[None, :PROMPT], decoder.empty_past())
        t0 = time.perf_counter()
        for i in range(steps):
            _, past = decoder.forward(tokens[None, PROMPT + i:PROMPT + i + 1], past)
        return prefill, (time.perf_counter() - t0) / steps
    return run


def fidelity_rows(ckpt, work: Path, windows: int) -> list[str]:
    cfg, meta = ckpt.model.cfg, ckpt.meta
    data = load_token_data(meta["train_config"]["data"], ckpt.tokenizer, default_cache_dir(),
                           meta["train_config"]["val_fraction"])
    val = np.asarray(data.val, dtype=np.int64)
    starts = np.random.default_rng(0).integers(0, len(val) - cfg.max_seq_len - 1, windows)
    xs = np.stack([val[s:s + cfg.max_seq_len] for s in starts])
    ys = np.stack([val[s + 1:s + cfg.max_seq_len + 1] for s in starts])
    with torch.no_grad():
        ref = ckpt.model(torch.from_numpy(xs))[0].numpy()

    def nll(logits: np.ndarray) -> float:
        z = logits.astype(np.float64) - logits.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        return float(-np.take_along_axis(logp, ys[..., None], -1).mean())

    rows = [f"| PyTorch | - | - | - | {nll(ref):.4f} |"]
    for name, opts, graph in [("web", OnnxOptions(("web",)), "web"),
                              ("native, block 128 (default)", OnnxOptions(("native",)), "native"),
                              ("native, block 32", OnnxOptions(("native",), block_size=32), "native")]:
        export_model(ckpt.model, ckpt.tokenizer, work / "fid", opts)
        dec = OrtDecoder(work / "fid", graph, threads=1)
        got = np.concatenate([dec.forward(xs[i:i + 1], dec.empty_past())[0] for i in range(windows)])
        diff = np.abs(got - ref)
        agree = float((got.argmax(-1) == ref.argmax(-1)).mean())
        rows.append(f"| {name} | {diff.max():.1e} | {diff.mean():.1e} | {100 * agree:.2f} % | {nll(got):.4f} |")
    return rows


@click.command()
@click.option("--checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A trained run to time and to compare against (else a random model of --shape).  [default: none]")
@click.option("--shape", type=click.Choice(list(SHAPES)), default="tiny", show_default=True,
              help="Shape of the random model when no --checkpoint is given.")
@click.option("--steps", type=click.IntRange(1), default=32, show_default=True, help="Decode steps timed per run.")
@click.option("--runs", type=click.IntRange(1), default=3, show_default=True, help="Interleaved runs; the best is kept.")
@click.option("--windows", type=click.IntRange(1), default=32, show_default=True,
              help="Validation windows for the fidelity table (--checkpoint only).")
def main(checkpoint: Path | None, shape: str, steps: int, runs: int, windows: int) -> None:
    """Print the speed, size and (with --checkpoint) fidelity tables as markdown."""
    import onnxruntime as ort

    torch.set_num_threads(1)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; onnxruntime {ort.__version__}, torch {torch.__version__}")
    print("command: " + " ".join(shlex.quote(a) for a in ["tools/bench_onnx.py", *sys.argv[1:]]))
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint)
        model, tokenizer, what = ckpt.model, ckpt.tokenizer, str(checkpoint)
    else:
        tokenizer = train_char_tokenizer(_resolve_shakespeare().read_text(encoding="utf-8"))
        torch.manual_seed(0)
        model = Transformer(ModelConfig(**{**SHAPES[shape], "vocab_size": tokenizer.vocab_size})).eval()
        what = f"random {shape} model"
    model = model.eval().float()
    if model.cfg.max_seq_len < max(PREFILL, PROMPT + steps):
        raise click.UsageError(f"the context of {model.cfg.max_seq_len} is shorter than {PROMPT} + --steps")
    tokens = np.random.default_rng(1).integers(0, model.cfg.vocab_size, max(PREFILL, PROMPT + steps)).astype(np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        timers = {"PyTorch eager": torch_timer(model, steps)}
        for i, (name, opts, graph) in enumerate(ENGINES):
            export_model(model, tokenizer, work / str(i), opts)
            timers[name] = ort_timer(OrtDecoder(work / str(i), graph, threads=1), steps)
        best: dict[str, tuple[float, float]] = {}
        for _ in range(runs):
            for name, timer in timers.items():
                prefill, decode = timer(tokens)
                old = best.get(name, (float("inf"), float("inf")))
                best[name] = (min(old[0], prefill), min(old[1], decode))
        print(f"\n{what}: {steps} decode steps after a {PROMPT}-token prompt, {PREFILL}-token prefill, "
              f"1 thread, best of {runs}; load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
        print("| engine | decode ms/token | tokens/s | vs PyTorch | prefill 32 ms |\n|---|---:|---:|---:|---:|")
        eager = best["PyTorch eager"][1]
        for name, (prefill, decode) in best.items():
            print(f"| {name} | {1e3 * decode:.2f} | {1 / decode:.0f} | {eager / decode:.1f}x | {1e3 * prefill:.1f} |")
        sizes = []
        for block in (128, 32):
            export_model(model, tokenizer, work / f"b{block}", OnnxOptions(("native", "web"), block_size=block))
            sizes.append(f"model.onnx {(work / f'b{block}' / 'model.onnx').stat().st_size:,} bytes with block {block}")
        sizes.append(f"model_web.onnx {(work / 'b128' / 'model_web.onnx').stat().st_size:,} bytes")
        n_params = sum(p.numel() for p in model.parameters())
        print(f"\nsizes: {'; '.join(sizes)}; f32 parameters {4 * n_params:,} bytes")
        if checkpoint is not None:
            print(f"\nfidelity against PyTorch, {windows} random {model.cfg.max_seq_len}-token validation windows:\n")
            print("| graph | max abs logit diff | mean abs diff | argmax agreement | NLL |\n|---|---:|---:|---:|---:|")
            print("\n".join(fidelity_rows(ckpt, work, windows)))


if __name__ == "__main__":
    main()
