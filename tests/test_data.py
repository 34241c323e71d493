"""Corpus resolution, the memory-mapped token cache and random training windows."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from onebit.tokenizer import Tokenizer, train_bpe_tokenizer, train_char_tokenizer
from onebit.train import data
from onebit.train.data import DataError, TokenData, prepare_tokens, resolve_corpus, token_dtype

FAKE_CORPUS = b"To be, or not to be, that is the question.\n"


def _random_text(seed: int, n: int, alphabet: str = "abcdefgh ijk\nlm,.") -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(n))


# ----------------------------------------------------------------------------------------------
# resolve_corpus


def test_file_and_folder(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("ay")
    (tmp_path / "notes.md").write_text("not a corpus file")
    assert resolve_corpus(str(tmp_path / "b.txt")) == [tmp_path / "b.txt"]
    assert resolve_corpus(str(tmp_path)) == [tmp_path / "b.txt", tmp_path / "sub" / "a.txt"]


def test_missing_corpus(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        resolve_corpus(str(tmp_path / "nope.txt"))


def test_empty_corpus(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="is empty"):
        resolve_corpus(str(tmp_path / "empty.txt"))
    with pytest.raises(DataError, match="is empty"):
        resolve_corpus(str(tmp_path))
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="no .txt files"):
        resolve_corpus(str(tmp_path / "none"))


@pytest.fixture
def fake_shakespeare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """An offline world: fake corpus checksum, cwd, data dir and cache dir all under tmp_path."""
    monkeypatch.setattr(data, "SHAKESPEARE_SHA256", hashlib.sha256(FAKE_CORPUS).hexdigest())
    work, data_dir, cache = tmp_path / "work", tmp_path / "shared", tmp_path / "cache"
    for d in (work, data_dir):
        d.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("ONEBIT_DATA_DIR", str(data_dir))
    monkeypatch.setenv("ONEBIT_CACHE_DIR", str(cache))
    return {"local": work / "data" / "tinyshakespeare.txt", "data_dir": data_dir / "tinyshakespeare.txt",
            "cache": cache / "tinyshakespeare.txt"}


def _no_download(url: str, dest: Path) -> None:
    raise AssertionError("must not download when a local copy exists")


def test_resolution_order(fake_shakespeare: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    downloads: list[str] = []

    def fake_download(url: str, dest: Path) -> None:
        downloads.append(url)
        Path(dest).write_bytes(FAKE_CORPUS)

    monkeypatch.setattr(data, "download", fake_download)
    for key in ("local", "data_dir", "cache"):
        fake_shakespeare[key].parent.mkdir(parents=True, exist_ok=True)
        fake_shakespeare[key].write_bytes(FAKE_CORPUS)
    for key in ("local", "data_dir", "cache"):
        assert resolve_corpus("tinyshakespeare")[0].resolve() == fake_shakespeare[key].resolve()
        fake_shakespeare[key].unlink()
    assert downloads == []
    assert resolve_corpus("tinyshakespeare") == [fake_shakespeare["cache"]]
    assert downloads == [data.SHAKESPEARE_URL]
    assert fake_shakespeare["cache"].read_bytes() == FAKE_CORPUS
    assert resolve_corpus("tinyshakespeare") == [fake_shakespeare["cache"]]  # now cached
    assert len(downloads) == 1


def test_download_with_wrong_checksum_is_rejected(fake_shakespeare: dict[str, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "download", lambda url, dest: Path(dest).write_bytes(FAKE_CORPUS + b"tampered"))
    with pytest.raises(DataError, match="sha256"):
        resolve_corpus("tinyshakespeare")
    cache_dir = fake_shakespeare["cache"].parent
    assert list(cache_dir.iterdir()) == []  # neither the bad file nor a temp file is kept


def test_local_copy_with_wrong_checksum_is_rejected(fake_shakespeare: dict[str, Path],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "download", _no_download)
    fake_shakespeare["data_dir"].write_bytes(b"something else entirely\n")
    with pytest.raises(DataError, match="does not match"):
        resolve_corpus("tinyshakespeare")


def test_real_corpus_from_data_dir(shakespeare_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ONEBIT_DATA_DIR", str(shakespeare_path.parent))
    monkeypatch.setattr(data, "download", _no_download)
    assert resolve_corpus("tinyshakespeare") == [shakespeare_path]


# ----------------------------------------------------------------------------------------------
# prepare_tokens


def test_char_tokens_of_the_real_corpus(shakespeare_path: Path, char_tokenizer: Tokenizer, tmp_path: Path) -> None:
    td = prepare_tokens([shakespeare_path], char_tokenizer, tmp_path)
    text = shakespeare_path.read_text(encoding="utf-8")
    n = len(text)
    assert isinstance(td.train, np.memmap) and td.train.dtype == np.uint16
    assert len(td.val) == int(n * 0.1) and len(td.train) + len(td.val) == n
    stream = np.concatenate([td.train, td.val])
    assert np.array_equal(stream, char_tokenizer.encode(text))


def test_tokens_are_cached_and_invalidated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text(_random_text(0, 3000))
    tok = train_char_tokenizer(corpus.read_text())
    first = prepare_tokens([corpus], tok, tmp_path / "cache")

    def fail(*args, **kwargs):
        raise AssertionError("tokenized again")

    with monkeypatch.context() as m:
        m.setattr(Tokenizer, "encode_stream", fail)
        again = prepare_tokens([corpus], tok, tmp_path / "cache", val_fraction=0.25)
    assert again.path == first.path and len(again.val) == 750
    text = _random_text(1, 2000)
    corpus.write_text(text)
    os.utime(corpus, ns=(1, 1))  # a new mtime even on coarse clocks
    changed = prepare_tokens([corpus], tok, tmp_path / "cache")
    assert changed.path != first.path
    assert np.array_equal(np.concatenate([changed.train, changed.val]), tok.encode(text))
    other_tok = train_char_tokenizer(text + "Z")
    assert prepare_tokens([corpus], other_tok, tmp_path / "cache").path not in (first.path, changed.path)


def test_truncated_cache_is_rebuilt(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text(_random_text(2, 1000))
    tok = train_char_tokenizer(corpus.read_text())
    td = prepare_tokens([corpus], tok, tmp_path / "cache")
    path = td.path
    del td
    path.write_bytes(path.read_bytes()[:100])
    rebuilt = prepare_tokens([corpus], tok, tmp_path / "cache")
    assert len(rebuilt.train) + len(rebuilt.val) == 1000


def test_uint32_for_large_vocab(tmp_path: Path) -> None:
    assert token_dtype(65535) == np.uint16 and token_dtype(65536) == np.uint32
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 70000) if not 0xD800 <= c < 0xE000]
    tok = train_char_tokenizer("".join(chars))
    assert tok.vocab_size > 65535
    text = "".join(random.Random(3).choice(chars[-500:]) for _ in range(300))
    corpus = tmp_path / "wide.txt"
    corpus.write_text(text, encoding="utf-8")
    td = prepare_tokens([corpus], tok, tmp_path / "cache")
    assert td.train.dtype == np.uint32
    stream = np.concatenate([td.train, td.val])
    assert stream.max() > 65535 and np.array_equal(stream, tok.encode(text))


def test_bpe_files_are_joined_with_endoftext(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(_random_text(4, 2000))
    b.write_text(_random_text(5, 2000))
    tok = train_bpe_tokenizer([a, b], 300)
    td = prepare_tokens([a, b], tok, tmp_path / "cache", val_fraction=0.0)
    expected = tok.encode(a.read_text()) + [0] + tok.encode(b.read_text())
    assert len(td.val) == 0 and np.array_equal(td.train, expected)


def test_bad_corpus_files(tmp_path: Path) -> None:
    tok = train_char_tokenizer("abc")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="no tokens"):
        prepare_tokens([empty], tok, tmp_path / "cache")
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("abcabd")
    with pytest.raises(DataError, match=r"foreign.txt.*'d'.*offset 5"):
        prepare_tokens([foreign], tok, tmp_path / "cache")
    with pytest.raises(DataError, match="not found"):
        prepare_tokens([tmp_path / "gone.txt"], tok, tmp_path / "cache")
    with pytest.raises(DataError, match="val_fraction"):
        prepare_tokens([foreign], tok, tmp_path / "cache", val_fraction=1.0)
    assert not list((tmp_path / "cache").glob("*.bin"))  # nothing half-written kept


# ----------------------------------------------------------------------------------------------
# batches


@pytest.fixture
def small_data(tmp_path: Path) -> TokenData:
    corpus = tmp_path / "c.txt"
    corpus.write_text(_random_text(6, 5000))
    return prepare_tokens([corpus], train_char_tokenizer(corpus.read_text()), tmp_path / "cache")


@pytest.mark.parametrize("split", ["train", "val"])
def test_batches_are_windows_of_the_stream(small_data: TokenData, split: str) -> None:
    seq_len, batch_size = 12, 16
    x, y = small_data.batch(split, batch_size, seq_len, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (batch_size, seq_len) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    stream = np.asarray(getattr(small_data, split)).astype(np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(stream, seq_len + 1)
    for row_x, row_y in zip(x.numpy(), y.numpy()):
        row = np.append(row_x, row_y[-1])
        assert (windows == row).all(axis=1).any()


def test_batches_follow_the_generator(small_data: TokenData) -> None:
    a = small_data.batch("train", 8, 16, torch.Generator().manual_seed(1))
    b = small_data.batch("train", 8, 16, torch.Generator().manual_seed(1))
    c = small_data.batch("train", 8, 16, torch.Generator().manual_seed(2))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


def test_batch_errors(small_data: TokenData) -> None:
    with pytest.raises(DataError, match="too few"):
        small_data.batch("val", 2, len(small_data.val), torch.Generator())
    with pytest.raises(DataError, match="split"):
        small_data.batch("test", 2, 4, torch.Generator())
