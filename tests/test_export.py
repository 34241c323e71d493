"""onebit-export: folding, packing choices, size targets, CLI errors and atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from onebit import format as fmt
from onebit import packing
from onebit.compile import export
from onebit.compile.export import ExportOptions, export_1bit
from onebit.format import read_1bit
from onebit.train import quant
from onebit.train.checkpoint import META_FILE, load_checkpoint, save_checkpoint

TINY_SHAPE = dict(dim=128, ffn_dim=512, n_heads=4, n_kv_heads=4, n_layers=1, max_seq_len=16)


def _invoke(*args: str):
    return CliRunner().invoke(export.main, [str(a) for a in args])


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def test_folding_matches_quantize_weight(random_checkpoint, tmp_path):
    ckpt_dir = random_checkpoint()
    out = tmp_path / "m.1bit"
    export_1bit(ckpt_dir, out, ExportOptions(pack="t1.6"))
    f = read_1bit(out)
    model = load_checkpoint(ckpt_dir).model
    for name, module in model.named_modules():
        if not hasattr(module, "clamp_latent_"):
            continue
        codes, scale = quant.quantize_weight(module.weight, "ternary")
        info = f.tensors[name + ".weight"]
        assert info.dtype == "T1_6" and np.float32(info.scale) == np.float32(scale.item())
        unpacked = packing.unpack_t16(f.array(info.name), info.shape[1])
        np.testing.assert_array_equal(unpacked, codes.detach().numpy().astype(np.int8))
        assert (unpacked != 0).any() and (unpacked == 0).any()


def test_embeddings_and_norms(random_checkpoint, tmp_path):
    tied, untied = random_checkpoint(), random_checkpoint(tie_embeddings=False, pos="learned")
    export_1bit(tied, tmp_path / "tied.1bit", ExportOptions(embed_dtype="f16"))
    export_1bit(untied, tmp_path / "untied.1bit", ExportOptions(embed_dtype="i8"))
    t, u = read_1bit(tmp_path / "tied.1bit"), read_1bit(tmp_path / "untied.1bit")
    assert "head.weight" not in t.tensors and t.tensors["embed.weight"].dtype == "F16"
    assert t.tensors["norm.weight"].dtype == "F32" and t.meta["quant"]["embed_dtype"] == "f16"
    assert {u.tensors[n].dtype for n in ("embed.weight", "head.weight")} == {"I8"}
    assert u.tensors["head.weight.scale"].shape == (u.meta["config"]["vocab_size"],)
    assert u.tensors["pos_embed.weight"].dtype == "F32"
    model = load_checkpoint(tied).model
    np.testing.assert_array_equal(t.array("embed.weight"), model.embed.weight.detach().numpy().astype(np.float16))


def test_tokenizer_tensors(random_checkpoint, tmp_path):
    ckpt_dir = random_checkpoint()
    export_1bit(ckpt_dir, tmp_path / "m.1bit", ExportOptions())
    f = read_1bit(tmp_path / "m.1bit")
    tok = load_checkpoint(ckpt_dir).tokenizer
    tokens, offsets = f.array("tokenizer.tokens"), f.array("tokenizer.offsets")
    for i in range(tok.vocab_size):
        assert tokens[offsets[i]:offsets[i + 1]].tobytes() == tok.token_bytes(i)
    assert "tokenizer.merges" not in f.tensors and f.meta["tokenizer"]["type"] == "char"


@pytest.mark.parametrize("quant_kind, pack, limit, dtype", [
    ("ternary", "t2", 0.26, "T2"), ("ternary", "t1.6", 0.21, "T1_6"), ("binary", "t2", 0.13, "B1")])
def test_size_targets_on_tiny_shape(random_checkpoint, tmp_path, quant_kind, pack, limit, dtype):
    ckpt_dir = random_checkpoint(quant=quant_kind, **TINY_SHAPE)
    result = export_1bit(ckpt_dir, tmp_path / "m.1bit", ExportOptions(pack=pack))
    report = result.report
    assert report["bytes_per_quantized_param"] <= limit
    assert report["quantized_params"] == 128 * 128 * 4 + 3 * 128 * 512
    assert {t.dtype for t in result.tensors if t.name.endswith("_proj.weight")} == {dtype}
    assert report["file_size"] == (tmp_path / "m.1bit").stat().st_size
    assert report["compression_vs_f32"] > 8


def test_cli_reports_sizes(random_checkpoint, tmp_path):
    out = tmp_path / "m.1bit"
    result = _invoke(random_checkpoint(quant="binary"), "-o", out, "--pack", "t1.6", "--embed-dtype", "f32")
    assert result.exit_code == 0, result.output
    assert "compression vs f32" in result.stderr and "bitlinear" in result.stderr
    assert "packed as b1, --pack t1.6 ignored" in result.stderr
    assert read_1bit(out).meta["quant"]["pack"] == "b1"


def test_cli_errors_are_one_line(random_checkpoint, tmp_path):
    assert "does not exist" in _one_line_error(_invoke(tmp_path / "missing", "-o", tmp_path / "m.1bit"))
    incomplete = random_checkpoint()
    (incomplete / "latest" / META_FILE).unlink()
    assert "did not finish" in _one_line_error(_invoke(incomplete, "-o", tmp_path / "m.1bit"))
    unquantized = random_checkpoint(quant="none")
    assert "not quantized" in _one_line_error(_invoke(unquantized, "-o", tmp_path / "m.1bit"))
    ok = random_checkpoint()
    assert "does not exist" in _one_line_error(_invoke(ok, "-o", tmp_path / "no" / "m.1bit"))
    assert "is a directory" in _one_line_error(_invoke(ok, "-o", tmp_path))
    assert "C identifier" in _one_line_error(_invoke(ok, "-o", tmp_path / "m.1bit", "--emit-c-header",
                                                     tmp_path / "m.h", "--c-name", "1bad"))
    assert not any(p.suffix in (".1bit", ".h", ".tmp") for p in tmp_path.iterdir())


def test_f16_overflow_is_refused(random_checkpoint, tmp_path):
    ckpt_dir = random_checkpoint()
    ckpt = load_checkpoint(ckpt_dir)
    with torch.no_grad():
        ckpt.model.embed.weight[3, 5] = 1e5
    save_checkpoint(ckpt_dir, ckpt.model, ckpt.tokenizer, ckpt.meta)
    assert "f16 range" in _one_line_error(_invoke(ckpt_dir, "-o", tmp_path / "m.1bit"))
    assert _invoke(ckpt_dir, "-o", tmp_path / "m.1bit", "--embed-dtype", "i8").exit_code == 0


def test_atomic_write_leaves_nothing_on_failure(random_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "m.1bit"
    out.write_bytes(b"previous model")

    def failing_write(f, meta, tensors):
        f.write(b"1BIT partial")
        raise OSError("disk full")

    monkeypatch.setattr(export, "write_stream", failing_write)
    with pytest.raises(OSError):
        export_1bit(random_checkpoint(), out, ExportOptions())
    assert out.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["m.1bit"]


def test_write_1bit_is_atomic(tmp_path, monkeypatch):
    def boom(*args):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(fmt.zlib, "crc32", boom)
    tensor = fmt.TensorData("x", "F32", (3,), np.arange(3, dtype=np.float32) + 1)
    with pytest.raises(RuntimeError):
        fmt.write_1bit(tmp_path / "x.1bit", {}, [tensor])
    assert list(tmp_path.iterdir()) == []


def test_export_is_deterministic(random_checkpoint, tmp_path):
    ckpt_dir = random_checkpoint()
    export_1bit(ckpt_dir, tmp_path / "a.1bit", ExportOptions())
    export_1bit(ckpt_dir, tmp_path / "b.1bit", ExportOptions())
    assert (tmp_path / "a.1bit").read_bytes() == (tmp_path / "b.1bit").read_bytes()
