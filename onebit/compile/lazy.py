"""A checkpoint whose weights stay on disk until the exporter asks for each one.

`load_checkpoint` builds the whole fp32 model: for the 2B BitNet shape that is 10 GB, twice over
while the file is read. The exporters only walk the state dict once, tensor by tensor, so this
loader validates the folder exactly as `load_checkpoint` does (same files, config, tokenizer and
tensor checks, against a model built on the meta device) and then hands out each tensor from the
memory-mapped safetensors file when it is reached.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from onebit.train.checkpoint import MODEL_FILE, Checkpoint, CheckpointError, _check_tensors, read_checkpoint_parts
from onebit.train.model import Transformer

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


class LazyWeights:
    """Stands in for the model: `state_dict()` yields fp32 tensors read one at a time.

    Read with plain file reads rather than safetensors' memory map: a map's pages stay resident
    (and counted in the process's RSS) after each tensor is done, which for a 10 GB checkpoint
    looks like a 10 GB process.
    """

    def __init__(self, path: Path, names: list[str]):
        self.path, self.names = path, names

    def state_dict(self) -> "LazyWeights":
        return self

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        with open(self.path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
            start = 8 + n
            for name in self.names:
                info = header[name]
                begin, end = info["data_offsets"]
                f.seek(start + begin)
                data = bytearray(end - begin)
                if f.readinto(data) != len(data):
                    raise CheckpointError(f"{self.path}: tensor {name} is truncated")
                yield name, torch.frombuffer(data, dtype=_DTYPES[info["dtype"]]).reshape(info["shape"]).float()

    def keys(self) -> list[str]:
        return list(self.names)

    def __getitem__(self, name: str) -> torch.Tensor:
        """One tensor, read now (for writers that need each tensor at a time of their choosing)."""
        with open(self.path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            info = json.loads(f.read(n))[name]
            begin, end = info["data_offsets"]
            f.seek(8 + n + begin)
            data = bytearray(end - begin)
            if f.readinto(data) != len(data):
                raise CheckpointError(f"{self.path}: tensor {name} is truncated")
        return torch.frombuffer(data, dtype=_DTYPES[info["dtype"]]).reshape(info["shape"]).float()


def load_lazy_checkpoint(path: Path) -> Checkpoint:
    """A validated checkpoint whose `model` is a LazyWeights (only what the exporters use)."""
    ckpt, config, meta, tokenizer = read_checkpoint_parts(path)
    file = ckpt / MODEL_FILE
    try:
        open(file, "rb").close()  # safetensors reports an unreadable file as a missing one
    except OSError as e:
        raise CheckpointError(f"{file}: {e.strerror}") from None
    try:
        with safe_open(str(file), framework="pt") as f:
            header = {}
            for name in f.keys():
                sl = f.get_slice(name)
                dtype = _DTYPES.get(sl.get_dtype(), torch.int64)  # a non-float dtype fails the check below
                header[name] = torch.empty(sl.get_shape(), dtype=dtype, device="meta")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{file}: unreadable safetensors file ({str(e).strip().splitlines()[0]})") from None
    with torch.device("meta"):
        expected = Transformer(config).state_dict()
    _check_tensors(file, header, expected)
    return Checkpoint(model=LazyWeights(file, list(expected)), config=config, tokenizer=tokenizer,  # type: ignore[arg-type]
                      meta=meta)
