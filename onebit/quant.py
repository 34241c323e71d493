"""The one reference for quantization: trainer, exporter, runtimes and tests all use this file.

The math is in docs/DESIGN.md. Everything runs in fp32 with EPS = 1e-5, and rounding is
round-half-to-even (torch.round, np.rint, C nearbyintf) so that every runtime agrees bit for bit.
"""

from __future__ import annotations

import math

import torch

EPS = 1e-5
QUANT_KINDS = ("ternary", "binary", "none")


# ----------------------------------------------------------------------------------------------
# Weights


def weight_scale(w: torch.Tensor) -> torch.Tensor:
    """Per-tensor scale mean(|W|) shared by ternary and binary (a 0-d fp32 tensor)."""
    return w.float().abs().mean().clamp(min=EPS)


def ternary_codes(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Round-clip W / scale to {-1, 0, +1} (as fp32 values)."""
    return (w.float() / scale).round().clamp(-1, 1)


def binary_codes(w: torch.Tensor) -> torch.Tensor:
    """sign(W - mean W) with sign(0) = +1, so every weight is -1 or +1."""
    w = w.float()
    return torch.where(w - w.mean() >= 0, 1.0, -1.0)


def quantize_weight(w: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer-valued codes Q and the fp32 scale s, with W ~ Q * s."""
    scale = weight_scale(w)
    if kind == "ternary":
        return ternary_codes(w, scale), scale
    if kind == "binary":
        return binary_codes(w), scale
    raise ValueError(f"cannot quantize weights as {kind!r}")


def soft_codes(w: torch.Tensor, scale: torch.Tensor, kind: str, alpha: float) -> torch.Tensor:
    """A differentiable stand-in for the codes that becomes the hard quantizer as alpha grows.

    Ternary: a sum of two tanh steps at +-0.5 (round-clip in the limit); binary: tanh.
    """
    u = w.float() / scale
    if kind == "ternary":
        return 0.5 * (torch.tanh(alpha * (u - 0.5)) + torch.tanh(alpha * (u + 0.5)))
    return torch.tanh(alpha * (w.float() - w.float().mean()) / scale)


# ----------------------------------------------------------------------------------------------
# Activations


def activation_scale(x: torch.Tensor) -> torch.Tensor:
    """Per-token absmax scale a = 127 / max|x| (shape [..., 1])."""
    return 127.0 / x.float().abs().amax(dim=-1, keepdim=True).clamp(min=EPS)


def quantize_activation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token int8 codes (as fp32 values in [-128, 127]) and their scale a, x ~ xq / a."""
    a = activation_scale(x)
    return (x.float() * a).round().clamp(-128, 127), a


# ----------------------------------------------------------------------------------------------
# Straight-through estimator


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by a constant on the way back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:  # type: ignore[override]
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad * ctx.factor, None


def ste(x: torch.Tensor, x_quant: torch.Tensor, grad_scale: float = 1.0) -> torch.Tensor:
    """Forward the quantized value, backward the identity (times grad_scale)."""
    out = x + (x_quant - x).detach()
    if grad_scale != 1.0:
        out = _ScaleGrad.apply(out, grad_scale)
    return out


def bits_per_weight(kind: str) -> float:
    """Information content of one quantized weight (packing overhead not included)."""
    return {"ternary": math.log2(3), "binary": 1.0, "none": 32.0}[kind]


# ----------------------------------------------------------------------------------------------
# Packing (NumPy): the `.1bit` weight layouts of docs/DESIGN.md and docs/FORMAT.md.
#
# Packers take integer codes shaped [rows, K] (ternary in {-1, 0, +1}, binary in {-1, +1}) and
# return uint8 [rows, row_stride]; unpackers invert them exactly and return int8 [rows, K].

import numpy as np  # noqa: E402  (the packing section is NumPy-only; kept apart from the torch code)

T2_BLOCK = 128
T16_BLOCK = 160
B1_BLOCK = 128
_POW3 = np.array([81, 27, 9, 3, 1], dtype=np.int32)  # slot 0 is the most significant trit


def t2_row_stride(k: int) -> int:
    return -(-k // T2_BLOCK) * 32


def t16_row_stride(k: int) -> int:
    return 32 * (k // T16_BLOCK) + -(-(k % T16_BLOCK) // 5)


def b1_row_stride(k: int) -> int:
    return -(-k // B1_BLOCK) * 16


def _check_codes(codes: np.ndarray, allowed: tuple[int, ...], what: str) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"{what} codes must be 2-D [rows, K], got shape {codes.shape}")
    as_int = codes.astype(np.int8)
    if not np.array_equal(as_int, codes) or not np.isin(as_int, allowed).all():
        raise ValueError(f"{what} codes must be in {allowed}")
    return as_int


def _padded(codes: np.ndarray, width: int, fill: int) -> np.ndarray:
    rows, k = codes.shape
    out = np.full((rows, width), fill, dtype=np.uint8)
    out[:, :k] = codes
    return out


def _encode_trits(trits: np.ndarray) -> np.ndarray:
    """Base-3 value of 5 slot codes (axis -2) mapped to a byte: ceil(v * 256 / 243)."""
    v = np.tensordot(_POW3, trits.astype(np.int32), axes=([0], [trits.ndim - 2]))
    return ((v * 256 + 242) // 243).astype(np.uint8)


def _decode_trits(b: np.ndarray) -> np.ndarray:
    """Slot codes of packed bytes, stacked on a new axis -2: ((b * 3^i) mod 256) * 3 >> 8."""
    b = b.astype(np.int32)[..., None, :]
    mult = (3 ** np.arange(5, dtype=np.int32))[:, None]
    return ((((b * mult) & 0xFF) * 3) >> 8).astype(np.uint8)


def pack_t2(codes: np.ndarray) -> np.ndarray:
    """Ternary codes -> T2: per 128-weight block, byte j holds weights j, 32+j, 64+j, 96+j."""
    w = _check_codes(codes, (-1, 0, 1), "ternary")
    rows, k = w.shape
    nb = -(-k // T2_BLOCK)
    c = _padded(w + 1, nb * T2_BLOCK, 1).reshape(rows, nb, 4, 32)
    packed = c[:, :, 0] | (c[:, :, 1] << 2) | (c[:, :, 2] << 4) | (c[:, :, 3] << 6)
    return packed.reshape(rows, nb * 32)


def unpack_t2(packed: np.ndarray, k: int) -> np.ndarray:
    rows = packed.shape[0]
    nb = -(-k // T2_BLOCK)
    p = np.asarray(packed, dtype=np.uint8).reshape(rows, nb, 1, 32)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    c = (p >> shifts) & 3
    return c.reshape(rows, nb * T2_BLOCK)[:, :k].astype(np.int8) - 1


def pack_t16(codes: np.ndarray) -> np.ndarray:
    """Ternary codes -> T1.6: five trits per byte, full 160-blocks then a tail of ceil(r/5) bytes."""
    w = _check_codes(codes, (-1, 0, 1), "ternary")
    rows, k = w.shape
    full, r = divmod(k, T16_BLOCK)
    c = (w + 1).astype(np.uint8)
    head = _encode_trits(c[:, : full * T16_BLOCK].reshape(rows, full, 5, 32)).reshape(rows, full * 32)
    if r == 0:
        return np.ascontiguousarray(head)
    tail_len = -(-r // 5)
    tail = _padded(c[:, full * T16_BLOCK:], 5 * tail_len, 1).reshape(rows, 5, tail_len)
    return np.concatenate([head, _encode_trits(tail)], axis=1)


def unpack_t16(packed: np.ndarray, k: int) -> np.ndarray:
    rows = packed.shape[0]
    full, r = divmod(k, T16_BLOCK)
    p = np.asarray(packed, dtype=np.uint8).reshape(rows, t16_row_stride(k))
    head = _decode_trits(p[:, : full * 32].reshape(rows, full, 32)).reshape(rows, full * T16_BLOCK)
    if r:
        tail = _decode_trits(p[:, full * 32:]).reshape(rows, -1)[:, :r]
        head = np.concatenate([head, tail], axis=1)
    return head.astype(np.int8) - 1


def pack_b1(codes: np.ndarray) -> np.ndarray:
    """Binary codes -> B1: bit k % 8 of byte k / 8 is weight k (1 = +1), rows padded to 128 with -1."""
    w = _check_codes(codes, (-1, 1), "binary")
    rows, k = w.shape
    bits = _padded((w > 0).astype(np.uint8), -(-k // B1_BLOCK) * B1_BLOCK, 0)
    return np.packbits(bits, axis=1, bitorder="little")


def unpack_b1(packed: np.ndarray, k: int) -> np.ndarray:
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=1, bitorder="little")[:, :k]
    return bits.astype(np.int8) * 2 - 1


PACKERS = {"t2": (pack_t2, unpack_t2, t2_row_stride),
           "t1.6": (pack_t16, unpack_t16, t16_row_stride),
           "b1": (pack_b1, unpack_b1, b1_row_stride)}


def quantize_rows_i8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8 (embedding / head): scale = max(max|row|, EPS) / 127, q in [-127, 127]."""
    w = np.asarray(w, dtype=np.float32)
    scale = (np.maximum(np.abs(w).max(axis=1), np.float32(EPS)) / np.float32(127)).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale
