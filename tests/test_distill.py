"""Distillation: the KD loss, a onebit teacher and a Hugging Face teacher, on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import MICRO_MODEL, write_word_corpus

from onebit.train import trainer as train_cli
from onebit.train.checkpoint import load_checkpoint
from onebit.train.distill import kd_loss, load_teacher
from onebit.train.presets import TrainConfig
from onebit.train.trainer import train


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ONEBIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_word_corpus(tmp_path / "corpus.txt", seed=5)


def config(corpus: Path, **over) -> TrainConfig:
    base = dict(data=str(corpus), tokenizer="char", model=MICRO_MODEL, quant="ternary", max_steps=12, batch_size=4,
                lr=1e-2, warmup_steps=2, eval_interval=6, eval_batches=2, ckpt_interval=100, seed=3)
    return TrainConfig(**{**base, **over})


def test_kd_loss_is_the_tempered_kl():
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    assert kd_loss(t, t, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    for temp in (1.0, 3.0):
        p_t = F.softmax(t / temp, -1)
        manual = (p_t * (p_t.log() - F.log_softmax(s / temp, -1))).sum(-1).mean() * temp ** 2
        assert kd_loss(s, t, temp).item() == pytest.approx(manual.item(), rel=1e-5)


@pytest.fixture
def teacher(corpus, tmp_path) -> Path:
    out = tmp_path / "teacher"
    train(config(corpus, quant="none", max_steps=30, lr=4e-3), out, show_progress=False)
    return out


def _kl_to(student: Path, teacher: Path, corpus: Path) -> float:
    """Mean KL(teacher || student) over the corpus' first windows."""
    s, t = load_checkpoint(student), load_checkpoint(teacher)
    ids = torch.tensor(s.tokenizer.encode(corpus.read_text()[:16 * 32]))[: 16 * 32].view(32, 16)
    with torch.no_grad():
        return kd_loss(s.model(ids)[0], t.model(ids)[0], 1.0).item()


def test_distilled_student_moves_toward_the_teacher(corpus, tmp_path, teacher):
    plain, zero, taught = tmp_path / "plain", tmp_path / "zero", tmp_path / "taught"
    train(config(corpus), plain, show_progress=False)
    # weight 0: the teacher is computed but ignored, so the run is exactly the plain one
    train(config(corpus, teacher=str(teacher), kd_weight=0.0), zero, show_progress=False)
    a, b = load_checkpoint(plain).model.state_dict(), load_checkpoint(zero).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    train(config(corpus, teacher=str(teacher), kd_weight=2.0, kd_temperature=2.0), taught, show_progress=False)
    assert _kl_to(taught, teacher, corpus) < _kl_to(plain, teacher, corpus)


def test_distillation_resumes_bit_identically(corpus, tmp_path, teacher):
    straight, split = tmp_path / "straight", tmp_path / "split"
    cfg = dict(teacher=str(teacher), kd_weight=1.0, kd_temperature=2.0)
    train(config(corpus, **cfg), straight, show_progress=False)
    train(config(corpus, **cfg), split, show_progress=False, stop_after=5)
    train(TrainConfig(), split, resume=split, show_progress=False)
    a, b = load_checkpoint(straight).model.state_dict(), load_checkpoint(split).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_teacher_with_another_tokenizer_is_one_error_line(corpus, tmp_path, teacher):
    other = tmp_path / "other.txt"
    other.write_text("xyz qrs\n" * 200)
    result = CliRunner().invoke(train_cli.main, ["--data", str(other), "--teacher", str(teacher), "--max-steps", "1",
                                                 "--out", str(tmp_path / "o")] + sum((["--set", f"{k}={v}"]
                                                                                      for k, v in MICRO_MODEL.items()), []))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: --teacher") and "tokenizer" in result.stderr
    missing = CliRunner().invoke(train_cli.main, ["--data", str(corpus), "--teacher", str(tmp_path / "nope"),
                                                  "--out", str(tmp_path / "o2")])
    assert missing.exit_code == 1 and "no such checkpoint" in missing.stderr


def test_hugging_face_teacher(corpus, tmp_path, teacher):
    """A transformers Llama saved by save_pretrained, with the student's tokenizer, teaches as well."""
    transformers = pytest.importorskip("transformers")
    tok = load_checkpoint(teacher).tokenizer
    folder = tmp_path / "hf"
    cfg = transformers.LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                   max_position_embeddings=32)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save(folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    model = load_teacher(str(folder), tok, torch.device("cpu"), 16)
    ids = torch.tensor([tok.encode("the king shall")])
    assert model(ids)[0].shape == (1, ids.shape[1], tok.vocab_size)
    progress = train(config(corpus, teacher=str(folder), max_steps=2, eval_interval=2), tmp_path / "hf_student",
                     show_progress=False)
    assert progress.step == 2
