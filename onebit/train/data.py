"""Corpora and token streams: find the text, tokenize it once into a memory-mapped file, sample windows.

The token file is written incrementally while the corpus streams through the tokenizer, and read back
as a np.memmap, so a corpus larger than RAM never has to fit in memory.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from onebit.atomic import atomic_path, atomic_write_text
from onebit.errors import OnebitError
from onebit.progress import progress_bar
from onebit.tokenizer import EOT, Tokenizer, TokenizerError, iter_corpus_text

SHAKESPEARE = "tinyshakespeare"
SHAKESPEARE_FILE = "tinyshakespeare.txt"
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
# Bump when the token file layout or the way files are joined changes: old caches are then ignored.
TOKEN_FORMAT = "onebit-tokens-v1"


class DataError(OnebitError):
    """A corpus that is missing, empty, unreadable or too short for the request."""


# ----------------------------------------------------------------------------------------------
# Finding the corpus


def default_cache_dir() -> Path:
    """$ONEBIT_CACHE_DIR, else $XDG_CACHE_HOME/onebit, else ~/.cache/onebit."""
    if env := os.environ.get("ONEBIT_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "onebit"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path) -> None:
    """Fetch url into dest (tests replace this function to stay offline)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(dest, "wb") as f:
            while block := response.read(1 << 20):
                f.write(block)
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"could not download {url} ({getattr(e, 'reason', e)}); put {SHAKESPEARE_FILE} "
                        "in $ONEBIT_DATA_DIR instead") from None


def shakespeare_candidates() -> list[Path]:
    """Where the built-in corpus is looked for, in order; the last one is the download cache."""
    found = [Path("data") / SHAKESPEARE_FILE]
    if data_dir := os.environ.get("ONEBIT_DATA_DIR"):
        found.append(Path(data_dir) / SHAKESPEARE_FILE)
    found.append(default_cache_dir() / SHAKESPEARE_FILE)
    return found


def _check_sha(path: Path, expected: str) -> None:
    got = sha256_file(path)
    if got != expected:
        raise DataError(f"{path}: sha256 {got} does not match the expected {expected}")


def _resolve_shakespeare() -> Path:
    *local, cached = shakespeare_candidates()
    for path in local + [cached]:
        if path.is_file():
            _check_sha(path, SHAKESPEARE_SHA256)
            return path
    with atomic_path(cached) as tmp:
        download(SHAKESPEARE_URL, tmp)
        got = sha256_file(tmp)
        if got != SHAKESPEARE_SHA256:
            raise DataError(f"downloaded {SHAKESPEARE_URL} has sha256 {got}, expected {SHAKESPEARE_SHA256}")
    return cached


def is_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def resolve_corpus(spec: str) -> list[Path]:
    """A text file, a folder of .txt files (recursive, sorted), a glob (sorted), or "tinyshakespeare"."""
    path = Path(spec).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"corpus folder {path} has no .txt files")
    elif spec == SHAKESPEARE:
        files = [_resolve_shakespeare()]
    elif is_glob(spec):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"corpus glob {spec} matches no files")
    else:
        raise DataError(f"corpus {spec} not found (give a text file, a folder of .txt files, a glob or "
                        f"'{SHAKESPEARE}')")
    if all(p.stat().st_size == 0 for p in files):
        raise DataError(f"corpus {spec} is empty")
    return files


# ----------------------------------------------------------------------------------------------
# Token files


@dataclass
class TokenData:
    """Train and val token streams (views into one np.memmap, or onebit.train.shards.ShardedTokens)."""

    train: np.ndarray
    val: np.ndarray
    path: Path | None = field(default=None, compare=False)

    def batch(self, split: str, batch_size: int, seq_len: int, gen: torch.Generator,
              rows: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """batch_size random windows: x = tokens[i : i + seq_len], y = tokens[i + 1 : i + seq_len + 1].

        rows: this rank's share of the windows. Every rank draws the whole batch from the same
        generator and keeps its rows, so the data order is the same for any number of processes.
        """
        if split not in ("train", "val"):
            raise DataError(f"split must be 'train' or 'val', got {split!r}")
        data = self.train if split == "train" else self.val
        starts = len(data) - seq_len
        if starts <= 0:
            raise DataError(f"the {split} split has {len(data)} tokens, too few for windows of {seq_len} + 1")
        ix = torch.randint(starts, (batch_size,), generator=gen).numpy()
        if rows is not None:
            ix = ix[rows]
        # fancy indexing a memmap reads only the requested windows
        windows = torch.from_numpy(data[ix[:, None] + np.arange(seq_len + 1)].astype(np.int64))
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 65535 else np.uint32)


def cache_key(corpus: list[Path], tokenizer: Tokenizer) -> str:
    """Corpus identity (path, size, mtime) and the tokenizer file's hash."""
    h = hashlib.sha256(TOKEN_FORMAT.encode())
    h.update(hashlib.sha256(tokenizer.to_str().encode()).digest())
    for path in corpus:
        st = Path(path).stat()
        h.update(f"\0{Path(path).resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


def prepare_tokens(corpus: list[Path], tokenizer: Tokenizer, cache_dir: Path, val_fraction: float = 0.1) -> TokenData:
    """Tokenize the corpus once into cache_dir/tokens-<key>.bin; the last val_fraction is val.

    Files are joined as they are for char tokenizers, and with <|endoftext|> between them when the
    tokenizer has that special token.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    cache_dir = Path(cache_dir)
    missing = [str(p) for p in corpus if not Path(p).is_file()]
    if missing:
        raise DataError(f"corpus file {missing[0]} not found")
    key = cache_key(corpus, tokenizer)
    dtype = token_dtype(tokenizer.vocab_size)
    bin_path = cache_dir / f"tokens-{key[:24]}.bin"
    info_path = bin_path.with_suffix(".json")
    n_tokens = _cached_count(bin_path, info_path, key, dtype)
    if n_tokens is None:
        n_tokens = _write_tokens(corpus, tokenizer, bin_path, dtype)
        if n_tokens == 0:
            bin_path.unlink(missing_ok=True)
            raise DataError("corpus produced no tokens")
        info = {"key": key, "dtype": dtype.name, "n_tokens": n_tokens, "vocab_size": tokenizer.vocab_size,
                "files": [str(p) for p in corpus]}
        atomic_write_text(info_path, json.dumps(info, indent=2) + "\n")  # written last: marks the .bin complete
    tokens = np.memmap(bin_path, dtype=dtype, mode="r", shape=(n_tokens,))
    n_val = int(n_tokens * val_fraction)
    return TokenData(train=tokens[: n_tokens - n_val], val=tokens[n_tokens - n_val :], path=bin_path)


def _cached_count(bin_path: Path, info_path: Path, key: str, dtype: np.dtype) -> int | None:
    try:
        info = json.loads(info_path.read_text())
        n = int(info["n_tokens"])
        if info["key"] == key and info["dtype"] == dtype.name and bin_path.stat().st_size == n * dtype.itemsize:
            return n
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _write_tokens(corpus: list[Path], tokenizer: Tokenizer, bin_path: Path, dtype: np.dtype) -> int:
    bin_path.parent.mkdir(parents=True, exist_ok=True)
    separator = [tokenizer.special_tokens[EOT]] if EOT in tokenizer.special_tokens else []
    total = sum(Path(p).stat().st_size for p in corpus)
    n = 0
    with atomic_path(bin_path) as tmp:
        with open(tmp, "wb") as out, progress_bar(total=total, unit="B", unit_scale=True, desc="tokenizing",
                                                         leave=False) as bar:
            for index, path in enumerate(corpus):
                if index and separator:
                    out.write(np.asarray(separator, dtype=dtype).tobytes())
                    n += 1
                try:
                    for ids in tokenizer.encode_stream(_counted(iter_corpus_text([path]), bar)):
                        out.write(np.asarray(ids, dtype=dtype).tobytes())
                        n += len(ids)
                except TokenizerError as e:
                    raise DataError(str(e) if str(path) in str(e) else f"{path}: {e}") from None
    return n


def _counted(texts, bar: tqdm):
    for text in texts:
        bar.update(len(text.encode("utf-8")))
        yield text


# ----------------------------------------------------------------------------------------------
# Choosing the pipeline

SHARD_THRESHOLD_BYTES = 64 << 20  # one file above this is tokenized in parallel pieces too


def load_token_data(spec: str, tokenizer: Tokenizer, cache_dir: Path, val_fraction: float = 0.1,
                    val_spec: str | None = None, workers: int = 0) -> TokenData:
    """The train and val streams of a run.

    One small text file (or tinyshakespeare) goes through prepare_tokens as it always has; a folder,
    a glob, a file over SHARD_THRESHOLD_BYTES or a separate validation corpus (val_spec: held out
    by file, and left out of the training files) goes through the parallel sharded pipeline.
    """
    from onebit.train.shards import prepare_shards

    corpus = resolve_corpus(spec)
    path = Path(spec).expanduser()
    sharded = (val_spec is not None or path.is_dir() or (not path.exists() and is_glob(spec))
               or sum(p.stat().st_size for p in corpus) > SHARD_THRESHOLD_BYTES)
    if not sharded:
        return prepare_tokens(corpus, tokenizer, cache_dir, val_fraction)
    if val_spec is None:
        if not 0.0 <= val_fraction < 1.0:
            raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
        stream = prepare_shards(corpus, tokenizer, cache_dir, workers)
        n_val = int(len(stream) * val_fraction)
        return TokenData(train=stream[: len(stream) - n_val], val=stream[len(stream) - n_val :])
    val_files = resolve_corpus(val_spec)
    held_out = {p.resolve() for p in val_files}
    train_files = [p for p in corpus if p.resolve() not in held_out]
    if not train_files:
        raise DataError(f"every file of {spec} is in the validation set {val_spec}")
    return TokenData(train=prepare_shards(train_files, tokenizer, cache_dir, workers),
                     val=prepare_shards(val_files, tokenizer, cache_dir, workers))
