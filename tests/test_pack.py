"""Packed weight layouts: round trips and the exact bit layout of DESIGN.md, checked independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onebit import packing

shapes = st.tuples(st.integers(1, 5), st.integers(1, 700))


def _ternary(seed: int, rows: int, k: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1, 2, (rows, k)).astype(np.int8)


def _binary(seed: int, rows: int, k: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.array([-1, 1], dtype=np.int8), (rows, k))


# Independent, one-weight-at-a-time readings of the layouts, straight from DESIGN.md's prose.

def _t2_byte_reference(codes: np.ndarray) -> np.ndarray:
    rows, k = codes.shape
    stride = math.ceil(k / 128) * 32
    out = np.zeros((rows, stride), dtype=np.uint8)
    for r in range(rows):
        for n in range(stride // 32 * 128):
            c = int(codes[r, n]) + 1 if n < k else 1
            block, within = divmod(n, 128)
            slot, j = divmod(within, 32)
            out[r, block * 32 + j] |= c << (2 * slot)
    return out


def _t16_byte_reference(codes: np.ndarray) -> np.ndarray:
    rows, k = codes.shape
    full, rem = divmod(k, 160)
    tail = math.ceil(rem / 5)
    out = np.zeros((rows, 32 * full + tail), dtype=np.uint8)
    for r in range(rows):
        groups = []  # (byte index, [weight index or None per slot])
        for b in range(full):
            groups += [(b * 32 + j, [b * 160 + j + 32 * i for i in range(5)]) for j in range(32)]
        groups += [(32 * full + j, [full * 160 + j + tail * i if j + tail * i < rem else None
                                    for i in range(5)]) for j in range(tail)]
        for byte, idx in groups:
            trits = [int(codes[r, n]) + 1 if n is not None else 1 for n in idx]
            v = trits[0] * 81 + trits[1] * 27 + trits[2] * 9 + trits[3] * 3 + trits[4]
            out[r, byte] = math.ceil(v * 256 / 243)
    return out


def _b1_byte_reference(codes: np.ndarray) -> np.ndarray:
    rows, k = codes.shape
    out = np.zeros((rows, math.ceil(k / 128) * 16), dtype=np.uint8)
    for r in range(rows):
        for n in range(k):
            if codes[r, n] > 0:
                out[r, n // 8] |= 1 << (n % 8)
    return out


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_t2_round_trip(shape, seed):
    w = _ternary(seed, *shape)
    packed = packing.pack_t2(w)
    assert packed.dtype == np.uint8 and packed.shape == (shape[0], packing.t2_row_stride(shape[1]))
    np.testing.assert_array_equal(packing.unpack_t2(packed, shape[1]), w)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_t16_round_trip(shape, seed):
    w = _ternary(seed, *shape)
    packed = packing.pack_t16(w)
    assert packed.dtype == np.uint8 and packed.shape == (shape[0], packing.t16_row_stride(shape[1]))
    np.testing.assert_array_equal(packing.unpack_t16(packed, shape[1]), w)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_b1_round_trip(shape, seed):
    w = _binary(seed, *shape)
    packed = packing.pack_b1(w)
    assert packed.dtype == np.uint8 and packed.shape == (shape[0], packing.b1_row_stride(shape[1]))
    np.testing.assert_array_equal(packing.unpack_b1(packed, shape[1]), w)


@pytest.mark.parametrize("k", [1, 31, 128, 129, 200, 256, 333])
def test_t2_bit_layout(k):
    w = _ternary(k, 3, k)
    np.testing.assert_array_equal(packing.pack_t2(w), _t2_byte_reference(w))


@pytest.mark.parametrize("k", [1, 4, 5, 6, 159, 160, 161, 200, 321, 480])
def test_t16_bit_layout(k):
    w = _ternary(k, 3, k)
    np.testing.assert_array_equal(packing.pack_t16(w), _t16_byte_reference(w))


@pytest.mark.parametrize("k", [1, 7, 8, 127, 128, 129, 300])
def test_b1_bit_layout(k):
    w = _binary(k, 3, k)
    np.testing.assert_array_equal(packing.pack_b1(w), _b1_byte_reference(w))


def test_row_strides_match_design():
    assert [packing.t2_row_stride(k) for k in (1, 128, 129, 512)] == [32, 32, 64, 128]
    assert [packing.t16_row_stride(k) for k in (1, 5, 6, 128, 160, 161, 512)] == [1, 1, 2, 26, 32, 33, 103]
    assert [packing.b1_row_stride(k) for k in (1, 128, 129, 512)] == [16, 16, 32, 64]


def test_t16_every_byte_value_decodes():
    """All 243 trit combinations survive encode -> 8-bit fixed-point decode."""
    trits = np.array(np.meshgrid(*[range(3)] * 5, indexing="ij")).reshape(5, -1).T  # [243, 5]
    # one tail byte per row: K = 5 puts weight i in slot i
    w = trits.astype(np.int8) - 1
    packed = packing.pack_t16(w)
    assert packed.shape == (243, 1) and len(np.unique(packed)) == 243
    np.testing.assert_array_equal(packing.unpack_t16(packed, 5), w)


def test_format_md_examples():
    t2 = np.ones((1, 128), dtype=np.int8) - 1  # all zero weights (code 1)
    t2[0, [0, 32, 64, 96]] = [1, -1, 0, 1]
    assert packing.pack_t2(t2)[0, 0] == 0x92
    assert packing.pack_t16(np.array([[1, -1, 0, 0, 1]], dtype=np.int8))[0, 0] == 186


def test_padding_codes():
    """Padding is weight 0 (code 1) for ternary and weight -1 (bit 0) for binary."""
    assert (packing.pack_t2(np.zeros((1, 1), dtype=np.int8))[0, 1:] == 0x55).all()
    assert (packing.pack_b1(np.ones((1, 1), dtype=np.int8))[0, 1:] == 0).all()
    assert packing.pack_t16(np.zeros((1, 1), dtype=np.int8))[0, 0] == math.ceil(121 * 256 / 243)


@pytest.mark.parametrize("packer, bad", [(packing.pack_t2, 2), (packing.pack_t16, -2), (packing.pack_b1, 0),
                                         (packing.pack_t2, 0.5)])
def test_packers_reject_invalid_codes(packer, bad):
    w = np.ones((2, 10), dtype=np.float32)
    w[1, 3] = bad
    with pytest.raises(ValueError):
        packer(w)


def test_rows_i8_quantization():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(7, 33)).astype(np.float32)
    w[2] = 0.0
    q, scale = packing.quantize_rows_i8(w)
    assert q.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (7,)
    assert np.abs(q).max() == 127 and q[2].tolist() == [0] * 33
    err = np.abs(q.astype(np.float32) * scale[:, None] - w)
    assert (err <= scale[:, None] / 2 + 1e-7).all()
