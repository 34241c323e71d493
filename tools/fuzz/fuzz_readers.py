"""atheris (coverage-guided, libFuzzer) over the Python readers of untrusted files.

    python tools/fuzz/fuzz_readers.py format    [CORPUS_DIR ...] [-runs=N | -max_total_time=S ...]
    python tools/fuzz/fuzz_readers.py tokenizer [CORPUS_DIR ...] [libFuzzer flags]

`format` opens the input as a .1bit file (onebit.format.read_1bit with check_model, then the
`onebit inspect` description); `tokenizer` loads it as a tokenizer.json (Tokenizer.load) and
round-trips a text through it. The documented errors, FormatError and TokenizerError, are the
expected answers to a bad file; any other exception is a finding: atheris prints it, saves the
input as crash-*, and exits non-zero. For .1bit inputs of 64 bytes or more the harness rewrites
file_size and both CRCs first, so that mutations reach the parser behind the checksums rather than
stopping at them. Seeds: tests/test_fuzz_readers.py writes them (real exports, char and BPE
tokenizers); for long runs of `format`, runtime_c/fuzz/corpus/open holds far smaller exports (dim 8
to 16, every pack and embedding dtype, three tokenizer kinds) that run several times faster.
Findings are kept in tests/fuzz/ and replayed by that test.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from pathlib import Path

import atheris
import numpy as np

with atheris.instrument_imports(include=["onebit"]):
    from onebit import format as fmt
    from onebit.describe import describe
    from onebit.tokenizer import Tokenizer, TokenizerError

DOCUMENTED = (fmt.FormatError, TokenizerError)
# one in-memory file, rewritten for every input, named by its /proc path: nothing to clean up
_FD = os.memfd_create("onebit-fuzz-input")
INPUT = Path(f"/proc/self/fd/{_FD}")
TEXT = "Hello, world! ünïcödé 123\n"


def fix_checksums(data: bytes) -> bytes:
    """The input with its header's file_size, body CRC and header CRC made right."""
    if len(data) < fmt.HEADER_SIZE:
        return data
    fields = list(fmt._HEADER.unpack(data[: fmt.HEADER_SIZE]))
    fields[3] = len(data)  # file_size
    fields[10] = zlib.crc32(data[fmt.HEADER_SIZE:])  # body_crc
    head = fmt._HEADER.pack(*fields[:11], 0)
    return struct.pack("<60sI", head[:60], zlib.crc32(head[:60])) + data[fmt.HEADER_SIZE:]


def _load(data: bytes) -> Path:
    os.ftruncate(_FD, 0)
    os.pwrite(_FD, data, 0)
    _CURRENT[0] = data
    return INPUT


# read_1bit maps the file with np.memmap, which resolves the /proc path (a chain of lstat calls),
# opens and maps it: a third of each run.  The stand-in serves the same bytes from memory, read-only
# as a map is; the reader's own checks (is_file, stat, the size) still see the memfd.
_CURRENT = [b""]


def _memmap_input(path, dtype=np.uint8, mode="r", **kwargs) -> np.ndarray:
    if Path(path) != INPUT or mode != "r" or kwargs:
        return _np_memmap(path, dtype=dtype, mode=mode, **kwargs)
    return np.frombuffer(_CURRENT[0], dtype=dtype)


_np_memmap = np.memmap
fmt.np.memmap = _memmap_input


def one_format(data: bytes) -> None:
    try:
        describe(fmt.read_1bit(_load(fix_checksums(data))))
    except fmt.FormatError:
        pass


def one_tokenizer(data: bytes) -> None:
    try:
        tok = Tokenizer.load(_load(data))
    except TokenizerError:
        return
    try:
        ids = tok.encode(TEXT)
    except TokenizerError:
        return  # a text outside the vocabulary is a documented answer
    tok.decode(ids)


TARGETS = {"format": one_format, "tokenizer": one_tokenizer}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [CORPUS_DIR ...] [libFuzzer flags]")
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
