"""Mixed precision (a per-layer precision map): quantizers, the I4 layout, export and parity.

Every runtime must run a mixed model exactly as PyTorch's eval forward does; these tests build
their own small random models.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from onebit import packing
from onebit.compile.export import ExportOptions, export_1bit
from onebit.config import ConfigError, ModelConfig
from onebit.format import FormatError, read_1bit
from onebit.run.reference import KVCache, ReferenceModel
from onebit.sampling import SamplerConfig
from onebit.train import quant
from onebit.train.checkpoint import load_checkpoint
from onebit.train.sample import generate

from test_reference import assert_matches_torch

# every kind once, by layer and by projection; the first matching pattern decides
MAP = {"layers.0.attn.*": "int4", "*.down_proj": "int8", "layers.1.mlp.*": "binary", "*.up_proj": "int4"}


def _tokens(seed: int, vocab: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, n)


# ----------------------------------------------------------------------------------------------
# The map in the config


def test_precision_map_resolves_first_match():
    cfg = ModelConfig(n_layers=2, precision=MAP).validate()
    assert cfg.layer_quant("layers.0.attn.q_proj") == "int4"
    assert cfg.layer_quant("layers.0.mlp.down_proj.weight") == "int8"
    assert cfg.layer_quant("layers.1.mlp.down_proj") == "int8"  # *.down_proj comes first
    assert cfg.layer_quant("layers.1.mlp.up_proj") == "binary"
    assert cfg.layer_quant("layers.0.mlp.up_proj") == "int4"
    assert cfg.layer_quant("layers.1.attn.o_proj") == "ternary"  # unmatched: quant
    assert "precision" not in ModelConfig().to_dict()  # uniform configs are written as before
    assert ModelConfig.from_dict(cfg.to_dict()).precision == MAP


@pytest.mark.parametrize("bad, message", [
    ({"layers.0.*": "int2"}, "must be one of"),
    ({"layers.9.*": "int4"}, "matches no BitLinear"),
    ("int4", "must be an object"),
])
def test_precision_map_rejects(bad, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(n_layers=2, precision=bad).validate()


def test_old_config_json_loads_unchanged(tmp_path):
    data = ModelConfig().to_dict()
    (tmp_path / "config.json").write_text(json.dumps(data))
    cfg = ModelConfig.load(tmp_path / "config.json")
    assert cfg.precision == {} and not cfg.mixed and cfg.layer_quant("layers.0.attn.q_proj") == "ternary"


# ----------------------------------------------------------------------------------------------
# Quantizers and the I4 layout


@pytest.mark.parametrize("kind, levels", [("int4", 7), ("int8", 127)])
def test_int_quantizer_matches_numpy_reference(kind, levels):
    w = torch.randn(37, 70, generator=torch.Generator().manual_seed(levels))
    w[3] = 0  # an all-zero row takes the EPS floor
    codes, scale = quant.quantize_weight(w, kind)
    q_ref, s_ref = packing.quantize_rows(w.numpy(), levels)
    assert scale.shape == (37,) and scale.dtype == torch.float32
    np.testing.assert_array_equal(scale.numpy(), s_ref)
    np.testing.assert_array_equal(codes.numpy(), q_ref)
    assert codes.abs().max() == levels and (codes[3] == 0).all()
    # a plain loop for the definition (round half to even, clip to +-levels)
    row = w[5].double().numpy()
    s = np.float32(max(np.abs(row).max(), packing.EPS)) / np.float32(levels)
    expected = [min(max(round(float(np.float32(v) / s)), -levels), levels) for v in row]
    assert codes[5].tolist() == expected


def test_int_quantizer_ste_gradient_is_identity():
    layer_in = torch.randn(4, 64)
    from onebit.train.model import BitLinear

    lin = BitLinear(64, 16, "int4")
    lin.grad_scale = 2.0
    lin(layer_in).sum().backward()
    x_fake = quant.ste(layer_in, quant.quantize_activation(layer_in)[0] / quant.quantize_activation(layer_in)[1])
    expected = 2.0 * torch.ones(4, 16).T @ x_fake
    torch.testing.assert_close(lin.weight.grad, expected)


@pytest.mark.parametrize("k", [1, 31, 64, 65, 130, 200])
def test_i4_pack_round_trip(k):
    codes = np.random.default_rng(k).integers(-7, 8, (5, k))
    packed = packing.pack_i4(codes)
    assert packed.shape == (5, packing.i4_row_stride(k)) and packed.dtype == np.uint8
    np.testing.assert_array_equal(packing.unpack_i4(packed, k), codes)


def test_i4_layout_by_hand():
    codes = np.zeros((1, 70), dtype=np.int8)
    codes[0, 0], codes[0, 32], codes[0, 64] = -7, 7, 3
    packed = packing.pack_i4(codes)
    assert packed.shape == (1, 64)
    assert packed[0, 0] == (1 | (15 << 4))  # weight 0 low nibble, weight 32 high nibble, +8 each
    assert packed[0, 32] == (11 | (8 << 4))  # second block: weight 64; padding is nibble 8 (zero)
    assert (packed[0, 1:32] == 0x88).all() and (packed[0, 33:] == 0x88).all()
    with pytest.raises(ValueError, match="int4"):
        packing.pack_i4(np.array([[8]]))


# ----------------------------------------------------------------------------------------------
# Export and the NumPy reference


@pytest.fixture
def mixed_file(random_checkpoint, tmp_path):
    ckpt_dir = random_checkpoint(randomize=11, precision=MAP)
    out = tmp_path / "mixed.1bit"
    export_1bit(ckpt_dir, out, ExportOptions(pack="t1.6", embed_dtype="f32"))
    return ckpt_dir, out


def test_export_packs_each_layer_in_its_dtype(mixed_file):
    ckpt_dir, out = mixed_file
    f = read_1bit(out)
    cfg = load_checkpoint(ckpt_dir).config
    assert f.meta["quant"]["weights"] == "mixed" and f.meta["config"]["precision"] == MAP
    expected = {"ternary": "T1_6", "binary": "B1", "int4": "I4", "int8": "I8"}
    seen = set()
    for name in cfg.bitlinear_names():
        kind = cfg.layer_quant(name)
        seen.add(kind)
        assert f.tensors[name + ".weight"].dtype == expected[kind]
        if kind in ("int4", "int8"):
            assert f.tensors[name + ".weight.scale"].shape == (f.tensors[name + ".weight"].shape[0],)
    assert seen == set(expected)


def test_reference_matches_torch_on_a_mixed_model(mixed_file, monkeypatch):
    ckpt_dir, out = mixed_file
    ref = ReferenceModel.load(out)
    model = load_checkpoint(ckpt_dir).model
    tokens = _tokens(5, model.cfg.vocab_size, model.cfg.max_seq_len)
    assert_matches_torch(model, ref, tokens, ref.forward(tokens), monkeypatch)
    cache = KVCache()
    steps = [ref.forward(tokens[:9], cache)] + [ref.forward([t], cache) for t in tokens[9:]]
    assert_matches_torch(model, ref, tokens, np.concatenate(steps), monkeypatch)


def test_greedy_identical_torch_numpy_mixed(mixed_file):
    ckpt_dir, out = mixed_file
    ref = ReferenceModel.load(out)
    model = load_checkpoint(ckpt_dir).model
    prompt = _tokens(3, model.cfg.vocab_size, 6).tolist()
    n = 2 * model.cfg.max_seq_len  # past the context: one slide at least
    assert ref.generate_greedy(prompt, n) == generate(model, prompt, n, SamplerConfig(temperature=0))


def test_int8_layers_are_exact_past_fp32_range(random_checkpoint, tmp_path, monkeypatch):
    """K * 128 * 127 > 2^24: the eval forward and the reference still sum int8 products exactly."""
    ckpt_dir = random_checkpoint(randomize=3, ffn_dim=1536, precision={"*": "int8"})
    out = tmp_path / "i8.1bit"
    export_1bit(ckpt_dir, out, ExportOptions(embed_dtype="f32"))
    ref = ReferenceModel.load(out)
    model = load_checkpoint(ckpt_dir).model
    tokens = _tokens(8, model.cfg.vocab_size, 24)
    assert_matches_torch(model, ref, tokens, ref.forward(tokens), monkeypatch)


def test_reader_rejects_a_mixed_file_whose_dtypes_disagree(mixed_file, tmp_path):
    _, out = mixed_file
    f = read_1bit(out)
    meta = dict(f.meta)
    meta["config"] = {**meta["config"], "precision": {"*": "ternary"}}
    from onebit.format import TensorData, write_1bit

    tensors = [TensorData(t.name, t.dtype, t.shape, f.array(t.name), t.scale) for t in f.tensors.values()]
    bad = tmp_path / "bad.1bit"
    write_1bit(bad, meta, tensors)
    with pytest.raises(FormatError, match="expected T1_6"):
        read_1bit(bad)


# ----------------------------------------------------------------------------------------------
# ONNX graphs


def _ort_session(model, kind: str, **options):
    import onnxruntime as ort

    from onebit.compile.onnx_export import OnnxOptions, build_onnx

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    proto = build_onnx(model, kind, OnnxOptions(**options))
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def test_nbit_blocks_layout():
    from onebit.compile.onnx_export import pack_nbit_blocks

    codes = np.arange(40, dtype=np.uint8).reshape(1, 40) % 16
    packed = pack_nbit_blocks(codes, 4, 32)
    assert packed.shape == (1, 2, 16)  # K padded to 64, 32 weights a block in 16 bytes
    assert packed[0, 0, 0] == (0 | 1 << 4) and packed[0, 1, 3] == (6 | 7 << 4)  # weights 38, 39 are codes 6, 7
    assert packed[0, 1, 4] == 0x88  # padding is the zero point 8
    assert (pack_nbit_blocks(codes, 8, 16).reshape(1, -1)[0, :40] == codes[0]).all()


@pytest.mark.parametrize("kind, options", [("web", {}), ("web", dict(web_matmul="int8")), ("native", {}),
                                           ("native", dict(accuracy_level=0, block_size=32))])
def test_onnx_graphs_run_a_mixed_model(kind, options):
    from test_onnx import random_model, run, tokens

    model = random_model(5, precision=MAP)
    ids = tokens(model.cfg, 1, 24, seed=2)
    with torch.no_grad():
        ref, _ = model(torch.from_numpy(ids))
    logits, _ = run(_ort_session(model, kind, **options), model.cfg, ids)
    diff = np.abs(logits - ref.numpy())
    exact = kind == "web" or options.get("accuracy_level") == 0  # the tolerances of test_onnx.py
    assert np.median(diff) < (1e-5 if exact else 2e-3)
    assert diff.max() < (5e-3 if exact else 5e-2)


@pytest.fixture(scope="module")
def trained_mixed(tmp_path_factory, shakespeare_path, char_tokenizer):
    """A small mixed model trained briefly (every kind present), its .1bit and ONNX exports."""
    from onebit.compile.onnx_export import export_onnx
    from onebit.train.checkpoint import save_checkpoint
    from onebit.train.model import Transformer

    text = shakespeare_path.read_text(encoding="utf-8")[:200_000]
    data = torch.tensor(char_tokenizer.encode(text))
    cfg = ModelConfig(vocab_size=char_tokenizer.vocab_size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                      ffn_dim=128, max_seq_len=64, precision=MAP)
    torch.manual_seed(0)
    model = Transformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(100):
        starts = torch.randint(0, len(data) - 33, (16,), generator=gen)
        x = torch.stack([data[s:s + 32] for s in starts])
        y = torch.stack([data[s + 1:s + 33] for s in starts])
        loss = model.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 3.0  # learned something: uniform is ln(65) = 4.2
    root = tmp_path_factory.mktemp("mixed_trained")
    save_checkpoint(root / "ckpt", model, char_tokenizer, {"step": 100, "val_loss": loss.item()})
    export_1bit(root / "ckpt", root / "m.1bit", ExportOptions(pack="t2", embed_dtype="f32"))
    export_onnx(root / "ckpt", root / "onnx")
    return root / "ckpt", root / "m.1bit", root / "onnx"


def test_greedy_identical_across_pytorch_numpy_c_and_onnxruntime(trained_mixed, char_tokenizer, c_runtime):
    """One mixed model, greedy: PyTorch = NumPy reference = the C runtime (every ISA here, 1 and 2
    threads, through cffi and the CLI) = onnxruntime (both graphs)."""
    from onebit.run.c import Model
    from onebit.run.ort import OrtDecoder, generate_ort

    ckpt_dir, one_bit, onnx_dir = trained_mixed
    model = load_checkpoint(ckpt_dir).model
    text = "ROMEO:\nI"
    prompt = char_tokenizer.encode(text)
    greedy = SamplerConfig(temperature=0)
    expected = generate(model, prompt, 100, greedy)  # past the 64-token context: slides too
    assert len(set(expected)) > 5, "degenerate oracle output makes a weak test"
    assert ReferenceModel.load(one_bit).generate_greedy(prompt, 100) == expected
    assert generate_ort(OrtDecoder(onnx_dir, "web"), prompt, 100, greedy) == expected
    assert generate_ort(OrtDecoder(onnx_dir, "native"), prompt, 100, greedy) == expected
    for isa in _c_isas(one_bit):
        for threads in (1, 2):
            got = Model(one_bit, threads=threads, isa=isa, kv="f32").generate(prompt, 100, temperature=0.0)
            assert got == expected, f"isa={isa} threads={threads}"
    want_text = (text + char_tokenizer.decode(expected)).encode()
    for threads in ("1", "2"):
        cli = subprocess.run([str(c_runtime), "-m", str(one_bit), "-p", text, "-n", "100", "--temperature", "0",
                              "-t", threads, "--kv", "f32"], capture_output=True)
        assert cli.returncode == 0, cli.stderr.decode()
        assert cli.stdout == want_text
    sampled = SamplerConfig(temperature=0.9, top_k=20, top_p=0.95, seed=3)
    want = generate(model, prompt, 60, sampled)
    assert generate_ort(OrtDecoder(onnx_dir, "web"), prompt, 60, sampled) == want
    assert Model(one_bit, threads=2, kv="f32").generate(prompt, 60, temperature=0.9, top_k=20, top_p=0.95, seed=3) == want


# ----------------------------------------------------------------------------------------------
# The C runtime (onebit-run, onebit.run.c): int4 / int8 kernels, the map resolved from the metadata

needs_cc = pytest.mark.skipif(shutil.which("cc") is None or shutil.which("make") is None,
                              reason="the C runtime needs cc and make")


def _c_isas(path) -> list[str]:
    from onebit.run.c import CRuntimeError, Model

    isas = []
    for isa in ("scalar", "avx2", "avx512", "neon"):
        try:
            Model(path, isa=isa)
        except CRuntimeError:
            continue
        isas.append(isa)
    return isas


# patterns with '?', '[...]' and '[!...]': the C runtime's matcher must resolve them as fnmatchcase does
GLOB_MAP = {"layers.[!0].attn.?_proj": "int8", "layers.0.mlp.[gu]*": "binary", "*.down_proj": "int4",
            "layers.0.attn.[k-q]_proj": "int4"}


@needs_cc
@pytest.mark.parametrize("precision, pack, embed, shape", [
    (MAP, "t1.6", "f32", {}),
    (MAP, "t2", "i8", dict(quant="binary")),
    (GLOB_MAP, "t2", "f16", dict(tie_embeddings=False)),
    ({"*": "int8"}, "t2", "f32", dict(ffn_dim=1536)),  # K * 128 * 127 > 2^24: exact int32 sums
    ({"*": "int4"}, "t1.6", "f32", dict(dim=96, ffn_dim=200)),  # rows that are no multiple of 64
], ids=["map-t1.6", "map-binary-base-i8", "globs-f16", "int8-wide", "int4-odd-rows"])
def test_c_logits_match_numpy_reference_mixed(c_runtime, random_checkpoint, tmp_path, precision, pack, embed, shape):
    from onebit.run.c import Model

    from test_runtime_c import TOL, _rel

    out = tmp_path / "m.1bit"
    export_1bit(random_checkpoint(randomize=4, precision=precision, **shape), out, ExportOptions(pack=pack, embed_dtype=embed))
    ref = ReferenceModel.load(out)
    tokens = _tokens(9, ref.cfg["vocab_size"], ref.cfg["max_seq_len"]).tolist()
    expected = ref.forward(tokens, KVCache(dtype="f16"))  # the C runtime's default cache
    for isa in _c_isas(out):
        assert _rel(Model(out, n_batch=8, isa=isa).logits(tokens), expected) < TOL, isa  # batched tiles
        assert _rel(Model(out, n_batch=1, threads=2, isa=isa).logits(tokens), expected) < TOL, isa  # GEMV
    c_model = Model(out)
    info = c_model.ffi.new("ob_model_info *")
    c_model.lib.ob_model_get_info(c_model.shared._model, info)
    assert c_model.ffi.string(info.quant) == b"mixed"


@needs_cc
@pytest.mark.parametrize("edit, message", [
    (lambda c: {**c, "precision": {"*": "ternary"}}, "has dtype I4, expected T1_6"),
    (lambda c: {**c, "precision": {"*": "int2"}}, "config.precision['*'] must be binary, ternary, int4 or int8"),
    (lambda c: {**c, "precision": "int4"}, "needs a config.precision object"),
    (lambda c: {k: v for k, v in c.items() if k != "precision"}, "needs a config.precision object"),
], ids=["dtypes-disagree", "unknown-kind", "not-an-object", "missing"])
def test_c_runtime_rejects_bad_mixed_files_in_one_line(c_runtime, mixed_file, tmp_path, edit, message):
    _, out = mixed_file
    bad = tmp_path / "bad.1bit"
    _rewritten_raw(out, bad, edit)
    done = subprocess.run([str(c_runtime), "-m", str(bad), "-p", "a", "-n", "4"], capture_output=True, text=True)
    assert done.returncode != 0 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def _rewritten_raw(src, dst, edit_config) -> None:
    """The file with its metadata's config edited, tensors unchanged (no reader checks on the way)."""
    from onebit.format import TensorData, write_1bit

    f = read_1bit(src)
    meta = dict(f.meta)
    meta["config"] = edit_config(dict(meta["config"]))
    tensors = [TensorData(t.name, t.dtype, t.shape, f.array(t.name), t.scale) for t in f.tensors.values()]
    write_1bit(dst, meta, tensors)
