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
"""

from __future__ import annotations

import sys
from pathlib import Path

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


def main(checkpoint: str, files: list[str]) -> None:
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
    for path in files:
        model = Model(path)
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
            f", top-1 agreement with {files[0]} {100 * float(np.mean(top1_all == first_top1)):.2f} %"
        first_top1 = top1_all if first_top1 is None else first_top1
        print(f"{path}: {size:,} bytes, val loss {float(np.mean(per_batch)):.4f} (C runtime){agree}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python tools/file_val_loss.py CHECKPOINT FILE.1bit [FILE.1bit ...]")
    main(sys.argv[1], sys.argv[2:])
