"""The Llama-3-style byte-level BPE of BitNet b1.58 2B4T: onebit's Python tokenizer and the C
tokenizer split and merge a large mixed sample exactly as HF `tokenizers` does."""

from __future__ import annotations

import random

import pytest

from hf_fixtures import llama3_tokenizer, save_hf_bitnet

from onebit import tokenizer as tokmod
from onebit.tokenizer import LLAMA3, Tokenizer, TokenizerError

PIECES = [
    "Hello", " world", "It's", " THEY'RE", " we'll", "I'D", "'s", "'x", " l'été", " naïve", " café", "Ünïcödé",
    "東京", "の", "数据模型", " ありがとう", "한국어", "🙂", "🚀🚀", "👨‍👩‍👧", " ☃", "def f(x):", "\treturn x**2",
    "  # comment", "{\"a\": [1, 2]}", "0x1F", "1234567", " 3.14159", "1,000,000", "٣٤٥", "½", "   ", "\t\t",
    "\n", "\n\n", "\r\n", " \n ", "\u3000", "\u00a0", "\u2028", "?!", "...\n", "!!!\n\n", "(", ")", "—", "“q”",
    "<|eot_id|>", "<|begin_of_text|>", "$", "%%", "a", "Z", "9", " 9", "  x", "\n x", ".\nx", "x\r\n\r\n",
]


def mixed_sample(seed: int, n: int = 400) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(PIECES) + rng.choice(["", "", " ", "  ", "\n", "\t", ".", "'"]) for _ in range(n))


@pytest.fixture(scope="module")
def hf():
    return llama3_tokenizer(vocab_size=600)


@pytest.fixture(scope="module")
def onebit_tok(hf):
    tok = Tokenizer(hf)
    assert tok.pretokenizer == LLAMA3
    return tok


@pytest.fixture(scope="module")
def c_model(tmp_path_factory, hf):
    from onebit.compile.export import ExportOptions, export_1bit
    from onebit.run.c import Model
    from onebit.train.hf_import import import_hf

    base = tmp_path_factory.mktemp("llama3tok")
    save_hf_bitnet(base / "hf", "packed", tokenizer=hf)
    import_hf(base / "hf", base / "ckpt", show_progress=False)
    export_1bit(base / "ckpt", base / "m.1bit", ExportOptions())
    return Model(base / "m.1bit")


@pytest.mark.parametrize("seed", range(8))
def test_python_encode_equals_hf(hf, onebit_tok, seed, monkeypatch):
    text = mixed_sample(seed)
    expected = hf.encode(text, add_special_tokens=False).ids
    assert onebit_tok.encode(text) == expected
    monkeypatch.setattr(tokmod, "CHUNK_CHARS", 50)  # many chunk boundaries, all at safe places
    assert onebit_tok.encode(text) == expected
    assert onebit_tok.decode(expected) == text


def test_newline_after_punctuation_is_not_a_chunk_boundary(hf, onebit_tok, monkeypatch):
    text = ("word.\nNext line!\n\nAnd more?\n" * 50)
    monkeypatch.setattr(tokmod, "CHUNK_CHARS", 7)
    assert onebit_tok.encode(text) == hf.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("seed", range(8))
def test_c_encode_equals_hf(hf, c_model, seed):
    text = mixed_sample(100 + seed)
    assert c_model.encode(text) == hf.encode(text, add_special_tokens=False).ids


def test_c_special_tokens_and_edge_texts(hf, c_model):
    for text in ["", " ", "\n", "'", "'S", "a'll", "  \n\n  x", "1234", " !\n\n", "<|eot_id|><|eot_id|>x",
                 "\u3000x", "x\u3000", "🙂x", "!x", "\r\n\r\n", "12 34", "\t!x"]:
        assert c_model.encode(text) == hf.encode(text, add_special_tokens=False).ids, repr(text)


def test_c_rejects_invalid_utf8(c_model):
    shared = c_model.shared
    ffi, lib = shared.ffi, shared.lib
    ids, n, err = ffi.new("int32_t[]", 16), ffi.new("int *"), ffi.new("char[256]")
    status = lib.ob_tokenize_ex(shared._model, b"ab\xffcd", 5, ids, 16, n, err, 256)
    assert status != 0 and b"not valid UTF-8" in ffi.string(err)


def test_unknown_split_regex_is_refused(hf):
    import json

    from tokenizers import Tokenizer as HFTokenizer

    spec = json.loads(hf.to_str())
    spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\s+|\S+"
    with pytest.raises(TokenizerError, match="unsupported byte-level pre-tokenizer"):
        Tokenizer(HFTokenizer.from_str(json.dumps(spec)))
