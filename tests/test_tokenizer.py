"""Tokenizers: round trips, the unknown-character error, HF compatibility, chunked == whole BPE."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

from onebit.tokenizer import (
    EOT,
    Tokenizer,
    TokenizerError,
    iter_corpus_text,
    make_tokenizer,
    split_chunks,
    train_bpe_tokenizer,
    train_char_tokenizer,
)

BPE_VOCAB = 400
unicode_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)


@pytest.fixture(scope="module")
def corpus_text(shakespeare_path: Path) -> str:
    return shakespeare_path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def bpe(shakespeare_path: Path) -> Tokenizer:
    return train_bpe_tokenizer([shakespeare_path], BPE_VOCAB)


WS_ALPHABET = "ab1'. \n\t\u00a0é"


@pytest.fixture(scope="module")
def ws_bpe(tmp_path_factory) -> Tokenizer:
    """A BPE whose merges join whitespace runs (" \n", "\t\n", ...), so a bad split changes ids."""
    rng = random.Random(5)
    path = tmp_path_factory.mktemp("ws") / "ws.txt"
    path.write_text("".join(rng.choice(WS_ALPHABET) for _ in range(50_000)), encoding="utf-8")
    tok = train_bpe_tokenizer([path], 400)
    assert {"ĠĊ", "ĠĠ", "ĉĊ"} <= set(tok.hf.get_vocab())
    return tok


# ----------------------------------------------------------------------------------------------
# char


def test_char_vocab_is_sorted_corpus_characters(char_tokenizer: Tokenizer, corpus_text: str) -> None:
    chars = sorted(set(corpus_text))
    assert char_tokenizer.kind == "char"
    assert char_tokenizer.vocab_size == len(chars) == 65
    assert char_tokenizer.special_tokens == {}
    assert char_tokenizer.merges() == []
    assert [char_tokenizer.token_bytes(i) for i in range(len(chars))] == [c.encode() for c in chars]


def test_char_round_trip_on_corpus(char_tokenizer: Tokenizer, corpus_text: str) -> None:
    ids = char_tokenizer.encode(corpus_text)
    assert len(ids) == len(corpus_text)
    assert char_tokenizer.decode(ids) == corpus_text
    chars = sorted(set(corpus_text))
    rng = random.Random(0)
    for i in rng.sample(range(len(corpus_text)), 200):
        assert ids[i] == chars.index(corpus_text[i])


def test_char_unknown_character_is_an_error_naming_it(char_tokenizer: Tokenizer) -> None:
    rng = random.Random(1)
    for _ in range(20):
        text = "".join(rng.choice("abc xyz\n") for _ in range(rng.randint(0, 50)))
        at = rng.randint(0, len(text))
        bad = rng.choice("é€😀{~")
        with pytest.raises(TokenizerError) as e:
            char_tokenizer.encode(text[:at] + bad + text[at:])
        assert repr(bad) in str(e.value) and f"offset {at}" in str(e.value)


def test_char_file_is_plain_hf_and_round_trips(char_tokenizer: Tokenizer, corpus_text: str, tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    char_tokenizer.save(path)
    spec = json.loads(path.read_text())
    assert spec["model"]["type"] == "BPE" and spec["model"]["merges"] == []
    assert spec["pre_tokenizer"] is None and spec["decoder"]["type"] == "Fuse"
    hf = HFTokenizer.from_file(str(path))
    sample = corpus_text[5000:25000]
    ids = char_tokenizer.encode(sample)
    assert hf.encode(sample).ids == ids
    assert hf.decode(ids) == sample
    loaded = Tokenizer.load(path)
    assert (loaded.kind, loaded.vocab_size) == ("char", char_tokenizer.vocab_size)
    assert loaded.encode(sample) == ids
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]  # no temp file left behind


def test_hf_drops_unknown_characters_where_we_raise(char_tokenizer: Tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    char_tokenizer.save(path)
    hf = HFTokenizer.from_file(str(path))
    assert len(hf.encode("ab€cd").ids) == 4  # the silent loss our encode refuses
    with pytest.raises(TokenizerError, match="U\\+20AC"):
        char_tokenizer.encode("ab€cd")


def test_make_char_tokenizer_streams_the_corpus(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("héllo\n", encoding="utf-8")
    b.write_text("wörld😀", encoding="utf-8")
    tok = make_tokenizer("char", [a, b], vocab_size=0)
    assert tok.decode(tok.encode("höw😀\n")) == "höw😀\n"
    assert tok.vocab_size == len(set("héllo\nwörld😀"))


def test_iter_corpus_text_reassembles_multibyte_text_across_blocks(tmp_path: Path) -> None:
    rng = random.Random(2)
    text = "".join(rng.choice("aé€😀\n ") for _ in range(3000))
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    for block in (1, 2, 3, 7, 4096):
        assert "".join(iter_corpus_text([path], chunk_bytes=block)) == text


def test_non_utf8_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(TokenizerError, match="not UTF-8.*byte 3"):
        list(iter_corpus_text([path]))


# ----------------------------------------------------------------------------------------------
# bpe


def test_bpe_layout(bpe: Tokenizer) -> None:
    assert bpe.kind == "bpe" and bpe.vocab_size == BPE_VOCAB
    assert bpe.special_tokens == {EOT: 0}
    assert bpe.token_bytes(0) == EOT.encode()
    assert sorted(bpe.token_bytes(i) for i in range(1, 257)) == [bytes([b]) for b in range(256)]
    merges = bpe.merges()
    assert len(merges) == BPE_VOCAB - 257
    for left, right, merged in merges:
        assert bpe.token_bytes(left) + bpe.token_bytes(right) == bpe.token_bytes(merged)
    assert [m[2] for m in merges] == list(range(257, BPE_VOCAB))


@pytest.fixture(scope="module")
def whole_corpus_ids(bpe: Tokenizer, corpus_text: str) -> list[int]:
    """HF's own encoding of the corpus in one piece: the reference for our chunked encode."""
    return bpe.hf.encode(corpus_text, add_special_tokens=False).ids


def test_bpe_round_trip_on_corpus(bpe: Tokenizer, corpus_text: str, whole_corpus_ids: list[int]) -> None:
    assert len(whole_corpus_ids) < len(corpus_text) * 0.7  # the merges actually compress
    assert bpe.decode(whole_corpus_ids) == corpus_text


@settings(max_examples=60, deadline=None)
@given(text=unicode_text)
def test_bpe_round_trips_random_unicode(bpe: Tokenizer, text: str) -> None:
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_chunked_equals_whole_on_corpus(bpe: Tokenizer, corpus_text: str, whole_corpus_ids: list[int]) -> None:
    whole = whole_corpus_ids
    assert len(split_chunks(corpus_text)) > 10
    assert bpe.encode(corpus_text) == whole
    rng = random.Random(3)
    cuts = sorted(rng.sample(range(len(corpus_text)), 40))
    pieces = [corpus_text[a:b] for a, b in zip([0] + cuts, cuts + [len(corpus_text)])]
    streamed = [i for ids in bpe.encode_stream(pieces) for i in ids]
    assert streamed == whole


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=WS_ALPHABET + "\r\u2028", max_size=80), size=st.integers(1, 12))
def test_bpe_split_points_never_change_tokens(ws_bpe: Tokenizer, text: str, size: int) -> None:
    pieces = split_chunks(text, size)
    assert "".join(pieces) == text
    chunked = [i for p in pieces for i in ws_bpe.hf.encode(p, add_special_tokens=False).ids]
    assert chunked == ws_bpe.hf.encode(text, add_special_tokens=False).ids


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=WS_ALPHABET, max_size=80), cuts=st.lists(st.integers(0, 80), max_size=8))
def test_bpe_stream_of_any_pieces_equals_whole(ws_bpe: Tokenizer, text: str, cuts: list[int]) -> None:
    bounds = sorted({min(c, len(text)) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0] + bounds, bounds + [len(text)])]
    streamed = [i for ids in ws_bpe.encode_stream(pieces) for i in ids]
    assert streamed == ws_bpe.hf.encode(text, add_special_tokens=False).ids


def test_bpe_file_round_trips_through_hf(bpe: Tokenizer, corpus_text: str, tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    bpe.save(path)
    hf = HFTokenizer.from_file(str(path))
    sample = corpus_text[:20000]
    assert hf.encode(sample, add_special_tokens=False).ids == bpe.encode(sample)
    loaded = Tokenizer.load(path)
    assert loaded.kind == "bpe" and loaded.merges() == bpe.merges()
    assert make_tokenizer(str(path), [], 0).encode(sample) == bpe.encode(sample)


def test_decode_never_raises_and_matches_hf(bpe: Tokenizer) -> None:
    rng = random.Random(4)
    for _ in range(200):
        ids = [rng.randrange(1, BPE_VOCAB) for _ in range(rng.randint(0, 12))]
        assert bpe.decode(ids) == bpe.hf.decode(ids, skip_special_tokens=False)
    assert bpe.decode([-1, BPE_VOCAB, 10**9]) == "\ufffd" * 3
    lone_continuation = next(i for i in range(1, 257) if bpe.token_bytes(i) == b"\x80")
    assert bpe.decode([lone_continuation]) == "\ufffd"


def test_token_bytes_rejects_ids_outside_vocab(bpe: Tokenizer) -> None:
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        bpe.token_bytes(BPE_VOCAB)


def test_bpe_training_on_bad_files_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 au lait\n".encode("latin-1") * 50)
    with pytest.raises(TokenizerError, match="bpe training failed"):
        train_bpe_tokenizer([path], 300)
    with pytest.raises(TokenizerError, match="without corpus files"):
        train_bpe_tokenizer([], 300)


def test_bpe_vocab_too_small_is_an_error(shakespeare_path: Path) -> None:
    with pytest.raises(TokenizerError, match="at least 257"):
        train_bpe_tokenizer([shakespeare_path], 100)


# ----------------------------------------------------------------------------------------------
# bad files


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="not found"):
        Tokenizer.load(tmp_path / "nope.json")


@pytest.mark.parametrize("content", ["", "{", '{"model": 3}', "\x00\x01garbage"])
def test_load_corrupt_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(TokenizerError) as e:
        Tokenizer.load(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_load_unsupported_model(tmp_path: Path) -> None:
    hf = HFTokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    path.write_text(hf.to_str())
    with pytest.raises(TokenizerError, match="unsupported tokenizer model"):
        Tokenizer.load(path)


def test_make_tokenizer_unknown_spec(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="'char', 'bpe' or a tokenizer.json"):
        make_tokenizer(str(tmp_path / "missing.json"), [], 0)


def test_empty_text_has_no_char_tokenizer() -> None:
    with pytest.raises(TokenizerError, match="empty"):
        train_char_tokenizer("")
