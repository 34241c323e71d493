"""Writes tiny.1bit, the small model the C unit tests load (committed; rerun after a format change).

    .venv/bin/python runtime_c/tests/data/gen_tiny.py

A seeded random ternary model (GQA, qk_norm, untied f16 head) with a char tokenizer; its
weights are meaningless, the tests only check the runtime's own consistency and robustness.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from onebit.compile.export import ExportOptions, export_1bit
from onebit.config import ModelConfig
from onebit.tokenizer import train_char_tokenizer
from onebit.train.checkpoint import save_checkpoint
from onebit.train.model import Transformer

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"


def main() -> None:
    tokenizer = train_char_tokenizer(TEXT)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                         ffn_dim=96, max_seq_len=48, qk_norm=True, tie_embeddings=False)
    torch.manual_seed(0)
    model = Transformer(config)
    with torch.no_grad():
        model.embed.weight.normal_()
        model.head.weight.normal_()
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(Path(tmp), model, tokenizer, {"step": 0, "val_loss": None})
        export_1bit(Path(tmp), Path(__file__).with_name("tiny.1bit"), ExportOptions(pack="t2", embed_dtype="f16"))


if __name__ == "__main__":
    main()
