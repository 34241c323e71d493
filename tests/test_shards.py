"""Sharded corpora: parallel tokenization gives the very stream one process gives, read back lazily."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from onebit.tokenizer import make_tokenizer
from onebit.train import shards
from onebit.train import trainer as train_cli
from onebit.train.data import DataError, load_token_data, prepare_tokens, resolve_corpus
from onebit.train.shards import ShardedTokens, plan_pieces, prepare_shards


@pytest.fixture
def folder(tmp_path) -> Path:
    """Five files of short lines, some with leading spaces and blank lines (the cut rule must skip those)."""
    rng = random.Random(3)
    words = ["to", "be", "or", "not", "the", "king", "shall", "love", "night", "sweet", "crown", "my", "lord",
             "naïve", "café"]
    root = tmp_path / "corpus"
    for i in range(5):
        lines = []
        for _ in range(rng.randint(20, 60)):
            line = " ".join(rng.choice(words) for _ in range(rng.randint(1, 9)))
            lines.append(rng.choice(["", "  ", "\n"]) + line)
        sub = root / ("a" if i < 3 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"part{i}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_shards_equal_the_one_file_stream(folder, tmp_path, kind):
    corpus = resolve_corpus(str(folder))
    tokenizer = make_tokenizer(kind, corpus, 300)
    whole = prepare_tokens(corpus, tokenizer, tmp_path / "cache", val_fraction=0.0).train
    pieces = plan_pieces(corpus, piece_bytes=150)
    assert len(pieces) > 2 * len(corpus)  # several pieces per file, so cuts are exercised
    stream = prepare_shards(corpus, tokenizer, tmp_path / "cache", workers=2, piece_bytes=150)
    assert np.array_equal(np.asarray(stream), np.asarray(whole))


def test_shards_are_made_once(folder, tmp_path, monkeypatch):
    corpus = resolve_corpus(str(folder))
    tokenizer = make_tokenizer("char", corpus, 0)
    first = prepare_shards(corpus, tokenizer, tmp_path / "cache", workers=1, piece_bytes=200)

    def fail(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(shards, "_tokenize_all", fail)
    again = prepare_shards(corpus, tokenizer, tmp_path / "cache", workers=1, piece_bytes=200)
    assert np.array_equal(np.asarray(first), np.asarray(again))


def test_windows_across_shard_boundaries():
    arrays = [np.arange(0, 5, dtype=np.uint16), np.arange(5, 6, dtype=np.uint16), np.arange(6, 20, dtype=np.uint16)]
    stream = ShardedTokens(arrays)
    whole = np.arange(20, dtype=np.uint16)
    ix = np.array([[3, 4, 5, 6, 7], [0, 1, 2, 3, 4], [15, 16, 17, 18, 19]])
    assert np.array_equal(stream[ix], whole[ix])
    tail = stream[12:]
    assert len(tail) == 8 and np.array_equal(tail[np.array([0, 7])], [12, 19])
    with pytest.raises(IndexError):
        tail[np.array([8])]


def test_validation_held_out_by_file(folder, tmp_path):
    corpus = resolve_corpus(str(folder))
    tokenizer = make_tokenizer("char", corpus, 0)
    held = folder / "b" / "part4.txt"
    data = load_token_data(str(folder), tokenizer, tmp_path / "cache", val_spec=str(held), workers=1)
    assert np.array_equal(np.asarray(data.val), tokenizer.encode(held.read_text(encoding="utf-8")))
    rest = [p for p in corpus if p != held]
    expect = prepare_tokens(rest, tokenizer, tmp_path / "cache2", val_fraction=0.0).train
    assert np.array_equal(np.asarray(data.train), np.asarray(expect))
    with pytest.raises(DataError, match="every file"):
        load_token_data(str(held), tokenizer, tmp_path / "cache", val_spec=str(held))


def test_glob_and_bad_files(folder, tmp_path):
    assert resolve_corpus(str(folder / "*" / "part[34].txt")) == [folder / "b" / "part3.txt", folder / "b" / "part4.txt"]
    with pytest.raises(DataError, match="matches no files"):
        resolve_corpus(str(folder / "*.md"))
    bad = folder / "b" / "zbad.txt"
    bad.write_bytes(b"fine line\n\xff\xfe broken\n")
    corpus = resolve_corpus(str(folder))
    tokenizer = make_tokenizer("char", corpus[:-1], 0)
    with pytest.raises(DataError, match="zbad.txt: not UTF-8"):
        prepare_shards(corpus, tokenizer, tmp_path / "cache", workers=2)
    assert not list((tmp_path / "cache").rglob("index.json"))


def test_cli_trains_on_a_folder_with_held_out_file(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("ONEBIT_CACHE_DIR", str(tmp_path / "cache"))
    args = ["--data", str(folder / "**" / "*.txt"), "--val-data", str(folder / "b" / "part4.txt"),
            "--data-workers", "1", "--max-steps", "3", "--eval-interval", "3", "--eval-batches", "1",
            "--batch-size", "2", "--quiet", "--out", str(tmp_path / "run")]
    for item in ("dim=32", "n_layers=1", "n_heads=2", "n_kv_heads=2", "ffn_dim=64", "max_seq_len=16"):
        args += ["--set", item]
    result = CliRunner().invoke(train_cli.main, args)
    assert result.exit_code == 0, result.stderr
    assert list((tmp_path / "cache").glob("shards-*/index.json"))
