"""Write a safetensors file one tensor at a time, so that a model never sits in memory whole.

`safetensors.save_file` wants every tensor at once; a 2B-parameter import or export would hold
gigabytes for nothing. The format is simple enough to stream: an 8-byte little-endian header
length, a JSON header (dtype, shape, byte range of each tensor, padded with spaces to 8 bytes),
then the tensors' bytes back to back. The header needs only shapes and dtypes, known up front.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onebit.atomic import atomic_path

# BF16 has no NumPy type: its data is given as the raw uint16 bit patterns
_NUMPY = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "U8": np.dtype("u1"), "I8": np.dtype("i1"),
          "I32": np.dtype("<i4"), "I64": np.dtype("<i8")}


@dataclass
class LazyTensor:
    """A tensor of the output: its name, safetensors dtype, shape, and how to make its data."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    make: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _NUMPY[self.dtype].itemsize


def _header(tensors: list[LazyTensor], metadata: dict[str, str] | None) -> bytes:
    entries: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for t in tensors:
        entries[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    text = json.dumps(entries, separators=(",", ":")).encode()
    return text + b" " * (-len(text) % 8)


def write_safetensors(path: Path, tensors: Iterable[LazyTensor], metadata: dict[str, str] | None = None,
                      on_tensor: Callable[[LazyTensor], None] | None = None) -> int:
    """Write atomically, making each tensor's data only when its turn comes; returns the file size."""
    tensors = list(tensors)
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise ValueError("duplicate tensor names")
    header = _header(tensors, metadata)
    size = 8 + len(header)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for t in tensors:
            data = np.ascontiguousarray(t.make(), dtype=_NUMPY[t.dtype])
            if data.shape != tuple(t.shape):
                raise ValueError(f"{t.name}: made shape {list(data.shape)}, declared {list(t.shape)}")
            f.write(memoryview(data).cast("B"))
            size += data.nbytes
            if on_tensor is not None:
                on_tensor(t)
    return size
