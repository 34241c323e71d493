"""Tokenizers: `char` (one token per corpus character) and `bpe`, both as HF tokenizer.json.

Both kinds are a Hugging Face `tokenizers.Tokenizer` with a BPE model, so the saved file loads in HF
unchanged. The char kind is a BPE model whose vocab is the corpus' characters, with no merges, no
pre-tokenizer and a `Fuse` decoder; since HF silently drops characters it does not know, `encode`
does its own lookup and raises instead. The bpe kind trained here is GPT-2 style: byte-level
alphabet, GPT-2 regex pre-tokenizer, `<|endoftext|>` special token at id 0. Loaded from a
tokenizer.json, bpe is one of three families (`pretokenizer`): GPT-2's byte-level BPE, Llama-3's,
or SentencePiece-style (Llama-2, Mistral: `▁` for spaces, `<0xNN>` byte-fallback tokens); any
other tokenizer.json is refused, since the C runtime could not encode it the way HF does.

Every runtime needs the same two things from a tokenizer: the raw bytes of each token (`token_bytes`)
and, for bpe, the merge list (`merges`). `decode` is defined from `token_bytes` so that the C and
ONNX runtimes, which print token bytes, produce exactly the same text.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import IO

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from onebit.atomic import atomic_write_text
from onebit.errors import OnebitError

EOT = "<|endoftext|>"
KINDS = ("char", "bpe")
# The pre-tokenizers of byte-level BPEs that every runtime implements (the names go into `.1bit`
# metadata): GPT-2's regex inside ByteLevel, and Llama-3's split regex (BitNet b1.58 2B4T) before a
# ByteLevel that has no regex of its own.
GPT2 = "gpt2-bytelevel"
LLAMA3 = "llama3-bytelevel"
SENTENCEPIECE = "sentencepiece"
METASPACE = "\u2581"  # SentencePiece's stand-in for a space
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Encode in pieces of about this many characters; HF encodes a batch of pieces in parallel.
CHUNK_CHARS = 1 << 16
# Characters after a cut that its patterns may look at (one, or a special token: cut_patterns)
LOOKAHEAD = 1024
REPLACEMENT = "\ufffd".encode()

# A chunk may end right before a newline (or space) that is followed by a non-space. The GPT-2
# pre-tokenizer always splits there: `\s+(?!\S)` stops one character short of a whitespace run
# that is followed by text, and no other pattern crosses whitespace. Python's `\S` is stricter
# than the Rust regex's (str.isspace covers all of Unicode White_Space), so we never split where
# HF would not.
_NEWLINE_BOUNDARY = re.compile(r"\n(?=\S)")
_SPACE_BOUNDARY = re.compile(r" (?=\S)")
# SentencePiece: a space (a metaspace to come) right after a character that is not one
_SP_BOUNDARY = re.compile("(?<=[^\\s\u2581]) ")


class TokenizerError(OnebitError):
    """A tokenizer file that cannot be used, or text that a char tokenizer cannot encode."""


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's bytes_to_unicode, inverted: printable stand-in character -> raw byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


Cuts = bool | tuple[re.Pattern, ...]


def _boundaries(newline: Cuts) -> tuple[re.Pattern, ...]:
    # Llama-3's ` ?[^\s\p{L}\p{N}]+[\r\n]*` keeps the newlines after punctuation in one pre-token,
    # so only the space boundary is safe there. A tokenizer passes its own patterns (cut_patterns).
    if isinstance(newline, tuple):
        return newline
    return (_NEWLINE_BOUNDARY, _SPACE_BOUNDARY) if newline else (_SPACE_BOUNDARY,)


def cut_patterns(pretokenizer: str, specials: Iterable[str]) -> tuple[re.Pattern, ...]:
    """Where a text may be cut for `pretokenizer`: the module's boundaries, except right before a
    special token. Special tokens are split out before pre-tokenization, so a space in front of one
    ends its segment and joins the whitespace run before it, where a cut would split that run."""
    specials = sorted(specials, key=len, reverse=True)
    avoid = "(?!" + "|".join(map(re.escape, specials)) + ")" if specials else ""
    if pretokenizer == SENTENCEPIECE:
        return (re.compile(_SP_BOUNDARY.pattern + avoid),)
    space = re.compile(_SPACE_BOUNDARY.pattern + avoid)
    return (re.compile(_NEWLINE_BOUNDARY.pattern + avoid), space) if pretokenizer == GPT2 else (space,)


def _last_boundary(text: str, start: int, newline: Cuts = True, before: int | None = None) -> int:
    """Index of the last safe chunk boundary in text[start:before], or -1."""
    for pattern in _boundaries(newline):
        at = -1
        for m in pattern.finditer(text, start):
            if before is None or m.start() < before:
                at = m.start()
        if at > 0:
            return at
    return -1


def _next_boundary(text: str, pos: int, size: int, newline: Cuts = True) -> int:
    """First safe boundary at or after pos: a newline within the next `size` characters if there
    is one, else a space there, else whichever comes first further on; -1 when there is none."""
    for limit in (pos + size, len(text)):
        for pattern in _boundaries(newline):
            # endpos would hide the text after the cut from the lookaheads; LOOKAHEAD bounds the scan
            if (m := pattern.search(text, pos, limit + LOOKAHEAD)) and m.start() < limit:
                return m.start()
    return -1


FLAG_BYTE, FLAG_FALLBACK, FLAG_HIDDEN = 1, 2, 4


def _check_text(text: str) -> None:
    """HF takes only valid Unicode text; a str with lone surrogates (undecodable bytes read with
    surrogateescape) is refused here with its position, as the C runtime refuses invalid UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise TokenizerError(f"text is not valid UTF-8 (lone surrogate U+{ord(text[e.start]):04X} "
                             f"at offset {e.start})") from None


def _decoder_steps(dec: dict) -> list[str]:
    steps = dec.get("decoders") or [] if dec.get("type") == "Sequence" else [dec]
    return [d.get("type") for d in steps]


def fallback_byte(token: str) -> int | None:
    """The byte that HF's ByteFallback decoder reads `token` as, or None: six bytes, `<0x`, two
    characters that Rust's u8::from_str_radix(_, 16) takes (either case, or a `+` sign), `>`."""
    if len(token.encode("utf-8")) != 6 or not token.startswith("<0x") or not token.endswith(">"):
        return None
    digits = token[3:5]
    body = digits[1:] if digits.startswith("+") else digits
    if not body or not all(c in "0123456789abcdefABCDEF" for c in body):
        return None
    return int(body, 16)


def sentencepiece_settings(spec: dict, vocab: dict[str, int]) -> dict | None:
    """What the C runtime needs to encode a SentencePiece-style BPE as HF does, or None when the
    tokenizer is byte-level. The two shapes transformers writes for Llama-2 / Mistral:

    - legacy: normalizer Sequence[Prepend("▁")?, Replace(" ", "▁")], no pre-tokenizer: every text
      segment between special tokens is one word with `▁` prepended ("prepend": "always");
    - Metaspace(replacement "▁", prepend_scheme, split) pre-tokenizer, no normalizer: `▁` is
      prepended unless the segment already starts with one, for "always" every segment, for
      "first" only the one at the start of the text ("prepend": "always-unless-space" /
      "first-unless-space" / "never"); split=true cuts words before every `▁`.

    and the decoder Sequence[Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0)?]."""
    model, norm, pre, dec = spec["model"], spec.get("normalizer"), spec.get("pre_tokenizer"), spec.get("decoder") or {}
    if pre is not None and pre.get("type") != "Metaspace" and not model.get("byte_fallback"):
        return None
    if _decoder_steps(dec) == ["ByteLevel"]:
        return None
    steps = dec.get("decoders") or [] if dec.get("type") == "Sequence" else [dec]
    kinds = [d.get("type") for d in steps]
    if kinds not in (["Replace", "ByteFallback", "Fuse"], ["Replace", "ByteFallback", "Fuse", "Strip"]):
        raise TokenizerError(f"unsupported SentencePiece-style decoder {'+'.join(map(str, kinds))}: need "
                             "Replace('▁', ' '), ByteFallback, Fuse and optionally Strip(' ', 1, 0)")
    if steps[0].get("pattern") != {"String": METASPACE} or steps[0].get("content") != " ":
        raise TokenizerError("unsupported SentencePiece-style decoder: its Replace is not '▁' -> ' '")
    strip = 0
    if len(steps) == 4:
        if steps[3].get("content") != " " or steps[3].get("stop") != 0 or steps[3].get("start") not in (0, 1):
            raise TokenizerError("unsupported SentencePiece-style decoder: Strip other than (' ', 1, 0)")
        strip = steps[3]["start"]
    if norm is not None:
        if pre is not None:
            raise TokenizerError("unsupported SentencePiece-style tokenizer: both a normalizer and a pre-tokenizer")
        parts = norm.get("normalizers") or [] if norm.get("type") == "Sequence" else [norm]
        types = [p.get("type") for p in parts]
        if types not in (["Prepend", "Replace"], ["Replace"]) or parts[-1].get("pattern") != {"String": " "} \
                or parts[-1].get("content") != METASPACE or (len(parts) == 2 and parts[0].get("prepend") != METASPACE):
            raise TokenizerError(f"unsupported SentencePiece-style normalizer {'+'.join(map(str, types))}: "
                                 "need Prepend('▁') and Replace(' ', '▁')")
        prepend, split = ("always" if len(parts) == 2 else "never"), False
    elif pre is not None and pre.get("type") == "Metaspace":
        if pre.get("replacement") != METASPACE:
            raise TokenizerError(f"unsupported Metaspace replacement {pre.get('replacement')!r}: need '▁'")
        scheme = pre.get("prepend_scheme", "always")
        if scheme not in ("always", "first", "never"):
            raise TokenizerError(f"unsupported Metaspace prepend_scheme {scheme!r}")
        prepend = "never" if scheme == "never" else f"{scheme}-unless-space"
        split = bool(pre.get("split", True))
    else:
        raise TokenizerError("unsupported SentencePiece-style tokenizer: need the Prepend/Replace normalizer "
                             "or a Metaspace pre-tokenizer")
    if model.get("ignore_merges"):
        raise TokenizerError("unsupported SentencePiece-style tokenizer: ignore_merges")
    unk = model.get("unk_token")
    if unk is not None and unk not in vocab:
        raise TokenizerError(f"unk_token {unk!r} is not in the vocabulary")
    if METASPACE not in vocab:
        raise TokenizerError("SentencePiece-style tokenizer has no '▁' token")
    return {"prepend": prepend, "split": split, "byte_fallback": bool(model.get("byte_fallback")),
            "unk_token_id": None if unk is None else vocab[unk], "fuse_unk": bool(model.get("fuse_unk")),
            "strip_leading_space": strip}


def decode_sentencepiece(ids: Sequence[int], pieces: Sequence[bytes], flags: np.ndarray, strip: int) -> str:
    """HF's Replace + ByteFallback + Fuse + Strip: a run of byte tokens becomes its bytes if they
    are valid UTF-8 as a whole, else one U+FFFD per byte token; `strip` leading spaces of the
    result go. Unknown ids become U+FFFD (HF drops them)."""
    out: list[str] = []
    run = bytearray()
    n_run = 0

    def flush() -> None:
        nonlocal n_run
        if n_run:
            try:
                out.append(run.decode("utf-8"))
            except UnicodeDecodeError:
                out.append("\ufffd" * n_run)
            run.clear()
            n_run = 0

    for i in map(int, ids):
        if 0 <= i < len(pieces) and flags[i] & FLAG_BYTE:
            run += pieces[i]
            n_run += 1
            continue
        flush()
        out.append(pieces[i].decode("utf-8") if 0 <= i < len(pieces) else "\ufffd")
    flush()
    text = "".join(out)
    for _ in range(strip):
        if text.startswith(" "):
            text = text[1:]
    return text


def split_chunks(text: str, size: int | None = None, newline: Cuts = True) -> list[str]:
    """Cut text into pieces of about `size` characters at boundaries where BPE would split anyway
    (before a space followed by text, and before a newline followed by text when `newline`; or at
    a tokenizer's cut_patterns)."""
    size = CHUNK_CHARS if size is None else size  # read at call time: tests shrink it
    pieces, start = [], 0
    while len(text) - start > size:
        cut = _next_boundary(text, start + size, size, newline)
        if cut < 0:
            break
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return [p for p in pieces if p]


def _merge_pairs(merges: object) -> list[tuple[str, str]] | None:
    """The (left, right) pairs that HF reads from a BPE `merges` list: pairs of strings, or legacy
    "left right" strings (lines starting with `#version` skipped); None for any other shape, which
    HF refuses with an error of its own."""
    if not isinstance(merges, list):
        return None
    if all(isinstance(m, list) and len(m) == 2 and all(isinstance(t, str) for t in m) for m in merges):
        return [(m[0], m[1]) for m in merges]
    if not all(isinstance(m, str) for m in merges):
        return None
    pairs = []
    for line in merges:
        if not line.startswith("#version"):
            parts = line.split(" ")
            if len(parts) != 2:
                return None
            pairs.append((parts[0], parts[1]))
    return pairs


def check_bpe_model(spec: object) -> None:
    """Refuse, before HF `tokenizers` sees it, a tokenizer.json model that would make it panic.

    HF (0.23, `BpeBuilder::build` in bpe/model.rs) copies each merge's left token and its right
    token less `continuing_subword_prefix` into a buffer as long as the longest vocabulary token,
    and only then looks the result up. A merge whose two tokens are in the vocabulary but whose
    concatenation is longer than every token overruns that buffer: a Rust panic, whose message
    Rust's panic hook prints on stderr whatever Python does with the exception. A prefix longer
    than a right token panics the same way, and one that ends inside a right token's first
    character makes an invalid UTF-8 string that pyo3 cannot turn into an error: the process
    aborts. So: the prefix and suffix options are refused here (no runtime implements them), and
    every merge must join two vocabulary tokens into a third, which HF requires anyway. Models of
    another type are refused here too (HF would build them first, with checks of their own).
    """
    if not isinstance(spec, dict) or not isinstance(model := spec.get("model"), dict):
        return  # HF says what is wrong
    kind = model.get("type", "BPE")
    if kind != "BPE":
        raise TokenizerError(f"unsupported tokenizer model {kind!r}: need BPE (char or byte-level)")
    Tokenizer._check_model_options(model)
    vocab, merges = model.get("vocab"), _merge_pairs(model.get("merges"))
    if not isinstance(vocab, dict):
        return
    # HF serializes a BPE vocabulary (to_str, which __init__ calls) by walking every id up to the
    # largest and listing the missing ones: an id near 2^32 costs minutes and gigabytes (found by
    # atheris). The ids must be dense anyway (__init__); bounding them first keeps that cheap.
    added = spec.get("added_tokens")
    limit = len(vocab) + (len(added) if isinstance(added, list) else 0)
    for token, i in vocab.items():
        if type(i) is int and not 0 <= i < limit:
            raise TokenizerError(f"token {token!r} has id {i}, outside 0 .. {limit - 1}: the ids must be the "
                                 "dense range 0 .. vocab_size - 1")
    if merges is None:
        return
    for rank, (left, right) in enumerate(merges):
        for token in (left, right, left + right):
            if token not in vocab:
                raise TokenizerError(f"BPE merge {rank} ({left!r} + {right!r}): {token!r} is not in the "
                                     "vocabulary")


_STDERR_LOCK = threading.Lock()
_CAPTURE: dict[int, IO[bytes]] = {}  # pid -> its capture file (a forked child makes its own)


@contextmanager
def _rust_panics_silenced() -> Iterator[None]:
    """Run the body with file descriptor 2 captured into a temporary file, for the Rust panic hook.

    A panic inside HF `tokenizers` reaches Python as a PanicException, which load() turns into one
    TokenizerError line; but Rust's default panic hook first writes "thread ... panicked at ..."
    (and with RUST_BACKTRACE a backtrace) straight to fd 2, out of Python's reach. check_bpe_model
    refuses the shapes known to panic; this catches the rest (a malformed Precompiled normalizer,
    for one). If the body panics, what fd 2 received is dropped (the panic's message is in the
    exception); otherwise it is written to stderr after all. The lock keeps two loads on two
    threads from swapping fd 2 under each other; other threads' writes to fd 2 while a load runs
    are delayed until it ends (and lost if it panics). Where fd 2 cannot be duplicated, nothing
    is captured. The capture file (an unlinked temporary file) is made once per process and
    emptied after each use: making one per load took longer than loading a small tokenizer."""
    with _STDERR_LOCK:
        if sys.stderr is not None:
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all
            yield
            return
        if (capture_file := _CAPTURE.get(os.getpid())) is None:
            capture_file = _CAPTURE[os.getpid()] = tempfile.TemporaryFile()
        capture = capture_file.fileno()
        panicked = False
        try:
            os.dup2(capture, 2)
            yield
        except BaseException as e:
            panicked = type(e).__name__ == "PanicException"
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            size = os.lseek(capture, 0, os.SEEK_END)
            if size and not panicked:
                _write_all(2, os.pread(capture, size, 0))
            if size:
                os.ftruncate(capture, 0)
            os.lseek(capture, 0, os.SEEK_SET)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


class Tokenizer:
    """A char or byte-level BPE tokenizer backed by a HF `tokenizers.Tokenizer`."""

    def __init__(self, hf: HFTokenizer):
        # A tokenizer.json may carry padding and truncation settings, which HF applies to every
        # encode: ids cut short, or padded (a Fixed length of 10^9 allocates gigabytes); and
        # encode_batch pads each chunk to the longest. onebit encodes whole texts, as the
        # runtimes do, so both are switched off (and left out of a saved copy).
        hf.no_padding()
        hf.no_truncation()
        self.hf = hf
        spec = json.loads(hf.to_str())
        model = spec.get("model") or {}
        if model.get("type") != "BPE":
            raise TokenizerError(f"unsupported tokenizer model {model.get('type')!r}: need BPE (char or byte-level)")
        self._spec = spec
        self.vocab_size: int = hf.get_vocab_size(with_added_tokens=True)
        vocab = hf.get_vocab(with_added_tokens=True)
        ids = sorted(vocab.values())
        if not ids:  # found by tools/fuzz/fuzz_readers.py: encode() indexed an empty table
            raise TokenizerError("tokenizer has an empty vocabulary")
        if ids != list(range(self.vocab_size)):
            raise TokenizerError("tokenizer ids are not the dense range 0 .. vocab_size - 1")
        self.special_tokens: dict[str, int] = {
            t["content"]: t["id"] for t in spec.get("added_tokens") or [] if t.get("special")
        }
        self.kind: str = self._detect_kind(spec, vocab)
        # SentencePiece-style settings (None for the other kinds); see sentencepiece_settings
        self.sentencepiece: dict | None = sentencepiece_settings(spec, vocab) if self.kind == "bpe" else None
        self.add_prefix_space = False
        if self.kind == "char":
            self.pretokenizer: str = "none"
        elif self.sentencepiece is not None:
            self.pretokenizer = SENTENCEPIECE
        else:
            self.pretokenizer, self.add_prefix_space = self._detect_pretokenizer(spec.get("pre_tokenizer"))
        self.ignore_merges = bool(model.get("ignore_merges")) and self.kind == "bpe"
        self._check_model_options(model)
        self._check_added_tokens(spec)
        self._id_to_token = [""] * self.vocab_size
        for token, i in vocab.items():
            self._id_to_token[i] = token
        self._bytes = [self._raw_bytes(i) for i in range(self.vocab_size)]
        self._flags = self.token_flags()
        self._cut_patterns: tuple[re.Pattern, ...] | None = None
        self._merges_stay_in_words = not any(
            left[-1:] != METASPACE and right[:1] == METASPACE
            for left, right in (m.split(" ", 1) if isinstance(m, str) else m for m in model.get("merges") or []))
        if self.kind == "char":
            # sorted code points and their ids: np.searchsorted encodes the whole corpus at once
            cps = np.array([ord(t) for t in self._id_to_token], dtype=np.int64)
            order = np.argsort(cps, kind="stable")
            self._char_cps, self._char_ids = cps[order], order.astype(np.int64)

    @staticmethod
    def _detect_kind(spec: dict, vocab: dict[str, int]) -> str:
        model, pre, dec = spec["model"], spec.get("pre_tokenizer"), spec.get("decoder") or {}
        if (not model.get("merges") and spec.get("normalizer") is None and pre is None and dec.get("type") == "Fuse"
                and all(len(t) == 1 for t in vocab) and not spec.get("added_tokens")):
            return "char"
        pre_types = {p.get("type") for p in (pre or {}).get("pretokenizers", [pre or {}])}
        if "ByteLevel" in pre_types and dec.get("type") == "ByteLevel":
            if spec.get("normalizer") is not None:
                raise TokenizerError(f"unsupported tokenizer: a byte-level BPE with a normalizer "
                                     f"({(spec['normalizer'] or {}).get('type')})")
            return "bpe"
        if model.get("byte_fallback") or _decoder_steps(dec)[:1] == ["Replace"] or dec.get("type") == "Metaspace":
            return "bpe"  # SentencePiece-style; sentencepiece_settings checks the details
        raise TokenizerError("unsupported tokenizer: need a char tokenizer, a byte-level BPE (ByteLevel "
                             "pre-tokenizer and decoder) or a SentencePiece-style BPE (byte_fallback, "
                             "Replace/ByteFallback/Fuse/Strip decoder)")

    @staticmethod
    def _check_model_options(model: dict) -> None:
        for key in ("continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(key):
                raise TokenizerError(f"unsupported tokenizer: BPE {key} {model[key]!r}")
        if model.get("dropout"):
            raise TokenizerError(f"unsupported tokenizer: BPE dropout {model['dropout']} (encoding is random)")
        # HF loads such a model, then fails to encode any text that needs the unknown token (an
        # added token of that name does not count: the model looks it up in its own vocabulary)
        unk, vocab = model.get("unk_token"), model.get("vocab")
        if isinstance(unk, str) and isinstance(vocab, dict) and unk not in vocab:
            raise TokenizerError(f"unk_token {unk!r} is not in the BPE model's vocabulary")

    def _check_added_tokens(self, spec: dict) -> None:
        """The C runtime splits out special tokens by their exact text, before anything else; HF
        does the same for the added tokens below, so other flavours are refused."""
        if self.kind == "char":
            return
        for t in spec.get("added_tokens") or []:
            what = t.get("content")
            if not t.get("special"):
                raise TokenizerError(f"unsupported tokenizer: added token {what!r} is not special")
            for flag in ("single_word", "lstrip", "rstrip"):
                if t.get(flag):
                    raise TokenizerError(f"unsupported tokenizer: special token {what!r} has {flag}")
            if t.get("normalized") and spec.get("normalizer") is not None:
                raise TokenizerError(f"unsupported tokenizer: special token {what!r} is matched after "
                                     "normalization")
            if not what:
                raise TokenizerError("unsupported tokenizer: an empty special token")
            if self.pretokenizer == SENTENCEPIECE and (METASPACE in what or fallback_byte(what) is not None):
                # the runtimes find special tokens by their decoded bytes, which are not their text
                raise TokenizerError(f"unsupported tokenizer: special token {what!r} decodes to other text")
            if self.pretokenizer == SENTENCEPIECE or self.add_prefix_space:
                # every text segment may gain a leading token; a special token of two bytes or
                # more pays for it, which keeps "len + 1 ids always suffice" true in C
                if len(what.encode("utf-8")) < 2:
                    raise TokenizerError(f"unsupported tokenizer: special token {what!r} is a single byte")

    @staticmethod
    def _detect_pretokenizer(pre: dict) -> tuple[str, bool]:
        """(GPT2 or LLAMA3, add_prefix_space); any other byte-level pre-tokenizer is refused, since
        the C runtime could not split text the way HF does."""
        steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
        if len(steps) == 1 and steps[0].get("type") == "ByteLevel" and steps[0].get("use_regex", True):
            return GPT2, bool(steps[0].get("add_prefix_space"))
        if (len(steps) == 2 and steps[0].get("type") == "Split" and steps[1].get("type") == "ByteLevel"
                and not steps[1].get("use_regex", True) and not steps[1].get("add_prefix_space")
                and (steps[0].get("pattern") or {}).get("Regex") == LLAMA3_SPLIT
                and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert")):
            return LLAMA3, False
        raise TokenizerError("unsupported byte-level pre-tokenizer: need GPT-2's ByteLevel regex or "
                             "Llama-3's Split regex followed by ByteLevel(use_regex=false)")

    def _raw_bytes(self, token_id: int) -> bytes:
        token = self._id_to_token[token_id]
        if self.sentencepiece is not None:  # the decoder's Replace, then ByteFallback
            byte = fallback_byte(token)
            return token.replace(METASPACE, " ").encode("utf-8") if byte is None else bytes([byte])
        if self.kind == "char" or token in self.special_tokens:
            return token.encode("utf-8")
        table = _byte_decoder()
        if all(c in table for c in token):
            return bytes(table[c] for c in token)
        return token.encode("utf-8")  # an added non-special token: stored as plain text

    # ------------------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        _check_text(text)
        if self.kind == "char":
            return self._encode_char(text)
        if not self._chunkable:
            return self.hf.encode(text, add_special_tokens=False).ids
        return self._encode_bpe(split_chunks(text, newline=self._cuts))

    @property
    def _cuts(self) -> tuple[re.Pattern, ...]:
        if self._cut_patterns is None:
            self._cut_patterns = cut_patterns(self.pretokenizer, self.special_tokens)
        return self._cut_patterns

    @property
    def _chunkable(self) -> bool:
        """Whether encoding pieces of a text gives the text's ids. ignore_merges is no obstacle: it
        acts inside a pre-token, and byte-level pieces are cut between pre-tokens. Not when every
        piece would gain a leading space or `▁` (add_prefix_space, the legacy SentencePiece
        normalizer), nor when a special token holds a space or newline (a cut could split it).
        A Metaspace SentencePiece piece starting with a space gains no `▁`, and a cut before that
        space is one that BPE never merges across when split is on, or when no merge joins a
        token ending in a character other than `▁` to one starting with `▁`."""
        if self.kind != "bpe" or self.add_prefix_space or any(
                c in t or len(t) >= LOOKAHEAD for t in self.special_tokens for c in " \r\n"):
            return False
        if self.sentencepiece is None:
            return True
        return self.sentencepiece["prepend"] != "always" and (self.sentencepiece["split"] or self._merges_stay_in_words)

    def encode_stream(self, texts: Iterable[str]) -> Iterator[list[int]]:
        """Encode consecutive pieces of one text; the concatenated ids equal encode("".join(texts)).

        Holds back the tail after the last safe boundary, so memory stays bounded by the piece size
        (plus the longest stretch without a newline or space followed by text).
        """
        carry, offset = "", 0
        for text in texts:
            if self.kind == "char":
                yield self._encode_char(text, offset)
                offset += len(text)
                continue
            if not self._chunkable:  # held whole: no piece boundary is safe (see _chunkable)
                carry += text
                continue
            # the old tail had no boundary; its last chars lacked the lookahead: one character, and a
            # whole special token (a cut right before one is not safe, see cut_patterns)
            span = max(map(len, self.special_tokens), default=0)
            scanned = max(0, len(carry) - 1 - span)
            carry += text
            cut = _last_boundary(carry, scanned, newline=self._cuts, before=len(carry) - span)
            if cut > 0:
                yield self._encode_bpe(split_chunks(carry[:cut], newline=self._cuts))
                carry = carry[cut:]
        if carry:
            yield self.encode(carry)

    def _encode_char(self, text: str, offset: int = 0) -> list[int]:
        if not text:
            return []
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        pos = np.searchsorted(self._char_cps, cps).clip(max=len(self._char_cps) - 1)
        bad = np.flatnonzero(self._char_cps[pos] != cps)
        if bad.size:
            i = int(bad[0])
            raise TokenizerError(f"character {text[i]!r} (U+{ord(text[i]):04X}) at offset {offset + i} "
                                 "is not in the char tokenizer's vocabulary")
        return self._char_ids[pos].tolist()

    def _encode_bpe(self, pieces: list[str]) -> list[int]:
        ids: list[int] = []
        for enc in self.hf.encode_batch(pieces, add_special_tokens=False):
            ids.extend(enc.ids)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Concatenated token bytes as UTF-8; invalid bytes and unknown ids become U+FFFD. This is
        HF's decode(ids, skip_special_tokens=False) for every supported tokenizer.json (its
        ByteLevel decoder is from_utf8_lossy, which replaces the same maximal invalid subparts as
        Python), except SentencePiece-style ones: see decode_sentencepiece."""
        n = self.vocab_size
        if self.sentencepiece is not None:
            return decode_sentencepiece(ids, self._bytes, self._flags, self.sentencepiece["strip_leading_space"])
        raw = b"".join(self._bytes[i] if 0 <= i < n else REPLACEMENT for i in map(int, ids))
        return raw.decode("utf-8", errors="replace")

    def token_flags(self) -> np.ndarray:
        """uint8 per token, SentencePiece-style only (zeros otherwise): FLAG_BYTE, the decoder
        reads the token as one raw byte (`<0xNN>`); FLAG_FALLBACK, the token byte fallback encodes
        that byte with (`<0xNN>`, upper case exactly); FLAG_HIDDEN, the token's text cannot be
        looked up by its bytes (a byte token, or text with a real space, which encoding never
        sees since spaces become `▁`)."""
        flags = np.zeros(self.vocab_size, dtype=np.uint8)
        if self.sentencepiece is None:
            return flags
        for i, token in enumerate(self._id_to_token):
            byte = fallback_byte(token)
            if byte is not None:
                flags[i] |= FLAG_BYTE | FLAG_HIDDEN
                if token == f"<0x{byte:02X}>":
                    flags[i] |= FLAG_FALLBACK
            if " " in token:
                flags[i] |= FLAG_HIDDEN
        return flags

    def token_bytes(self, token_id: int) -> bytes:
        if not 0 <= token_id < self.vocab_size:
            raise TokenizerError(f"token id {token_id} is outside the vocabulary (size {self.vocab_size})")
        return self._bytes[token_id]

    def merges(self) -> list[tuple[int, int, int]]:
        if self.kind == "char":
            return []
        vocab = self.hf.get_vocab(with_added_tokens=True)
        out = []
        for merge in self._spec["model"].get("merges") or []:
            left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
            out.append((vocab[left], vocab[right], vocab[left + right]))
        return out

    def to_str(self) -> str:
        return self.hf.to_str()

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), self.hf.to_str(pretty=True))

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"tokenizer file {path} not found")
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as e:
            raise TokenizerError(f"{path}: cannot read it ({e.strerror})") from None
        except UnicodeDecodeError as e:
            raise TokenizerError(f"{path}: not a valid tokenizer.json (not UTF-8: {e.reason} at byte "
                                 f"{e.start})") from None
        try:
            check_bpe_model(json.loads(text))
        except TokenizerError as e:
            raise TokenizerError(f"{path}: {e}") from None
        except (ValueError, RecursionError):
            pass  # not JSON to Python either: HF says why below
        try:
            with _rust_panics_silenced():
                hf = HFTokenizer.from_str(text)
        except (KeyboardInterrupt, SystemExit):
            raise
        # HF raises a bare Exception with a multi-line serde message, and, for inputs that
        # check_bpe_model does not foresee, may panic: pyo3 raises a PanicException (a BaseException)
        except BaseException as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TokenizerError(f"{path}: not a valid tokenizer.json ({first})") from None
        try:
            return cls(hf)
        except TokenizerError as e:
            raise TokenizerError(f"{path}: {e}") from None

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


# ----------------------------------------------------------------------------------------------
# Training


def train_char_tokenizer(text: str) -> Tokenizer:
    """Vocab = the sorted set of characters in text (id = rank by code point)."""
    return _char_tokenizer(set(text))


def _char_tokenizer(chars: set[str]) -> Tokenizer:
    if not chars:
        raise TokenizerError("cannot build a char tokenizer from empty text")
    vocab = {c: i for i, c in enumerate(sorted(chars))}
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[]))
    hf.decoder = decoders.Fuse()
    return Tokenizer(hf)


def train_bpe_tokenizer(paths: list[Path], vocab_size: int) -> Tokenizer:
    """Byte-level BPE (GPT-2 pre-tokenizer) with `<|endoftext|>` at id 0, then the 256 bytes."""
    if vocab_size < 257:
        raise TokenizerError(f"bpe vocab_size must be at least 257 (256 bytes + {EOT}), got {vocab_size}")
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    if not paths:
        raise TokenizerError("cannot train a bpe tokenizer without corpus files")
    try:
        hf.train([str(p) for p in paths], trainer)
    except Exception as e:  # HF reports unreadable or non-UTF-8 files as a bare Exception
        raise TokenizerError(f"bpe training failed: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}") from None
    return Tokenizer(hf)


def make_tokenizer(spec: str, corpus: list[Path], vocab_size: int) -> Tokenizer:
    """spec is "char" (vocab_size ignored), "bpe" (trained on corpus) or a tokenizer.json path."""
    if spec == "char":
        chars: set[str] = set()
        for text in iter_corpus_text(corpus):
            chars.update(text)
        return _char_tokenizer(chars)
    if spec == "bpe":
        return train_bpe_tokenizer(corpus, vocab_size)
    path = Path(spec)
    if not path.exists():
        raise TokenizerError(f"tokenizer must be 'char', 'bpe' or a tokenizer.json path; {spec} not found")
    return Tokenizer.load(path)


def iter_corpus_text(paths: Iterable[Path], chunk_bytes: int = 1 << 20) -> Iterator[str]:
    """Stream UTF-8 text from files in pieces, so no file is held in memory whole."""
    import codecs

    for path in paths:
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        try:
            with open(path, "rb") as f:
                while block := f.read(chunk_bytes):
                    offset += len(block)
                    if text := decoder.decode(block):
                        yield text
                if text := decoder.decode(b"", final=True):
                    yield text
        except UnicodeDecodeError as e:
            at = offset - len(e.object) + e.start
            raise TokenizerError(f"{path}: not UTF-8 text ({e.reason} at byte {at})") from None
