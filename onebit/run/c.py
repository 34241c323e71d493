"""Python binding of the C runtime (cffi, ABI mode): `Model(path).generate(...)`, `.logits(...)`;
`SharedModel` (one opened file) with a `Session` per thread for servers.

The declarations come from `runtime_c/include/onebit.h` itself (preprocessor lines stripped), never
a hand-copied cdef. The shared library is looked up in this order: `$ONEBIT_LIB`, the copy that
`pip install .` ships in `onebit/_lib/`, then `runtime_c/build/libonebit.so` of a source checkout,
which is (re)built with `make -C runtime_c lib` when missing or older than its sources.

    onebit run --model model.1bit --prompt "ROMEO:" -n 200 --temperature 0
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import click
import numpy as np

from onebit.chat_template import chat_prompt
from onebit.errors import OnebitError, cli_errors
from onebit.sampling import SamplerConfig
from onebit.textstream import TextStream, sampler_options, stream_bytes

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # onebit/
_REPO_RUNTIME = _PACKAGE_DIR.parent / "runtime_c"  # present in a source checkout only
_LIB_NAME = "libonebit.so"


class CRuntimeError(OnebitError):
    """An error reported by the C runtime (its status name and message)."""


# ----------------------------------------------------------------------------------------------
# Loading the library


def cdef_from_header(text: str) -> str:
    """The header's declarations for cffi: preprocessor lines and the C++ guard dropped, integer
    #defines kept (cffi understands `#define NAME 123`)."""
    out, skip = [], 0
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#ifdef __cplusplus"):
            skip = 1
            continue
        if skip:
            if stripped.startswith("#endif"):
                skip = 0
            continue
        if stripped.startswith("#"):
            if re.fullmatch(r"#define\s+\w+\s+-?\d+", stripped.split("/*")[0].strip()):
                out.append(stripped.split("/*")[0].strip())
            continue
        out.append(line)
    return "\n".join(out)


def _sources_newer(lib: Path) -> bool:
    built = lib.stat().st_mtime
    sources = list((_REPO_RUNTIME / "src").glob("*.[ch]")) + list((_REPO_RUNTIME / "include").glob("*.h"))
    return any(p.stat().st_mtime > built for p in sources)


def _locate() -> tuple[Path, Path]:
    """(shared library, header) to load."""
    env = os.environ.get("ONEBIT_LIB")
    if env:
        lib = Path(env)
        if not lib.is_file():
            raise CRuntimeError(f"ONEBIT_LIB={env} does not exist")
        header = _PACKAGE_DIR / "_lib" / "onebit.h"
        return lib, header if header.is_file() else _REPO_RUNTIME / "include" / "onebit.h"
    shipped = _PACKAGE_DIR / "_lib" / _LIB_NAME
    if shipped.is_file() and not (_REPO_RUNTIME / "Makefile").is_file():
        return shipped, _PACKAGE_DIR / "_lib" / "onebit.h"
    if (_REPO_RUNTIME / "Makefile").is_file():
        lib = _REPO_RUNTIME / "build" / _LIB_NAME
        if not lib.is_file() or _sources_newer(lib):
            done = subprocess.run(["make", "-C", str(_REPO_RUNTIME), "lib"], capture_output=True, text=True)
            if done.returncode != 0 or not lib.is_file():
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                raise CRuntimeError(f"building the C runtime with make -C {_REPO_RUNTIME} lib failed: {tail[0]}")
        return lib, _REPO_RUNTIME / "include" / "onebit.h"
    if shipped.is_file():
        return shipped, _PACKAGE_DIR / "_lib" / "onebit.h"
    raise CRuntimeError("the C runtime library is not installed: reinstall onebit (pip install .) or set ONEBIT_LIB")


_LOCK = threading.Lock()
_FFI_LIB: tuple | None = None


def load_library():
    """(ffi, lib), loaded once per process."""
    global _FFI_LIB
    with _LOCK:
        if _FFI_LIB is None:
            from cffi import FFI

            lib_path, header = _locate()
            ffi = FFI()
            ffi.cdef(cdef_from_header(header.read_text()))
            _FFI_LIB = (ffi, ffi.dlopen(str(lib_path)))
        return _FFI_LIB


def _check(status: int, message: str) -> None:
    if status != 0:
        ffi, lib = load_library()
        name = ffi.string(lib.ob_strerror(status)).decode()
        raise CRuntimeError(message or name)


# ----------------------------------------------------------------------------------------------
# The model, its sessions, and the one-session `Model` of the original API


# The C runtime's default (ob_session_params_default): half the memory and bytes per token of f32
# (docs/BENCHMARKS.md, "KV-cache: f16 by default"); f32 keeps the exact twin of PyTorch's cache.
DEFAULT_KV = "f16"


def _params(lib, ffi, n_ctx: int, threads: int, kv: str, isa_buf, n_batch: int, max_memory: int):
    if kv not in ("f32", "f16"):
        raise CRuntimeError(f"kv must be f32 or f16, got {kv!r}")
    for name, value in (("ctx", n_ctx), ("threads", threads), ("batch", n_batch)):
        if not -2**31 < value < 2**31:  # a C int: cffi would raise OverflowError
            raise CRuntimeError(f"{name} {value} is out of range")
    params = lib.ob_session_params_default()
    params.n_ctx, params.n_threads, params.n_batch = n_ctx, threads, n_batch
    params.kv_type = lib.OB_KV_F16 if kv == "f16" else lib.OB_KV_F32
    params.isa = isa_buf
    params.max_memory = max_memory
    return ffi.new("ob_session_params *", params)


class SharedModel:
    """An opened `.1bit` file: immutable after opening, so any number of `Session`s on any threads
    may share it (the thread contract of runtime_c/include/onebit.h). Tokenizing and detokenizing
    write no shared state: their errors come back to the caller."""

    def __init__(self, path: str | Path):
        self.ffi, self.lib = load_library()
        ffi, lib = self.ffi, self.lib
        self.path = Path(path)
        err = ffi.new("char[512]")
        model_p = ffi.new("ob_model **")
        _check(lib.ob_model_open(model_p, str(path).encode(), err, 512), ffi.string(err).decode("utf-8", "replace"))
        self._model = ffi.gc(model_p[0], lib.ob_model_free)
        info = ffi.new("ob_model_info *")
        lib.ob_model_get_info(self._model, info)
        self.vocab_size: int = info.vocab_size
        self.max_seq_len: int = info.max_seq_len
        self.tokenizer_kind: str = ffi.string(info.tokenizer).decode()
        self.eot_token: int = info.eot_token  # -1 when the vocabulary has no <|endoftext|>
        # end-of-sequence ids (metadata tokenizer.eos_token_ids); models trained by onebit have none
        self.eos_tokens: frozenset[int] = frozenset(info.eos_tokens[i] for i in range(info.n_eos_tokens))
        # T2 weights moved into the interleaved T2X layout at load (0: read in place from the file)
        self.repacked_bytes: int = info.repacked_bytes

    def metadata(self) -> dict:
        """The metadata JSON stored in the file (docs/FORMAT.md)."""
        size = self.ffi.new("size_t *")
        data = self.lib.ob_model_metadata(self._model, size)
        return json.loads(self.ffi.unpack(data, size[0]).decode("utf-8"))

    def session(self, n_ctx: int = 0, threads: int = 1, kv: str = DEFAULT_KV, isa: str | None = None,
                n_batch: int = 32, max_memory: int = 0) -> "Session":
        """A new session (its own KV-cache) over this model."""
        return Session(self, n_ctx=n_ctx, threads=threads, kv=kv, isa=isa, n_batch=n_batch, max_memory=max_memory)

    # -- tokenizer

    def encode(self, text: str) -> list[int]:
        ffi = self.ffi
        data = text.encode("utf-8")
        cap = len(data) + 1
        buf = ffi.new("int32_t[]", cap)
        n = ffi.new("int *")
        err = ffi.new("char[256]")
        status = self.lib.ob_tokenize_ex(self._model, data, len(data), buf, cap, n, err, 256)
        _check(status, ffi.string(err).decode("utf-8", "replace"))
        return list(buf[0:n[0]])

    def _detokenize(self, arr, n: int, out, cap: int, need, size_query: bool = False) -> None:
        ffi = self.ffi
        err = ffi.new("char[256]")
        status = self.lib.ob_detokenize_ex(self._model, arr, n, out, cap, need, err, 256)
        if not (size_query and status == self.lib.OB_ERR_BUFFER):
            _check(status, ffi.string(err).decode("utf-8", "replace"))

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        ffi = self.ffi
        arr = ffi.new("int32_t[]", [int(i) for i in ids])
        need = ffi.new("size_t *")
        self._detokenize(arr, len(ids), ffi.NULL, 0, need, size_query=True)
        out = ffi.new("char[]", max(need[0], 1))
        self._detokenize(arr, len(ids), out, need[0], need)
        return ffi.unpack(out, need[0])

    def decode(self, ids: Sequence[int]) -> str:
        """Token bytes as text; invalid UTF-8 becomes U+FFFD (as onebit.tokenizer.Tokenizer.decode)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def chat_prompt(self, message: str) -> str:
        """The C runtime's one-message chat prompt (ob_chat_prompt: the template's fixed pieces
        around the message, as `onebit-run --chat` builds it)."""
        ffi = self.ffi
        data = message.encode("utf-8")
        need, err = ffi.new("size_t *"), ffi.new("char[256]")
        status = self.lib.ob_chat_prompt(self._model, data, len(data), ffi.NULL, 0, need, err, 256)
        if status == self.lib.OB_ERR_BUFFER:
            buf = ffi.new("char[]", need[0])
            status = self.lib.ob_chat_prompt(self._model, data, len(data), buf, need[0], need, err, 256)
        _check(status, ffi.string(err).decode("utf-8", "replace"))
        return ffi.unpack(buf, need[0]).decode("utf-8")

    def token_bytes(self, token: int) -> bytes:
        ffi = self.ffi
        data, length = ffi.new("const uint8_t **"), ffi.new("size_t *")
        status = self.lib.ob_token_bytes(self._model, token, data, length)
        if status:
            raise CRuntimeError(f"token id {token} is outside the vocabulary of {self.vocab_size}")
        return ffi.unpack(ffi.cast("char *", data[0]), length[0])


def _sampler_struct(ffi, temperature: float, top_k: int, top_p: float, repeat_penalty: float,
                    repeat_window: int, seed: int, ignore_eos: bool = False):
    sp = ffi.new("ob_sampler_params *")
    sp.temperature, sp.top_k, sp.top_p = temperature, top_k, top_p
    sp.repeat_penalty, sp.repeat_window, sp.seed = repeat_penalty, repeat_window, seed % (1 << 64)
    sp.ignore_eos = int(ignore_eos)
    return sp


class Session:
    """A KV-cache over a `SharedModel`, used by one thread at a time (the C contract): a lock
    held for every call makes a second thread wait instead of corrupting the cache. The GIL is
    released inside every C call (cffi does it), so sessions on different threads run in parallel."""

    def __init__(self, model: SharedModel, n_ctx: int = 0, threads: int = 1, kv: str = DEFAULT_KV,
                 isa: str | None = None, n_batch: int = 32, max_memory: int = 0):
        self.model = model
        self.ffi, self.lib = ffi, lib = model.ffi, model.lib
        self._isa = ffi.new("char[]", isa.encode()) if isa else ffi.NULL  # kept alive with self
        params = _params(lib, ffi, n_ctx, threads, kv, self._isa, n_batch, max_memory)
        err = ffi.new("char[512]")
        sess_p = ffi.new("ob_session **")
        _check(lib.ob_session_create(sess_p, model._model, params, ffi.NULL, 0, err, 512),
               ffi.string(err).decode("utf-8", "replace"))
        self._session = ffi.gc(sess_p[0], lib.ob_session_free)
        self.n_ctx: int = lib.ob_session_n_ctx(self._session)
        self.isa: str = ffi.string(lib.ob_session_isa(self._session)).decode()
        self.lock = threading.RLock()

    def _error(self) -> str:
        return self.ffi.string(self.lib.ob_session_error(self._session)).decode("utf-8", "replace")

    @property
    def pos(self) -> int:
        """Tokens in the KV-cache."""
        return self.lib.ob_session_pos(self._session)

    def reset(self) -> None:
        with self.lock:
            self.lib.ob_session_reset(self._session)

    def eval(self, tokens: Sequence[int]) -> None:
        """Evaluate tokens at the current position (they must fit: pos + len <= n_ctx)."""
        with self.lock:
            ids = self.ffi.new("int32_t[]", [int(t) for t in tokens])
            _check(self.lib.ob_session_eval(self._session, ids, len(tokens), self.ffi.NULL, 0), self._error())

    def decode(self, token: int) -> None:
        """Evaluate one more token, sliding past the context (docs/SAMPLING.md)."""
        with self.lock:
            _check(self.lib.ob_session_decode(self._session, token), self._error())

    def set_sampler(self, sampler: SamplerConfig) -> None:
        with self.lock:
            sp = _sampler_struct(self.ffi, sampler.temperature, sampler.top_k, sampler.top_p,
                                 sampler.repeat_penalty, sampler.repeat_window, sampler.seed)
            _check(self.lib.ob_session_set_sampler(self._session, sp), self._error())

    def sample(self) -> int:
        """The next token from the last logits and the sampler set by set_sampler."""
        with self.lock:
            token = self.ffi.new("int32_t *")
            _check(self.lib.ob_session_sample(self._session, token), self._error())
            return int(token[0])

    def stream(self, prompt: Sequence[int], max_tokens: int, sampler: SamplerConfig,
               should_stop: Callable[[], bool] | None = None) -> Iterator[int]:
        """Evaluate `prompt` at the current position, then yield up to max_tokens sampled ids, one
        C call at a time so that the consumer can stop between any two (stop strings, a closed
        connection, Ctrl-C: `should_stop()` is asked after each id). The decode loop of
        docs/SAMPLING.md: the same tokens as `generate`. The last id yielded is never evaluated: a
        caller that continues the sequence feeds it first."""
        self.set_sampler(sampler)
        if prompt:
            self.eval(prompt)
        for i in range(max_tokens):
            token = self.sample()
            yield token
            if i + 1 == max_tokens or (should_stop is not None and should_stop()):
                return
            self.decode(token)

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """[len(tokens), vocab] fp32 logits of a fresh context (one prefill)."""
        n = len(tokens)
        if n == 0:
            raise CRuntimeError("logits needs at least one token")
        out = np.empty((n, self.model.vocab_size), dtype=np.float32)
        ids = self.ffi.new("int32_t[]", [int(t) for t in tokens])
        with self.lock:
            self.lib.ob_session_reset(self._session)
            status = self.lib.ob_session_eval(self._session, ids, n, self.ffi.cast("float *", out.ctypes.data), 1)
            _check(status, self._error())
        return out

    def generate(self, prompt: str | Sequence[int], n: int, temperature: float = 0.8, top_k: int = 0,
                 top_p: float = 1.0, repeat_penalty: float = 1.0, repeat_window: int = 64, seed: int = 0,
                 on_token: Callable[[int, bytes], None] | None = None, ignore_eos: bool = False) -> list[int]:
        """The n new token ids after `prompt` (text or ids), from a fresh context, in one C call
        (ob_generate); on_token(id, bytes) sees each as it arrives. Fewer than n when the model's
        end-of-sequence token comes (it is the last id) unless ignore_eos. Same rules as
        onebit.train.sample.generate (docs/SAMPLING.md)."""
        ffi, lib = self.ffi, self.lib
        ids = self.model.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise CRuntimeError("the prompt is empty: generation needs at least one token")
        sp = _sampler_struct(ffi, temperature, top_k, top_p, repeat_penalty, repeat_window, seed, ignore_eos)
        out = ffi.new("int32_t[]", max(n, 1))
        n_out = ffi.new("int *")
        errors: list[BaseException] = []

        # Any exception stops the C loop (the callback returns 1) and is re-raised below.  onerror,
        # not a try inside: a Ctrl-C that arrived while C ran is raised on the callback's first
        # bytecode, before any try in it, and cffi would print and ignore it.
        @ffi.callback("int(void *, int32_t, const uint8_t *, size_t)", error=1,
                      onerror=lambda _type, value, _tb: errors.append(value))
        def relay(_user, token, data, length):
            on_token(int(token), ffi.unpack(ffi.cast("char *", data), length))
            return 0

        with self.lock:
            lib.ob_session_reset(self._session)
            status = lib.ob_generate(self._session, ffi.new("int32_t[]", ids), len(ids), n, sp,
                                     relay if on_token else ffi.NULL, ffi.NULL, out, n_out)
            if errors:
                raise errors[0]
            _check(status, self._error())
            return list(out[0:n_out[0]])


class Model:
    """A `.1bit` model and one inference session over it (KV-cache sized to `n_ctx`). Safe to call
    from several Python threads: calls take turns on the one session (its lock); use
    `SharedModel` with a `Session` per thread to run them in parallel."""

    def __init__(self, path: str | Path, n_ctx: int = 0, threads: int = 1, kv: str = DEFAULT_KV,
                 isa: str | None = None, n_batch: int = 32, max_memory: int = 0):
        self.shared = SharedModel(path)
        self.session = self.shared.session(n_ctx=n_ctx, threads=threads, kv=kv, isa=isa, n_batch=n_batch,
                                           max_memory=max_memory)
        self.path = self.shared.path
        self.ffi, self.lib = self.shared.ffi, self.shared.lib
        self.vocab_size: int = self.shared.vocab_size
        self.max_seq_len: int = self.shared.max_seq_len
        self.tokenizer_kind: str = self.shared.tokenizer_kind
        self.n_ctx: int = self.session.n_ctx
        self.isa: str = self.session.isa

    def encode(self, text: str) -> list[int]:
        return self.shared.encode(text)

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        return self.shared.decode_bytes(ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Token bytes as text; invalid UTF-8 becomes U+FFFD (as onebit.tokenizer.Tokenizer.decode)."""
        return self.shared.decode(ids)

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """[len(tokens), vocab] fp32 logits of a fresh context (one prefill)."""
        return self.session.logits(tokens)

    def generate(self, prompt: str | Sequence[int], n: int, temperature: float = 0.8, top_k: int = 0,
                 top_p: float = 1.0, repeat_penalty: float = 1.0, repeat_window: int = 64, seed: int = 0,
                 on_token: Callable[[int, bytes], None] | None = None, ignore_eos: bool = False) -> list[int]:
        """The n new token ids after `prompt` (text or ids), from a fresh context, or fewer when the
        model's end-of-sequence token comes (unless ignore_eos); on_token(id, bytes) sees each as it
        arrives. Same rules as onebit.train.sample.generate (docs/SAMPLING.md)."""
        return self.session.generate(prompt, n, temperature=temperature, top_k=top_k, top_p=top_p,
                                     repeat_penalty=repeat_penalty, repeat_window=repeat_window, seed=seed,
                                     on_token=on_token, ignore_eos=ignore_eos)

    def perplexity(self, text: str) -> tuple[float, int]:
        """(perplexity, scored tokens) over `ppl_windows` of the session's context, as onebit-run --ppl."""
        ids = self.encode(text)
        nll, count = 0.0, 0
        for start, stop in ppl_windows(len(ids), self.n_ctx):
            logits = self.logits(ids[start:stop]).astype(np.float64)
            targets = np.array(ids[start + 1:stop + 1])
            mx = logits.max(axis=1)
            lse = np.log(np.exp(logits - mx[:, None]).sum(axis=1)) + mx
            nll += float((lse - logits[np.arange(len(targets)), targets]).sum())
            count += len(targets)
        if count == 0:
            raise CRuntimeError("perplexity needs at least 2 tokens")
        return math.exp(nll / count), count


def ppl_windows(n_tokens: int, ctx: int) -> list[tuple[int, int]]:
    """Non-overlapping windows [start, stop) of inputs: tokens start+1 .. stop are predicted from a
    fresh cache; stop - start <= ctx; the last window may be shorter. Shared by onebit-run --ppl."""
    return [(s, min(s + ctx, n_tokens - 1)) for s in range(0, max(n_tokens - 1, 0), ctx)]


# ----------------------------------------------------------------------------------------------
# CLI: `onebit run`, the same options as the C `onebit-run`


def bench_prompt(n_tokens: int, vocab_size: int) -> list[int]:
    """The benchmark prompt of `onebit-run --prompt-tokens N`: the same LCG ids, so both measure the
    same work."""
    ids, x = [], 12345
    for _ in range(n_tokens):
        x = (x * 1664525 + 1013904223) & 0xFFFFFFFF
        ids.append((x >> 8) % vocab_size)
    return ids


@dataclass
class TokenClock:
    """Times of the prefill and of each new token, as `onebit-run --bench` reports them."""
    start: float
    first: float = 0.0
    last: float = 0.0
    count: int = 0

    def tick(self) -> None:
        self.last = time.perf_counter()
        if self.count == 0:
            self.first = self.last
        self.count += 1

    def report(self, n_prompt: int, threads: int, isa: str, kv: str, n_ctx: int) -> str:
        # the first token's time is prefill plus one sample; the decode rate counts the forwards after it
        prefill = max(self.first - self.start, 1e-9)
        steps = max(self.count - 1, 0)
        decode = max(self.last - self.first, 1e-9)
        return (f"prefill: {n_prompt} tokens in {prefill * 1e3:.2f} ms: {n_prompt / prefill:.1f} tok/s\n"
                f"decode: {steps} tokens in {decode * 1e3:.2f} ms: {steps / decode:.1f} tok/s\n"
                f"isa {isa}, kv {kv}, context {n_ctx}\n"
                f"bench: prefill_tok_s={n_prompt / prefill:.1f} decode_tok_s={steps / decode:.1f} threads={threads}")


def parse_bytes(text: str) -> int:
    """A byte count as onebit-run --max-memory reads it: 1048576, 512K, 512M, 2G (also KB, KiB, ...)."""
    m = re.fullmatch(r"(\d+)(?:([KMGkmg])(?:B|iB)?)?", text.strip())
    value = int(m.group(1)) << (10 * (" KMG".index(m.group(2).upper()) if m.group(2) else 0)) if m else 0
    if value <= 0 or value >= 1 << 64:
        raise CRuntimeError(f"--max-memory needs a positive byte count such as 512M or 2G, got '{text}'")
    return value


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-m", "--model", "model_path", type=click.Path(path_type=Path), required=True,
              help="The .1bit file to run.")
@sampler_options
@click.option("--threads", "-t", type=int, default=1, show_default=True, help="Worker threads of the session.")
@click.option("--ctx", type=int, default=0, help="Context length.  [default: min(the model's max_seq_len, 4096)]")
@click.option("--kv", type=click.Choice(["f32", "f16"]), default=DEFAULT_KV, show_default=True,
              help="KV-cache element type: f16 halves its memory and reads; f32 is the exact twin of PyTorch's.")
@click.option("--isa", default=None,
              help="Kernel set: scalar, avx2, avx512 or neon.  [default: $ONEBIT_ISA, else the best this CPU has]")
@click.option("--batch", type=int, default=32, show_default=True, help="Tokens per prefill batch (the GEMM width).")
@click.option("--max-memory", default=None,
              help="Fail early if the model and session need more bytes than this, e.g. 512M or 2G.  "
                   "[default: no limit]")
@click.option("--bench", is_flag=True,
              help="Report prefill and decode speed on stderr, as onebit-run --bench (implies --ignore-eos).")
@click.option("--prompt-tokens", type=int, default=0,
              help="Benchmark with N pseudo-random prompt tokens instead of --prompt (nothing is printed).  "
                   "[default: off]")
@click.option("--ppl", "ppl_file", type=click.Path(path_type=Path), default=None,
              help="Print the perplexity of this text file instead of generating.  [default: generate]")
@cli_errors
def main(model_path: Path, prompt: str, n: int, sampler: SamplerConfig, chat: bool, threads: int, ctx: int,
         kv: str, isa: str | None, batch: int, max_memory: str | None, bench: bool, prompt_tokens: int,
         ppl_file: Path | None) -> None:
    """Generate text with a .1bit model through the C runtime (stdout: prompt + text)."""
    if batch < 1 or prompt_tokens < 0 or threads < 1 or ctx < 0 or n < 0:
        raise CRuntimeError("--batch and --threads must be >= 1; --ctx, -n and --prompt-tokens >= 0")
    opened = time.perf_counter()
    model = Model(model_path, n_ctx=ctx, threads=threads, kv=kv, isa=isa, n_batch=batch,
                  max_memory=parse_bytes(max_memory) if max_memory is not None else 0)
    load_s = time.perf_counter() - opened
    if ppl_file is not None:
        try:
            text = ppl_file.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise CRuntimeError(f"{ppl_file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        ppl, count = model.perplexity(text)
        click.echo(f"ppl {ppl:.6f} tokens {count}")
        return
    if chat and (prompt_tokens or ppl_file is not None):
        raise CRuntimeError("--chat needs a text prompt (-p), not --prompt-tokens or --ppl")
    if chat:  # the template itself (Jinja), which the C CLI's stored pieces reproduce
        prompt = chat_prompt(model.shared.metadata().get("tokenizer") or {}, prompt)
    ids = bench_prompt(prompt_tokens, model.vocab_size) if prompt_tokens else model.encode(prompt)
    if not ids:
        raise CRuntimeError("the prompt is empty: generation needs at least one token")
    if len(ids) > model.n_ctx:  # the new tokens may go past the context: the C loop slides
        raise CRuntimeError(f"the prompt ({len(ids)} tokens) is longer than the context of {model.n_ctx} "
                            "tokens (the prompt itself must fit)")
    stream = TextStream("" if prompt_tokens else prompt)
    clock = TokenClock(time.perf_counter())
    if bench:  # a benchmark measures the full count
        sampler = replace(sampler, ignore_eos=True)

    def on_token(token: int, data: bytes) -> None:
        clock.tick()
        stream.write(stream_bytes(data, token, model.shared.eos_tokens, sampler))

    model.generate(ids, n, temperature=sampler.temperature, top_k=sampler.top_k, top_p=sampler.top_p,
                   repeat_penalty=sampler.repeat_penalty, repeat_window=sampler.repeat_window,
                   seed=sampler.seed, on_token=on_token, ignore_eos=sampler.ignore_eos)
    stream.close(len(ids), f"C runtime, {threads} thread(s)")
    if bench:
        click.echo(f"load: {load_s * 1e3:.2f} ms (open the model, create the session)", err=True)
        click.echo(clock.report(len(ids), threads, model.isa, kv, model.n_ctx), err=True)


if __name__ == "__main__":
    main()
