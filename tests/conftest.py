"""Shared fixtures: the real corpus, a char tokenizer trained on it, and small random checkpoints."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest
import torch

from onebit.config import ModelConfig
from onebit.tokenizer import Tokenizer, train_char_tokenizer
from onebit.train.checkpoint import save_checkpoint
from onebit.train.model import Transformer

# The machine is shared by several people on two cores.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
RUNTIME = REPO / "runtime_c"
C_CLI = RUNTIME / "build" / "onebit-run"


@pytest.fixture(scope="session")
def c_runtime() -> Path:
    """The C runtime built once per run (library for cffi, onebit-run for the CLI); the CLI's path."""
    from onebit.run.c import load_library

    if shutil.which("cc") is None or shutil.which("make") is None:
        pytest.skip("the C runtime needs cc and make")
    done = subprocess.run(["make", "-C", str(RUNTIME), "all"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    load_library()
    return C_CLI

SMALL_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n"
)
SMALL_CONFIG = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=32)



MICRO_MODEL = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=16)
WORDS = ["to", "be", "or", "not", "the", "king", "shall", "love", "night", "sweet", "crown", "my", "lord"]


def write_word_corpus(path: Path, seed: int, n_lines: int = 400) -> Path:
    """A few KB of learnable text for training tests: random words from a small lexicon, in short lines."""
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) + "." for _ in range(n_lines)]
    path.write_text("\n".join(lines) + "\n")
    return path

def skip_unless_ci(reason: str) -> None:
    """Skip a test whose prerequisite is missing, except in CI (CI=true), where it fails instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a missing prerequisite is a failure)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shakespeare_path() -> Path:
    data_dir = os.environ.get("ONEBIT_DATA_DIR")
    if not data_dir:
        skip_unless_ci("ONEBIT_DATA_DIR is not set: the tinyshakespeare corpus is unavailable")
    path = Path(data_dir) / "tinyshakespeare.txt"
    if not path.is_file():
        skip_unless_ci(f"{path} not found: the tinyshakespeare corpus is unavailable")
    return path


@pytest.fixture(scope="session")
def char_tokenizer(shakespeare_path: Path) -> Tokenizer:
    return train_char_tokenizer(shakespeare_path.read_text(encoding="utf-8"))


def _text_with_vocab(vocab_size: int) -> str:
    """A text with exactly vocab_size distinct characters: newline, then printable code points."""
    chars = ["\n"] + [chr(c) for c in range(0x20, 0x20 + vocab_size - 1)]
    return "".join(chars)


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Callable[..., Path]:
    """make_checkpoint(randomize=None, **config_overrides) -> a fresh dir with a seeded random model
    and char tokenizer.

    Defaults are SMALL_CONFIG; the tokenizer is trained on SMALL_TEXT unless vocab_size is given.
    randomize=SEED also draws the norms and embeddings at random (they start as ones and small
    values), so that a runtime that misplaces or skips one of them shows it.
    """

    def make_checkpoint(randomize: int | None = None, **overrides) -> Path:
        vocab_size = overrides.pop("vocab_size", None)
        text = SMALL_TEXT if vocab_size is None else _text_with_vocab(vocab_size)
        tokenizer = train_char_tokenizer(text)
        config = ModelConfig(**{**SMALL_CONFIG, **overrides, "vocab_size": tokenizer.vocab_size})
        torch.manual_seed(0)
        model = Transformer(config)
        if randomize is not None:
            _randomize_norms_and_embeddings(model, randomize)
        out = tmp_path_factory.mktemp("checkpoint")
        save_checkpoint(out, model, tokenizer, {"step": 0, "val_loss": None})
        return out

    return make_checkpoint


def _randomize_norms_and_embeddings(model: Transformer, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.startswith(("embed.", "head.", "pos_embed.")):
                p.copy_(torch.randn(p.shape, generator=gen))
