"""onebit-export --format hf: transformers loads the folder offline and generates onebit's greedy
tokens; onebit -> hf -> onebit keeps every ternary code and scale bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("transformers")

from hf_fixtures import hf_greedy  # noqa: E402

from onebit.compile.export import ExportOptions, export_1bit  # noqa: E402
from onebit.compile.export import main as export_main  # noqa: E402
from onebit.compile.hf import pack_codes  # noqa: E402
from onebit.format import read_1bit  # noqa: E402
from onebit.sampling import SamplerConfig  # noqa: E402
from onebit.train.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from onebit.train.hf_import import import_hf, unpack_codes  # noqa: E402
from onebit.train.sample import generate  # noqa: E402

PROMPT = [1, 2, 3, 4, 5]
N = 16


@pytest.fixture(scope="module")
def checkpoint(random_checkpoint, tmp_path_factory):
    """A random onebit model with BitNet's shape, its projections scaled so that tokens vary."""
    path = random_checkpoint(randomize=3, vocab_size=80, max_seq_len=48)
    ckpt = load_checkpoint(path)
    with torch.no_grad():
        for m in ckpt.model.bitlinears():
            m.weight.mul_(300)
    out = tmp_path_factory.mktemp("bitnet_shaped")
    save_checkpoint(out, ckpt.model, ckpt.tokenizer, ckpt.meta)
    return out


def _export(checkpoint, out, *extra):
    result = CliRunner().invoke(export_main, [str(checkpoint), "--format", "hf", "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("weights", ["packed", "latent"])
def test_transformers_generates_onebit_tokens(checkpoint, tmp_path, weights):
    folder = _export(checkpoint, tmp_path / "hf", "--hf-weights", weights)
    expected = generate(load_checkpoint(checkpoint).model, PROMPT, N, SamplerConfig(temperature=0.0))
    assert len(set(expected)) > 3
    assert hf_greedy(folder, PROMPT, N) == expected
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["quantization_config"]["quantization_mode"] == ("offline" if weights == "packed" else "online")


def test_onebit_hf_onebit_keeps_codes_and_scales(checkpoint, tmp_path):
    folder = _export(checkpoint, tmp_path / "hf")
    import_hf(folder, tmp_path / "back", show_progress=False)
    export_1bit(checkpoint, tmp_path / "a.1bit", ExportOptions(embed_dtype="f32"))
    export_1bit(tmp_path / "back", tmp_path / "b.1bit", ExportOptions(embed_dtype="f32"))
    a, b = read_1bit(tmp_path / "a.1bit"), read_1bit(tmp_path / "b.1bit")
    assert list(a.tensors) == list(b.tensors)
    for name, ta in a.tensors.items():
        tb = b.tensors[name]
        assert ta.dtype == tb.dtype and ta.scale == tb.scale, name
        assert np.array_equal(a.array(name), b.array(name)), name


@pytest.mark.parametrize("weights", ["packed", "latent"])
def test_hf_export_reads_each_tensor_when_it_is_written(checkpoint, tmp_path, monkeypatch, weights):
    """The 2B shape's export must not hold the model: nothing is read before the writer asks, and
    each weight once (a packed layer's codes and scale share one read)."""
    from onebit.compile.hf import _tensors
    from onebit.compile.lazy import LazyWeights, load_lazy_checkpoint
    from onebit.safetensors_stream import write_safetensors

    reads: list[str] = []
    original = LazyWeights.__getitem__
    monkeypatch.setattr(LazyWeights, "__getitem__", lambda self, name: reads.append(name) or original(self, name))
    ckpt = load_lazy_checkpoint(checkpoint)
    tensors = _tensors(ckpt, weights)
    assert reads == []
    seen: list[int] = []
    write_safetensors(tmp_path / "m.safetensors", tensors, on_tensor=lambda t: seen.append(len(reads)))
    assert sorted(reads) == sorted(ckpt.model.keys())  # every tensor read, each once
    assert seen == sorted(seen) and seen[-1] == len(reads)


@pytest.mark.parametrize("out_features", [4, 8, 12, 64])
def test_pack_codes_is_transformers_layout(out_features):
    from transformers.integrations.bitnet import pack_weights

    codes = torch.randint(-1, 2, (out_features, 7))
    ours = pack_codes(codes.numpy().astype(np.int8))
    assert np.array_equal(ours, pack_weights(codes.clone()).numpy())
    assert torch.equal(unpack_codes(torch.from_numpy(ours), out_features), codes.to(torch.int8))


@pytest.mark.parametrize("overrides, reason", [
    ({"norm": "layernorm"}, "norm is layernorm"),
    ({"pos": "learned"}, "pos is learned"),
    ({"qk_norm": True}, "qk_norm is on"),
    ({"quant": "binary"}, "quant is binary"),
])
def test_configs_bitnet_cannot_express_are_refused(random_checkpoint, tmp_path, overrides, reason):
    path = random_checkpoint(**overrides)
    result = CliRunner().invoke(export_main, [str(path), "--format", "hf", "-o", str(tmp_path / "hf")])
    assert result.exit_code == 1 and reason in result.output and "Traceback" not in result.output
    assert not (tmp_path / "hf" / "config.json").exists()
