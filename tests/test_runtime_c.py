"""The C runtime (runtime_c/, through onebit.run.c and onebit-run) against the Python oracles.

Logits against the NumPy reference over the same packed file; greedy and seeded sampling against
PyTorch generation for every ISA this machine runs and 1-3 threads; the tokenizers against
onebit.tokenizer on the whole corpus; bad files and requests give clear errors, never a crash;
the binding from several Python threads (the GIL released in C) and its memory budget.
"""

from __future__ import annotations

import os

import math
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from onebit.compile.export import ExportOptions, export_1bit
from onebit.config import ModelConfig
from onebit.run.c import CRuntimeError, Model, SharedModel, ppl_windows
from onebit.run.reference import KVCache, ReferenceModel
from onebit.sampling import SamplerConfig
from onebit.tokenizer import train_bpe_tokenizer
from onebit.train.checkpoint import load_checkpoint, save_checkpoint
from onebit.train.model import Transformer
from onebit.train.sample import generate

pytestmark = pytest.mark.skipif(shutil.which("cc") is None or shutil.which("make") is None,
                                reason="the C runtime needs cc and make")

REPO = Path(__file__).resolve().parent.parent
RUNTIME = REPO / "runtime_c"
CLI = RUNTIME / "build" / "onebit-run"
ISAS = ("scalar", "avx2", "avx512", "neon")
# fp32 forward, the same op order as the reference; only reduction orders differ.
TOL = 1e-4


def _export(ckpt_dir: Path, out: Path, pack: str = "t2", embed_dtype: str = "f32") -> Path:
    export_1bit(ckpt_dir, out, ExportOptions(pack=pack, embed_dtype=embed_dtype))
    return out


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def _run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(CLI), *args], capture_output=True)
    if check:
        assert done.returncode == 0, done.stderr.decode()
    return done


VARIANTS = [
    dict(),  # GQA (n_kv_heads=2), relu2, gated, subln, rope, rmsnorm, tied
    dict(n_kv_heads=1, pack="t1.6"),
    dict(norm="layernorm", qk_norm=True, n_kv_heads=4),
    dict(pos="learned", tie_embeddings=False, pack="t1.6"),
    dict(activation="gelu", gated=False),
    dict(activation="silu", subln=False, residual_scale=0.5, pack="t1.6"),
    dict(quant="binary"),
    dict(quant="binary", tie_embeddings=False, pos="learned", activation="silu"),
    dict(embed_dtype="f16", tie_embeddings=False),
    dict(embed_dtype="i8"),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) or "default")
def test_logits_match_numpy_reference(c_runtime, random_checkpoint, tmp_path, variant):
    overrides = dict(variant)
    pack, embed = overrides.pop("pack", "t2"), overrides.pop("embed_dtype", "f32")
    seed = VARIANTS.index(variant)
    path = _export(random_checkpoint(randomize=seed, **overrides), tmp_path / "m.1bit", pack, embed)
    ref = ReferenceModel.load(path)
    tokens = np.random.default_rng(seed).integers(0, ref.cfg["vocab_size"], ref.cfg["max_seq_len"]).tolist()
    for kv in ("f32", "f16"):
        expected = ref.forward(tokens, KVCache(dtype=kv))
        prefill = Model(path, n_batch=8, kv=kv).logits(tokens)  # batched GEMM path, several chunks
        assert prefill.shape == expected.shape
        assert _rel(prefill, expected) < TOL, kv
        decode = Model(path, n_batch=1, threads=2, kv=kv).logits(tokens)  # m = 1 GEMV path, threaded
        assert _rel(decode, expected) < TOL, kv
        if kv == "f16":  # the rounding is real: the two caches give different logits
            assert _rel(expected, ref.forward(tokens)) > 1e-6


@pytest.mark.parametrize("pack", ["t2", "t1.6"])
def test_t2x_repack_changes_no_result(c_runtime, random_checkpoint, tmp_path, monkeypatch, pack):
    """The loader's T2X repack (docs/RUNTIME.md "Load") on a model whose rows span several T2 blocks
    (K = 256 and 612: 2 and 5 blocks; the other tests' models have one, where the two layouts
    coincide; for T1.6, 1 and 3 full blocks and a tail) and whose MLP has a row count that is no
    multiple of 8 (a padded last group): logits bit-identical to the file layout's and within TOL of
    the NumPy reference, greedy tokens identical on every ISA and thread count, prefill and decode."""
    ckpt = random_checkpoint(randomize=21, dim=256, n_heads=4, n_kv_heads=1, ffn_dim=612, max_seq_len=64)
    path = _export(ckpt, tmp_path / "wide.1bit", pack=pack)
    isas = _available_isas(path)
    repacked = Model(path, kv="f32")
    wanted = os.environ.get("ONEBIT_ISA", "") in ("", "avx2", "avx512") and bool({"avx2", "avx512"} & set(isas))
    assert (repacked.shared.repacked_bytes > 0) == wanted
    monkeypatch.setenv("ONEBIT_REPACK", "0")
    in_place = Model(path, kv="f32")
    monkeypatch.delenv("ONEBIT_REPACK")
    assert in_place.shared.repacked_bytes == 0
    ref = ReferenceModel.load(path)
    tokens = np.random.default_rng(21).integers(0, ref.cfg["vocab_size"], 64).tolist()
    got = repacked.logits(tokens)
    assert np.array_equal(got, in_place.logits(tokens))
    monkeypatch.setenv("ONEBIT_HUGEPAGES", "1")  # the repack in transparent huge pages: a hint, same bits
    huge = Model(path, kv="f32")
    monkeypatch.delenv("ONEBIT_HUGEPAGES")
    assert huge.shared.repacked_bytes == repacked.shared.repacked_bytes
    assert np.array_equal(got, huge.logits(tokens))
    assert _rel(got, ref.forward(tokens, KVCache(dtype="f32"))) < TOL
    want = in_place.generate(tokens[:5], 40, temperature=0.0)
    for isa in isas:
        for threads in (1, 2):
            model = Model(path, threads=threads, isa=isa, kv="f32", n_batch=1)
            assert model.generate(tokens[:5], 40, temperature=0.0) == want, f"isa={isa} threads={threads}"


def _available_isas(path: Path) -> list[str]:
    isas = []
    for isa in ISAS:
        try:
            Model(path, isa=isa)
        except CRuntimeError as e:
            assert "not available" in str(e)
            continue
        isas.append(isa)
    assert "scalar" in isas
    return isas


@pytest.fixture(scope="session")
def long_model(random_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint dir, .1bit) of a randomized model with room for a prompt + 200 tokens."""
    ckpt = random_checkpoint(randomize=11, max_seq_len=256, dim=64, ffn_dim=128, tie_embeddings=False)
    return ckpt, _export(ckpt, tmp_path_factory.mktemp("long") / "m.1bit")


def test_greedy_200_tokens_identical_everywhere(c_runtime, long_model):
    ckpt_dir, path = long_model
    model = load_checkpoint(ckpt_dir).model
    prompt = [5, 17, 3, 9, 22]
    expected = generate(model, prompt, 200, SamplerConfig(temperature=0.0))
    assert ReferenceModel.load(path).generate_greedy(prompt, 200) == expected
    # a random model soon repeats itself; the penalty keeps greedy decoding moving through the vocabulary
    varied = generate(model, prompt, 200, SamplerConfig(temperature=0.0, repeat_penalty=1.5, repeat_window=32))
    assert len(set(varied)) > 10, "degenerate oracle output makes a weak test"
    for isa in _available_isas(path):
        for threads in (1, 2, 3):
            c_model = Model(path, threads=threads, isa=isa, kv="f32")  # PyTorch's twin: the f32 cache
            assert c_model.generate(prompt, 200, temperature=0.0) == expected, f"isa={isa} threads={threads}"
            got = c_model.generate(prompt, 200, temperature=0.0, repeat_penalty=1.5, repeat_window=32)
            assert got == varied, f"isa={isa} threads={threads}"


def test_greedy_f16_cache_identical_to_reference_everywhere(c_runtime, long_model, slide_model):
    """The default f16 KV-cache (ob_session_params_default, onebit-run, Model) against the NumPy
    reference with the same cache: greedy output identical on every ISA and thread count, also
    across context slides."""
    prompt = [5, 17, 3, 9, 22]
    for (_, path), n in ((long_model, 200), (slide_model, 300)):
        ref = ReferenceModel.load(path)
        expected = ref.generate_greedy(prompt, n, kv="f16")
        assert len(set(expected)) > 3, "degenerate oracle output makes a weak test"
        for isa in _available_isas(path):
            for threads in (1, 2, 3):
                got = Model(path, threads=threads, isa=isa).generate(prompt, n, temperature=0.0)
                assert got == expected, f"{path.parent.name} isa={isa} threads={threads}"


def test_seeded_sampling_matches_torch_binding_and_cli(c_runtime, long_model):
    ckpt_dir, path = long_model
    ckpt = load_checkpoint(ckpt_dir)
    settings = dict(temperature=0.9, top_k=20, top_p=0.95, repeat_penalty=1.2, repeat_window=16, seed=7)
    prompt = "First Citizen:\n"
    ids = ckpt.tokenizer.encode(prompt)
    expected = generate(ckpt.model, ids, 150, SamplerConfig(**settings))
    got = Model(path, threads=2, kv="f32").generate(prompt, 150, **settings)
    assert got == expected
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    flags = [x for f in flags for x in f.split("=", 1)]
    text = _run_cli("-m", str(path), "-p", prompt, "-n", "150", "--kv", "f32", *flags).stdout  # PyTorch's twin
    assert text == prompt.encode() + b"".join(ckpt.tokenizer.token_bytes(t) for t in expected)
    sample = subprocess.run([sys.executable, "-m", "onebit.train.sample", str(ckpt_dir), "-p", prompt, "-n", "150",
                             *flags], capture_output=True, check=True)
    assert sample.stdout == text
    binding = subprocess.run([sys.executable, "-m", "onebit.run.c", "-m", str(path), "-p", prompt, "-n", "150",
                              "--kv", "f32", *flags], capture_output=True, check=True)
    assert binding.stdout == text


def test_greedy_gqa_masked_head_tail_identical_everywhere(c_runtime, random_checkpoint, tmp_path):
    """4 query heads on 2 KV heads of 24 values (AVX-512's attention mix: a full and a masked
    vector a row), a 150-token context, 200 greedy tokens that slide once.  Torch (f32 cache) and
    NumPy (f16) against C, every ISA, 1-3 threads."""
    ckpt = random_checkpoint(randomize=13, max_seq_len=150, dim=96, n_heads=4, n_kv_heads=2, ffn_dim=128,
                             tie_embeddings=False)
    path = _export(ckpt, tmp_path / "m.1bit")
    model = load_checkpoint(ckpt).model
    prompt = [5, 17, 3, 9, 22]
    settings = dict(temperature=0.0, repeat_penalty=1.5, repeat_window=48)
    expected = generate(model, prompt, 200, SamplerConfig(**settings))
    assert len(set(expected)) > 10, "degenerate oracle output makes a weak test"
    expected16 = ReferenceModel.load(path).generate_greedy(prompt, 200, kv="f16")
    assert len(set(expected16)) > 3, "degenerate oracle output makes a weak test"
    for isa in _available_isas(path):
        for threads in (1, 2, 3):
            got = Model(path, threads=threads, isa=isa, kv="f32").generate(prompt, 200, **settings)
            assert got == expected, f"f32 isa={isa} threads={threads}"
            got16 = Model(path, threads=threads, isa=isa).generate(prompt, 200, temperature=0.0)
            assert got16 == expected16, f"f16 isa={isa} threads={threads}"


@pytest.fixture(scope="session")
def slide_model(random_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint dir, .1bit) of a randomized model with a 32-token context: 300 tokens slide often."""
    ckpt = random_checkpoint(randomize=12, max_seq_len=32, dim=64, ffn_dim=128, tie_embeddings=False)
    return ckpt, _export(ckpt, tmp_path_factory.mktemp("slide") / "m.1bit")


def test_greedy_300_tokens_past_the_context_identical_everywhere(c_runtime, slide_model):
    """docs/SAMPLING.md's sliding window: torch, NumPy and C (every ISA, 1 and 2 threads) agree."""
    ckpt_dir, path = slide_model
    model = load_checkpoint(ckpt_dir).model
    prompt = [5, 17, 3, 9, 22]
    expected = generate(model, prompt, 300, SamplerConfig(temperature=0.0))
    assert ReferenceModel.load(path).generate_greedy(prompt, 300) == expected
    # repeat_window 40 > the context: the penalty looks back 32 tokens, across slides
    varied = generate(model, prompt, 300, SamplerConfig(temperature=0.0, repeat_penalty=1.5, repeat_window=40))
    assert len(set(varied)) > 10, "degenerate oracle output makes a weak test"
    full = [3, 1, 4, 1, 5, 9, 2, 6] * 4  # a prompt that fills the context: the first new token slides
    expected_full = generate(model, full, 40, SamplerConfig(temperature=0.0))
    for isa in _available_isas(path):
        for threads in (1, 2):
            c_model = Model(path, threads=threads, isa=isa, kv="f32")  # PyTorch's twin: the f32 cache
            assert c_model.generate(prompt, 300, temperature=0.0) == expected, f"isa={isa} threads={threads}"
            got = c_model.generate(prompt, 300, temperature=0.0, repeat_penalty=1.5, repeat_window=40)
            assert got == varied, f"isa={isa} threads={threads}"
            assert c_model.generate(full, 40, temperature=0.0) == expected_full, f"isa={isa} threads={threads}"


def test_seeded_sampling_past_the_context_matches_everywhere(c_runtime, slide_model):
    ckpt_dir, path = slide_model
    ckpt = load_checkpoint(ckpt_dir)
    settings = dict(temperature=0.9, top_k=20, top_p=0.95, repeat_penalty=1.2, repeat_window=48, seed=5)
    prompt = "First Citizen:\n"
    ids = ckpt.tokenizer.encode(prompt)
    expected = generate(ckpt.model, ids, 300, SamplerConfig(**settings))
    assert Model(path, threads=2, kv="f32").generate(prompt, 300, **settings) == expected
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    flags = [x for f in flags for x in f.split("=", 1)]
    text = _run_cli("-m", str(path), "-p", prompt, "-n", "300", "--kv", "f32", *flags).stdout  # PyTorch's twin
    assert text == prompt.encode() + b"".join(ckpt.tokenizer.token_bytes(t) for t in expected)
    sample = subprocess.run([sys.executable, "-m", "onebit.train.sample", str(ckpt_dir), "-p", prompt, "-n", "300",
                             *flags], capture_output=True, check=True)
    assert sample.stdout == text
    binding = subprocess.run([sys.executable, "-m", "onebit.run.c", "-m", str(path), "-p", prompt, "-n", "300",
                              "--kv", "f32", *flags], capture_output=True, check=True)
    assert binding.stdout == text


def test_char_tokenizer_matches_python_on_the_corpus(c_runtime, random_checkpoint, tmp_path, shakespeare_path,
                                                      char_tokenizer):
    ckpt = load_checkpoint(random_checkpoint())
    save_checkpoint(tmp_path / "ck", _resized(ckpt.model, char_tokenizer.vocab_size), char_tokenizer, ckpt.meta)
    model = Model(_export(tmp_path / "ck", tmp_path / "m.1bit"))
    text = shakespeare_path.read_text(encoding="utf-8")
    ids = model.encode(text)
    assert ids == char_tokenizer.encode(text)
    assert model.decode_bytes(ids) == text.encode()
    with pytest.raises(CRuntimeError, match="U\\+20AC"):
        model.encode("price: €")


def _resized(model: Transformer, vocab_size: int) -> Transformer:
    cfg = ModelConfig(**{**model.cfg.to_dict(), "vocab_size": vocab_size})
    torch.manual_seed(3)
    return Transformer(cfg)


BPE_EXTRAS = [
    "Hello<|endoftext|>world  <|endoftext|><|endoftext|>",
    "don't we'll I'm 'tis they're  you've she'd '''",
    "  leading\n\n\n  spaces   \t\ttabs \n x\r\n",
    "numbers 123 4567 ٣٤ ½ and letters ÉÀé ñ 漢字 日本語 ",
    "emoji 🙂🙃 mixed-punct!!! ... ?!?",
    "",
    " ",
    "trailing spaces   ",
]


def test_bpe_tokenizer_matches_python(c_runtime, random_checkpoint, tmp_path, shakespeare_path):
    tok = train_bpe_tokenizer([shakespeare_path], 400)
    ckpt = load_checkpoint(random_checkpoint())
    save_checkpoint(tmp_path / "ck", _resized(ckpt.model, tok.vocab_size), tok, ckpt.meta)
    model = Model(_export(tmp_path / "ck", tmp_path / "m.1bit"))
    text = shakespeare_path.read_text(encoding="utf-8")
    ids = model.encode(text)
    assert ids == tok.encode(text)
    assert model.decode_bytes(ids) == text.encode()
    for extra in BPE_EXTRAS:
        assert model.encode(extra) == tok.encode(extra), repr(extra)
    # any id sequence decodes, including ones that split a UTF-8 character
    rng = np.random.default_rng(0)
    ids = rng.integers(0, tok.vocab_size, 500).tolist()
    assert model.decode_bytes(ids) == b"".join(tok.token_bytes(i) for i in ids)
    assert model.decode(ids) == tok.decode(ids)


# ----------------------------------------------------------------------------------------------
# Bad files and requests


def _fix_crcs(data: bytearray) -> bytearray:
    struct.pack_into("<I", data, 56, zlib.crc32(bytes(data[64:])))
    struct.pack_into("<I", data, 60, zlib.crc32(bytes(data[:60])))
    return data


def _record_offset(data: bytes, name: str) -> int:
    dir_offset, n = struct.unpack_from("<Q", data, 32)[0], struct.unpack_from("<I", data, 40)[0]
    for i in range(n):
        at = dir_offset + 128 * i
        if data[at:at + 64].rstrip(b"\0") == name.encode():
            return at
    raise KeyError(name)


def _corrupt(kind: str, data: bytes) -> bytes:
    d = bytearray(data)
    if kind == "empty":
        return b""
    if kind == "short":
        return bytes(d[:10])
    if kind == "truncated":
        return bytes(d[:-100])
    if kind == "magic":
        d[0:4] = b"2BIT"
        return bytes(d)
    if kind == "version":
        struct.pack_into("<H", d, 4, 2)
        return bytes(_fix_crcs(d))
    if kind == "header_flip":
        d[20] ^= 0x10
        return bytes(d)
    if kind == "body_flip":
        d[len(d) // 2] ^= 0x01
        return bytes(d)
    if kind == "forged_offset":
        struct.pack_into("<Q", d, _record_offset(data, "norm.weight") + 104, 1 << 40)
        return bytes(_fix_crcs(d))
    if kind == "forged_size":
        at = _record_offset(data, "embed.weight") + 112
        struct.pack_into("<Q", d, at, struct.unpack_from("<Q", d, at)[0] + 64)
        return bytes(_fix_crcs(d))
    if kind == "forged_dtype":
        struct.pack_into("<I", d, _record_offset(data, "layers.0.attn.q_proj.weight") + 64, 99)
        return bytes(_fix_crcs(d))
    if kind == "missing_tensor":
        at = _record_offset(data, "norm.weight")
        d[at:at + 11] = b"norm.weighx"
        return bytes(_fix_crcs(d))
    if kind == "bad_json":
        d[64] = ord("[")
        return bytes(_fix_crcs(d))
    if kind == "wrong_shape":
        meta = bytes(d[64:64 + struct.unpack_from("<Q", d, 24)[0]])
        assert b'"dim":32' in meta
        at = 64 + meta.index(b'"dim":32')
        d[at:at + 8] = b'"dim":16'
        return bytes(_fix_crcs(d))
    raise ValueError(kind)


BAD_FILES = {
    "empty": "empty file",
    "short": "magic|truncated",
    "truncated": "truncated",
    "magic": "magic",
    "version": "newer than this reader",
    "header_flip": "header CRC",
    "body_flip": "body CRC",
    "forged_offset": "beyond the end",
    "forged_size": "size",
    "forged_dtype": "dtype",
    "missing_tensor": "missing",
    "bad_json": "JSON",
    "wrong_shape": "shape",
}


@pytest.fixture(scope="session")
def small_file(random_checkpoint, tmp_path_factory) -> Path:
    return _export(random_checkpoint(), tmp_path_factory.mktemp("small") / "m.1bit")


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_files_fail_cleanly(c_runtime, small_file, tmp_path, kind):
    bad = tmp_path / f"{kind}.1bit"
    bad.write_bytes(_corrupt(kind, small_file.read_bytes()))
    with pytest.raises(CRuntimeError, match=BAD_FILES[kind]):
        Model(bad)
    done = _run_cli("-m", str(bad), "-p", "A", "-n", "3", check=False)
    assert done.returncode == 1
    assert done.stdout == b""
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0]


def test_random_corruption_never_crashes(c_runtime, small_file, tmp_path):
    """Byte flips with recomputed CRCs reach every parser past the checksums; each must load or fail
    with an error (a crash would take the test process down)."""
    data = small_file.read_bytes()
    rng = np.random.default_rng(1)
    meta_end = 64 + struct.unpack_from("<Q", data, 24)[0]
    data_offset = struct.unpack_from("<Q", data, 48)[0]
    failures = 0
    for trial in range(150):
        d = bytearray(data)
        lo, hi = (64, meta_end) if trial % 2 else (meta_end, data_offset)  # metadata, then directory
        for at in rng.integers(lo, hi, 1 + trial % 4):
            d[at] ^= 1 << int(rng.integers(0, 8))
        path = tmp_path / "fuzz.1bit"
        path.write_bytes(bytes(_fix_crcs(d)))
        try:
            Model(path).logits([1, 2, 3])
        except CRuntimeError:
            failures += 1
    assert failures > 0


def test_missing_and_directory_paths(c_runtime, tmp_path):
    with pytest.raises(CRuntimeError, match="No such file"):
        Model(tmp_path / "nope.1bit")
    with pytest.raises(CRuntimeError, match="not a regular file"):
        Model(tmp_path)
    done = _run_cli("-m", str(tmp_path / "nope.1bit"), check=False)
    assert done.returncode == 1 and done.stderr.decode().count("\n") == 1


def test_context_limits_are_clear_errors(c_runtime, small_file):
    model = Model(small_file, n_ctx=16)
    with pytest.raises(CRuntimeError, match="longer than the context of 16"):
        model.generate([1] * 17, 1)
    assert len(model.generate([1] * 16, 40, temperature=0.0)) == 40  # the new tokens slide
    with pytest.raises(CRuntimeError, match="exceed the session's context"):
        model.logits([1] * 17)
    with pytest.raises(CRuntimeError, match="context length 33"):
        Model(small_file, n_ctx=33)  # max_seq_len is 32
    with pytest.raises(CRuntimeError, match="outside the vocabulary"):
        model.logits([0, 10_000])
    done = _run_cli("-m", str(small_file), "-p", "First Citizen:\n" * 3, "-n", "5", check=False)
    assert done.returncode == 1 and done.stdout == b""
    assert b"longer than the context of 32" in done.stderr and done.stderr.count(b"\n") == 1
    binding = subprocess.run([sys.executable, "-m", "onebit.run.c", "-m", str(small_file), "-p", "First Citizen:\n" * 3,
                              "-n", "5"], capture_output=True)
    assert binding.returncode == 1 and binding.stdout == b"" and b"longer than the context of 32" in binding.stderr
    done = _run_cli("-m", str(small_file), "-p", "Z", "-n", "5", check=False)
    assert done.returncode == 1 and b"not in the char tokenizer" in done.stderr


def test_perplexity_matches_torch_windows(c_runtime, random_checkpoint, tmp_path):
    ckpt_dir = random_checkpoint(randomize=5)
    path = _export(ckpt_dir, tmp_path / "m.1bit")
    ckpt = load_checkpoint(ckpt_dir)
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 2
    (tmp_path / "t.txt").write_text(text)
    ids = ckpt.tokenizer.encode(text)
    nll, count = 0.0, 0
    with torch.no_grad():
        for start, stop in ppl_windows(len(ids), 32):
            logits, _ = ckpt.model(torch.tensor([ids[start:stop]]))
            targets = torch.tensor(ids[start + 1:stop + 1])
            nll += float(torch.nn.functional.cross_entropy(logits[0].double(), targets, reduction="sum"))
            count += len(targets)
    assert count == len(ids) - 1
    out = _run_cli("-m", str(path), "--ppl", str(tmp_path / "t.txt"), "--kv", "f32").stdout.decode().split()
    assert out[0] == "ppl" and int(out[5]) == count
    assert math.isclose(float(out[1]), math.exp(nll / count), rel_tol=1e-4)
    ppl, n = Model(path, kv="f32").perplexity(text)
    assert n == count and math.isclose(ppl, float(out[1]), rel_tol=1e-6)


def test_bench_line(c_runtime, small_file):
    done = _run_cli("-m", str(small_file), "-n", "8", "--bench", "--prompt-tokens", "8", "--threads", "2")
    assert b"bench:" not in done.stdout  # stats go to stderr only
    last = done.stderr.decode().strip().splitlines()[-1]
    assert last.startswith("bench: prefill_tok_s=") and last.endswith("threads=2")


def test_c_unit_tests_pass(c_runtime):
    done = subprocess.run(["make", "-C", str(RUNTIME), "tests"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    mine = [p for p in (RUNTIME / "build" / "tests").glob("test_*") if p.suffix == "" and p.name != "test_kernels"]
    assert mine
    for binary in mine:
        run = subprocess.run([str(binary)], cwd=RUNTIME, capture_output=True, text=True)
        assert run.returncode == 0, f"{binary.name}: {run.stdout[-1000:]}{run.stderr[-1000:]}"


# ----------------------------------------------------------------------------------------------
# the binding from Python threads, and its memory budget (onebit.run.c, not the server's extras)


@pytest.fixture(scope="session")
def varied_model(random_checkpoint, tmp_path_factory) -> Path:
    """Printable ASCII (any test text encodes); random norms and embeddings give varied text."""
    ckpt = random_checkpoint(randomize=3, vocab_size=96, max_seq_len=128, dim=64, ffn_dim=128,
                             tie_embeddings=False)
    out = tmp_path_factory.mktemp("threads") / "tiny.1bit"
    export_1bit(ckpt, out, ExportOptions())
    return out


def test_binding_threads_share_one_model_and_release_the_gil(c_runtime, varied_model):
    """Sessions over one SharedModel on several threads give what each gives alone; a C call lets
    other Python threads run (cffi drops the GIL), and a Model shared by threads takes turns."""
    shared = SharedModel(varied_model)
    settings = [SamplerConfig(temperature=0.8, seed=s) for s in range(4)]
    prompt = shared.encode("Threads:")

    def run(sampler: SamplerConfig) -> list[int]:
        return list(shared.session().stream(prompt, 200, sampler))

    alone = [run(s) for s in settings]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(run, settings)) == alone
    model = Model(varied_model)
    with ThreadPoolExecutor(4) as pool:  # one session: the lock serializes the calls
        got = list(pool.map(lambda s: model.generate(prompt, 200, temperature=0.8, seed=s.seed), settings))
    assert got == alone

    # the GIL: while one thread is inside one long C call, another keeps running Python
    session = shared.session()
    ticks: list[float] = []
    inside = threading.Event()

    def spin() -> None:
        inside.wait()
        while inside.is_set():
            ticks.append(time.perf_counter())

    spinner = threading.Thread(target=spin)
    spinner.start()
    inside.set()
    start = time.perf_counter()
    session.generate(prompt, 10000, temperature=0)  # one ob_generate, no callback
    end = time.perf_counter()
    inside.clear()
    spinner.join()
    middle = [t for t in ticks if start + 0.25 * (end - start) < t < start + 0.75 * (end - start)]
    assert middle, f"no Python ran during a {end - start:.2f} s C call: the GIL was held"


def test_onebit_run_max_memory_as_the_c_cli(c_runtime, varied_model):
    """`onebit run --max-memory` (the binding's CLI) takes the C CLI's byte counts and fails with its message."""
    from click.testing import CliRunner

    from onebit.run.c import main

    c = subprocess.run([str(CLI), "-m", str(varied_model), "-n", "2", "--max-memory", "64KiB"],
                       capture_output=True, text=True)
    assert c.returncode != 0
    runner = CliRunner()
    got = runner.invoke(main, ["-m", str(varied_model), "-n", "2", "--max-memory", "64KiB"])
    assert got.exit_code == 1 and got.stderr.strip() == c.stderr.strip()
    assert runner.invoke(main, ["-m", str(varied_model), "-n", "2", "--max-memory", "1G"]).exit_code == 0
    got = runner.invoke(main, ["-m", str(varied_model), "--max-memory", "0"])
    assert got.exit_code == 1 and got.stderr.startswith("error: --max-memory needs a positive byte count")
