"""The NumPy half of the quantization reference: `.1bit` weight layouts and the int8 row quantizer.

Packers take integer codes shaped [rows, K] (ternary in {-1, 0, +1}, binary in {-1, +1}, int4 in
[-7, 7]) and return uint8 [rows, row_stride]; unpackers invert them exactly and return int8 [rows, K]. The layouts are
specified in docs/DESIGN.md and docs/FORMAT.md; onebit/train/quant.py is the PyTorch half (the
quantizers that produce the codes). Nothing here imports torch, so every runtime can use it.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-5  # every quantizer's floor on a scale, in torch, NumPy and C alike

T2_BLOCK = 128
T16_BLOCK = 160
B1_BLOCK = 128
I4_BLOCK = 64
I4_OFFSET = 8  # int4 code q is stored as the nibble q + 8 (1..15; 8 is zero, the padding)
_POW3 = np.array([81, 27, 9, 3, 1], dtype=np.int32)  # slot 0 is the most significant trit


def t2_row_stride(k: int) -> int:
    return -(-k // T2_BLOCK) * 32


def t16_row_stride(k: int) -> int:
    return 32 * (k // T16_BLOCK) + -(-(k % T16_BLOCK) // 5)


def b1_row_stride(k: int) -> int:
    return -(-k // B1_BLOCK) * 16


def i4_row_stride(k: int) -> int:
    return -(-k // I4_BLOCK) * 32


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


def pack_i4(codes: np.ndarray) -> np.ndarray:
    """int4 codes in [-7, 7] -> I4: per 64-weight block, byte j holds weight j + 8 in its low
    nibble and weight 32 + j + 8 in its high nibble; rows padded to 64 with 0 (nibble 8)."""
    w = _check_codes(codes, tuple(range(-7, 8)), "int4")
    rows, k = w.shape
    nb = -(-k // I4_BLOCK)
    c = _padded((w + I4_OFFSET).astype(np.uint8), nb * I4_BLOCK, I4_OFFSET).reshape(rows, nb, 2, 32)
    return (c[:, :, 0] | (c[:, :, 1] << 4)).reshape(rows, nb * 32)


def unpack_i4(packed: np.ndarray, k: int) -> np.ndarray:
    rows = packed.shape[0]
    nb = -(-k // I4_BLOCK)
    p = np.asarray(packed, dtype=np.uint8).reshape(rows, nb, 1, 32)
    c = (p >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)) & 15
    return c.reshape(rows, nb * I4_BLOCK)[:, :k].astype(np.int8) - I4_OFFSET


PACKERS = {"t2": (pack_t2, unpack_t2, t2_row_stride),
           "t1.6": (pack_t16, unpack_t16, t16_row_stride),
           "b1": (pack_b1, unpack_b1, b1_row_stride),
           "i4": (pack_i4, unpack_i4, i4_row_stride)}


def quantize_rows(w: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric: scale = max(max|row|, EPS) / levels, q = clip(rint(w / scale), +-levels).

    levels 127 is the int8 embedding / head and int8 BitLinear, 7 the int4 BitLinear (quant.int_codes).
    """
    w = np.asarray(w, dtype=np.float32)
    scale = (np.maximum(np.abs(w).max(axis=1), np.float32(EPS)) / np.float32(levels)).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -levels, levels).astype(np.int8)
    return q, scale


def quantize_rows_mse(w: np.ndarray, levels: int, steps: int = 40, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric with a searched scale (the int4 LM head, FORMAT.md "LM head"): among
    scale = max(max|row|, EPS) / levels * (1 - i / (2 * steps)) for i = 0..steps-1, the one whose
    codes clip(rint(w / scale), +-levels) give the least squared error of the row (the first on a
    tie), so the largest weights are clipped when that serves the row better.  fp32 throughout."""
    w = np.asarray(w, dtype=np.float32)
    q_out = np.empty(w.shape, dtype=np.int8)
    s_out = np.empty(w.shape[0], dtype=np.float32)
    for r0 in range(0, w.shape[0], chunk):
        x = w[r0:r0 + chunk]
        amax = (np.maximum(np.abs(x).max(axis=1), np.float32(EPS)) / np.float32(levels)).astype(np.float32)
        best_err = np.full(x.shape[0], np.inf, dtype=np.float64)
        for i in range(steps):
            scale = (amax * np.float32(1.0 - i / (2 * steps))).astype(np.float32)
            q = np.clip(np.rint(x / scale[:, None]), -levels, levels)
            err = np.square(q * scale[:, None] - x, dtype=np.float32).sum(axis=1, dtype=np.float64)
            better = err < best_err
            best_err = np.where(better, err, best_err)
            s_out[r0:r0 + chunk] = np.where(better, scale, s_out[r0:r0 + chunk])
            q_out[r0:r0 + chunk][better] = q[better].astype(np.int8)
    return q_out, s_out


def quantize_rows_i8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8 (embedding / head): scale = max(max|row|, EPS) / 127, q in [-127, 127]."""
    return quantize_rows(w, 127)
