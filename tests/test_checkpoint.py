"""Checkpoints: bit-identical round trips and one clear error line for each way a checkpoint breaks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file, save_file

import onebit
from onebit.config import ModelConfig
from onebit.tokenizer import Tokenizer, train_char_tokenizer
from onebit.train.checkpoint import CheckpointError, load_checkpoint, load_train_state, save_checkpoint
from onebit.train.model import Transformer

MakeCheckpoint = Callable[..., Path]


def _load_error(path: Path) -> str:
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert message and "\n" not in message
    return message


def _random_model(**overrides) -> tuple[Transformer, Tokenizer]:
    tokenizer = train_char_tokenizer("the quick brown fox jumps over the lazy dog\n")
    torch.manual_seed(7)
    config = ModelConfig(**{"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64,
                            "max_seq_len": 16, **overrides, "vocab_size": tokenizer.vocab_size})
    model = Transformer(config)
    with torch.no_grad():  # norms start at 1.0: make every tensor distinctive
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model, tokenizer


@pytest.mark.parametrize("overrides", [
    {},
    {"tie_embeddings": False, "pos": "learned", "qk_norm": True, "norm": "layernorm", "gated": False},
    {"quant": "binary", "subln": False, "activation": "silu", "n_kv_heads": 1},
])
def test_round_trip_is_bit_identical(tmp_path: Path, overrides: dict) -> None:
    model, tokenizer = _random_model(**overrides)
    save_checkpoint(tmp_path / "ckpt", model, tokenizer, {"step": 12, "val_loss": 2.5})
    ckpt = load_checkpoint(tmp_path / "ckpt")
    assert ckpt.config == model.cfg
    assert not ckpt.model.training
    saved, loaded = model.state_dict(), ckpt.model.state_dict()
    assert saved.keys() == loaded.keys()
    for name in saved:
        assert torch.equal(saved[name], loaded[name]), name
    assert ckpt.meta == {"onebit_version": onebit.__version__, "quant": model.cfg.quant, "step": 12, "val_loss": 2.5}
    text = "the lazy dog"
    assert ckpt.tokenizer.encode(text) == tokenizer.encode(text)
    tokens = torch.tensor([tokenizer.encode(text)])
    model.eval()
    assert torch.equal(model(tokens)[0], ckpt.model(tokens)[0])


def test_files_and_tensor_names(random_checkpoint: MakeCheckpoint) -> None:
    run = random_checkpoint(n_layers=1)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "latest"]
    path = run / "latest"
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "meta.json", "model.safetensors",
                                                      "tokenizer.json"]
    names = set(load_file(str(path / "model.safetensors")))
    assert "embed.weight" in names and "layers.0.attn.q_proj.weight" in names and "head.weight" not in names
    assert json.loads((path / "config.json").read_text())["n_layers"] == 1


def test_fixture_honours_vocab_size(random_checkpoint: MakeCheckpoint) -> None:
    ckpt = load_checkpoint(random_checkpoint(vocab_size=90))
    assert ckpt.config.vocab_size == ckpt.tokenizer.vocab_size == 90


def test_train_state(tmp_path: Path) -> None:
    model, tokenizer = _random_model()
    state = {"step": 5, "optimizer": {"exp_avg": torch.randn(3, 4)}, "rng": torch.get_rng_state()}
    save_checkpoint(tmp_path, model, tokenizer, {"step": 5}, train_state=state)
    loaded = load_train_state(tmp_path)
    assert loaded["step"] == 5 and torch.equal(loaded["optimizer"]["exp_avg"], state["optimizer"]["exp_avg"])
    assert torch.equal(loaded["rng"], state["rng"])
    save_checkpoint(tmp_path, model, tokenizer, {"step": 6})
    assert load_train_state(tmp_path) is None  # the stale state of step 5 is gone


def test_corrupt_train_state(random_checkpoint: MakeCheckpoint) -> None:
    path = random_checkpoint() / "latest"
    (path / "train_state.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="train_state.pt"):
        load_train_state(path)


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer = _random_model()
    save_checkpoint(tmp_path, model, tokenizer, {"step": 1})
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))

    def crash(self, path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Tokenizer, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, model, tokenizer, {"step": 2})
    assert load_checkpoint(tmp_path).meta["step"] == 1
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before  # nothing half-written


def test_a_save_replaces_the_previous_version(tmp_path: Path) -> None:
    model, tokenizer = _random_model()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, model, tokenizer, {"step": step}, train_state={"step": step})
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["000003-step3"]
    assert (tmp_path / "latest").readlink() == Path("checkpoints/000003-step3")
    assert load_checkpoint(tmp_path).meta["step"] == 3 and load_train_state(tmp_path) == {"step": 3}


def test_a_torn_save_is_ignored_and_tidied(tmp_path: Path) -> None:
    """What SIGKILL in the middle of a save leaves (a temp version folder, a temp link) changes nothing."""
    model, tokenizer = _random_model()
    save_checkpoint(tmp_path, model, tokenizer, {"step": 1})
    torn = tmp_path / "checkpoints" / ".000002-step2.x.tmp"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".latest.tmp").symlink_to(torn.name)
    assert load_checkpoint(tmp_path).meta["step"] == 1
    save_checkpoint(tmp_path, model, tokenizer, {"step": 2})
    assert load_checkpoint(tmp_path).meta["step"] == 2
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["checkpoints", "latest", "000002-step2", "config.json", "meta.json", "model.safetensors", "tokenizer.json"])


def test_old_layout_loads_and_is_replaced_on_save(tmp_path: Path) -> None:
    """A run folder written before versions (the files themselves in it) still loads and resumes."""
    model, tokenizer = _random_model()
    save_checkpoint(tmp_path / "new", model, tokenizer, {"step": 4}, train_state={"step": 4})
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "new" / "latest", old)
    assert load_checkpoint(old).meta["step"] == 4 and load_train_state(old) == {"step": 4}
    save_checkpoint(old, model, tokenizer, {"step": 5})
    assert load_checkpoint(old).meta["step"] == 5 and load_train_state(old) is None
    assert sorted(p.name for p in old.iterdir()) == ["checkpoints", "latest"]


def test_dangling_latest(tmp_path: Path) -> None:
    model, tokenizer = _random_model()
    save_checkpoint(tmp_path, model, tokenizer, {"step": 1})
    shutil.rmtree(tmp_path / "checkpoints")
    assert "latest points to a missing version" in _load_error(tmp_path)


def test_unserialisable_meta_leaves_old_checkpoint_intact(tmp_path: Path) -> None:
    model, tokenizer = _random_model()
    save_checkpoint(tmp_path, model, tokenizer, {"step": 1})
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path, model, tokenizer, {"step": object()})
    assert load_checkpoint(tmp_path).meta["step"] == 1


def test_meta_is_strict_json(tmp_path: Path) -> None:
    model, tokenizer = _random_model()
    save_checkpoint(tmp_path, model, tokenizer, {"val_loss": float("nan"), "history": [1.5, float("inf")],
                                                 "lr": torch.tensor(3e-4), "out": tmp_path})
    meta = json.loads((tmp_path / "latest" / "meta.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert meta["val_loss"] is None and meta["history"] == [1.5, None]
    assert meta["lr"] == pytest.approx(3e-4) and meta["out"] == str(tmp_path)


def test_save_rejects_vocab_mismatch(tmp_path: Path) -> None:
    model, _ = _random_model()
    with pytest.raises(CheckpointError, match="vocab"):
        save_checkpoint(tmp_path, model, train_char_tokenizer("ab"), {})


# ----------------------------------------------------------------------------------------------
# one error line per broken checkpoint


def test_missing_directory(tmp_path: Path) -> None:
    assert "does not exist" in _load_error(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "model.safetensors", "meta.json"])
def test_missing_file(random_checkpoint: MakeCheckpoint, name: str) -> None:
    path = random_checkpoint() / "latest"
    (path / name).unlink()
    assert f"missing {name}" in _load_error(path)


@pytest.mark.parametrize("content, expected", [
    ("{ not json", "not valid JSON"),
    ("\xff\xfe binary", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"dim": 32, "wings": 2}', "unknown config field(s): wings"),
    ('{"dim": 30, "n_heads": 4}', "not divisible"),
    ('{"residual_scale": "one"}', "residual_scale must be a float"),
    ('{"tie_embeddings": 1}', "tie_embeddings must be a bool"),
    ('{"norm": "batchnorm"}', "norm must be one of"),
])
def test_corrupt_config(random_checkpoint: MakeCheckpoint, content: str, expected: str) -> None:
    path = random_checkpoint()
    (path / "latest" / "config.json").write_text(content, encoding="latin-1")
    message = _load_error(path)
    assert expected in message and "config.json" in message


def test_corrupt_meta(random_checkpoint: MakeCheckpoint) -> None:
    path = random_checkpoint()
    (path / "latest" / "meta.json").write_text('{"step": ')
    assert "meta.json" in _load_error(path)


def test_corrupt_tokenizer(random_checkpoint: MakeCheckpoint) -> None:
    path = random_checkpoint()
    (path / "latest" / "tokenizer.json").write_text('{"model": {"type": "BPE"')
    assert "tokenizer.json" in _load_error(path)


def test_vocab_mismatch(random_checkpoint: MakeCheckpoint) -> None:
    path, other = random_checkpoint(), random_checkpoint(vocab_size=80)
    shutil.copy(other / "latest" / "tokenizer.json", path / "latest" / "tokenizer.json")
    message = _load_error(path)
    assert "80 tokens" in message and "vocab_size" in message


def _edit_tensors(path: Path, edit: Callable[[dict], None]) -> None:
    path = path / "latest"
    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"))


def test_missing_tensor(random_checkpoint: MakeCheckpoint) -> None:
    path = random_checkpoint()
    _edit_tensors(path, lambda t: t.pop("layers.1.mlp.up_proj.weight"))
    assert "missing tensor(s) layers.1.mlp.up_proj.weight" in _load_error(path)


def test_unexpected_tensor(random_checkpoint: MakeCheckpoint) -> None:
    path = random_checkpoint()
    _edit_tensors(path, lambda t: t.update({"head.weight": torch.randn(4, 32)}))
    assert "unexpected tensor(s) head.weight" in _load_error(path)


def test_wrong_shape(random_checkpoint: MakeCheckpoint) -> None:
    path = random_checkpoint()
    _edit_tensors(path, lambda t: t.update({"norm.weight": torch.randn(31)}))
    message = _load_error(path)
    assert "norm.weight" in message and "[31]" in message and "[32]" in message


def test_non_float_tensor(random_checkpoint: MakeCheckpoint) -> None:
    path = random_checkpoint()
    _edit_tensors(path, lambda t: t.update({"norm.weight": torch.randint(0, 3, (32,))}))
    assert "dtype" in _load_error(path)


def test_config_that_no_longer_matches_the_weights(random_checkpoint: MakeCheckpoint) -> None:
    path = random_checkpoint()
    config = json.loads((path / "latest" / "config.json").read_text())
    config["ffn_dim"] = 96
    (path / "latest" / "config.json").write_text(json.dumps(config))
    assert "config.json needs [96, 32]" in _load_error(path)


def test_truncated_weights(random_checkpoint: MakeCheckpoint) -> None:
    path = random_checkpoint()
    blob = (path / "latest" / "model.safetensors").read_bytes()
    (path / "latest" / "model.safetensors").write_bytes(blob[: len(blob) // 3])
    assert "model.safetensors" in _load_error(path)
