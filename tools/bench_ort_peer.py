"""onnxruntime as a whole-model peer of tools/bench_peers.py: export and time one random model.

    python tools/bench_ort_peer.py export OUT_DIR --shape 134m --seed 0
    python tools/bench_ort_peer.py time OUT_DIR --threads 1 --test tg128

`export` builds the PyTorch model of bench_peers' random ternary model (the same codes, one scale
per tensor, the same head matrix) and writes onebit's own ONNX graph of it (MatMulNBits, bits 2,
block 128, accuracy level 4; compile/onnx_export.py), the graph `onebit run-ort` runs.  Two
differences from the .1bit, both the exporter's: each BitLinear's scale is BitLinear's absmean
of the latent weights (the codes are the same), and the head is an fp32 MatMul (4 bytes a weight,
where the .1bit's head is int8).

`time` loads the graph in a fresh onnxruntime session with intra_op_num_threads = --threads and
prints one line, as onebit-run --bench does:
    bench: prefill_tok_s=X decode_tok_s=Y threads=N
tg128: one prompt token, then 128 decode steps of one token each with the growing KV-cache
(decode_tok_s = steps / their time); pp128 / pp512: one forward of 128 / 512 tokens from an empty
cache (prefill_tok_s).  The other value of the line is 0.  One warm-up forward runs before the
timed part, as llama-bench's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))


@click.group()
def cli() -> None:
    """Export / time onebit's ONNX graph of bench_peers' random model with onnxruntime."""


@cli.command()
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--shape", default="134m", show_default=True, help="bench_peers shape")
@click.option("--seed", default=0, show_default=True, help="seed of the random model")
def export(out_dir: Path, shape: str, seed: int) -> None:
    """Write OUT_DIR/model.onnx for the shape (atomic: the folder appears complete or not at all)."""
    import os
    import shutil

    import torch
    from bench_peers import SHAPES, head_matrix, onebit_config, ternary

    from onebit.atomic import atomic_write_bytes
    from onebit.compile.onnx_export import OnnxOptions, build_onnx
    from onebit.format import bitlinear_shapes
    from onebit.onnx_files import GRAPH_FILES
    from onebit.train.model import Transformer

    sh = SHAPES[shape]
    cfg = onebit_config(sh)
    with torch.no_grad():
        model = Transformer(cfg).eval().float()
        state = model.state_dict()
        for name in bitlinear_shapes(cfg.to_dict()):
            codes, s = ternary(name, *state[name].shape, seed)
            state[name].copy_(torch.from_numpy(codes.astype(np.float32) * np.float32(s)))
        head = torch.from_numpy(head_matrix(sh, seed))
        state["embed.weight"].copy_(head)
        if "head.weight" in state:
            state["head.weight"].copy_(head)
        proto = build_onnx(model, "native", OnnxOptions(graphs=("native",)))
    tmp = out_dir.with_name(out_dir.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    atomic_write_bytes(tmp / GRAPH_FILES["native"], proto.SerializeToString())
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)


@cli.command("time")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--threads", default=1, show_default=True, help="onnxruntime intra-op threads")
@click.option("--test", type=click.Choice(["tg128", "pp128", "pp512"]), default="tg128", show_default=True,
              help="what to time")
def time_(model_dir: Path, threads: int, test: str) -> None:
    """Time one test; prints the bench line."""
    from onebit.run.ort import OrtDecoder

    dec = OrtDecoder(model_dir, "native", "cpu", threads)
    rng = np.random.default_rng(1)
    vocab = dec.cfg.vocab_size
    dec.forward(rng.integers(0, vocab, (1, 8)), dec.empty_past())  # warm-up
    prefill = decode = 0.0
    if test == "tg128":
        logits, past = dec.forward(rng.integers(0, vocab, (1, 1)), dec.empty_past())
        t0 = time.perf_counter()
        for _ in range(128):
            tok = np.array([[int(np.argmax(logits[0, -1]))]])
            logits, past = dec.forward(tok, past)
        decode = 128 / (time.perf_counter() - t0)
    else:
        n = int(test[2:])
        t0 = time.perf_counter()
        dec.forward(rng.integers(0, vocab, (1, n)), dec.empty_past())
        prefill = n / (time.perf_counter() - t0)
    print(f"bench: prefill_tok_s={prefill:.1f} decode_tok_s={decode:.1f} threads={threads}")


if __name__ == "__main__":
    cli()
