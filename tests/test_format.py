"""The .1bit container: round trip, layout invariants, and rejection of every kind of bad file."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from onebit import cli, packing
from onebit.compile.export import ExportOptions, export_1bit
from onebit.format import (
    ALIGN,
    DTYPES,
    HEADER_SIZE,
    RECORD_SIZE,
    FormatError,
    TensorData,
    read_1bit,
    tensor_nbytes,
    write_1bit,
)


def _random_tensors(seed: int) -> list[TensorData]:
    rng = np.random.default_rng(seed)
    ternary = rng.integers(-1, 2, (5, 161)).astype(np.int8)
    binary = rng.choice(np.array([-1, 1], dtype=np.int8), (3, 130))
    return [
        TensorData("a.f32", "F32", (3, 7), rng.normal(size=(3, 7))),
        TensorData("b.f16", "F16", (2, 2, 5), rng.normal(size=(2, 2, 5)).astype(np.float16)),
        TensorData("c.i8", "I8", (4, 9), rng.integers(-127, 128, (4, 9))),
        TensorData("d.t2", "T2", ternary.shape, packing.pack_t2(ternary), 0.25),
        TensorData("e.t16", "T1_6", ternary.shape, packing.pack_t16(ternary), 0.5),
        TensorData("f.b1", "B1", binary.shape, packing.pack_b1(binary), 0.125),
        TensorData("g.u8", "U8", (11,), rng.integers(0, 256, 11)),
        TensorData("h.i32", "I32", (2, 3, 1, 2), rng.integers(-2**31, 2**31, (2, 3, 1, 2))),
    ]


@pytest.fixture
def raw_file(tmp_path) -> Path:
    path = tmp_path / "raw.1bit"
    write_1bit(path, {"hello": "world"}, _random_tensors(0))
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, random_checkpoint) -> Path:
    path = tmp_path_factory.mktemp("model") / "m.1bit"
    export_1bit(random_checkpoint(), path, ExportOptions())
    return path


def test_round_trip_every_dtype(raw_file):
    tensors = _random_tensors(0)
    f = read_1bit(raw_file, check=False)
    assert f.meta == {"hello": "world"} and f.version == (1, 0)
    assert list(f.tensors) == [t.name for t in tensors]
    for t in tensors:
        info = f.tensors[t.name]
        assert info.dtype == t.dtype and info.shape == t.shape and info.offset % ALIGN == 0
        assert np.float32(info.scale) == np.float32(t.scale)
        got = f.array(t.name)
        assert got.tobytes() == t.data.tobytes()
    np.testing.assert_array_equal(packing.unpack_t16(f.array("e.t16"), 161), packing.unpack_t16(tensors[4].data, 161))


def test_layout_matches_spec(raw_file):
    data = raw_file.read_bytes()
    (magic, major, minor, file_size, meta_offset, meta_size, dir_offset, n, reserved, data_offset,
     body_crc, header_crc) = struct.unpack("<4sHHQQQQIIQII", data[:64])
    assert (magic, major, minor, meta_offset, reserved) == (b"1BIT", 1, 0, 64, 0)
    assert file_size == len(data) and file_size % 64 == 0
    assert dir_offset % 64 == 0 and data_offset % 64 == 0 and n == 8
    assert json.loads(data[64:64 + meta_size]) == {"hello": "world"}
    assert header_crc == zlib.crc32(data[:60]) and body_crc == zlib.crc32(data[64:])
    for i in range(n):
        rec = data[dir_offset + i * 128: dir_offset + (i + 1) * 128]
        name = rec[:64].rstrip(b"\0").decode()
        dtype, n_dims = struct.unpack("<II", rec[64:72])
        shape = struct.unpack("<4Q", rec[72:104])
        offset, size = struct.unpack("<QQ", rec[104:120])
        assert offset % 64 == 0 and size == tensor_nbytes(list(DTYPES)[dtype], shape[:n_dims])
        assert all(d == 1 for d in shape[n_dims:]), name


def test_sizes_of_packed_dtypes():
    assert tensor_nbytes("T2", (10, 129)) == 10 * 64
    assert tensor_nbytes("T1_6", (10, 161)) == 10 * 33
    assert tensor_nbytes("B1", (10, 129)) == 10 * 32
    assert tensor_nbytes("I32", (2, 3)) == 24


def test_writer_rejects_bad_tensors(tmp_path):
    ok = np.zeros(4, dtype=np.float32)
    with pytest.raises(ValueError):
        TensorData("x" * 64, "F32", (4,), ok)
    with pytest.raises(ValueError):
        TensorData("x", "F32", (5,), ok)
    with pytest.raises(ValueError):
        TensorData("x", "T2", (1, 4), np.zeros(32, np.uint8), scale=0.0)
    with pytest.raises(ValueError):
        write_1bit(tmp_path / "dup.1bit", {}, [TensorData("x", "F32", (4,), ok)] * 2)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------
# Bad files


def _resign(buf: bytearray) -> bytearray:
    """Recompute both checksums so that a forged field gets past them."""
    buf[56:60] = struct.pack("<I", zlib.crc32(bytes(buf[64:])))
    buf[60:64] = struct.pack("<I", zlib.crc32(bytes(buf[:60])))
    return buf


def _header(buf: bytes) -> dict:
    keys = ("magic", "major", "minor", "file_size", "meta_offset", "meta_size", "dir_offset", "n_tensors",
            "reserved", "data_offset", "body_crc", "header_crc")
    return dict(zip(keys, struct.unpack("<4sHHQQQQIIQII", buf[:64])))


def _assert_rejected(tmp_path: Path, data: bytes, match: str) -> None:
    bad = tmp_path / "bad.1bit"
    bad.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=match) as info:
        read_1bit(bad)
    assert "\n" not in str(info.value)
    result = CliRunner().invoke(cli.main, ["inspect", str(bad)])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.output


def test_valid_model_file_inspects(model_file):
    result = CliRunner().invoke(cli.main, ["inspect", str(model_file)])
    assert result.exit_code == 0, result.output
    for text in ("version      1.0", "layers.0.attn.q_proj.weight", "T2", "tokenizer.offsets", "embed.weight"):
        assert text in result.stdout


@pytest.mark.parametrize("keep", [0, 10, 63])
def test_too_short(tmp_path, model_file, keep):
    _assert_rejected(tmp_path, model_file.read_bytes()[:keep], "shorter than the 64-byte header")


@pytest.mark.parametrize("cut", [1, 64, 1000])
def test_truncated(tmp_path, model_file, cut):
    data = model_file.read_bytes()
    _assert_rejected(tmp_path, data[:len(data) - cut], "truncated")


def test_trailing_bytes(tmp_path, model_file):
    _assert_rejected(tmp_path, model_file.read_bytes() + b"\0", "trailing bytes")


def test_wrong_magic(tmp_path, model_file):
    data = bytearray(model_file.read_bytes())
    data[:4] = b"GGUF"
    _assert_rejected(tmp_path, data, "not a .1bit file")


def test_newer_major_version(tmp_path, model_file):
    data = bytearray(model_file.read_bytes())
    data[4:6] = struct.pack("<H", 2)
    _assert_rejected(tmp_path, _resign(data), r"version 2\.0 is newer than this reader")


def test_newer_minor_version_is_accepted(tmp_path, model_file):
    data = bytearray(model_file.read_bytes())
    data[6:8] = struct.pack("<H", 7)
    path = tmp_path / "minor.1bit"
    path.write_bytes(bytes(_resign(data)))
    assert read_1bit(path).version == (1, 7)


def _sections(data: bytes) -> dict[str, tuple[int, int]]:
    h = _header(data)
    return {"header": (8, 56), "metadata": (64, 64 + h["meta_size"]),
            "directory": (h["dir_offset"], h["dir_offset"] + RECORD_SIZE * h["n_tensors"]),
            "data": (h["data_offset"], h["file_size"])}


@pytest.mark.parametrize("section", ["header", "metadata", "directory", "data"])
def test_bit_flips_are_caught(tmp_path, model_file, section):
    data = model_file.read_bytes()
    lo, hi = _sections(data)[section]
    rng = np.random.default_rng(abs(hash(section)) % 2**32)
    for _ in range(5):
        pos, bit = int(rng.integers(lo, hi)), int(rng.integers(0, 8))
        flipped = bytearray(data)
        flipped[pos] ^= 1 << bit
        _assert_rejected(tmp_path, flipped, "checksum mismatch|not a .1bit|newer|reserved")


def _forge_record(data: bytes, index: int, field: str, value: int) -> bytearray:
    buf = bytearray(data)
    at = _header(data)["dir_offset"] + index * RECORD_SIZE
    where = {"dtype": (64, "<I"), "n_dims": (68, "<I"), "shape0": (72, "<Q"), "shape1": (80, "<Q"),
             "offset": (104, "<Q"), "size": (112, "<Q")}[field]
    struct.pack_into(where[1], buf, at + where[0], value)
    return _resign(buf)


@pytest.mark.parametrize("field, value, match", [
    ("offset", 1 << 62, "runs past the end"),
    ("offset", 2**64 - 64, "runs past the end"),
    ("offset", 32, "not a multiple of 64"),
    ("size", 10, "does not match"),
    ("shape0", 1 << 40, "dimension out of range"),
    ("shape0", 0, "dimension out of range"),
    ("n_dims", 9, "n_dims"),
    ("dtype", 99, "unknown dtype"),
])
def test_forged_directory(tmp_path, model_file, field, value, match):
    _assert_rejected(tmp_path, _forge_record(model_file.read_bytes(), 1, field, value), match)


def test_huge_dimensions_with_matching_size(tmp_path, model_file):
    """Shape and size forged together: caught by the file-size bound, nothing is allocated."""
    data = model_file.read_bytes()
    forged = _forge_record(data, 0, "shape0", 2**32 - 1)
    forged = _forge_record(bytes(forged), 0, "size", tensor_nbytes("F16", (2**32 - 1, 32)))
    _assert_rejected(tmp_path, forged, "runs past the end")


def test_overlapping_tensors(tmp_path, model_file):
    data = model_file.read_bytes()
    f = read_1bit(model_file)
    first = list(f.tensors.values())[0]
    second_offset = first.offset - _header(data)["data_offset"]
    _assert_rejected(tmp_path, _forge_record(data, 1, "offset", second_offset), "overlap")


@pytest.mark.parametrize("field, value, match", [
    ("n_tensors", lambda h: 2**32 - 1, "overlaps the data"),
    ("meta_size", lambda h: 2**63, "overlaps the directory"),
    ("data_offset", lambda h: 2**40, "past the end of the file"),
    ("dir_offset", lambda h: h["dir_offset"] + 8, "multiples of 64"),
    ("meta_offset", lambda h: 0, "meta_offset"),
])
def test_forged_header(tmp_path, model_file, field, value, match):
    buf = bytearray(model_file.read_bytes())
    at, fmt = {"meta_offset": (16, "<Q"), "meta_size": (24, "<Q"), "dir_offset": (32, "<Q"),
               "n_tensors": (40, "<I"), "data_offset": (48, "<Q")}[field]
    struct.pack_into(fmt, buf, at, value(_header(buf)))
    _assert_rejected(tmp_path, _resign(buf), match)


def _rewrite(path: Path, out: Path, meta_edit=None, drop: str | None = None) -> Path:
    f = read_1bit(path)
    meta = json.loads(json.dumps(f.meta))
    if meta_edit:
        meta_edit(meta)
    tensors = [TensorData(t.name, t.dtype, t.shape, np.array(f.array(t.name)), t.scale)
               for t in f.tensors.values() if t.name != drop]
    write_1bit(out, meta, tensors)
    return out


def test_model_checks(tmp_path, model_file):
    cases = [
        (dict(drop="layers.1.mlp.down_proj.weight"), "missing tensor 'layers.1.mlp.down_proj.weight'"),
        (dict(drop="tokenizer.offsets"), "missing tensor 'tokenizer.offsets'"),
        (dict(meta_edit=lambda m: m["config"].update(dim=64)), "expected"),
        (dict(meta_edit=lambda m: m["config"].update(n_heads=3)), "bad config"),
        (dict(meta_edit=lambda m: m["quant"].update(pack="b1")), "quant.pack"),
        (dict(meta_edit=lambda m: m["tokenizer"].update(vocab_size=3)), "vocab_size"),
        (dict(meta_edit=lambda m: m.pop("config")), "no 'config'"),
    ]
    for kwargs, match in cases:
        bad = _rewrite(model_file, tmp_path / "bad.1bit", **kwargs)
        _assert_rejected(tmp_path, bad.read_bytes(), match)


@pytest.mark.parametrize("section, key", [
    ("quant", "weights"), ("quant", "pack"), ("quant", "embed_dtype"), ("quant", "head_dtype"),
    ("config", "quant"), ("config", "norm"), ("config", "pos"), ("config", "act"), ("config", "dim"),
    ("config", "tie_embeddings"), ("config", "precision"), ("tokenizer", "vocab_size"),
])
@pytest.mark.parametrize("value", [[], {}, None, 1.5, "x" * 100])
def test_metadata_values_of_the_wrong_type(tmp_path, model_file, section, key, value):
    """A metadata value of the wrong JSON type is one clear error, never a Python exception."""
    bad = _rewrite(model_file, tmp_path / "bad.1bit", meta_edit=lambda m: m[section].update({key: value}))
    if (key, value) == ("precision", {}):  # an empty precision map is a uniform model: valid
        read_1bit(bad)
        return
    _assert_rejected(tmp_path, bad.read_bytes(), ".")


def test_forged_tokenizer_offsets(tmp_path, model_file):
    f = read_1bit(model_file)
    info = f.tensors["tokenizer.offsets"]
    buf = bytearray(model_file.read_bytes())
    struct.pack_into("<i", buf, info.offset + 4, 10**6)
    _assert_rejected(tmp_path, _resign(buf), "tokenizer.offsets")


def test_metadata_not_json(tmp_path, model_file):
    buf = bytearray(model_file.read_bytes())
    buf[64] = ord("[") ^ 0x80  # invalid UTF-8 lead byte
    _assert_rejected(tmp_path, _resign(buf), "not valid UTF-8 JSON")


def test_missing_file(tmp_path):
    result = CliRunner().invoke(cli.main, ["inspect", str(tmp_path / "nope.1bit")])
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def test_header_size_constants():
    assert HEADER_SIZE == 64 and RECORD_SIZE == 128
