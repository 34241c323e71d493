"""Writes the fuzzers' seed corpora (committed; rerun after a format change):

    .venv/bin/python runtime_c/fuzz/make_corpus.py

Real exports of tiny random models (dim 8 to 16, one layer, a char vocabulary of a dozen letters
or a byte-level BPE of 257 + a few merges), so that every harness starts from valid inputs that
are cheap to parse: each run CRCs and parses the whole file, and a 3-14 KB seed runs several times
faster than the 10-50 KB exports of a 32-wide model.  Every tokenizer kind (char, GPT-2 BPE,
Llama-3 BPE with special tokens, SentencePiece-style BPE with byte fallback), pack (t2, t1.6, b1,
mixed int4 / int8 maps) and embedding dtype (f32, f16, i8), and the config options the forward
pass branches on (layernorm, learned positions, gated silu / gelu, qk_norm, subln, untied head,
grouped kv heads), and an imported model's EOS ids and chat pieces.  From them: corpus/open and
corpus/decode (whole files), corpus/json (their metadata plus hand-written edge cases) and corpus/tokenize (texts and id lists for the four
tokenizer models that fuzz_tokenize loads, models/{bpe,char,llama3,sp}.1bit).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import tempfile
from pathlib import Path

import torch
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from onebit.compile.export import ExportOptions, export_1bit
from onebit.config import ModelConfig
from onebit.tokenizer import LLAMA3_SPLIT, Tokenizer, train_bpe_tokenizer, train_char_tokenizer
from onebit.train.checkpoint import save_checkpoint
from onebit.train.model import Transformer

HERE = Path(__file__).resolve().parent
# Text written for these seeds (not the training corpus): letters, digits, punctuation, spaces,
# newlines, apostrophes (the pre-tokenizers' contractions) and a non-ASCII letter.  The char
# tokenizer takes its vocabulary from CHAR_TEXT alone, so that it stays a dozen symbols.
CHAR_TEXT = "abcde fé'\n!?"
TEXT = "It's 3 o'clock; we'll meet.\n  Naïve café, 12 345!\tTHE END?\n"
SPECIALS = ["<|begin_of_text|>", "<|eot_id|>"]

# (name, tokenizer, pack, embed, config overrides)
VARIANTS = [
    ("char-t2-f32", "char", "t2", "f32", {}),
    ("char-t2-f16-untied", "char", "t2", "f16", {"tie_embeddings": False, "qk_norm": True, "n_kv_heads": 1}),
    ("char-t2-i8-layernorm", "char", "t2", "i8", {"norm": "layernorm", "pos": "learned", "activation": "gelu"}),
    ("char-t16-f32-silu", "char", "t1.6", "f32", {"activation": "silu", "gated": True, "subln": False}),
    ("char-t16-f16", "char", "t1.6", "f16", {"gated": False, "dim": 16}),
    ("char-t16-i8", "char", "t1.6", "i8", {"tie_embeddings": False}),
    ("char-b1-f32", "char", "b1", "f32", {"quant": "binary"}),
    ("char-b1-f16", "char", "b1", "f16", {"quant": "binary", "residual_scale": 0.5}),
    ("char-b1-i8", "char", "b1", "i8", {"quant": "binary", "qk_norm": True}),
    # mixed models: int4 (rows shorter than one 64-block, and exactly one) and int8 (unpadded rows)
    ("char-mixed-t2-f32", "char", "t2", "f32",
     {"dim": 16, "ffn_dim": 64,
      "precision": {"*.q_proj": "int4", "*.down_proj": "int4", "*.up_proj": "int8", "*.v_proj": "binary"}}),
    ("char-mixed-t16-i8", "char", "t1.6", "i8",
     {"dim": 16, "ffn_dim": 64, "quant": "binary", "gated": True,
      "precision": {"*.gate_proj": "int8", "*.o_proj": "int4", "*.k_proj": "ternary"}}),
    ("bpe-t2-f16", "bpe", "t2", "f16", {}),
    ("bpe-t16-i8", "bpe", "t1.6", "i8", {"pos": "learned"}),
    ("bpe-b1-f32", "bpe", "b1", "f32", {"quant": "binary"}),
    ("llama3-t2-i8", "llama3", "t2", "i8", {"n_kv_heads": 1}),
    ("sp-t2-f16", "sentencepiece", "t2", "f16", {}),
    # an imported model's metadata: end-of-sequence ids and a chat template, whose fixed pieces the
    # exporter stores (tokenizer.chat_prefix / chat_suffix / chat_trim) for ob_chat_prompt
    ("bpe-t2-f32-chat", "bpe", "t2", "f32", {"meta": {
        "bos_token_id": 0, "add_bos_token": True, "eos_token_ids": [0, 7],
        "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]\n{{ m['content'] | trim }}"
                         "<|endoftext|>{% endfor %}{% if add_generation_prompt %}[assistant]\n{% endif %}"}}),
]

JSON_EDGE_CASES = [
    b'{"a": [1, 2.5e-3, -0, true, false, null, "\\u00e9\\ud83d\\ude00"], "b": {"c": {}}}',
    b'{"config": {"dim": 1e3, "norm_eps": 1E-5, "rope_theta": 10000.000000000000001}}',
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    b'{"k": "\\"\\\\\\/\\b\\f\\n\\r\\t", "k": 2}',
    b'"\\ud800 lone surrogate"',
    b"123456789012345678901234567890.5e-310",
]

# fuzz_tokenize: byte 0 picks the model (byte0 / 2 % 4: 0 bpe, 1 char, 2 llama3, 3 sp) and the mode
# (even: encode the rest as text, odd: decode the rest as int32 ids).
TOKENIZER_MODELS = {"bpe": "bpe-t2-f16", "char": "char-t2-f32", "llama3": "llama3-t2-i8", "sp": "sp-t2-f16"}
TOKENIZE_SEEDS = {
    "bpe": [TEXT.encode(), "<|endoftext|>It's<|endoftext|><|endoftext|> end".encode(), b"a" * 80,
            "\u3000\u2028 \u00a0x  \n\n\t '\u00e9'll 9\u0663".encode(), b"\xff\xfe invalid \xc3\x28"],
    "char": [CHAR_TEXT.encode(), b"abc de", b"abc xyz", "é'!?\n".encode() * 3],
    "llama3": [TEXT.encode(), "<|begin_of_text|>Hi<|eot_id|>\r\n\r\n 1234567 ".encode(), b"b" * 80,
               "東京 数据 🙂👨\u200d👩 ☃ def f(x):\n\treturn x**2".encode()],
    "sp": ["<s>\u2581\u2581 x</s> \u6771\u4eac\U0001f642 <0x41>".encode(), TEXT.encode()],
}
TOKENIZE_IDS = {"bpe": ([0, 1, 2, 255, 256, 260], [5] * 20, [-1, 300, 2**31 - 1]),
                "char": ([0, 1, 2, 3], [11] * 5, [12, -7]),
                "llama3": ([0, 255, 256, 270], [-1, 2**31 - 1]),
                # the byte tokens of the SentencePiece model are ids 3..258: a valid and a broken UTF-8 run
                "sp": ([3 + 0xE6, 3 + 0x97, 3 + 0xA5, 270], [3 + 0xE6, 3 + 0x97, 270, 3 + 0x20, 3 + 0xFF])}


def llama3_tokenizer(tmp: Path) -> Tokenizer:
    """A byte-level BPE with Llama 3's split regex and two special tokens, as HF imports have."""
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=264, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator([TEXT], trainer)
    hf.add_special_tokens(SPECIALS)
    return Tokenizer(hf)


def sentencepiece_tokenizer() -> Tokenizer:
    """Llama-2's layout: <unk> <s> </s>, the 256 <0xNN> byte tokens, then merges learned over
    ▁-words; the legacy normalizer (Prepend + Replace) and the Replace/ByteFallback/Fuse/Strip
    decoder. limit_alphabet leaves the rarer letters to byte fallback."""
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Metaspace()
    hf.train_from_iterator([TEXT], trainers.BpeTrainer(vocab_size=300, limit_alphabet=20, show_progress=False))
    spec = json.loads(hf.to_str())
    specials = ["<unk>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials)} | {f"<0x{b:02X}>": 3 + b for b in range(256)}
    for token, _ in sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(token, len(vocab))
    spec["model"].update(vocab=vocab, byte_fallback=True, unk_token="<unk>", fuse_unk=True)
    spec["added_tokens"] = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True} for i, t in enumerate(specials)]
    spec["pre_tokenizer"] = None
    spec["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    return Tokenizer(HFTokenizer.from_str(json.dumps(spec)))


def tokenizer_for(kind: str, tmp: Path) -> Tokenizer:
    if kind == "char":
        return train_char_tokenizer(CHAR_TEXT)
    if kind == "llama3":
        return llama3_tokenizer(tmp)
    if kind == "sentencepiece":
        return sentencepiece_tokenizer()
    text_path = tmp / "text.txt"
    text_path.write_text(TEXT, encoding="utf-8")
    return train_bpe_tokenizer([text_path], vocab_size=264)


def export(name: str, kind: str, pack: str, embed: str, overrides: dict, tmp: Path) -> bytes:
    tokenizer = tokenizer_for(kind, tmp)
    fields = dict(vocab_size=tokenizer.vocab_size, dim=8, n_layers=1, n_heads=2, n_kv_heads=2, ffn_dim=16,
                  max_seq_len=8, gated=False)
    overrides = dict(overrides)
    meta = overrides.pop("meta", {})  # what onebit import writes into meta.json
    fields.update(overrides)
    config = ModelConfig(**fields)
    torch.manual_seed(len(name))
    model = Transformer(config)
    ckpt = tmp / name
    save_checkpoint(ckpt, model, tokenizer, {"step": 0, "val_loss": None, **meta})
    out = tmp / f"{name}.1bit"
    # a binary model always packs as b1; the option names a ternary pack
    export_1bit(ckpt, out, ExportOptions(pack="t2" if pack == "b1" else pack, embed_dtype=embed))
    return out.read_bytes()


def write(directory: Path, data: bytes, name: str | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / (name or hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)


def main() -> None:
    corpus = HERE / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    (HERE / "models").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name, kind, pack, embed, overrides in VARIANTS:
            data = export(name, kind, pack, embed, overrides, tmp)
            write(corpus / "open", data, name)
            write(corpus / "decode", data, name)
            meta_size = struct.unpack_from("<Q", data, 24)[0]
            write(corpus / "json", data[64:64 + meta_size], name)
            for model_name, variant in TOKENIZER_MODELS.items():
                if name == variant:
                    (HERE / "models" / f"{model_name}.1bit").write_bytes(data)
    for case in JSON_EDGE_CASES:
        write(corpus / "json", case)
    for index, model_name in enumerate(TOKENIZER_MODELS):
        for text in TOKENIZE_SEEDS[model_name]:
            write(corpus / "tokenize", bytes([2 * index]) + text)
        for ids in TOKENIZE_IDS[model_name]:
            write(corpus / "tokenize", bytes([2 * index + 1]) + b"".join(struct.pack("<i", i) for i in ids))
    total = sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file())
    print(json.dumps({"files": sum(1 for p in corpus.rglob("*") if p.is_file()), "bytes": total}))


if __name__ == "__main__":
    main()
