"""Validation loss of exported `.1bit` files on the trainer's own validation windows.

The trainer (and `onebit search`) report the PyTorch model's loss, whose embedding is f32; an
exported file stores the embedding as f16 or i8. This measures what the file computes: the C
runtime's logits (onebit.run.c, one fresh context per window) on the same fixed windows
(EVAL_SEED, eval_batches x batch_size sequences of max_seq_len tokens), mean cross-entropy per
batch, then the mean over batches, as the trainer does. It also prints the PyTorch loss of
CHECKPOINT on those windows, so the two can be compared, and for every file after the first the
top-1 agreement with the first file: the share of window positions where both files' logits have
the same argmax (the next token greedy decoding would pick from the same context).

    python tools/file_val_loss.py runs/base2000 a.1bit b.1bit ...
    python tools/file_val_loss.py runs/base2000 a.1bit --kv f32,f16

--kv runs every file with each KV-cache type in turn (default f32, PyTorch's twin, as every figure
recorded before the f16 default); agreement is then with the first file's first cache type.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch

from onebit.compile.search import _train_config, fixed_batches
from onebit.run.c import Model
from onebit.train.checkpoint import load_checkpoint
from onebit.train.data import default_cache_dir, load_token_data
from onebit.train.trainer import EVAL_SEED


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return float(-logp[np.arange(len(targets)), targets].mean())


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--kv", default="f32", show_default=True,
              help="KV-cache types to run every file with, comma-separated (f32, f16).")
def main(checkpoint: str, files: tuple[str, ...], kv: str) -> None:
    """Validation loss of .1bit FILES on CHECKPOINT's validation windows, in the C runtime."""
    kv_types = [k.strip() for k in kv.split(",")]
    if not kv_types or any(k not in ("f32", "f16") for k in kv_types):
        raise click.BadParameter(f"expected f32 and/or f16, got {kv!r}", param_hint="--kv")
    ckpt = load_checkpoint(Path(checkpoint))
    cfg = _train_config(ckpt)
    data = load_token_data(cfg.data, ckpt.tokenizer, default_cache_dir(), cfg.val_fraction)
    batches = fixed_batches(data, "val", cfg.eval_batches, cfg.batch_size, ckpt.config.max_seq_len, EVAL_SEED)
    ckpt.model.eval()
    with torch.no_grad():
        torch_loss = float(np.mean([ckpt.model.loss(x, y).item() for x, y in batches]))
    print(f"{checkpoint} (PyTorch, f32 embedding): val loss {torch_loss:.4f} "
          f"({len(batches)} x {cfg.batch_size} windows of {ckpt.config.max_seq_len})")
    first_top1: np.ndarray | None = None
    first = f"{files[0]} (kv {kv_types[0]})"
    for path, cache in [(f, k) for f in files for k in kv_types]:
        model = Model(path, kv=cache)
        per_batch, top1 = [], []
        for x, y in batches:
            losses = []
            for row, t in zip(x, y):
                logits = model.logits(row.tolist())
                losses.append(cross_entropy(logits, t.numpy()))
                top1.append(logits.argmax(axis=-1))
            per_batch.append(np.mean(losses))
        size = Path(path).stat().st_size
        top1_all = np.concatenate(top1)
        agree = "" if first_top1 is None else \
            f", top-1 agreement with {first} {100 * float(np.mean(top1_all == first_top1)):.2f} %"
        first_top1 = top1_all if first_top1 is None else first_top1
        print(f"{path}: {size:,} bytes, val loss {float(np.mean(per_batch)):.5f} (C runtime, kv {cache}){agree}")


if __name__ == "__main__":
    main()
