"""onebit-import: transformers' own BitNetForCausalLM folders (both weight forms) become onebit
checkpoints whose greedy tokens equal transformers' in PyTorch, C (cffi), and onnxruntime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("transformers")

from hf_fixtures import hf_greedy, llama3_tokenizer, save_hf_bitnet  # noqa: E402

from onebit.compile.export import ExportOptions, export_1bit  # noqa: E402
from onebit.sampling import SamplerConfig  # noqa: E402
from onebit.train import quant  # noqa: E402
from onebit.train.checkpoint import load_checkpoint  # noqa: E402
from onebit.train.hf_import import (  # noqa: E402
    import_hf, latent_weights, main, unpack_codes,
)
from onebit.train.sample import generate  # noqa: E402

PROMPT = [5, 6, 7, 8, 9, 10]
N = 16
GREEDY = SamplerConfig(temperature=0.0)


@pytest.fixture(scope="module")
def tokenizer():
    return llama3_tokenizer()


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tokenizer):
    base = tmp_path_factory.mktemp("hf")
    return {form: save_hf_bitnet(base / form, form, tokenizer=tokenizer) for form in ("latent", "packed")}


@pytest.fixture(scope="module")
def imported(tmp_path_factory, folders):
    base = tmp_path_factory.mktemp("imported")
    for form, folder in folders.items():
        import_hf(folder, base / form, show_progress=False)
    return {form: base / form for form in folders}


@pytest.mark.parametrize("form", ["latent", "packed"])
def test_import_generates_what_transformers_generates_everywhere(form, folders, imported, tmp_path):
    expected = hf_greedy(folders[form], PROMPT, N)
    assert len(set(expected)) > 3, "the fixture model should not repeat one token"
    ckpt = load_checkpoint(imported[form])
    assert generate(ckpt.model, PROMPT, N, GREEDY) == expected

    from onebit.run.c import Model

    export_1bit(imported[form], tmp_path / "m.1bit", ExportOptions())
    assert Model(tmp_path / "m.1bit", kv="f32").generate(PROMPT, N, temperature=0.0) == expected  # PyTorch's twin

    from onebit.compile.onnx_export import export_onnx
    from onebit.run.ort import OrtDecoder, generate_ort

    export_onnx(imported[form], tmp_path / "onnx", graphs="native")
    assert generate_ort(OrtDecoder(tmp_path / "onnx"), PROMPT, N, GREEDY) == expected


def test_packed_import_keeps_every_code_and_scale(folders, imported):
    from safetensors import safe_open

    ckpt = load_checkpoint(imported["packed"])
    state = ckpt.model.state_dict()
    with safe_open(str(folders["packed"] / "model.safetensors"), framework="pt") as f:
        for name in f.keys():
            if not name.endswith(".weight_scale"):
                continue
            hf_weight = name.removesuffix("_scale")
            onebit_name = hf_weight.removeprefix("model.").replace("self_attn.", "attn.")
            w = state[onebit_name]
            codes, scale = quant.quantize_weight(w, "ternary")
            packed = f.get_tensor(hf_weight)
            assert torch.equal(codes.to(torch.int8), unpack_codes(packed, w.shape[0]))
            assert np.float32(scale.item()) == np.float32(1.0) / np.float32(f.get_tensor(name).item())


def test_meta_records_bos_eos_and_chat_template(imported, tokenizer):
    meta = json.loads((imported["packed"] / "meta.json").read_text())
    assert meta["bos_token_id"] == tokenizer.token_to_id("<|begin_of_text|>")
    assert meta["eos_token_ids"] == [tokenizer.token_to_id("<|end_of_text|>"), tokenizer.token_to_id("<|eot_id|>")]
    assert meta["add_bos_token"] is True and "<|start_header_id|>" in meta["chat_template"]
    assert meta["imported_from"]["weights"] == "codes"


@pytest.mark.parametrize("seed", range(20))
def test_latent_weights_reproduce_codes_and_scale(seed):
    gen = torch.Generator().manual_seed(seed)
    shape = (int(torch.randint(1, 64, (), generator=gen)), int(torch.randint(1, 200, (), generator=gen)))
    original = torch.randn(shape, generator=gen) * float(torch.rand((), generator=gen)) * 3
    codes, scale = quant.quantize_weight(original, "ternary")  # a scale that is some weights' mean
    w, exact = latent_weights(codes.to(torch.int8), scale.item())
    got_codes, got_scale = quant.quantize_weight(w, "ternary")
    assert exact and torch.equal(got_codes, codes) and got_scale.item() == scale.item()


@pytest.mark.parametrize("seed", range(20))
def test_latent_weights_of_any_scale_are_at_most_an_ulp_off(seed):
    """A scale stored by another tool may be no fp32 mean of n weights at all: then the nearest."""
    gen = torch.Generator().manual_seed(seed)
    shape = (int(torch.randint(1, 64, (), generator=gen)), int(torch.randint(1, 200, (), generator=gen)))
    codes = torch.randint(-1, 2, shape, generator=gen).to(torch.int8)
    scale = np.float32(torch.rand((), generator=gen).item() * 3 + 1e-4)
    w, exact = latent_weights(codes, float(scale))
    got_codes, got_scale = quant.quantize_weight(w, "ternary")
    assert torch.equal(got_codes.to(torch.int8), codes)
    ulps = abs(int(np.float32(got_scale.item()).view(np.int32)) - int(scale.view(np.int32)))
    if exact:
        assert ulps == 0
    else:  # no fp32 sum T has fl(T / n) == scale
        n, t0 = codes.numel(), np.float32(float(scale) * codes.numel())
        sums = (np.float32(t0 + np.float32(k) * np.spacing(t0)) for k in range(-64, 65))
        assert all(np.float32(t / np.float32(n)) != scale for t in sums) and ulps == 1


def test_all_zero_codes_import_as_zeros():
    w, exact = latent_weights(torch.zeros(4, 8, dtype=torch.int8), 0.5)
    assert exact and not w.any()


def _edit_config(folder: Path, tmp_path: Path, **changes) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    cfg = json.loads((copy / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (copy / "config.json").write_text(json.dumps(cfg))
    return copy


@pytest.mark.parametrize("changes, message", [
    ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "LlamaForCausalLM is not BitNetForCausalLM"),
    ({"hidden_act": "tanh"}, "hidden_act 'tanh'"),
    ({"quantization_config": {"quant_method": "gptq"}}, "quant_method 'gptq'"),
    ({"quantization_config": {"quant_method": "bitnet", "use_rms_norm": True}}, "use_rms_norm"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0}}, "rope type 'yarn'"),
    ({"vocab_size": 512}, "vocab_size 512"),
    ({"hidden_size": 96}, "has shape"),
    ({"tie_word_embeddings": False}, "missing tensor lm_head.weight"),
])
def test_unmappable_folders_are_one_line_errors(folders, tmp_path, changes, message):
    bad = _edit_config(folders["packed"], tmp_path, **changes)
    result = CliRunner().invoke(main, [str(bad), "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out" / "meta.json").exists()


def test_missing_folder_and_offline_hub_id(tmp_path):
    result = CliRunner().invoke(main, [str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "no such folder" in result.output


def test_imported_checkpoint_fine_tunes_with_init_from(imported, tmp_path):
    from onebit.train.trainer import main as train_main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("First Citizen: Before we proceed any further, hear me speak. café 東京 🙂\n" * 200)
    result = CliRunner().invoke(train_main, ["--init-from", str(imported["packed"]), "--data", str(corpus),
                                             "--out", str(tmp_path / "run"), "--max-steps", "2", "--batch-size", "2",
                                             "--eval-interval", "2", "--eval-batches", "1"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(tmp_path / "run").config == load_checkpoint(imported["packed"]).config
