"""Memory kept per tokenizer.json loaded and dropped: whose is the growth of a long atheris run?

    python tools/fuzz/tokenizer_memory.py TOKENIZER_JSON [-n N]

Loads the file N times (after 200 warm-up loads) in each of these ways and prints, per load, the
growth of RSS, of the bytes malloc has handed out (glibc mallinfo2, main arena) and of the Python
heap (tracemalloc, in a separate pass: it slows everything):

- hf-load:     HF `Tokenizer.from_str` only
- hf-encode:   from_str, then one encode (what every onebit encode does)
- hf-no-cache: from_str, the BPE word cache resized to 0 (private `_resize_cache`), one encode
- onebit:      what tools/fuzz/fuzz_readers.py does: Tokenizer.load, encode, decode

HF `tokenizers` 0.23 keeps each thread's BPE word cache in a thread-local map keyed by a per-model
id (bpe/model.rs, BPE_LOCAL_CACHE); nothing removes a dropped model's entry, so every model that
encoded leaves its cached words behind until the thread exits. hf-no-cache caches no word and
shows the difference.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import sys
import tracemalloc
from pathlib import Path
from typing import Callable

import click
from tokenizers import Tokenizer as HFTokenizer

from onebit.tokenizer import Tokenizer, TokenizerError

TEXT = "Hello, world! ünïcödé 123\n"  # the harness's text


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _malloc_in_use() -> int:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2().uordblks


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _ways(path: Path) -> dict[str, Callable[[], None]]:
    text = path.read_text(encoding="utf-8")

    def hf_load() -> None:
        HFTokenizer.from_str(text)

    def hf_encode() -> None:
        HFTokenizer.from_str(text).encode(TEXT, add_special_tokens=False)

    def hf_no_cache() -> None:
        hf = HFTokenizer.from_str(text)
        hf.model._resize_cache(0)
        hf.encode(TEXT, add_special_tokens=False)

    def onebit() -> None:
        try:
            tok = Tokenizer.load(path)
            tok.decode(tok.encode(TEXT))
        except TokenizerError:
            pass

    return {"hf-load": hf_load, "hf-encode": hf_encode, "hf-no-cache": hf_no_cache, "onebit": onebit}


def _kept(step: Callable[[], None], n: int, python_heap: bool) -> tuple[float, ...]:
    for _ in range(200):
        step()
    gc.collect()
    if python_heap:
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
    rss, heap = _rss(), _malloc_in_use()
    for _ in range(n):
        step()
    gc.collect()
    if python_heap:
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
        tracemalloc.stop()
        return (grown / n,)
    return (_rss() - rss) / n, (_malloc_in_use() - heap) / n


@click.command()
@click.argument("tokenizer_json", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-n", "n", default=4000, show_default=True, help="Loads per way (after 200 warm-up loads).")
def main(tokenizer_json: Path, n: int) -> None:
    """Bytes kept per tokenizer loaded and dropped, four ways (see the module's docstring)."""
    import tokenizers

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    print(f"machine: {cpu}, {os.cpu_count()} cpus; load {os.getloadavg()[0]:.1f}; python "
          f"{platform.python_version()}; tokenizers {tokenizers.__version__}")
    print(f"command: {' '.join(sys.argv)}")
    print(f"{'way':12s} {'RSS B/load':>11s} {'malloc B/load':>14s} {'Python heap B/load':>19s}")
    for name, step in _ways(tokenizer_json).items():
        rss, heap = _kept(step, n, python_heap=False)
        (py,) = _kept(step, n // 4, python_heap=True)
        print(f"{name:12s} {rss:11.0f} {heap:14.0f} {py:19.1f}", flush=True)


if __name__ == "__main__":
    main()
