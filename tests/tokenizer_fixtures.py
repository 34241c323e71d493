"""Tokenizers of the three BPE families, trained by HF `tokenizers` on hf_fixtures.TRAIN_TEXT (no
downloads), and the mixed text every tokenizer test encodes.

- `sentencepiece_tokenizer`: Llama-2 / Mistral layout: `<unk>`, `<s>`, `</s>`, then the 256
  `<0xNN>` byte-fallback tokens, then merges learned over `▁`-words; the normalizer form that
  transformers writes for legacy Llama-2 (Prepend + Replace) or a Metaspace pre-tokenizer
  (prepend_scheme always / first / never, split or not); decoder Replace, ByteFallback, Fuse,
  Strip. `limit_alphabet` leaves rare characters out, so byte fallback and unk are exercised.
- `gpt2_tokenizer`: GPT-2's ByteLevel pre-tokenizer, with or without add_prefix_space.
"""

from __future__ import annotations

import json
import random

from hf_fixtures import TRAIN_TEXT
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SP_SPECIALS = ["<unk>", "<s>", "</s>"]

PIECES = [
    "Hello", " world", "It's", " THEY'RE", " we'll", "I'D", "'s", " l'été", " naïve", " café", "Ünïcödé",
    "東京", "の", "数据模型", " ありがとう", "한국어", "🙂", "🚀🚀", "👨‍👩‍👧", " ☃", "def f(x):", "\treturn x**2",
    "  # comment", "{\"a\": [1, 2]}", "0x1F", "1234567", " 3.14159", "1,000,000", "٣٤٥", "½", "   ", "\t\t",
    "\n", "\n\n", "\r\n", " \n ", "\u3000", "\u00a0", "\u2028", "?!", "...\n", "(", ")", "—", "“q”", "$",
    "a", "Z", "9", " 9", "  x", "\n x", ".\nx", "x\r\n\r\n", "\u2581", "\u2581\u2581x", " \u2581", "<0x41>",
    "<s>", "</s>", "<unk>", "<|endoftext|>", "<s><s>", "\x00", "\x7f", "\ufeff", "\U0010ffff", "𝔘𝔫𝔦",
]

# Undecodable bytes inside UTF-8 text. HF takes text, not bytes, so such input reaches every
# tokenizer as the U+FFFD that a decoder with errors="replace" makes of it.
INVALID_UTF8 = [b"\xff", b"\xc3", b"\xe6\x97", b"\xed\xa0\x80", b"\xf0\x9f\x98", b"\x80\x80", b"\xc0\xaf"]


def mixed_sample(seed: int, n: int = 300) -> str:
    rng = random.Random(seed)
    raw = b"".join((rng.choice(INVALID_UTF8) if rng.random() < 0.05 else rng.choice(PIECES).encode())
                   + rng.choice([b"", b"", b" ", b"  ", b"\n", b"\t", b".", b"'"]) for _ in range(n))
    return raw.decode("utf-8", errors="replace")


def _train(pre_tokenizer, vocab_size: int, **trainer_args) -> dict:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    tok.train_from_iterator(TRAIN_TEXT, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                            **trainer_args))
    return json.loads(tok.to_str())


def sentencepiece_tokenizer(form: str = "legacy", split: bool = False, vocab_size: int = 500,
                            byte_fallback: bool = True, strip: bool = True, byte_tokens: int = 256) -> Tokenizer:
    """form: "legacy" (normalizer Prepend + Replace) or a Metaspace prepend_scheme; byte_tokens < 256
    keeps only <0x00> .. (so some characters fall back to bytes and others to unk)."""
    spec = _train(pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True),
                  vocab_size, limit_alphabet=70)
    vocab = {t: i for i, t in enumerate(SP_SPECIALS)}
    if byte_fallback:
        vocab.update({f"<0x{b:02X}>": len(vocab) + b for b in range(byte_tokens)})
    for token, _ in sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(token, len(vocab))
    spec["model"].update(vocab=vocab, byte_fallback=byte_fallback, unk_token="<unk>", fuse_unk=True)
    spec["added_tokens"] = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True} for i, t in enumerate(SP_SPECIALS)]
    if form == "legacy":
        spec["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
        spec["pre_tokenizer"] = None
    else:
        spec["normalizer"] = None
        spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": form, "split": split}
    steps = [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
             {"type": "Fuse"}]
    if strip:
        steps.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    spec["decoder"] = {"type": "Sequence", "decoders": steps}
    return Tokenizer.from_str(json.dumps(spec))


def with_unmerged_words(tok: Tokenizer, words: list[str]) -> Tokenizer:
    """ignore_merges (as Llama-3's file sets) and vocabulary entries for whole pre-tokens that no
    merge reaches: only a tokenizer that looks a pre-token up before merging emits them."""
    from onebit.tokenizer import _byte_decoder

    to_char = {b: c for c, b in _byte_decoder().items()}
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    new = [t for t in dict.fromkeys("".join(to_char[b] for b in w.encode()) for w in words) if t not in vocab]
    first = max(vocab.values()) + 1
    vocab.update({t: first + k for k, t in enumerate(new)})
    # added tokens outside the model's vocabulary move up past the new words (HF numbers them so)
    moved = {t["id"]: t["id"] + len(new) for t in spec["added_tokens"] if t["content"] not in vocab}
    for t in spec["added_tokens"]:
        t["id"] = moved.get(t["id"], t["id"])
    for entry in ((spec.get("post_processor") or {}).get("special_tokens") or {}).values():
        entry["ids"] = [moved.get(i, i) for i in entry["ids"]]
    spec["model"]["ignore_merges"] = True
    return Tokenizer.from_str(json.dumps(spec))


def gpt2_tokenizer(add_prefix_space: bool = False, vocab_size: int = 500) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TRAIN_TEXT, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def sentencepiece_model_tokenizer(legacy: bool, folder) -> Tokenizer:
    """A real SentencePiece BPE model (byte fallback, Llama-2's trainer settings) trained by the
    `sentencepiece` library, converted to tokenizer.json by transformers' LlamaTokenizer the way
    it converts Llama-2 and Mistral checkpoints (legacy=True / False)."""
    import io

    import sentencepiece as spm
    from transformers import LlamaTokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAIN_TEXT), model_writer=model, model_type="bpe", vocab_size=700,
        byte_fallback=True, character_coverage=0.98, split_digits=True, allow_whitespace_only_pieces=True,
        normalization_rule_name="identity", add_dummy_prefix=True, remove_extra_whitespaces=False,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2, num_threads=1)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    return LlamaTokenizer.from_pretrained(folder, legacy=legacy).backend_tokenizer
