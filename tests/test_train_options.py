"""Trainer options that change speed or memory, not the math: activation checkpointing, bf16 on CPU,
the FLOPs count behind the MFU figure, and the GPU preset's shape."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import MICRO_MODEL, write_word_corpus

from onebit.train.checkpoint import load_checkpoint
from onebit.train.flops import device_peak_tflops, flops_per_token, mfu
from onebit.train.metrics import read_metrics
from onebit.train.model import Transformer
from onebit.train.presets import TrainConfig, preset_config
from onebit.train.trainer import train


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ONEBIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_word_corpus(tmp_path / "corpus.txt", seed=9)


def config(corpus: Path, **over) -> TrainConfig:
    base = dict(data=str(corpus), tokenizer="char", model=MICRO_MODEL, quant="ternary", max_steps=10, batch_size=4,
                grad_accum=2, lr=1e-2, warmup_steps=2, eval_interval=5, eval_batches=2, ckpt_interval=100, seed=3)
    return TrainConfig(**{**base, **over})


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run).model.state_dict()


def test_activation_checkpointing_changes_nothing(corpus, tmp_path):
    train(config(corpus), tmp_path / "plain", show_progress=False)
    train(config(corpus, activation_checkpointing=True), tmp_path / "ckpt", show_progress=False)
    a, b = weights(tmp_path / "plain"), weights(tmp_path / "ckpt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_on_cpu_trains_close_to_fp32(corpus, tmp_path):
    train(config(corpus, max_steps=20), tmp_path / "fp32", show_progress=False)
    train(config(corpus, max_steps=20, bf16=True), tmp_path / "bf16", show_progress=False)
    a, b = read_metrics(tmp_path / "fp32" / "metrics.csv"), read_metrics(tmp_path / "bf16" / "metrics.csv")
    assert a[-1]["val_loss"] < a[0]["val_loss"] and b[-1]["val_loss"] < b[0]["val_loss"]
    assert b[-1]["val_loss"] == pytest.approx(a[-1]["val_loss"], rel=0.05)
    assert b[-1]["train_loss"] != a[-1]["train_loss"]  # autocast did run in bf16


def test_flops_per_token_counts_every_matmul():
    cfg = preset_config("tiny", "ternary").model_config(65)
    model = Transformer(cfg)
    matmul = sum(m.weight.numel() for m in model.bitlinears()) + cfg.vocab_size * cfg.dim  # + the tied head
    assert flops_per_token(cfg) == 6 * matmul + 12 * cfg.n_layers * cfg.dim * cfg.max_seq_len
    assert mfu(1000.0, cfg, 1.0, 2) == pytest.approx(1000.0 * flops_per_token(cfg) / 2e12)
    assert device_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert device_peak_tflops("NVIDIA A10G") == 70.0 and device_peak_tflops("Some CPU") is None


def test_base_preset_is_a_124m_bitnet_for_gpus():
    cfg = preset_config("base", "ternary")
    with torch.device("meta"):
        model = Transformer(cfg.model_config(cfg.vocab_size))
    assert 120e6 < model.param_stats()["total_params"] < 130e6
    m = model.cfg
    assert (m.max_seq_len, m.activation, m.gated, m.subln, m.pos) == (1024, "relu2", True, True, "rope")
    assert cfg.tokenizer == "bpe" and cfg.vocab_size == 32000 and cfg.bf16 and cfg.device == "cuda"
    assert cfg.batch_size * cfg.grad_accum * m.max_seq_len == 512 * 1024
