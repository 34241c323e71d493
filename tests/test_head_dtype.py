"""The LM head in its own dtype (`onebit-export --head-dtype`, FORMAT.md "LM head"): an int4 head
(per-row scales, int8 activations, the int4 BitLinear kernels) in the NumPy reference, the C
runtime on every ISA and thread count, the cffi binding and the CLI; bad values are one clear line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onebit import packing
from onebit.compile.export import ExportOptions, export_1bit
from onebit.format import FormatError, read_1bit, write_1bit
from onebit.run.c import CRuntimeError, Model
from onebit.run.reference import KVCache, ReferenceModel
from test_runtime_c import CLI, REPO, _available_isas

# The reference's KV-cache here is f32, so the C runtime runs its f32 cache too (the f16 default is
# compared with the reference's f16 cache in test_runtime_c).

pytestmark = pytest.mark.skipif(shutil.which("cc") is None or shutil.which("make") is None,
                                reason="the C runtime needs cc and make")

# The body is fp32 with ISA-dependent reduction orders (TOL in test_runtime_c.py is 1e-4); the int4
# head then quantizes its input to int8, so a last-bit difference can flip one activation's rounding
# and move a logit by scale[r] * |q| / a: about 3e-4 of the largest logit in these random models.
# Every ISA gives the same bits (the head is exact integer math); a wrong layout is off by O(1).
TOL = 1e-3


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("embed", ["f16", "i8"])
def test_i4_head_is_stored_as_int4_and_matches_the_reference(c_runtime, random_checkpoint, tmp_path, tied, embed):
    ckpt = random_checkpoint(randomize=3, tie_embeddings=tied)
    path = tmp_path / "m.1bit"
    export_1bit(ckpt, path, ExportOptions("t2", embed, "i4"))
    f = read_1bit(path)
    assert f.meta["quant"]["head_dtype"] == "i4"
    head, emb = f.tensors["head.weight"], f.tensors["embed.weight"]
    vocab, dim = emb.shape
    assert head.dtype == "I4" and head.shape == (vocab, dim) and emb.dtype == {"f16": "F16", "i8": "I8"}[embed]
    assert f.tensors["head.weight.scale"].shape == (vocab,)
    # the codes are the searched-scale int4 quantization of the checkpoint's head (the embedding when tied)
    from onebit.train.checkpoint import load_checkpoint

    w = load_checkpoint(ckpt).model.state_dict()["embed.weight" if tied else "head.weight"].numpy()
    q, scale = packing.quantize_rows_mse(w, 7)
    np.testing.assert_array_equal(packing.unpack_i4(f.array("head.weight"), dim), q)
    np.testing.assert_array_equal(f.array("head.weight.scale"), scale)

    ref = ReferenceModel.load(path)
    assert ref.head_i4 is not None
    tokens = np.random.default_rng(3).integers(0, vocab, ref.cfg["max_seq_len"]).tolist()
    expected = ref.forward(tokens)
    assert _rel(Model(path, n_batch=8, kv="f32").logits(tokens), expected) < TOL
    assert _rel(Model(path, n_batch=1, threads=2, kv="f32").logits(tokens), expected) < TOL
    # the int4 head is not the float one: the file's head is really used
    f16_path = tmp_path / "f.1bit"
    export_1bit(ckpt, f16_path, ExportOptions("t2", embed))
    assert _rel(ReferenceModel.load(f16_path).forward(tokens), expected) > 1e-3


def test_head_dtype_equal_to_embed_stores_a_tied_head_once(random_checkpoint, tmp_path):
    ckpt = random_checkpoint(randomize=4)
    export_1bit(ckpt, tmp_path / "a.1bit", ExportOptions("t2", "i8", "i8"))
    export_1bit(ckpt, tmp_path / "b.1bit", ExportOptions("t2", "i8"))
    a, b = read_1bit(tmp_path / "a.1bit"), read_1bit(tmp_path / "b.1bit")
    assert "head.weight" not in a.tensors and set(a.tensors) == set(b.tensors)
    assert a.meta["quant"]["head_dtype"] == "i8" and "head_dtype" not in b.meta["quant"]


@pytest.fixture(scope="module")
def i4_model(random_checkpoint, tmp_path_factory) -> Path:
    ckpt = random_checkpoint(randomize=11, max_seq_len=256, dim=64, ffn_dim=128, tie_embeddings=False)
    path = tmp_path_factory.mktemp("i4head") / "m.1bit"
    export_1bit(ckpt, path, ExportOptions("t2", "f16", "i4"))
    return path


def _greedy_with_penalty(ref: ReferenceModel, prompt: list[int], n: int, penalty: float, window: int) -> list[int]:
    """The reference's greedy decode with the runtime's repetition penalty (sampler.c, SAMPLING.md):
    once per distinct id among the last `window` tokens, a positive logit / penalty, else * penalty."""
    cache = KVCache()
    logits = ref.forward(prompt, cache)[-1]
    seq, out = list(prompt), []
    while len(out) < n:
        logits = logits.copy()
        for t in dict.fromkeys(seq[-window:]):
            logits[t] = logits[t] / np.float32(penalty) if logits[t] > 0 else logits[t] * np.float32(penalty)
        token = int(np.argmax(logits))
        out.append(token)
        seq.append(token)
        logits = ref.forward([token], cache)[-1]
    return out


def test_greedy_identical_across_reference_isas_threads_and_cli(c_runtime, i4_model):
    prompt = [5, 17, 3, 9, 22]
    ref = ReferenceModel.load(i4_model)
    expected = ref.generate_greedy(prompt, 150)
    # a random model soon repeats itself; the penalty keeps greedy decoding moving
    varied = _greedy_with_penalty(ref, prompt, 150, 1.5, 32)
    assert len(set(varied)) > 10, "degenerate oracle output makes a weak test"
    for isa in _available_isas(i4_model):
        for threads in (1, 2):
            c_model = Model(i4_model, threads=threads, isa=isa, kv="f32")
            assert c_model.generate(prompt, 150, temperature=0.0) == expected, f"isa={isa} threads={threads}"
            got = c_model.generate(prompt, 150, temperature=0.0, repeat_penalty=1.5, repeat_window=32)
            assert got == varied, f"isa={isa} threads={threads}"
    # the CLI over a text prompt, against the reference
    text = "First Citizen:\n"
    c_model = Model(i4_model, threads=2)
    ids = c_model.encode(text)
    want = _greedy_with_penalty(ref, ids, 100, 1.5, 32)
    done = subprocess.run([str(CLI), "-m", str(i4_model), "-p", text, "-n", "100", "--temperature", "0",
                           "--repeat-penalty", "1.5", "--repeat-window", "32", "--kv", "f32"], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == text.encode() + c_model.decode_bytes(want)


def _with_meta(src: Path, dst: Path, edit) -> Path:
    f = read_1bit(src)
    meta = json.loads(json.dumps(f.meta))
    edit(meta)
    tensors = [(name, f.tensors[name]) for name in f.tensors]
    from onebit.format import TensorData

    write_1bit(dst, meta, [TensorData(n, t.dtype, t.shape, f.array(n), t.scale) for n, t in tensors])
    return dst


@pytest.mark.parametrize("bad", ["i3", 4, "I4"])
def test_bad_head_dtype_is_one_clear_line(c_runtime, i4_model, tmp_path, bad):
    path = _with_meta(i4_model, tmp_path / "bad.1bit", lambda m: m["quant"].__setitem__("head_dtype", bad))
    with pytest.raises(FormatError, match="head_dtype"):
        ReferenceModel.load(path)
    with pytest.raises(CRuntimeError, match="head_dtype"):
        Model(path)
    done = subprocess.run([str(CLI), "--model", str(path), "--prompt", "a", "-n", "1"], capture_output=True)
    err = done.stderr.decode().strip()
    assert done.returncode != 0 and "head_dtype" in err and len(err.splitlines()) == 1


def test_tied_file_without_its_int4_head_is_refused(c_runtime, i4_model, tmp_path):
    f = read_1bit(i4_model)
    from onebit.format import TensorData

    kept = [TensorData(n, t.dtype, t.shape, f.array(n), t.scale) for n, t in f.tensors.items()
            if not n.startswith("head.")]
    path = tmp_path / "nohead.1bit"
    write_1bit(path, f.meta, kept)
    with pytest.raises(FormatError, match="head.weight"):
        ReferenceModel.load(path)
    with pytest.raises(CRuntimeError, match="head.weight"):
        Model(path)


def test_export_cli_rejects_head_dtype_outside_1bit(random_checkpoint, tmp_path):
    ckpt = random_checkpoint()
    base = [sys.executable, "-m", "onebit.compile.export", str(ckpt)]
    done = subprocess.run(base + ["-o", str(tmp_path / "x.gguf"), "--format", "gguf", "--head-dtype", "i4"],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "--head-dtype needs --format 1bit" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.gguf").exists()
    done = subprocess.run(base + ["-o", str(tmp_path / "y.1bit"), "--head-dtype", "i2"], capture_output=True, text=True)
    assert done.returncode != 0 and "--head-dtype" in done.stderr and not (tmp_path / "y.1bit").exists()
    done = subprocess.run(base + ["-o", str(tmp_path / "z.1bit"), "--head-dtype", "i4"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert read_1bit(tmp_path / "z.1bit").tensors["head.weight"].dtype == "I4"


def test_bench_peers_int4_head_file_runs_as_the_reference_does(c_runtime, tmp_path):
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import bench_peers
    finally:
        sys.path.pop(0)
    sh = bench_peers.SHAPES["tiny"]
    i8 = bench_peers.write_onebit(tmp_path / "i8.1bit", sh, "t2", 0)
    i4 = bench_peers.write_onebit(tmp_path / "i4.1bit", sh, "t2", 0, "i4")
    head_i8, head_i4 = sh.vocab * sh.dim, sh.vocab * (sh.dim // 2)  # + one f32 scale per row in both
    assert i8 - i4 == head_i8 - head_i4
    ref = ReferenceModel.load(tmp_path / "i4.1bit")
    assert ref.head_i4 is not None
    tokens = list(range(1, 40))
    assert _rel(Model(tmp_path / "i4.1bit", threads=2, kv="f32").logits(tokens), ref.forward(tokens)) < TOL


def test_searched_int4_scales_never_lose_to_absmax():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((300, 96)).astype(np.float32) * rng.uniform(0.01, 3, (300, 1)).astype(np.float32)
    w[::7] = 0  # rows of zeros keep the EPS scale
    w[5, 3] = 40.0  # an outlier the search may clip
    q, scale = packing.quantize_rows_mse(w, 7, chunk=64)  # several chunks
    qa, sa = packing.quantize_rows(w, 7)
    assert q.dtype == np.int8 and np.abs(q).max() <= 7 and scale.dtype == np.float32 and (scale > 0).all()
    err = np.square(q * scale[:, None] - w).sum(axis=1)
    err_abs = np.square(qa * sa[:, None] - w).sum(axis=1)
    nz = err_abs > 0
    assert (err <= err_abs * (1 + 1e-6)).all() and np.median(err[nz] / err_abs[nz]) < 0.9
    np.testing.assert_array_equal(q[::7], 0)
    assert (scale <= sa).all() and (scale >= 0.5 * sa).all()
    np.testing.assert_array_equal(q, np.clip(np.rint(w / scale[:, None]), -7, 7))


# ----------------------------------------------------------------- the int8 head (int16 activations)

def test_int8_head_reference_is_exact_integer_math():
    from onebit.run.reference import Int8Head, int8_head, quantize_i16

    rng = np.random.default_rng(5)
    x = (rng.standard_normal((4, 97)) * [[1.0], [1e-3], [50.0], [0.0]]).astype(np.float32)
    x[1, 7] = np.nan  # NaN -> 0, ignored by the absmax
    xq, a = quantize_i16(x)
    assert a.dtype == np.float32 and xq.dtype == np.float64 and np.abs(xq).max() <= 32767
    for t in range(3):
        amax = np.float32(np.nanmax(np.abs(x[t])))
        assert a[t, 0] == np.float32(32767.0) / amax and np.abs(xq[t]).max() == 32767
    assert a[3, 0] == np.float32(32767.0) / np.float32(packing.EPS) and not xq[3].any() and xq[1, 7] == 0
    # half to even: with absmax 32767, a = 1 and x is rounded as it is
    xq, a = quantize_i16(np.array([[32767.0, 2.5, 3.5, -2.5, -0.5, 1.5]], np.float32))
    assert a[0, 0] == 1.0 and xq[0].tolist() == [32767, 2, 4, -2, 0, 2]
    # logits: f32(S) * (scale / a) with S the int64 sum, here far beyond int32 (extreme codes, K = 3000)
    codes = rng.integers(-128, 128, (50, 3000)).astype(np.int8)
    codes[0] = -128
    scale = rng.uniform(1e-3, 0.1, 50).astype(np.float32)
    x = rng.standard_normal((2, 3000)).astype(np.float32)
    x[1] = -1.0  # every activation -32767: row 0's sum is 3000 * 128 * 32767 > 2^31
    got = int8_head(x, Int8Head(np.ascontiguousarray(codes.T, dtype=np.float64), scale))
    xq, a = quantize_i16(x)
    S = xq.astype(np.int64) @ codes.T.astype(np.int64)
    assert S[1, 0] == 3000 * 128 * 32767
    want = np.array([[np.float32(S[t, r]) * (scale[r] / a[t, 0]) for r in range(50)] for t in range(2)], np.float32)
    np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module", params=[("f16", "i8", False), ("i8", None, True)], ids=["untied-i8", "tied-i8-embed"])
def i8_model(request, random_checkpoint, tmp_path_factory) -> tuple[Path, bool]:
    embed, head, tied = request.param
    ckpt = random_checkpoint(randomize=12, max_seq_len=256, dim=64, ffn_dim=128, tie_embeddings=tied)
    path = tmp_path_factory.mktemp("i8head") / "m.1bit"
    export_1bit(ckpt, path, ExportOptions("t2", embed, head))
    return path, tied


def test_int8_head_identical_across_reference_isas_and_threads(c_runtime, i8_model):
    """Logits against the reference on every ISA and 1 / 2 threads; greedy output identical (a
    random tied model only repeats its prompt's last token, so greedy decoding is compared untied)."""
    path, tied = i8_model
    ref = ReferenceModel.load(path)
    assert ref.head_i8 is not None
    tokens = np.random.default_rng(4).integers(0, ref.cfg["vocab_size"], 64).tolist()
    expected = ref.forward(tokens)
    prompt = [5, 17, 3, 9, 22]
    want = ref.generate_greedy(prompt, 120)
    varied = _greedy_with_penalty(ref, prompt, 120, 1.5, 32)
    assert tied or len(set(varied)) > 10, "degenerate oracle output makes a weak test"
    for isa in _available_isas(path):
        for threads in (1, 2):
            c_model = Model(path, threads=threads, isa=isa, n_batch=8, kv="f32")
            assert _rel(c_model.logits(tokens), expected) < TOL, f"isa={isa} threads={threads}"
            assert c_model.generate(prompt, 120, temperature=0.0) == want, f"isa={isa} threads={threads}"
            got = c_model.generate(prompt, 120, temperature=0.0, repeat_penalty=1.5, repeat_window=32)
            assert got == varied, f"isa={isa} threads={threads}"
