"""A NumPy forward over a packed `.1bit` file: the oracle the C runtime is tested against.

No torch: weights are unpacked from the file's bytes (quant.py's unpackers), activations are
quantized exactly as docs/DESIGN.md says (fp32, np.rint, exact integer dot products, one fp32
multiply by s / a), and the steps follow DESIGN.md's forward. Batch size 1; prefill a whole
sequence or decode one token at a time against a KV-cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onebit import packing
from onebit.chat_template import eos_ids
from onebit.errors import OnebitError
from onebit.format import (ROW_SCALED, OnebitFile, bitlinear_dtypes, bitlinear_shapes, check_model, read_1bit,
                           separate_head)

F32 = np.float32
EPS = F32(packing.EPS)
# Integer sums of K products |x| <= 128 with |q| <= 1 stay exact in fp32 below 2^24.
MAX_EXACT_K = (1 << 24) // 128
KV_TYPES = ("f32", "f16")


class ReferenceError(OnebitError):
    """A prompt or request that the model cannot serve (e.g. longer than its context)."""


@dataclass
class BitLinearWeights:
    codes_t: np.ndarray  # [in, out] integer values, transposed for x @ codes_t: fp32, float64 where fp32 could round
    scale: np.float32 | np.ndarray  # per tensor (ternary, binary) or per output row [out] (int4, int8)


def _dequant_float(f: OnebitFile, name: str) -> np.ndarray:
    t = f.tensors[name]
    w = f.array(name)
    if t.dtype == "I8":
        return w.astype(F32) * f.array(name + ".scale")[:, None]
    return w.astype(F32)


def bitlinear(x: np.ndarray, w: BitLinearWeights) -> np.ndarray:
    """y = (xq . Q^T) * (s / a), per token, everything fp32 (DESIGN.md)."""
    a = F32(127.0) / np.maximum(np.abs(x).max(axis=-1, keepdims=True), EPS)
    xq = np.clip(np.rint(x * a), -128, 127)
    if w.codes_t.dtype == np.float64:  # int4/int8: an exact float64 sum, rounded to fp32 once
        acc = (xq.astype(np.float64) @ w.codes_t).astype(F32)
    else:
        acc = xq @ w.codes_t
    return acc * (w.scale / a)


@dataclass
class Int8Head:
    """An int8 LM head (FORMAT.md "LM head"): codes [vocab, dim] and per-row scales."""

    codes_t: np.ndarray  # [dim, vocab] float64 (exact integers)
    scale: np.ndarray  # [vocab] fp32


def quantize_i16(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The int8 head's activations, per row (C ob_quantize_i16): a = 32767 / max(absmax, EPS) in fp32,
    xq = clip(rint(fp32 x * a), +-32767) (half to even; NaN -> 0).  Returns xq as float64 and a [.., 1]."""
    amax = np.nanmax(np.abs(x), axis=-1, keepdims=True) if x.size else np.zeros(x.shape[:-1] + (1,), F32)
    a = F32(32767.0) / np.maximum(np.nan_to_num(amax, nan=0.0).astype(F32), EPS)
    xq = np.clip(np.rint(x * a), -32767, 32767)
    return np.nan_to_num(xq, nan=0.0).astype(np.float64), a


def int8_head(x: np.ndarray, head: Int8Head) -> np.ndarray:
    """logits = f32(S) * (scale / a), S the exact integer sum of int16 activations and int8 codes (every
    product < 2^22, every sum of fewer than 2^31 of them < 2^53: exact in float64 in any order)."""
    xq, a = quantize_i16(x)
    return (xq @ head.codes_t).astype(F32) * (head.scale / a)


def norm(x: np.ndarray, weight: np.ndarray, kind: str, eps: float) -> np.ndarray:
    if kind == "rmsnorm":
        y = x * (F32(1.0) / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + F32(eps)))
    else:
        mu = np.mean(x, axis=-1, keepdims=True)
        var = np.mean((x - mu) ** 2, axis=-1, keepdims=True)
        y = (x - mu) / np.sqrt(var + F32(eps))
    return y * weight


def activation(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "silu":
        return x / (F32(1.0) + np.exp(-x))
    if kind == "relu2":
        return np.square(np.maximum(x, F32(0.0)))
    c = F32(np.sqrt(2.0 / np.pi))
    return F32(0.5) * x * (F32(1.0) + np.tanh(c * (x + F32(0.044715) * x * x * x)))


def rope_tables(head_dim: int, positions: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [T, head_dim/2]: angles in float64, rounded to fp32 (as model.rope_tables)."""
    half = head_dim // 2
    freqs = theta ** (-np.arange(half, dtype=np.float64) * 2.0 / head_dim)
    angles = positions.astype(np.float64)[:, None] * freqs[None, :]
    return np.cos(angles).astype(F32), np.sin(angles).astype(F32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate-half RoPE on x [H, T, head_dim]: element i pairs with i + head_dim/2."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate((x1 * cos - x2 * sin, x2 * cos + x1 * sin), axis=-1)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class KVCache:
    """Per layer, keys and values [n_kv_heads, S, head_dim] after RoPE; grows as tokens arrive.

    dtype "f16" stores them as the C runtime's f16 cache does: each value rounded to the nearest
    IEEE half (ties to even) as it enters the cache, read back as fp32, so a token's own key and
    value are rounded too before attention sees them."""

    k: list[np.ndarray] = field(default_factory=list)
    v: list[np.ndarray] = field(default_factory=list)
    dtype: str = "f32"

    def __post_init__(self) -> None:
        if self.dtype not in KV_TYPES:
            raise ReferenceError(f"KV-cache type must be one of {', '.join(KV_TYPES)}, got {self.dtype!r}")

    def store(self, x: np.ndarray) -> np.ndarray:
        """x as the cache holds it."""
        return x.astype(np.float16).astype(F32) if self.dtype == "f16" else x

    @property
    def length(self) -> int:
        return self.k[0].shape[1] if self.k else 0


class ReferenceModel:
    """The model of a `.1bit` file, unpacked to fp32 code matrices; forward in NumPy."""

    def __init__(self, f: OnebitFile):
        self.file = f
        self.cfg = check_model(f)
        cfg = self.cfg
        self.head_dim = cfg["dim"] // cfg["n_heads"]
        dtypes = bitlinear_dtypes(cfg, f.meta["quant"]["pack"])
        unpackers = {"T2": packing.unpack_t2, "T1_6": packing.unpack_t16, "B1": packing.unpack_b1,
                     "I4": packing.unpack_i4, "I8": lambda codes, k: codes}
        self.linears: dict[str, BitLinearWeights] = {}
        for name, (_, k) in bitlinear_shapes(cfg).items():
            codes = unpackers[dtypes[name]](f.array(name), k)
            levels = 7 if dtypes[name] == "I4" else 127
            if dtypes[name] in ROW_SCALED:
                # float64 where fp32 sums of these products could round (K * 128 * levels >= 2^24)
                wide = np.float64 if k * 128 * levels >= 1 << 24 else F32
                weights = BitLinearWeights(np.ascontiguousarray(codes.T, dtype=wide),
                                           np.array(f.array(name + ".scale"), dtype=F32))
            else:
                if k > MAX_EXACT_K:
                    raise ReferenceError(f"{f.path}: in_features {k} is too large for exact fp32 dot products")
                weights = BitLinearWeights(np.ascontiguousarray(codes.T, dtype=F32), F32(f.tensors[name].scale))
            self.linears[name] = weights
        self.floats = {name: _dequant_float(f, name) for name, t in f.tensors.items()
                       if t.dtype in ("F32", "F16", "I8") and not name.endswith(".scale") and name not in dtypes}
        self.embed = self.floats["embed.weight"]
        # the LM head: a float matmul (f32 / f16), an int8 head over int16 activations (int8_head), or
        # an int4 head run as a BitLinear
        self.head_i4: BitLinearWeights | None = None
        self.head_i8: Int8Head | None = None
        head_name = "head.weight" if separate_head(cfg, f.meta["quant"]) else "embed.weight"
        if f.tensors[head_name].dtype == "I8":
            self.head_i8 = Int8Head(np.ascontiguousarray(f.array(head_name).T, dtype=np.float64),
                                    np.array(f.array(head_name + ".scale"), dtype=F32))
        elif not separate_head(cfg, f.meta["quant"]):
            self.head = self.embed
        elif f.tensors["head.weight"].dtype == "I4":
            codes = packing.unpack_i4(f.array("head.weight"), cfg["dim"])
            wide = np.float64 if cfg["dim"] * 128 * 7 >= 1 << 24 else F32
            self.head_i4 = BitLinearWeights(np.ascontiguousarray(codes.T, dtype=wide),
                                            np.array(f.array("head.weight.scale"), dtype=F32))
        else:
            self.head = self.floats["head.weight"]

    @classmethod
    def load(cls, path: str | Path) -> "ReferenceModel":
        return cls(read_1bit(path))

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        return norm(x, self.floats[name], self.cfg["norm"], self.cfg["norm_eps"])

    def _attention(self, i: int, h: np.ndarray, cache: KVCache, start: int) -> np.ndarray:
        cfg, hd = self.cfg, self.head_dim
        p = f"layers.{i}.attn."
        T = h.shape[0]
        q = bitlinear(h, self.linears[p + "q_proj.weight"]).reshape(T, cfg["n_heads"], hd).transpose(1, 0, 2)
        k = bitlinear(h, self.linears[p + "k_proj.weight"]).reshape(T, cfg["n_kv_heads"], hd).transpose(1, 0, 2)
        v = bitlinear(h, self.linears[p + "v_proj.weight"]).reshape(T, cfg["n_kv_heads"], hd).transpose(1, 0, 2)
        if cfg["qk_norm"]:
            q, k = self._norm(q, p + "q_norm.weight"), self._norm(k, p + "k_norm.weight")
        if cfg["pos"] == "rope":
            cos, sin = rope_tables(hd, np.arange(start, start + T), cfg["rope_theta"])
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k, v = cache.store(k), cache.store(v)
        if len(cache.k) > i:
            k = np.concatenate((cache.k[i], k), axis=1)
            v = np.concatenate((cache.v[i], v), axis=1)
            cache.k[i], cache.v[i] = k, v
        else:
            cache.k.append(k)
            cache.v.append(v)
        group = cfg["n_heads"] // cfg["n_kv_heads"]
        k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
        S = k.shape[1]
        scores = (q @ k.transpose(0, 2, 1)) * F32(1.0 / np.sqrt(hd))
        # query t sits at position S - T + t and sees keys 0 .. S - T + t
        visible = np.arange(S)[None, :] <= (S - T + np.arange(T))[:, None]
        scores = np.where(visible, scores, F32(-np.inf))
        a = (softmax(scores) @ v).transpose(1, 0, 2).reshape(T, cfg["n_heads"] * hd)
        if cfg["subln"]:
            a = self._norm(a, p + "sub_norm.weight")
        return bitlinear(a, self.linears[p + "o_proj.weight"])

    def _mlp(self, i: int, h: np.ndarray) -> np.ndarray:
        cfg, p = self.cfg, f"layers.{i}.mlp."
        if cfg["gated"]:
            u = activation(bitlinear(h, self.linears[p + "gate_proj.weight"]), cfg["activation"])
            u = u * bitlinear(h, self.linears[p + "up_proj.weight"])
        else:
            u = activation(bitlinear(h, self.linears[p + "up_proj.weight"]), cfg["activation"])
        if cfg["subln"]:
            u = self._norm(u, p + "sub_norm.weight")
        return bitlinear(u, self.linears[p + "down_proj.weight"])

    def forward(self, tokens: list[int] | np.ndarray, cache: KVCache | None = None) -> np.ndarray:
        """Logits [T, vocab] for tokens at positions cache.length ...; the cache is extended in place.

        Prefill: pass the whole prompt (and a fresh cache). Decode: pass one token at a time.
        """
        cfg = self.cfg
        cache = KVCache() if cache is None else cache
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        start, T = cache.length, tokens.shape[0]
        if T == 0:
            raise ReferenceError("no tokens to run")
        if start + T > cfg["max_seq_len"]:
            raise ReferenceError(f"sequence of {start + T} tokens exceeds max_seq_len {cfg['max_seq_len']}")
        if tokens.min() < 0 or tokens.max() >= cfg["vocab_size"]:
            raise ReferenceError(f"token id out of range [0, {cfg['vocab_size']})")
        x = self.embed[tokens]
        if cfg["pos"] == "learned":
            x = x + self.floats["pos_embed.weight"][start:start + T]
        rs = F32(cfg["residual_scale"])
        for i in range(cfg["n_layers"]):
            x = x + rs * self._attention(i, self._norm(x, f"layers.{i}.attn_norm.weight"), cache, start)
            x = x + rs * self._mlp(i, self._norm(x, f"layers.{i}.mlp_norm.weight"))
        x = self._norm(x, "norm.weight")
        if self.head_i4 is not None:
            return bitlinear(x, self.head_i4)
        if self.head_i8 is not None:
            return int8_head(x, self.head_i8)
        return x @ self.head.T

    def generate_greedy(self, prompt: list[int], max_new_tokens: int, ignore_eos: bool = False,
                        kv: str = "f32") -> list[int]:
        """Prefill the prompt, then decode argmax tokens (ties to the lowest id) one at a time; past
        the context, slide (docs/SAMPLING.md: keep the last max(1, ctx // 2) tokens, re-prefill).
        Stops after one of the file's end-of-sequence ids (metadata tokenizer.eos_token_ids) unless
        ignore_eos. kv: the KV-cache type ("f32" as PyTorch, "f16" as the C runtime's default)."""
        eos = frozenset() if ignore_eos else eos_ids(self.file.meta.get("tokenizer") or {})
        if not prompt:
            raise ReferenceError("empty prompt")
        ctx = self.cfg["max_seq_len"]
        if len(prompt) > ctx:
            raise ReferenceError(f"prompt of {len(prompt)} tokens is longer than the context ({ctx})")
        cache = KVCache(dtype=kv)
        logits = self.forward(prompt, cache)[-1]
        seq, out = list(prompt), []
        while len(out) < max_new_tokens:
            token = int(np.argmax(logits))
            out.append(token)
            seq.append(token)
            if len(out) == max_new_tokens or token in eos:
                break
            if cache.length == ctx:
                cache = KVCache(dtype=kv)
                logits = self.forward(seq[-max(1, ctx // 2):], cache)[-1]
            else:
                logits = self.forward([token], cache)[-1]
        return out

    def decode(self, ids: list[int]) -> str:
        """Token ids to text through the file's tokenizer tensors (invalid UTF-8 becomes U+FFFD)."""
        tokens, offsets = self.file.array("tokenizer.tokens"), self.file.array("tokenizer.offsets")
        pieces = [tokens[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)]
        if "tokenizer.flags" in self.file.tensors:  # SentencePiece-style: HF's decoder rules
            from onebit.tokenizer import decode_sentencepiece

            sp = self.file.meta["tokenizer"].get("sentencepiece") or {}
            return decode_sentencepiece(ids, pieces, self.file.array("tokenizer.flags"),
                                        int(sp.get("strip_leading_space", 0)))
        return b"".join(pieces[i] for i in ids).decode("utf-8", "replace")
