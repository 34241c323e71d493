"""The `.1bit` container (docs/FORMAT.md): an atomic streaming writer and a validating mmap reader.

The reader checks every header field, offset, length, shape and dtype against the file size before
it touches tensor data, and both CRC-32s; `check_model` then checks the tensors against the config.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from onebit import packing
from onebit.atomic import atomic_write
from onebit.config import ConfigError, ModelConfig
from onebit.errors import OnebitError

MAGIC = b"1BIT"
VERSION = (1, 0)
HEADER_SIZE = 64
RECORD_SIZE = 128
ALIGN = 64
NAME_BYTES = 63
MAX_DIM = 1 << 32
_HEADER = struct.Struct("<4sHHQQQQIIQII")
_RECORD = struct.Struct("<64sII4QQQfI")
_CRC_CHUNK = 1 << 24

DTYPES = {"F32": 0, "F16": 1, "I8": 2, "T2": 3, "T1_6": 4, "B1": 5, "U8": 6, "I32": 7, "I4": 8}
DTYPE_NAMES = {code: name for name, code in DTYPES.items()}
PACKED = ("T2", "T1_6", "B1")
_ELEMENT = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "I8": np.dtype("i1"),
            "U8": np.dtype("u1"), "I32": np.dtype("<i4")}


class FormatError(OnebitError):
    """A `.1bit` file that is missing, truncated, corrupt, forged or from a newer major version."""


def align_up(n: int, a: int = ALIGN) -> int:
    return -(-n // a) * a


def row_stride(dtype: str, k: int) -> int:
    """Bytes per row of K elements; packed strides come from quant.py, the packing reference."""
    strides = {"T2": packing.t2_row_stride, "T1_6": packing.t16_row_stride, "B1": packing.b1_row_stride,
               "I4": packing.i4_row_stride}
    if dtype in strides:
        return strides[dtype](k)
    return _ELEMENT[dtype].itemsize * k


def tensor_nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    rows = math.prod(shape[:-1])
    return rows * row_stride(dtype, shape[-1])


# ----------------------------------------------------------------------------------------------
# Writing


@dataclass
class TensorData:
    """One tensor to write: `data` holds its bytes as stored (packed rows for T2/T1_6/B1)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    data: np.ndarray
    scale: float = 1.0

    def __post_init__(self) -> None:
        self.shape = tuple(int(d) for d in self.shape)
        if self.dtype not in DTYPES:
            raise ValueError(f"{self.name}: unknown dtype {self.dtype}")
        encoded = self.name.encode()
        if not encoded or len(encoded) > NAME_BYTES or b"\0" in encoded:
            raise ValueError(f"tensor name {self.name!r} must be 1..{NAME_BYTES} bytes of UTF-8 without NUL")
        if not 1 <= len(self.shape) <= 4 or any(not 1 <= d < MAX_DIM for d in self.shape):
            raise ValueError(f"{self.name}: bad shape {self.shape}")
        self.data = np.ascontiguousarray(self.data)
        if self.dtype in _ELEMENT:
            self.data = self.data.astype(_ELEMENT[self.dtype], copy=False)
        if self.data.nbytes != tensor_nbytes(self.dtype, self.shape):
            raise ValueError(f"{self.name}: {self.data.nbytes} bytes of data, {self.dtype} "
                             f"{list(self.shape)} needs {tensor_nbytes(self.dtype, self.shape)}")
        if not math.isfinite(self.scale) or (self.dtype in PACKED and self.scale <= 0):
            raise ValueError(f"{self.name}: bad scale {self.scale}")


def _record(t: TensorData, offset: int) -> bytes:
    shape = list(t.shape) + [1] * (4 - len(t.shape))
    return _RECORD.pack(t.name.encode(), DTYPES[t.dtype], len(t.shape), *shape, offset,
                        t.data.nbytes, t.scale, 0)


def write_stream(f: BinaryIO, meta: dict, tensors: list[TensorData]) -> int:
    """Write a complete file to a seekable binary stream at position 0; returns its size."""
    names = [t.name for t in tensors]
    if not tensors or len(set(names)) != len(names):
        raise ValueError("a .1bit file needs at least one tensor and unique names")
    meta_bytes = json.dumps(meta, sort_keys=False, separators=(",", ":")).encode()
    dir_offset = align_up(HEADER_SIZE + len(meta_bytes))
    data_offset = align_up(dir_offset + RECORD_SIZE * len(tensors))
    offsets, cursor = [], 0
    for t in tensors:
        offsets.append(cursor)
        cursor = align_up(cursor + t.data.nbytes)
    file_size = data_offset + cursor

    crc = 0

    def put(chunk: bytes | memoryview) -> None:
        nonlocal crc
        crc = zlib.crc32(chunk, crc)
        f.write(chunk)

    f.write(bytes(HEADER_SIZE))
    put(meta_bytes)
    put(bytes(dir_offset - HEADER_SIZE - len(meta_bytes)))
    put(b"".join(_record(t, off) for t, off in zip(tensors, offsets)))
    put(bytes(data_offset - dir_offset - RECORD_SIZE * len(tensors)))
    for t, off in zip(tensors, offsets):
        payload = memoryview(t.data.reshape(-1).view(np.uint8))
        put(payload)
        put(bytes(align_up(off + len(payload)) - off - len(payload)))

    header = _HEADER.pack(MAGIC, *VERSION, file_size, HEADER_SIZE, len(meta_bytes), dir_offset,
                          len(tensors), 0, data_offset, crc, 0)[:60]
    f.seek(0)
    f.write(header + struct.pack("<I", zlib.crc32(header)))
    f.seek(file_size)
    return file_size


def write_1bit(path: str | Path, meta: dict, tensors: list[TensorData]) -> int:
    """Write a `.1bit` file atomically; returns its size in bytes."""
    sizes: list[int] = []
    atomic_write(path, lambda f: sizes.append(write_stream(f, meta, tensors)))
    return sizes[0]


# ----------------------------------------------------------------------------------------------
# Reading


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute file offset
    size: int
    scale: float


@dataclass
class OnebitFile:
    """A validated, memory-mapped `.1bit` file. `array(name)` returns read-only views into it."""

    path: Path
    version: tuple[int, int]
    header: dict
    meta: dict
    tensors: dict[str, TensorInfo]
    _map: np.ndarray = field(repr=False)

    def array(self, name: str) -> np.ndarray:
        """F32/F16/I8/U8/I32 as their element type and shape; packed dtypes as uint8 [rows, stride]."""
        t = self.tensors[name]
        raw = self._map[t.offset:t.offset + t.size]
        if t.dtype in _ELEMENT:
            return raw.view(_ELEMENT[t.dtype]).reshape(t.shape)
        return raw.reshape(math.prod(t.shape[:-1]), row_stride(t.dtype, t.shape[-1]))

    def raw_bytes(self) -> bytes:
        return self._map.tobytes()


def _fail(path: Path, message: str) -> FormatError:
    return FormatError(f"{path}: {message}")


def _crc(buf: np.ndarray) -> int:
    crc = 0
    for start in range(0, len(buf), _CRC_CHUNK):
        crc = zlib.crc32(buf[start:start + _CRC_CHUNK], crc)
    return crc


def _parse_records(path: Path, mm: np.ndarray, dir_offset: int, n: int, data_offset: int,
                   file_size: int) -> dict[str, TensorInfo]:
    tensors: dict[str, TensorInfo] = {}
    data_size = file_size - data_offset
    for i in range(n):
        start = dir_offset + i * RECORD_SIZE
        raw_name, code, n_dims, *rest = _RECORD.unpack(mm[start:start + RECORD_SIZE].tobytes())
        shape4, (offset, size, scale, reserved) = rest[:4], rest[4:]
        where = f"tensor record {i}"
        if b"\0" not in raw_name:
            raise _fail(path, f"{where}: name is not NUL-terminated")
        raw = raw_name.split(b"\0", 1)[0]
        if raw_name[len(raw):].strip(b"\0"):
            raise _fail(path, f"{where}: name padding is not all NUL")
        try:
            name = raw.decode()
        except UnicodeDecodeError:
            raise _fail(path, f"{where}: name is not valid UTF-8") from None
        if not name:
            raise _fail(path, f"{where}: empty name")
        where = f"tensor {name!r}"
        if name in tensors:
            raise _fail(path, f"{where}: duplicate name")
        if code not in DTYPE_NAMES:
            raise _fail(path, f"{where}: unknown dtype code {code}")
        dtype = DTYPE_NAMES[code]
        if not 1 <= n_dims <= 4:
            raise _fail(path, f"{where}: n_dims {n_dims} is not in 1..4")
        if any(d != 1 for d in shape4[n_dims:]):
            raise _fail(path, f"{where}: unused dimensions must be 1, got shape {list(shape4)}")
        shape = tuple(shape4[:n_dims])
        if any(not 1 <= d < MAX_DIM for d in shape):
            raise _fail(path, f"{where}: dimension out of range in shape {list(shape)}")
        expected = tensor_nbytes(dtype, shape)
        if size != expected:
            raise _fail(path, f"{where}: size {size} does not match {dtype} {list(shape)} ({expected} bytes)")
        if offset % ALIGN:
            raise _fail(path, f"{where}: offset {offset} is not a multiple of {ALIGN}")
        if offset + size > data_size:
            raise _fail(path, f"{where}: data [{offset}, {offset + size}) runs past the end of the "
                              f"data section ({data_size} bytes)")
        if not math.isfinite(scale) or (dtype in PACKED and scale <= 0):
            raise _fail(path, f"{where}: bad scale {scale}")
        if reserved:
            raise _fail(path, f"{where}: reserved field is not 0")
        tensors[name] = TensorInfo(name, dtype, shape, data_offset + offset, size, scale)
    spans = sorted((t.offset, t.offset + t.size, t.name) for t in tensors.values())
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            raise _fail(path, f"tensors {a!r} and {b!r} overlap")
    return tensors


def read_1bit(path: str | Path, check: bool = True) -> OnebitFile:
    """Open and validate a `.1bit` file (docs/FORMAT.md, "How a reader validates").

    check=True also runs `check_model` (config, tensors and tokenizer agree).
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: {'not a regular file' if path.exists() else 'no such file'}")
    actual = path.stat().st_size
    if actual < HEADER_SIZE:
        raise _fail(path, f"file is {actual} bytes, shorter than the {HEADER_SIZE}-byte header "
                          "(truncated or not a .1bit file)")
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    header = mm[:HEADER_SIZE].tobytes()
    (magic, major, minor, file_size, meta_offset, meta_size, dir_offset, n_tensors, reserved,
     data_offset, body_crc, header_crc) = _HEADER.unpack(header)
    if magic != MAGIC:
        raise _fail(path, f"not a .1bit file (magic {magic!r}, expected {MAGIC!r})")
    if major > VERSION[0]:
        raise _fail(path, f"file format version {major}.{minor} is newer than this reader "
                          f"({VERSION[0]}.{VERSION[1]}); upgrade onebit")
    if zlib.crc32(header[:60]) != header_crc:
        raise _fail(path, "header checksum mismatch (corrupt header)")
    if reserved:
        raise _fail(path, "header reserved field is not 0")
    if file_size != actual:
        raise _fail(path, f"file is {actual} bytes but its header says {file_size} "
                          f"({'truncated' if actual < file_size else 'trailing bytes'})")
    if meta_offset != HEADER_SIZE:
        raise _fail(path, f"meta_offset is {meta_offset}, expected {HEADER_SIZE}")
    if meta_offset + meta_size > dir_offset:
        raise _fail(path, f"metadata [{meta_offset}, {meta_offset + meta_size}) overlaps the "
                          f"directory at {dir_offset}")
    if dir_offset % ALIGN or data_offset % ALIGN:
        raise _fail(path, "dir_offset and data_offset must be multiples of 64")
    if n_tensors < 1:
        raise _fail(path, "no tensors")
    if dir_offset + RECORD_SIZE * n_tensors > data_offset:
        raise _fail(path, f"directory of {n_tensors} records at {dir_offset} overlaps the data at {data_offset}")
    if data_offset > file_size:
        raise _fail(path, f"data_offset {data_offset} is past the end of the file ({file_size} bytes)")
    if _crc(mm[HEADER_SIZE:]) != body_crc:
        raise _fail(path, "body checksum mismatch (corrupt metadata, directory or data)")
    tensors = _parse_records(path, mm, dir_offset, n_tensors, data_offset, file_size)
    try:
        meta = json.loads(mm[meta_offset:meta_offset + meta_size].tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(path, f"metadata is not valid UTF-8 JSON ({e})") from None
    if not isinstance(meta, dict):
        raise _fail(path, "metadata is not a JSON object")
    header_fields = {"version": f"{major}.{minor}", "file_size": file_size, "meta_offset": meta_offset,
                     "meta_size": meta_size, "dir_offset": dir_offset, "n_tensors": n_tensors,
                     "data_offset": data_offset, "body_crc32": f"0x{body_crc:08x}",
                     "header_crc32": f"0x{header_crc:08x}"}
    f = OnebitFile(path, (major, minor), header_fields, meta, tensors, mm)
    if check:
        check_model(f)
    return f


# ----------------------------------------------------------------------------------------------
# The model inside


def bitlinear_shapes(cfg: dict) -> dict[str, tuple[int, int]]:
    """BitLinear weight names and [out, in] shapes for a config (DESIGN.md's tensor table)."""
    dim, ffn, hd = cfg["dim"], cfg["ffn_dim"], cfg["dim"] // cfg["n_heads"]
    inner, kv = cfg["n_heads"] * hd, cfg["n_kv_heads"] * hd
    shapes: dict[str, tuple[int, int]] = {}
    for i in range(cfg["n_layers"]):
        p = f"layers.{i}."
        shapes.update({p + "attn.q_proj.weight": (inner, dim), p + "attn.k_proj.weight": (kv, dim),
                       p + "attn.v_proj.weight": (kv, dim), p + "attn.o_proj.weight": (dim, inner)})
        if cfg["gated"]:
            shapes[p + "mlp.gate_proj.weight"] = (ffn, dim)
        shapes.update({p + "mlp.up_proj.weight": (ffn, dim), p + "mlp.down_proj.weight": (dim, ffn)})
    return shapes


def float_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every non-BitLinear model tensor (embeddings, norms) and its shape."""
    dim, hd = cfg["dim"], cfg["dim"] // cfg["n_heads"]
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (cfg["vocab_size"], dim)}
    if cfg["pos"] == "learned":
        shapes["pos_embed.weight"] = (cfg["max_seq_len"], dim)
    for i in range(cfg["n_layers"]):
        p = f"layers.{i}."
        shapes[p + "attn_norm.weight"] = (dim,)
        if cfg["qk_norm"]:
            shapes[p + "attn.q_norm.weight"] = (hd,)
            shapes[p + "attn.k_norm.weight"] = (hd,)
        if cfg["subln"]:
            shapes[p + "attn.sub_norm.weight"] = (cfg["n_heads"] * hd,)
        shapes[p + "mlp_norm.weight"] = (dim,)
        if cfg["subln"]:
            shapes[p + "mlp.sub_norm.weight"] = (cfg["ffn_dim"],)
    shapes["norm.weight"] = (dim,)
    if not cfg["tie_embeddings"]:
        shapes["head.weight"] = (cfg["vocab_size"], dim)
    return shapes


def head_dtype(quant: dict) -> str:
    """The head's metadata dtype name: quant.head_dtype, else quant.embed_dtype."""
    return quant.get("head_dtype", quant.get("embed_dtype"))


def separate_head(cfg: dict, quant: dict) -> bool:
    """Whether the file stores head.weight: an untied head, or a tied one stored in its own dtype."""
    return not cfg["tie_embeddings"] or head_dtype(quant) != quant.get("embed_dtype")


PACK_DTYPE = {"t2": "T2", "t1.6": "T1_6", "b1": "B1"}
EMBED_DTYPE = {"f32": "F32", "f16": "F16", "i8": "I8"}
# quant.head_dtype (optional; absent = embed_dtype): the LM head's own storage.  "i4" is an I4 head
# with per-row scales that quantizes its input as a BitLinear does (docs/FORMAT.md "LM head").
HEAD_DTYPE = {**EMBED_DTYPE, "i4": "I4"}
# int4 / int8 BitLinears keep their per-row scales in a NAME.scale F32 [rows] tensor, as I8 embeddings do
ROW_SCALED = ("I4", "I8")


def bitlinear_dtypes(cfg: dict, pack: str) -> dict[str, str]:
    """The stored dtype of every BitLinear weight: ternary as `pack` (t2 / t1.6), binary B1,
    int4 I4, int8 I8; with no precision map, every one is the config's `quant`."""
    model = ModelConfig.from_dict(cfg)
    kinds = {"ternary": PACK_DTYPE.get(pack, "T2"), "binary": "B1", "int4": "I4", "int8": "I8"}
    return {name: kinds[model.layer_quant(name)] for name in bitlinear_shapes(cfg)}


def _config(path: Path, meta: dict) -> dict:
    """The metadata's config, validated the way ModelConfig validates it."""
    try:
        return ModelConfig.from_dict(meta["config"]).to_dict()
    except (ConfigError, TypeError, ValueError) as e:
        raise _fail(path, f"bad config in metadata: {e}") from None


def check_model(f: OnebitFile) -> dict:
    """Check that metadata, model tensors and tokenizer tensors agree; returns the config dict."""
    path, meta, tensors = f.path, f.meta, f.tensors
    for key in ("config", "quant", "tokenizer"):
        if not isinstance(meta.get(key), dict):
            raise _fail(path, f"metadata has no {key!r} object")
    cfg = _config(path, meta)
    q, tok = meta["quant"], meta["tokenizer"]
    weights = "mixed" if cfg.get("precision") else cfg["quant"]
    if cfg["quant"] not in ("ternary", "binary") or q.get("weights") != weights:
        raise _fail(path, f"quant.weights {q.get('weights')!r} does not match config quant {weights!r}")
    # a mixed file's pack is the one its ternary layers use
    allowed_pack = ("b1",) if weights == "binary" else ("t2", "t1.6")
    if q.get("pack") not in allowed_pack:
        raise _fail(path, f"quant.pack {q.get('pack')!r} is not one of {', '.join(allowed_pack)} "
                          f"for {cfg['quant']} weights")
    if not isinstance(q.get("embed_dtype"), str) or q["embed_dtype"] not in EMBED_DTYPE:
        raise _fail(path, f"quant.embed_dtype {q.get('embed_dtype')!r} is not one of f32, f16, i8")
    if "head_dtype" in q and (not isinstance(q["head_dtype"], str) or q["head_dtype"] not in HEAD_DTYPE):
        raise _fail(path, f"quant.head_dtype {q['head_dtype']!r} is not one of f32, f16, i8, i4")
    if tok.get("vocab_size") != cfg["vocab_size"]:
        raise _fail(path, f"tokenizer vocab_size {tok.get('vocab_size')} != config vocab_size {cfg['vocab_size']}")

    def expect(name: str, dtype: str, shape: tuple[int, ...]) -> TensorInfo:
        t = tensors.get(name)
        if t is None:
            raise _fail(path, f"missing tensor {name!r}")
        if t.dtype != dtype or t.shape != tuple(shape):
            raise _fail(path, f"tensor {name!r} is {t.dtype} {list(t.shape)}, expected {dtype} {list(shape)}")
        return t

    dtypes = bitlinear_dtypes(cfg, q["pack"])
    for name, shape in bitlinear_shapes(cfg).items():
        expect(name, dtypes[name], shape)
        if dtypes[name] in ROW_SCALED:
            expect(name + ".scale", "F32", shape[:1])
    embed = EMBED_DTYPE[q["embed_dtype"]]
    shapes = float_shapes(cfg)
    if separate_head(cfg, q):
        shapes["head.weight"] = (cfg["vocab_size"], cfg["dim"])
    for name, shape in shapes.items():
        dtype = HEAD_DTYPE[head_dtype(q)] if name == "head.weight" else embed if name == "embed.weight" else "F32"
        expect(name, dtype, shape)
        if dtype in ROW_SCALED:
            expect(name + ".scale", "F32", shape[:1])

    vocab = cfg["vocab_size"]
    tokens = tensors.get("tokenizer.tokens")
    if tokens is None or tokens.dtype != "U8" or len(tokens.shape) != 1:
        raise _fail(path, "missing or malformed tensor 'tokenizer.tokens' (U8, 1-D)")
    expect("tokenizer.offsets", "I32", (vocab + 1,))
    offsets = f.array("tokenizer.offsets").astype(np.int64)
    if offsets[0] != 0 or offsets[-1] != tokens.shape[0] or (np.diff(offsets) < 0).any():
        raise _fail(path, "tokenizer.offsets must start at 0, never decrease and end at len(tokenizer.tokens)")
    if "tokenizer.merges" in tensors:
        merges = tensors["tokenizer.merges"]
        if tok.get("type") != "bpe" or merges.dtype != "I32" or len(merges.shape) != 2 or merges.shape[1] != 3:
            raise _fail(path, "tensor 'tokenizer.merges' must be I32 [n_merges, 3] and only in a bpe file")
        ids = f.array("tokenizer.merges")
        if ids.min() < 0 or ids.max() >= vocab:
            raise _fail(path, "tokenizer.merges holds a token id outside the vocabulary")
    if tok.get("type") not in ("char", "bpe"):
        raise _fail(path, f"tokenizer.type {tok.get('type')!r} is not char or bpe")
    if tok.get("pretokenizer") == "sentencepiece":
        expect("tokenizer.flags", "U8", (vocab,))
        byte_tokens = (f.array("tokenizer.flags") & 3) != 0
        if (np.diff(offsets)[byte_tokens] != 1).any():
            raise _fail(path, "tokenizer.flags marks a token of other than one byte as a byte token")
        sp = tok.get("sentencepiece")
        if not isinstance(sp, dict) or sp.get("prepend") not in SP_PREPEND:
            raise _fail(path, "tokenizer.sentencepiece is missing or its prepend is not one of "
                              + ", ".join(SP_PREPEND))
        unk = sp.get("unk_token_id")
        if unk is not None and not (isinstance(unk, int) and 0 <= unk < vocab):
            raise _fail(path, f"tokenizer.sentencepiece.unk_token_id {unk!r} is outside the vocabulary")
    return cfg


# how a SentencePiece-style tokenizer prepends `▁` to a text segment (onebit/tokenizer.py)
SP_PREPEND = ("always", "always-unless-space", "first-unless-space", "never")
