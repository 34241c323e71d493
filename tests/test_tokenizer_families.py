"""SentencePiece-style (Llama-2 / Mistral, byte fallback) and GPT-2-style tokenizer.json files:
onebit's Python tokenizer and the C tokenizer encode a large mixed sample (invalid UTF-8 read
with replacement included) and decode any ids exactly as HF `tokenizers` does; a model exported
with such a tokenizer generates the same greedy text in PyTorch and C."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import MICRO_MODEL
from hf_fixtures import llama3_tokenizer
from tokenizer_fixtures import (
    gpt2_tokenizer,
    mixed_sample,
    sentencepiece_model_tokenizer,
    sentencepiece_tokenizer,
    with_unmerged_words,
)

from onebit import tokenizer as tokmod
from onebit.tokenizer import GPT2, LLAMA3, SENTENCEPIECE, Tokenizer, TokenizerError

# (name, builder): every tokenizer.json shape transformers writes for these families
SP_FORMS = {
    "legacy": lambda: sentencepiece_tokenizer("legacy"),
    "first": lambda: sentencepiece_tokenizer("first"),
    "always-split": lambda: sentencepiece_tokenizer("always", split=True),
    "never": lambda: sentencepiece_tokenizer("never", strip=False),
    "no-fallback": lambda: sentencepiece_tokenizer("legacy", byte_fallback=False),
    "ascii-fallback": lambda: sentencepiece_tokenizer("first", byte_tokens=128),
    # trained by the sentencepiece library and converted by transformers, as Llama-2 / Mistral are
    "spm-legacy": lambda: sentencepiece_model_tokenizer(True, Path(tempfile.mkdtemp()) / "spm"),
    "spm-first": lambda: sentencepiece_model_tokenizer(False, Path(tempfile.mkdtemp()) / "spm"),
}
UNMERGED = [" naïve", " 数据模型", "Hello", " world", "🙂", "123", "東京", "\n\n"]
GPT2_FORMS = {"gpt2": lambda: gpt2_tokenizer(), "gpt2-prefix": lambda: gpt2_tokenizer(add_prefix_space=True),
              "gpt2-ignore-merges": lambda: with_unmerged_words(gpt2_tokenizer(), UNMERGED),
              "llama3-ignore-merges": lambda: with_unmerged_words(llama3_tokenizer(600), UNMERGED)}
FORMS = {**SP_FORMS, **GPT2_FORMS}
EDGE_TEXTS = ["", " ", "  ", "\u2581", "x", " x", "<s>", "<s>x", "<s> x", "x<s>", "<s><s>", "</s> </s>", "a<s>b",
              "<unk>", "東京", "\ufffd\ufffd", "<0x41>", "\n", "\u2581\u2581 \u2581", "<|endoftext|>x"]


@pytest.fixture(scope="module", params=sorted(FORMS))
def pair(request):
    hf = FORMS[request.param]()
    return request.param, hf, Tokenizer(hf)


def hf_ids(hf, text: str) -> list[int]:
    return hf.encode(text, add_special_tokens=False).ids


def random_ids(hf, seed: int, n: int = 200) -> list[list[int]]:
    """Random ids, and runs of byte tokens (valid and broken UTF-8 across tokens)."""
    rng = random.Random(seed)
    v = hf.get_vocab_size()
    byte_ids = [i for t, i in hf.get_vocab().items() if t.startswith("<0x")] or list(range(v))
    return [[rng.randrange(v) for _ in range(n)], [rng.choice(byte_ids) for _ in range(n)],
            [rng.choice(byte_ids + [rng.randrange(v)]) for _ in range(n)], [rng.randrange(v)], []]


# forms whose text Python cannot encode in pieces (every piece would gain a leading space or ▁)
WHOLE = {"legacy", "no-fallback", "gpt2-prefix"}


def test_kinds_detected(pair):
    name, _, tok = pair
    assert tok.kind == "bpe"
    assert tok._chunkable == (name not in WHOLE)
    assert tok.pretokenizer == (GPT2 if name.startswith("gpt2") else LLAMA3 if name.startswith("llama3")
                                else SENTENCEPIECE)
    if name.endswith("ignore-merges"):  # the unmerged whole words do make a difference
        from tokenizers import Tokenizer as HFTokenizer

        spec = json.loads(pair[1].to_str())
        spec["model"]["ignore_merges"] = False
        merged_only = HFTokenizer.from_str(json.dumps(spec))
        assert tok.ignore_merges and tok.encode(" 数据模型") != hf_ids(merged_only, " 数据模型")


@pytest.mark.parametrize("seed", range(3))
def test_python_equals_hf(pair, seed, monkeypatch):
    _, hf, tok = pair
    text = mixed_sample(seed)
    expected = hf_ids(hf, text)
    assert tok.encode(text) == expected
    monkeypatch.setattr(tokmod, "CHUNK_CHARS", 40)  # chunked wherever chunking is safe
    assert tok.encode(text) == expected
    assert [i for ids in tok.encode_stream([text[:97], text[97:500], text[500:]]) for i in ids] == expected
    for ids in [expected] + random_ids(hf, seed):
        assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=False)
    for text in EDGE_TEXTS:
        assert tok.encode(text) == hf_ids(hf, text), repr(text)


def test_lone_surrogates_are_refused(pair):
    with pytest.raises(TokenizerError, match="not valid UTF-8"):
        pair[2].encode("ab\udcffc")


@pytest.fixture(scope="module")
def exported(pair, tmp_path_factory):
    """An onebit checkpoint with the tokenizer, exported to .1bit, opened in C."""
    from onebit.compile.export import ExportOptions, export_1bit
    from onebit.config import ModelConfig
    from onebit.run.c import Model
    from onebit.train.checkpoint import load_checkpoint, save_checkpoint
    from onebit.train.model import Transformer

    name, _, tok = pair
    base = tmp_path_factory.mktemp(f"tok-{name}")
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=tok.vocab_size, **{**MICRO_MODEL, "max_seq_len": 64}))
    save_checkpoint(base / "ckpt", model, tok, {"step": 0, "val_loss": None})
    export_1bit(base / "ckpt", base / "m.1bit", ExportOptions(embed_dtype="f32"))
    return load_checkpoint(base / "ckpt"), Model(base / "m.1bit", kv="f32"), base / "m.1bit"  # PyTorch's twin


@pytest.mark.parametrize("seed", range(3))
def test_c_equals_hf(pair, exported, seed):
    _, hf, _ = pair
    c = exported[1]
    text = mixed_sample(100 + seed)
    assert c.encode(text) == hf_ids(hf, text)
    for text in EDGE_TEXTS:
        assert c.encode(text) == hf_ids(hf, text), repr(text)
    for ids in [hf_ids(hf, text)] + random_ids(hf, seed):
        assert c.decode(ids) == hf.decode(ids, skip_special_tokens=False)


def test_reference_runtime_decodes_as_hf(pair, exported):
    from onebit.run.reference import ReferenceModel

    _, hf, _ = pair
    ref = ReferenceModel.load(exported[2])
    for ids in random_ids(hf, 5):
        assert ref.decode(ids) == hf.decode(ids, skip_special_tokens=False)


def test_c_buffer_bound(pair, exported):
    """len + 1 ids always suffice, although a segment may gain a leading token."""
    c = exported[1]
    for text in EDGE_TEXTS + [mixed_sample(7, 40)]:
        data = text.encode()
        assert len(c.encode(text)) <= len(data) + 1


def test_greedy_text_pytorch_equals_c(pair, exported):
    from onebit.sampling import SamplerConfig
    from onebit.train.sample import generate

    _, hf, tok = pair
    ckpt, c, _ = exported
    prompt = tok.encode("Hello world, naïve 東京")
    torch_ids = generate(ckpt.model, prompt, 24, SamplerConfig(temperature=0.0))
    c_ids = c.generate(prompt, 24, temperature=0.0, ignore_eos=True)
    assert c_ids == torch_ids
    assert c.decode(prompt + c_ids) == tok.decode(prompt + torch_ids) == hf.decode(prompt + torch_ids,
                                                                                  skip_special_tokens=False)


def test_metadata(pair, exported):
    tok = pair[2]
    from onebit.format import read_1bit

    meta = read_1bit(exported[2]).meta["tokenizer"]
    assert meta["pretokenizer"] == tok.pretokenizer
    assert meta.get("add_prefix_space", False) == tok.add_prefix_space
    assert meta.get("sentencepiece") == tok.sentencepiece


@pytest.mark.parametrize("change, message", [
    (lambda s: s["decoder"]["decoders"].pop(1), "decoder"),
    (lambda s: s.update(decoder={"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
                                 "split": True}), "decoder"),
    (lambda s: s["normalizer"]["normalizers"].insert(0, {"type": "NFKC"}), "normalizer"),
    (lambda s: s["model"].update(ignore_merges=True), "ignore_merges"),
    (lambda s: s["added_tokens"].append({"id": 3, "content": "<0x00>", "single_word": False, "lstrip": False,
                                         "rstrip": False, "normalized": False, "special": True}), "other text"),
    (lambda s: s["added_tokens"][1].update(lstrip=True), "lstrip"),
    (lambda s: s["model"].update(dropout=0.1), "dropout"),
])
def test_unsupported_sentencepiece_shapes_are_refused(change, message):
    from tokenizers import Tokenizer as HFTokenizer

    spec = json.loads(sentencepiece_tokenizer("legacy").to_str())
    change(spec)
    with pytest.raises(TokenizerError, match=message):
        Tokenizer(HFTokenizer.from_str(json.dumps(spec)))



@pytest.mark.parametrize("name", ["legacy", "gpt2-prefix"])
def test_gguf_refuses_what_llama_cpp_would_tokenize_differently(name):
    from onebit.compile.gguf import GGUFExportError, _add_tokenizer

    with pytest.raises(GGUFExportError, match="no GGUF form here yet"):
        _add_tokenizer(None, Tokenizer(FORMS[name]()), {})


def test_hf_bitnet_with_a_llama2_tokenizer(tmp_path):
    """A BitNetForCausalLM saved by transformers with a Llama-2-style tokenizer: imported and
    exported, C encodes as HF and generates transformers' greedy tokens."""
    from hf_fixtures import hf_greedy, save_hf_bitnet

    from onebit.compile.export import ExportOptions, export_1bit
    from onebit.run.c import Model
    from onebit.train.hf_import import import_hf

    hf = FORMS["legacy"]()
    save_hf_bitnet(tmp_path / "hf", "packed", tokenizer=hf, bos_token_id=1, eos_token_id=2)
    (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "tokenizer_class": "LlamaTokenizerFast"}))
    import_hf(tmp_path / "hf", tmp_path / "ckpt", show_progress=False)
    export_1bit(tmp_path / "ckpt", tmp_path / "m.1bit", ExportOptions(embed_dtype="f32"))
    c = Model(tmp_path / "m.1bit", kv="f32")  # transformers' twin: the f32 KV-cache
    text = mixed_sample(3, 60)
    assert c.encode(text) == hf_ids(hf, text)
    prompt = [1] + hf_ids(hf, "Hello world, naïve 東京 🙂")
    assert c.generate(prompt, 10, temperature=0.0, ignore_eos=True) == hf_greedy(tmp_path / "hf", prompt, 10)


def test_merge_across_words_stops_chunking(monkeypatch):
    """A Metaspace tokenizer with a merge that joins a word's end to the next `▁`-word: a cut
    before that space would change the ids, so Python encodes the text whole."""
    from tokenizers import Tokenizer as HFTokenizer

    spec = json.loads(sentencepiece_tokenizer("first").to_str())
    vocab = spec["model"]["vocab"]
    assert "d" in vocab and "\u2581w" in vocab
    vocab["d\u2581w"] = len(vocab)
    spec["model"]["merges"].insert(0, ["d", "\u2581w"])
    hf = HFTokenizer.from_str(json.dumps(spec))
    tok = Tokenizer(hf)
    assert not tok._chunkable
    monkeypatch.setattr(tokmod, "CHUNK_CHARS", 3)  # a cut before every " world" if it were allowed
    text = "and world " * 20
    assert vocab["d\u2581w"] in hf_ids(hf, text)
    assert tok.encode(text) == hf_ids(hf, text)


@pytest.mark.parametrize("name", ["gpt2", "llama3-ignore-merges"])
def test_no_cut_right_before_a_special_token(name, monkeypatch):
    """Spaces before a special token end their segment in one pre-token: a cut between them
    (even one found before the special token's end has arrived in a stream) changes the ids."""
    hf = FORMS[name]()
    tok = Tokenizer(hf)
    special = next(iter(tok.special_tokens))
    text = ("word  " + special + " x\n\n " + special + "y  ") * 30
    expected = hf_ids(hf, text)
    monkeypatch.setattr(tokmod, "CHUNK_CHARS", 4)
    assert tok.encode(text) == expected
    for size in (1, 3, 7):  # the special token arrives split across pieces
        pieces = [text[i:i + size] for i in range(0, len(text), size)]
        assert [i for ids in tok.encode_stream(pieces) for i in ids] == expected
