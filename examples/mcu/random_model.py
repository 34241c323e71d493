"""A small seeded random checkpoint for the firmware and WebAssembly tests.

No training: the runtimes must agree on any weights.  The norms, embeddings and head are drawn
at random (they start as ones and small values), so that greedy decoding wanders over the
vocabulary instead of repeating one character, and a runtime that misplaces one of them shows it.

    python examples/mcu/random_model.py OUT_DIR [--dim 64] [--seed 0]
"""

from __future__ import annotations

from pathlib import Path

import click
import torch

from onebit.config import ModelConfig
from onebit.tokenizer import train_char_tokenizer
from onebit.train.checkpoint import save_checkpoint
from onebit.train.model import Transformer

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n")


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dim", default=64, show_default=True, help="Model width (heads of 16).")
@click.option("--n-layers", default=2, show_default=True, help="Transformer blocks.")
@click.option("--max-seq-len", default=64, show_default=True, help="Context length.")
@click.option("--seed", default=0, show_default=True, help="Seed of every random draw.")
def main(out_dir: Path, dim: int, n_layers: int, max_seq_len: int, seed: int) -> None:
    """Write a random checkpoint to OUT_DIR."""
    tokenizer = train_char_tokenizer(TEXT)
    config = ModelConfig(dim=dim, n_layers=n_layers, n_heads=dim // 16, n_kv_heads=max(1, dim // 32),
                         ffn_dim=2 * dim, max_seq_len=max_seq_len, vocab_size=tokenizer.vocab_size,
                         tie_embeddings=False)
    torch.manual_seed(seed)
    model = Transformer(config)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.startswith(("embed.", "head.")):
                p.copy_(torch.randn(p.shape, generator=gen))
    save_checkpoint(out_dir, model, tokenizer, {"step": 0, "val_loss": None})


if __name__ == "__main__":
    main()
