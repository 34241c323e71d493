"""Corpora bigger than memory: tokenize in parallel into shard files once, then stream windows from them.

The corpus (files in order) is cut into pieces of about PIECE_BYTES, each ending just after a
newline that is followed by a non-space character: neither the char tokenizer nor a byte-level
BPE pre-tokenizer joins text across such a point, so a piece tokenizes as it would inside the
whole. Worker processes tokenize the pieces concurrently, each streaming its byte range in 1 MB
blocks into its own uint16/uint32 shard file; `index.json`, written last, lists the shards and
their token counts and marks the set complete. The stream is the shards in order, with the
tokenizer's <|endoftext|> after each file but the last (as onebit.train.data joins files).

Reading is a set of np.memmaps: a batch reads only its windows, so memory stays bounded by the
page cache, whatever the corpus size.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onebit.atomic import atomic_path, atomic_write_text
from onebit.progress import progress_bar
from onebit.tokenizer import EOT, Tokenizer, TokenizerError

SHARD_FORMAT = "onebit-shards-v1"
PIECE_BYTES = 32 << 20
BLOCK_BYTES = 1 << 20
INDEX_FILE = "index.json"


@dataclass(frozen=True)
class Piece:
    """A byte range of one corpus file; eot: append <|endoftext|> after it (a file's last piece)."""

    path: str
    start: int
    end: int
    eot: bool


def plan_pieces(corpus: list[Path], piece_bytes: int = PIECE_BYTES) -> list[Piece]:
    pieces = []
    for index, path in enumerate(corpus):
        size = Path(path).stat().st_size
        cuts = [0]
        with open(path, "rb") as f:
            while cuts[-1] + piece_bytes < size:
                cut = _safe_cut(f, cuts[-1] + piece_bytes, size)
                if cut is None:
                    break
                cuts.append(cut)
        cuts.append(size)
        last_file = index == len(corpus) - 1
        for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
            pieces.append(Piece(str(path), a, b, eot=not last_file and i == len(cuts) - 2))
    return pieces


def _safe_cut(f, target: int, size: int) -> int | None:
    """The first offset >= target just past a newline whose next byte is not whitespace."""
    f.seek(target)
    pos = target
    while pos < size:
        block = f.read(BLOCK_BYTES + 1)
        for i in range(len(block) - 1):
            if block[i] == 0x0A and block[i + 1] not in b" \t\r\n":
                return pos + i + 1
        pos += max(len(block) - 1, 1)
        f.seek(pos)
        if len(block) <= 1:
            break
    return None


# ----------------------------------------------------------------------------------------------
# Tokenizing (worker processes)

_TOKENIZER: Tokenizer | None = None


def _init_worker(tokenizer_json: str) -> None:
    global _TOKENIZER
    from tokenizers import Tokenizer as HFTokenizer

    _TOKENIZER = Tokenizer(HFTokenizer.from_str(tokenizer_json))


def _read_range(piece: Piece):
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(piece.path, "rb") as f:
        f.seek(piece.start)
        left = piece.end - piece.start
        offset = piece.start
        while left > 0:
            block = f.read(min(BLOCK_BYTES, left))
            if not block:
                break
            try:
                text = decoder.decode(block, final=len(block) == left)
            except UnicodeDecodeError as e:
                raise TokenizerError(f"{piece.path}: not UTF-8 text ({e.reason} at byte {offset + e.start})") from None
            left -= len(block)
            offset += len(block)
            if text:
                yield text


def _tokenize_piece(job: tuple[int, Piece, str, str]) -> tuple[int, int, int, str | None]:
    """(piece number, tokens written, bytes read, error) for one piece into shard_path."""
    number, piece, shard_path, dtype_name = job
    assert _TOKENIZER is not None
    dtype, n = np.dtype(dtype_name), 0
    try:
        with atomic_path(shard_path) as tmp, open(tmp, "wb") as out:
            for ids in _TOKENIZER.encode_stream(_read_range(piece)):
                out.write(np.asarray(ids, dtype=dtype).tobytes())
                n += len(ids)
            if piece.eot and EOT in _TOKENIZER.special_tokens:
                out.write(np.asarray([_TOKENIZER.special_tokens[EOT]], dtype=dtype).tobytes())
                n += 1
    except (TokenizerError, OSError) as e:
        return number, 0, 0, str(e)
    return number, n, piece.end - piece.start, None


def shard_key(corpus: list[Path], tokenizer: Tokenizer, piece_bytes: int) -> str:
    h = hashlib.sha256(f"{SHARD_FORMAT}\0{piece_bytes}".encode())
    h.update(hashlib.sha256(tokenizer.to_str().encode()).digest())
    for path in corpus:
        st = Path(path).stat()
        h.update(f"\0{Path(path).resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


def default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 8))


def prepare_shards(corpus: list[Path], tokenizer: Tokenizer, cache_dir: Path, workers: int = 0,
                   piece_bytes: int = PIECE_BYTES) -> "ShardedTokens":
    """Tokenize corpus into cache_dir/shards-<key>/ (once; later calls read the index) and open it."""
    from onebit.train.data import DataError, token_dtype

    key = shard_key(corpus, tokenizer, piece_bytes)
    folder = Path(cache_dir) / f"shards-{key[:24]}"
    dtype = token_dtype(tokenizer.vocab_size)
    index = _read_index(folder, key, dtype)
    if index is None:
        pieces = plan_pieces(corpus, piece_bytes)
        folder.mkdir(parents=True, exist_ok=True)
        counts = _tokenize_all(pieces, tokenizer, folder, dtype, workers or default_workers())
        if sum(counts) == 0:
            raise DataError("corpus produced no tokens")
        index = {"key": key, "format": SHARD_FORMAT, "dtype": dtype.name, "vocab_size": tokenizer.vocab_size,
                 "n_tokens": sum(counts),
                 "shards": [{"file": _shard_name(i), "n_tokens": c, "source": p.path, "bytes": [p.start, p.end]}
                            for i, (p, c) in enumerate(zip(pieces, counts))]}
        atomic_write_text(folder / INDEX_FILE, json.dumps(index, indent=1) + "\n")  # last: the set is complete
    return ShardedTokens.open(folder, index)


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}.bin"


def _tokenize_all(pieces: list[Piece], tokenizer: Tokenizer, folder: Path, dtype: np.dtype, workers: int) -> list[int]:
    from onebit.train.data import DataError

    jobs = [(i, p, str(folder / _shard_name(i)), dtype.name) for i, p in enumerate(pieces)]
    counts = [0] * len(jobs)
    total = sum(p.end - p.start for p in pieces)
    workers = min(workers, len(jobs))
    with progress_bar(total=total, unit="B", unit_scale=True, desc=f"tokenizing ({workers} workers)",
                      leave=False) as bar:
        if workers <= 1:
            _init_worker(tokenizer.to_str())
            results = map(_tokenize_piece, jobs)
            for number, n, nbytes, error in results:
                if error:
                    raise DataError(error)
                counts[number] = n
                bar.update(nbytes)
            return counts
        # spawn: forking a process that holds torch's thread pools is not safe
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(tokenizer.to_str(),)) as pool:
            for number, n, nbytes, error in pool.imap_unordered(_tokenize_piece, jobs):
                if error:
                    pool.terminate()
                    raise DataError(error)
                counts[number] = n
                bar.update(nbytes)
    return counts


def _read_index(folder: Path, key: str, dtype: np.dtype) -> dict | None:
    try:
        index = json.loads((folder / INDEX_FILE).read_text())
        if index["key"] != key or index["dtype"] != dtype.name:
            return None
        for shard in index["shards"]:
            if (folder / shard["file"]).stat().st_size != shard["n_tokens"] * dtype.itemsize:
                return None
        return index
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ----------------------------------------------------------------------------------------------
# Reading


class ShardedTokens:
    """A read-only token stream over shard files, indexable like a 1-D array (len, slices, fancy)."""

    def __init__(self, arrays: list[np.ndarray], start: int = 0, stop: int | None = None):
        self.arrays = arrays
        self.offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
        self.start = start
        self.stop = int(self.offsets[-1]) if stop is None else stop
        self.dtype = arrays[0].dtype if arrays else np.dtype(np.uint16)

    @classmethod
    def open(cls, folder: Path, index: dict) -> "ShardedTokens":
        dtype = np.dtype(index["dtype"])
        arrays = [np.memmap(folder / s["file"], dtype=dtype, mode="r", shape=(s["n_tokens"],))
                  if s["n_tokens"] else np.zeros(0, dtype=dtype) for s in index["shards"]]
        return cls(arrays)

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise IndexError("ShardedTokens slices take step 1")
            return ShardedTokens(self.arrays, self.start + start, self.start + max(start, stop))
        flat = np.asarray(key, dtype=np.int64)
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError("token index out of range")
        pos = flat.ravel() + self.start
        out = np.empty(pos.shape, dtype=self.dtype)
        shard = np.searchsorted(self.offsets, pos, side="right") - 1
        for s in np.unique(shard):
            mask = shard == s
            out[mask] = self.arrays[s][pos[mask] - self.offsets[s]]
        return out.reshape(flat.shape)

    def __array__(self, dtype=None, copy=None):
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)
