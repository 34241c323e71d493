"""onebit against llama.cpp, side by side in one run, on the same random ternary model.

    python tools/bench_peers.py [--shape 134m|2b4t] [--threads 1,2] [--rounds N] [--tests ...]
    python tools/bench_peers.py --shape 2b4t --prepare     # build and write the files only (untimed)

What it does, in order:
  1. Builds llama.cpp's llama-bench and llama-quantize from the tree vendored in the PyPI sdist of
     llama-cpp-python==0.3.36 (`pip download --no-deps --no-binary :all:`), Release with native
     CPU flags, cached under ~/.cache/onebit/llamacpp (ONEBIT_CACHE moves it).
  2. Writes one random ternary model (values -s/0/+s, one scale s per tensor) for every engine,
     cached under ~/.cache/onebit/bench_peers: `.1bit` with T2 and with T1.6 layers (int8 head)
     for onebit-run, GGUF through the PyPI `gguf` package with TQ2_0 and with TQ1_0 layers (Q8_0
     head, f16 embedding when the head is untied) for llama-bench.  The GGUF writer is checked
     once against llama-quantize: a small F32 GGUF of the same kind quantized by llama-quantize
     must equal the writer's TQ2_0 / TQ1_0 file tensor by tensor, byte for byte.  Asked for by
     --engines (not in the default list), the 4-bit-head pair: "onebit T2 i4-head" (the T2 file
     with an int4 head, quant.head_dtype i4) and "llama.cpp TQ2_0 Q4_0-head" (the TQ2_0 file with
     a Q4_0 head); the table then ends with their own ratio line.
  3. Measures the machine's read bandwidth (runtime_c bench_kernels --read-bw) on a buffer of the
     bytes one decoded token reads, at each thread count, interleaved with the engines: once a
     round, and again just before every tg128 run, which that run's share is then taken against
     (the "paired" roofline: on a shared host the bandwidth moves by 20 % between minutes, and the
     best decode and the best read loop of a run need not fall in the same minute).
  4. Runs every engine interleaved, several rounds: decode from an empty context (tg128, as
     llama-bench), decode at depth 512, prefill 128 and 512 (each engine's own timers), and one
     cold-process run that prefills 128 tokens: its wall time is the time to first token (the
     file is read once just before, so that it sits in the page cache), minus the engine's own
     prefill time it is the startup (load) time; its peak RSS is the process's.
  5. Prints the table (best and median of the rounds, each engine's share of the roofline), each
     engine's tg128 scaling from 1 thread up beside the read loop's own (the host decides how far
     a memory-bound decode can scale), and last a machine-readable line, best onebit T2 over best llama.cpp TQ2_0:
         ratio decode_1t=X decode_2t=Y prefill_1t=Z prefill_2t=W
     (decode = tg128, prefill = pp128; a missing thread count prints nan).

Shapes: 134m is the llama shape of ANCHORS.md (dim 768, 12 layers, 12 heads, ffn 2048, SiLU-gated,
vocab 32000, untied head): llama.cpp runs it with its `llama` architecture.  2b4t is the BitNet
b1.58 2B4T shape (dim 2560, 30 layers, 20 heads / 5 KV heads, ffn 6912, ReLU^2-gated with SubLN,
RoPE theta 500000, vocab 128256, tied embedding): llama.cpp runs it with its `bitnet`
architecture (per-tensor `.scale` tensors, SubLN, tied Q8_0 token embedding as the head); note
that llama.cpp's bitnet graph gates with SiLU, not ReLU^2 (same matrices, same bytes).

onnxruntime is the third peer ("onnxruntime MatMulNBits", 134m shape only): tools/bench_ort_peer.py
exports onebit's own ONNX graph of the same random model (MatMulNBits bits 2, block 128, accuracy
level 4; its head is fp32, as the exporter writes it) and times tg128 / pp128 / pp512 in a fresh
process at each thread count.  It has no decode-at-depth or TTFT test here ("-" in the table), and
at the 2b4t shape it is not run: the exporter goes through a 2.4B-parameter fp32 PyTorch model.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np
from machine import cpu_name  # tools/machine.py

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from onebit import packing  # noqa: E402
from onebit.config import ModelConfig  # noqa: E402
from onebit.format import TensorData, bitlinear_shapes, float_shapes, write_1bit  # noqa: E402

CACHE = Path(os.environ.get("ONEBIT_CACHE", Path.home() / ".cache" / "onebit"))
LLAMA_PKG, LLAMA_VERSION = "llama-cpp-python", "0.3.36"
MODEL_VERSION = 1  # bump when the files written below change
ENGINES = "onebit T2,onebit T1.6,llama.cpp TQ2_0,llama.cpp TQ1_0,onnxruntime MatMulNBits"
# the 4-bit-head pair (not in the default list): onebit's int4 head (per-row scales, int8 activations)
# against llama.cpp's Q4_0 head (blocks of 32, f16 scales), the same layers as onebit T2 / llama.cpp TQ2_0
HEAD4 = ("onebit T2 i4-head", "llama.cpp TQ2_0 Q4_0-head")
ORT = "onnxruntime MatMulNBits"
ORT_TESTS = ("tg128", "pp128", "pp512")
TESTS = ("tg128", "tg128@d512", "pp128", "pp512", "ttft")


@dataclass(frozen=True)
class Shape:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab: int
    activation: str
    subln: bool
    tied: bool
    rope_theta: float
    llama_arch: str


SHAPES = {
    "134m": Shape(768, 12, 12, 12, 2048, 32000, "silu", False, False, 10000.0, "llama"),
    "2b4t": Shape(2560, 30, 20, 5, 6912, 128256, "relu2", True, True, 500000.0, "bitnet"),
    "tiny": Shape(256, 2, 4, 2, 512, 512, "silu", False, False, 10000.0, "llama"),  # the quantize check
}
MAX_CTX = 1024


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ llama.cpp

@dataclass
class Llama:
    bench: Path
    quantize: Path
    commit: str


def build_llama() -> Llama:
    """llama-bench + llama-quantize from the pinned sdist; cached, rebuilt only if missing."""
    root = CACHE / "llamacpp"
    src = root / f"llama_cpp_python-{LLAMA_VERSION}"
    vendor = src / "vendor" / "llama.cpp"
    build = root / "build"
    bench, quant = build / "bin" / "llama-bench", build / "bin" / "llama-quantize"
    root.mkdir(parents=True, exist_ok=True)
    if not (bench.exists() and quant.exists()):
        sdist = root / f"llama_cpp_python-{LLAMA_VERSION}.tar.gz"
        if not sdist.exists():
            log(f"downloading the {LLAMA_PKG}=={LLAMA_VERSION} sdist from PyPI")
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            f"{LLAMA_PKG}=={LLAMA_VERSION}", "-d", str(root)], check=True, stdout=sys.stderr)
        if not vendor.exists():
            with tarfile.open(sdist) as tf:
                tf.extractall(root, filter="data")
        log("building llama-bench and llama-quantize (Release, native CPU flags, -j2); several minutes")
        gen = ["-G", "Ninja"] if shutil.which("ninja") else []
        subprocess.run(["cmake", "-S", str(vendor), "-B", str(build), *gen, "-DCMAKE_BUILD_TYPE=Release",
                        "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                        "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_TOOLS=ON",
                        "-DBUILD_SHARED_LIBS=OFF"], check=True, stdout=sys.stderr)
        subprocess.run(["cmake", "--build", str(build), "-j2", "--target", "llama-bench", "llama-quantize"],
                       check=True, stdout=sys.stderr)
    git = subprocess.run(["git", "-C", str(vendor), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return Llama(bench, quant, git.stdout.strip() if git.returncode == 0 else "unknown")


# ------------------------------------------------------------------------------------ the model

def onebit_config(sh: Shape) -> ModelConfig:
    return ModelConfig(vocab_size=sh.vocab, dim=sh.dim, n_layers=sh.n_layers, n_heads=sh.n_heads,
                       n_kv_heads=sh.n_kv_heads, ffn_dim=sh.ffn_dim, max_seq_len=MAX_CTX,
                       rope_theta=sh.rope_theta, activation=sh.activation, gated=True, subln=sh.subln,
                       tie_embeddings=sh.tied).validate()


def ternary(name: str, n: int, k: int, seed: int) -> tuple[np.ndarray, float]:
    """The codes in {-1, 0, 1} and the scale of one BitLinear tensor, the same for every engine."""
    rng = np.random.default_rng([seed, *name.encode()])
    return rng.integers(-1, 2, size=(n, k), dtype=np.int8), float(np.float32(rng.uniform(0.01, 0.03)))


def head_matrix(sh: Shape, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 7])
    return rng.standard_normal((sh.vocab, sh.dim), dtype=np.float32)


def write_onebit(path: Path, sh: Shape, pack: str, seed: int, head_dtype: str = "i8") -> int:
    """Writes the .1bit; returns the bytes one decoded token reads (layers + head).  head_dtype i4:
    an int4 head (quant.head_dtype, FORMAT.md "LM head"), stored besides the int8 embedding."""
    cfg = onebit_config(sh)
    pack_fn = packing.PACKERS[pack][0]
    dtype = {"t2": "T2", "t1.6": "T1_6"}[pack]
    tensors, per_token = [], 0
    for name, (n, k) in bitlinear_shapes(cfg.to_dict()).items():
        codes, s = ternary(name, n, k, seed)
        packed = pack_fn(codes)
        per_token += packed.nbytes
        tensors.append(TensorData(name, dtype, (n, k), packed, s))
    w = head_matrix(sh, seed)
    q, qs = packing.quantize_rows_i8(w)
    head_names = ["embed.weight"] if sh.tied or head_dtype == "i4" else ["embed.weight", "head.weight"]
    for name in head_names:
        tensors += [TensorData(name, "I8", q.shape, q), TensorData(name + ".scale", "F32", qs.shape, qs)]
    if head_dtype == "i4":
        q, qs = packing.quantize_rows_mse(w, 7)
        q = packing.pack_i4(q)
        tensors += [TensorData("head.weight", "I4", w.shape, q), TensorData("head.weight.scale", "F32", qs.shape, qs)]
    del w
    per_token += q.nbytes + qs.nbytes
    for name, shape in float_shapes(cfg.to_dict()).items():
        if name not in ("embed.weight", "head.weight"):
            tensors.append(TensorData(name, "F32", shape, np.ones(shape, dtype=np.float32)))
    pieces = [b"<|endoftext|>"] + [bytes([b]) for b in range(256)]
    pieces += [f"t{i}".encode() for i in range(sh.vocab - len(pieces))]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(np.int32)
    tensors += [TensorData("tokenizer.tokens", "U8", (int(offsets[-1]),), np.frombuffer(b"".join(pieces), np.uint8)),
                TensorData("tokenizer.offsets", "I32", offsets.shape, offsets)]
    meta = {"config": cfg.to_dict(),
            "quant": {"weights": "ternary", "pack": pack, "activations": "int8-absmax-per-token", "embed_dtype": "i8",
                      **({"head_dtype": head_dtype} if head_dtype != "i8" else {})},
            "tokenizer": {"type": "bpe", "vocab_size": sh.vocab, "pretokenizer": "gpt2-bytelevel",
                          "special_tokens": {"<|endoftext|>": 0}},
            "provenance": {"onebit_version": "bench_peers", "step": 0, "val_loss": None, "source": "random"}}
    write_1bit(path, meta, tensors)
    return per_token


GGUF_NAMES = {"attn.q_proj": "attn_q", "attn.k_proj": "attn_k", "attn.v_proj": "attn_v", "attn.o_proj": "attn_output",
              "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def write_gguf(path: Path, sh: Shape, qtype: str, seed: int, head_q: str = "Q8_0") -> int:
    """Writes the GGUF (qtype TQ2_0, TQ1_0 or F32 layers; a Q8_0 or Q4_0 head); returns the bytes one
    decoded token reads."""
    import gguf
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    from onebit.compile.gguf import add_hparams

    arch = sh.llama_arch
    cfg = onebit_config(sh)
    wr = gguf.GGUFWriter(str(path), arch)
    add_hparams(wr, cfg)
    wr.add_tokenizer_model("none")
    ftype = {"TQ2_0": gguf.LlamaFileType.MOSTLY_TQ2_0, "TQ1_0": gguf.LlamaFileType.MOSTLY_TQ1_0,
             "F32": gguf.LlamaFileType.ALL_F32}[qtype]
    wr.add_file_type(ftype)
    per_token = 0
    scaled = arch == "bitnet"  # bitnet: codes in the blocks, the scale in a `.scale` tensor
    for name, (n, k) in bitlinear_shapes(cfg.to_dict()).items():
        codes, s = ternary(name, n, k, seed)
        layer, kind = name.split(".", 2)[1], name.split(".", 2)[2].rsplit(".", 1)[0]
        gname = f"blk.{layer}.{GGUF_NAMES[kind]}"
        x = codes.astype(np.float32) if scaled else codes.astype(np.float32) * np.float32(s)
        data = x if qtype == "F32" else quants.quantize(x, Q[qtype])
        per_token += data.nbytes
        wr.add_tensor(gname + ".weight", data, raw_dtype=None if qtype == "F32" else Q[qtype])
        if scaled:
            wr.add_tensor(gname + ".scale", np.array([s], dtype=np.float32))
    w = head_matrix(sh, seed)
    hq = Q[head_q]
    head = w if qtype == "F32" else np.concatenate([quants.quantize(w[i:i + 8192], hq)
                                                    for i in range(0, sh.vocab, 8192)])
    per_token += head.nbytes
    if sh.tied:  # the bitnet graph uses token_embd as the head
        wr.add_tensor("token_embd.weight", head, raw_dtype=None if qtype == "F32" else hq)
    else:
        wr.add_tensor("token_embd.weight", w.astype(np.float16))
        wr.add_tensor("output.weight", head, raw_dtype=None if qtype == "F32" else hq)
    del w
    ones = lambda m: np.ones(m, dtype=np.float32)  # noqa: E731
    for i in range(sh.n_layers):
        wr.add_tensor(f"blk.{i}.attn_norm.weight", ones(sh.dim))
        wr.add_tensor(f"blk.{i}.ffn_norm.weight", ones(sh.dim))
        if sh.subln:
            wr.add_tensor(f"blk.{i}.attn_sub_norm.weight", ones(sh.dim))
            wr.add_tensor(f"blk.{i}.ffn_sub_norm.weight", ones(sh.ffn_dim))
    wr.add_tensor("output_norm.weight", ones(sh.dim))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return per_token


def write_atomic(path: Path, fn) -> int:
    """fn(temporary path) writes the file; it appears under `path` only when complete."""
    tmp = path.with_name(path.name + ".part")
    result = fn(tmp)
    os.replace(tmp, path)
    return result


def models(shape: str, seed: int, wanted: list[str] | None = None) -> tuple[Path, dict]:
    """The cached model files of a shape; returns the folder and {engine: (file, bytes per token)}.
    With `wanted`, only those engines' files (and onebit T2's, the roofline's size) are written."""
    sh = SHAPES[shape]
    d = CACHE / "bench_peers" / f"{shape}-seed{seed}-v{MODEL_VERSION}"
    d.mkdir(parents=True, exist_ok=True)
    info_path = d / "files.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    jobs = {"onebit T2": ("model-t2.1bit", lambda p: write_onebit(p, sh, "t2", seed)),
            "onebit T1.6": ("model-t16.1bit", lambda p: write_onebit(p, sh, "t1.6", seed)),
            "llama.cpp TQ2_0": ("model-tq2_0.gguf", lambda p: write_gguf(p, sh, "TQ2_0", seed)),
            "llama.cpp TQ1_0": ("model-tq1_0.gguf", lambda p: write_gguf(p, sh, "TQ1_0", seed))}
    head4 = {"onebit T2 i4-head": ("model-t2-i4head.1bit", lambda p: write_onebit(p, sh, "t2", seed, "i4")),
             "llama.cpp TQ2_0 Q4_0-head": ("model-tq2_0-q4_0head.gguf",
                                           lambda p: write_gguf(p, sh, "TQ2_0", seed, "Q4_0"))}
    jobs.update(head4)
    if wanted is not None:
        jobs = {e: job for e, job in jobs.items() if e in wanted or e == "onebit T2"}
    else:
        jobs = {e: job for e, job in jobs.items() if e not in head4}
    if shape != "tiny" and ORT not in info and sh.n_layers <= 12 and (wanted is None or ORT in wanted):  # ONNX peer
        p = d / "onnx"
        log(f"exporting {p} (onnxruntime peer) ...")
        t0 = time.time()
        subprocess.run([sys.executable, str(REPO / "tools" / "bench_ort_peer.py"), "export", str(p), "--shape", shape,
                        "--seed", str(seed)], check=True, stdout=sys.stderr)
        onnx_bytes = (p / "model.onnx").stat().st_size
        gathered = sh.vocab * sh.dim * 4 if not sh.tied else 0  # the fp32 embedding: one row per token
        info[ORT] = {"file": "onnx/model.onnx", "bytes_per_token": onnx_bytes - gathered}
        info_path.write_text(json.dumps(info, indent=1))
        log(f"  {onnx_bytes / 2**20:.0f} MiB in {time.time() - t0:.0f} s")
    for engine, (fname, fn) in jobs.items():
        p = d / fname
        if engine not in info or not p.exists():
            log(f"writing {p} ...")
            t0 = time.time()
            per_token = write_atomic(p, fn)
            info[engine] = {"file": fname, "bytes_per_token": per_token}
            info_path.write_text(json.dumps(info, indent=1))
            log(f"  {p.stat().st_size / 2**20:.0f} MiB in {time.time() - t0:.0f} s")
    return d, info


def quantize_check(llama: Llama, seed: int) -> str:
    """llama-quantize's TQ2_0 / TQ1_0 of an F32 GGUF must equal the gguf package's, tensor by tensor."""
    import gguf

    d = CACHE / "bench_peers" / f"quantize-check-seed{seed}-v{MODEL_VERSION}"
    d.mkdir(parents=True, exist_ok=True)
    sh = SHAPES["tiny"]
    f32 = d / "tiny-f32.gguf"
    if not f32.exists():
        write_atomic(f32, lambda p: write_gguf(p, sh, "F32", seed))
    lines = []
    for qtype in ("TQ2_0", "TQ1_0"):
        ours, theirs = d / f"tiny-{qtype}-gguf.gguf", d / f"tiny-{qtype}-llama-quantize.gguf"
        if not ours.exists():
            write_atomic(ours, lambda p, q=qtype: write_gguf(p, sh, q, seed))
        if not theirs.exists():
            subprocess.run([str(llama.quantize), "--output-tensor-type", "q8_0", "--token-embedding-type", "f16",
                            str(f32), str(theirs), qtype], check=True, capture_output=True)
        a = {t.name: t for t in gguf.GGUFReader(str(ours)).tensors}
        b = {t.name: t for t in gguf.GGUFReader(str(theirs)).tensors}
        differ = [n for n in a if n not in b or a[n].tensor_type != b[n].tensor_type
                  or bytes(np.asarray(a[n].data).tobytes()) != bytes(np.asarray(b[n].data).tobytes())]
        differ += [n for n in b if n not in a]
        lines.append(f"{qtype}: {len(a) - len(differ)}/{len(a)} tensors byte-identical"
                     + (f", differ: {', '.join(differ[:6])}" if differ else ""))
    return "; ".join(lines)


# ------------------------------------------------------------------------------------ running

@dataclass
class Sample:
    engine: str
    threads: int
    test: str
    tok_s: float | None = None
    wall_s: float | None = None
    startup_s: float | None = None
    rss_mib: float | None = None
    bw_gbs: float | None = None  # tg128: the read loop's GB/s just before this run (the paired roofline)
    repacked: bool = False  # onebit: the loader copied the ternary weights into T2X (2 bits a weight)


GNU_TIME = Path("/usr/bin/time")


def run_proc(cmd: list[str]) -> tuple[str, float, float | None]:
    """Runs cmd; returns (stdout + stderr, wall seconds, peak RSS MiB or None).

    The peak RSS comes from GNU time, not from wait4 here: Linux keeps a process's RSS high-water
    mark across exec, so a child forked straight from this (large) Python process would report
    this process's RSS.  The wall time includes GNU time's fork + exec (about a millisecond)."""
    rss_file = CACHE / "bench_peers" / f"rss-{os.getpid()}.txt"
    wrap = [str(GNU_TIME), "-f", "%M", "-o", str(rss_file)] if GNU_TIME.exists() else []
    t0 = time.perf_counter()
    done = subprocess.run(wrap + cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    text = done.stdout.decode("utf-8", "replace")
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {text.strip()[-400:]}")
    rss = None
    if wrap:
        rss = float(rss_file.read_text().split()[-1]) / 1024.0
        rss_file.unlink()
    return text, wall, rss


def onebit_cmd(cli: Path, model: Path, threads: int, test: str, kv: str) -> tuple[list[str], str]:
    prompt, n = {"tg128": (1, 129), "tg128@d512": (512, 129), "pp128": (128, 1), "pp512": (512, 1),
                 "ttft": (128, 1)}[test]
    cmd = [str(cli), "-m", str(model), "--bench", "--prompt-tokens", str(prompt), "-n", str(n),
           "--temperature", "0", "--threads", str(threads), "--ctx", str(prompt + n), "--kv", kv]
    return cmd, "decode_tok_s" if test.startswith("tg") else "prefill_tok_s"


def run_onebit(cli: Path, model: Path, engine: str, threads: int, test: str, kv: str) -> Sample:
    cmd, key = onebit_cmd(cli, model, threads, test, kv)
    text, wall, rss = run_proc(cmd)
    m = re.search(r"bench: prefill_tok_s=([\d.]+) decode_tok_s=([\d.]+)", text)
    if not m:
        raise RuntimeError(f"no bench line from {' '.join(cmd)}: {text.strip()[-300:]}")
    vals = {"prefill_tok_s": float(m.group(1)), "decode_tok_s": float(m.group(2))}
    s = Sample(engine, threads, test, vals[key], wall, None, rss)
    s.repacked = "repacked to T2X at load" in text
    if test == "ttft":
        pm = re.search(r"prefill: \d+ tokens in ([\d.]+) ms", text)
        s.startup_s = wall - float(pm.group(1)) / 1e3 if pm else None
    return s


def run_llama(llama: Llama, model: Path, engine: str, threads: int, test: str) -> Sample:
    args = {"tg128": ["-p", "0", "-n", "128"], "tg128@d512": ["-p", "0", "-n", "128", "-d", "512"],
            "pp128": ["-p", "128", "-n", "0"], "pp512": ["-p", "512", "-n", "0"],
            "ttft": ["-p", "128", "-n", "0", "--no-warmup"]}[test]
    cmd = [str(llama.bench), "-m", str(model), "-t", str(threads), "-r", "1", "-o", "json", *args]
    text, wall, rss = run_proc(cmd)
    j = json.loads(text[text.index("["):text.rindex("]") + 1])[0]
    s = Sample(engine, threads, test, float(j["avg_ts"]), wall, None, rss)
    if test == "ttft":
        s.startup_s = wall - float(j["avg_ns"]) / 1e9
    return s


def run_ort(model: Path, engine: str, threads: int, test: str) -> Sample:
    cmd = [sys.executable, str(REPO / "tools" / "bench_ort_peer.py"), "time", str(model.parent), "--threads",
           str(threads), "--test", test]
    text, wall, rss = run_proc(cmd)
    m = re.search(r"bench: prefill_tok_s=([\d.]+) decode_tok_s=([\d.]+)", text)
    if not m:
        raise RuntimeError(f"no bench line from {' '.join(cmd)}: {text.strip()[-300:]}")
    return Sample(engine, threads, test, float(m.group(2 if test.startswith("tg") else 1)), wall, None, rss)


def read_bw(tool: Path, mib: int, threads: int) -> float:
    out = subprocess.run([str(tool), "--read-bw", str(mib), "--threads", str(threads), "--reps", "5"],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"best_gbs=([\d.]+)", out).group(1))


# ------------------------------------------------------------------------------------ report

def fmt(xs: list[float], digits: int = 1, best=max) -> str:
    """best / median; best is max for speeds and peak RSS (the bound that counts), min for times."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{best(xs):.{digits}f} / {statistics.median(xs):.{digits}f}"


def warm(path: Path) -> None:
    """Reads path once, so that a cold-process run finds it in the page cache.  Without it a 2b4t
    file that the host had evicted in between cost onebit's loader 2-3 s of disk reads in one round
    of a run (session 30), which the startup column then showed as load time."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


@click.command()
@click.option("--shape", type=click.Choice(["134m", "2b4t"]), default="134m", show_default=True,
              help="model shape (see the module docstring)")
@click.option("--threads", default="1,2", show_default=True, help="comma-separated thread counts")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1, 100),
              help="interleaved rounds; the table shows best / median over them")
@click.option("--tests", default=",".join(TESTS), show_default=True,
              help=f"comma-separated subset of {', '.join(TESTS)}")
@click.option("--engines", default=ENGINES, show_default=True,
              help="comma-separated engines")
@click.option("--seed", default=0, show_default=True, help="seed of the random model")
@click.option("--onebit-run", "cli", type=click.Path(path_type=Path), default=None,
              help="onebit-run binary  [default: runtime_c/build/onebit-run, built with make]")
@click.option("--build-dir", default="build", show_default=True,
              help="runtime_c BUILD folder for onebit-run and bench_kernels when --onebit-run is not given")
@click.option("--kv", type=click.Choice(["f32", "f16"]), default="f16", show_default=True,
              help="onebit-run's KV-cache type (f16: its default and llama-bench's)")
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="also write every sample here")
@click.option("--prepare", is_flag=True, default=False, show_default=True,
              help="only build llama.cpp and onebit-run and write the engines' model files, then exit: run it "
                   "outside a timing slot (a 2b4t file takes minutes), the timed run finds them cached")
def main(shape: str, threads: str, rounds: int, tests: str, engines: str, seed: int, cli: Path | None,
         build_dir: str, kv: str, json_out: Path | None, prepare: bool) -> None:
    """Side-by-side decode / prefill / startup / RSS of onebit-run and llama-bench on one model."""
    counts = [int(t) for t in threads.split(",")]
    test_list = [t for t in tests.split(",") if t]
    engine_list = [e.strip() for e in engines.split(",") if e.strip()]
    for t in test_list:
        if t not in TESTS:
            raise click.BadParameter(f"unknown test {t!r}", param_hint="--tests")
    if shape != "134m" and ORT in engine_list:
        engine_list.remove(ORT)
        log(f"{ORT}: not run at shape {shape} (see the module docstring)")
    subprocess.run(["make", "-s", "-C", str(REPO / "runtime_c"), f"BUILD={build_dir}", "all", "bench"],
                   check=True, stdout=sys.stderr)
    if cli is None:
        cli = REPO / "runtime_c" / build_dir / "onebit-run"
    bw_tool = REPO / "runtime_c" / build_dir / "bench_kernels"
    llama = build_llama()
    check = quantize_check(llama, seed)
    log(f"llama-quantize cross-check: {check}")
    folder, info = models(shape, seed, engine_list)
    sizes = {e: (folder / info[e]["file"]).stat().st_size for e in info}
    if prepare:
        for e in engine_list:
            print(f"{e}: {folder / info[e]['file']} ({sizes[e] / 2**20:.0f} MiB)")
        return
    bw_mib = max(64, int(info["onebit T2"]["bytes_per_token"] / 2**20))
    load0 = os.getloadavg()
    samples: list[Sample] = []
    bws: dict[int, list[float]] = {n: [] for n in counts}
    for r in range(rounds):
        for n in counts:
            bws[n].append(read_bw(bw_tool, bw_mib, n))
            for test in test_list:
                for e in engine_list:
                    model = folder / info[e]["file"]
                    if e == ORT and test not in ORT_TESTS:
                        continue
                    # the host's bandwidth moves by 20 % between minutes: tg128 gets its own reading
                    bw_now = read_bw(bw_tool, bw_mib, n) if test == "tg128" else None
                    if test == "ttft":
                        warm(model)
                    s = (run_onebit(cli, model, e, n, test, kv) if e.startswith("onebit")
                         else run_ort(model, e, n, test) if e == ORT else run_llama(llama, model, e, n, test))
                    s.bw_gbs = bw_now
                    if bw_now:
                        bws[n].append(bw_now)
                    samples.append(s)
                    log(f"round {r + 1}/{rounds} threads {n} {test:11s} {e:16s} "
                        + f"{s.tok_s:8.1f} tok/s" + (f"  rss {s.rss_mib:.0f} MiB" if s.rss_mib else ""))
    load1 = os.getloadavg()

    def pick(e: str, n: int, t: str, field: str = "tok_s") -> list[float]:
        return [getattr(s, field) for s in samples if s.engine == e and s.threads == n and s.test == t]

    cpu = cpu_name()
    print(f"machine: {cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.machine()}")
    print(f"command: python tools/bench_peers.py --shape {shape} --threads {threads} --rounds {rounds}"
          + (f" --tests {tests}" if tests != ",".join(TESTS) else "")
          + (f" --engines '{engines}'" if engines != ENGINES else "") + (f" --kv {kv}" if kv != "f32" else ""))
    print(f"load average (1, 5, 15 min): before {' '.join(f'{x:.2f}' for x in load0)}, "
          f"after {' '.join(f'{x:.2f}' for x in load1)}")
    print(f"llama.cpp: {LLAMA_PKG}=={LLAMA_VERSION} sdist, commit {llama.commit}, llama-bench (f16 KV-cache); "
          f"architecture {SHAPES[shape].llama_arch}; onebit-run: {cli}, KV-cache {kv}")
    print(f"llama-quantize cross-check of the GGUF writer (shape tiny): {check}")
    print(f"shape {shape}: {json.dumps(asdict(SHAPES[shape]))}")
    def per_token(e: str) -> float:
        # a T1.6 file that the x86 loader copied into T2X is read at 2 bits a weight, as T2's
        if e.startswith("onebit T1.6") and any(x.repacked for x in samples if x.engine == e):
            return info["onebit T2"]["bytes_per_token"]
        return info[e]["bytes_per_token"]

    print("files: " + ", ".join(f"{e} {sizes[e] / 2**20:.0f} MiB ({per_token(e) / 2**20:.0f} MiB "
                                "read per token)" for e in engine_list))
    if any(e.startswith("onebit T1.6") and per_token(e) != info[e]["bytes_per_token"] for e in engine_list):
        print("onebit T1.6: repacked at load into T2X (2 bits a weight), so it reads onebit T2's bytes per token")
    print("read bandwidth (roofline), best over rounds: "
          + ", ".join(f"{n} thread{'s' if n > 1 else ''} {max(bws[n]):.1f} GB/s" for n in counts)
          + f" on a {bw_mib} MiB buffer")
    if ORT in engine_list:
        import onnxruntime
        print(f"onnxruntime: {onnxruntime.__version__}, onebit's ONNX export (MatMulNBits bits 2, block 128, "
              "accuracy level 4, fp32 head), intra_op_num_threads = threads; tg128, pp128, pp512 only")
    else:
        print(f"onnxruntime whole-model peer: not run (shape {shape} or --engines)")
    print(f"\ntok/s, best / median of {rounds} interleaved rounds; roofline = tg128 best x bytes read per token "
          "/ best read bandwidth at that thread count; paired = the same for each tg128 run over the read loop "
          "run just before it, best / median; startup = TTFT wall time - the engine's own pp128 time; "
          "TTFT and peak RSS (GNU time) from one fresh process per round, its file read just before (in the "
          "page cache); TTFT and startup lowest / median, peak RSS highest / median\n")
    cols = [t for t in test_list if t != "ttft"]
    head = ["engine", "threads", *cols]
    if "tg128" in test_list:
        head += ["tg128 % of roofline", "paired %"]
    if "ttft" in test_list:
        head += ["TTFT 128 (s)", "startup (s)", "peak RSS (MiB)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for n in counts:
        for e in engine_list:
            row = [e, str(n), *[fmt(pick(e, n, t)) for t in cols]]
            if "tg128" in test_list:
                best_tg = max(pick(e, n, "tg128"), default=0.0)
                row.append(f"{100 * best_tg * per_token(e) / (max(bws[n]) * 1e9):.0f}%")
                paired = [100 * x.tok_s * per_token(e) / (x.bw_gbs * 1e9) for x in samples
                          if x.engine == e and x.threads == n and x.test == "tg128" and x.bw_gbs]
                row.append(fmt(paired, 0))
            if "ttft" in test_list:
                row += [fmt(pick(e, n, "ttft", "wall_s"), 3, min), fmt(pick(e, n, "ttft", "startup_s"), 3, min),
                        fmt(pick(e, n, "ttft", "rss_mib"), 0)]
            print("| " + " | ".join(row) + " |")
    if "tg128" in test_list and 1 in counts and len(counts) > 1:
        # the host sets how far a memory-bound decode can scale: print the read loop's scaling beside it
        med, best = statistics.median, max
        for n in (c for c in counts if c > 1):
            eng = ", ".join(f"{e} {med(pick(e, n, 'tg128')) / med(pick(e, 1, 'tg128')):.2f} "
                            f"({best(pick(e, n, 'tg128')) / best(pick(e, 1, 'tg128')):.2f})"
                            for e in engine_list if pick(e, n, "tg128") and pick(e, 1, "tg128"))
            print(f"\n{n}-thread tg128 over 1-thread, medians (best over best): {eng}; "
                  f"the read loop {med(bws[n]) / med(bws[1]):.2f} ({best(bws[n]) / best(bws[1]):.2f})")
    if json_out:
        json_out.write_text(json.dumps({"samples": [asdict(s) for s in samples], "bandwidth": bws}, indent=1))

    def ratio(test: str, n: int, how, peer: str = "llama.cpp TQ2_0", ours: str = "onebit T2") -> float:
        a, b = pick(ours, n, test), pick(peer, n, test)
        return how(a) / how(b) if a and b else float("nan")

    parts = lambda how, peer="llama.cpp TQ2_0", ours="onebit T2": " ".join(  # noqa: E731
        f"{k}_{n}t={ratio(t, n, how, peer, ours):.2f}" for k, t in (("decode", "tg128"), ("prefill", "pp128"))
        for n in (1, 2))
    if all(e in engine_list for e in HEAD4):
        print(f"\n{HEAD4[0]} over {HEAD4[1]}, shape {shape}, medians: {parts(statistics.median, HEAD4[1], HEAD4[0])}")
    if ORT in engine_list:
        print(f"\nonebit T2 over {ORT}, shape {shape}, medians: {parts(statistics.median, ORT)}")
    print(f"\nonebit T2 over llama.cpp TQ2_0, shape {shape}, medians: {parts(statistics.median)}")
    print(f"ratio {parts(max)}")


def cli_main() -> None:
    """Failures of a tool or a build are one line (the command and its last output), no traceback."""
    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        detail = str(e).replace("\n", " ")
        print(f"error: {detail}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli_main()
