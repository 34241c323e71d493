"""The trainer: schedules, a short run that learns, bit-exact resume, and the CLIs' bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import MICRO_MODEL, write_word_corpus
from safetensors.torch import load_file

from onebit.train import plot as plot_cli
from onebit.train import sample as sample_cli
from onebit.train import trainer as train_cli
from onebit.train.metrics import DETERMINISTIC_COLUMNS, read_metrics
from onebit.train.presets import TrainConfig, preset_config
from onebit.train.schedule import anneal_alpha, learning_rate, weight_decay
from onebit.train.trainer import train


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ONEBIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A few KB of learnable text: random words from a small lexicon, in short lines."""
    return write_word_corpus(tmp_path / "corpus.txt", seed=7)


def micro_config(corpus: Path, **over) -> TrainConfig:
    base = dict(data=str(corpus), tokenizer="char", model=MICRO_MODEL, quant="ternary", max_steps=8,
                batch_size=4, lr=1e-2, warmup_steps=2, eval_interval=2, eval_batches=2, ckpt_interval=4, seed=3)
    return TrainConfig(**{**base, **over})


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "latest" / "model.safetensors"))


def invoke(cli, args: list[str]):
    result = CliRunner().invoke(cli, args)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


# -- schedules ---------------------------------------------------------------------------------------

def test_lr_warmup_then_cosine_to_floor():
    cfg = TrainConfig(max_steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    assert learning_rate(cfg, 0) == pytest.approx(0.1)
    assert learning_rate(cfg, 9) == pytest.approx(1.0)
    lrs = [learning_rate(cfg, s) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


@pytest.mark.parametrize("schedule", ["linear", "constant", "wsd"])
def test_other_schedules(schedule):
    cfg = TrainConfig(max_steps=100, warmup_steps=0, lr=1.0, min_lr_ratio=0.0, schedule=schedule, wsd_decay_frac=0.2)
    mid, end = learning_rate(cfg, 50), learning_rate(cfg, 99)
    expected_mid = {"linear": 0.5, "constant": 1.0, "wsd": 1.0}[schedule]
    assert mid == pytest.approx(expected_mid)
    assert end == pytest.approx(1.0) if schedule == "constant" else end < 0.06


def test_two_stage_drops_lr_and_weight_decay():
    cfg = TrainConfig(max_steps=100, warmup_steps=0, lr=1.0, min_lr_ratio=0.0, schedule="constant",
                      two_stage=True, stage2_frac=0.5, stage2_lr_ratio=0.4, weight_decay=0.1)
    assert learning_rate(cfg, 49) == 1.0 and learning_rate(cfg, 50) == pytest.approx(0.4)
    assert weight_decay(cfg, 49) == 0.1 and weight_decay(cfg, 50) == 0.0


def test_anneal_grows_then_turns_hard():
    cfg = TrainConfig(max_steps=100, anneal_frac=0.5, anneal_alpha_start=2.0, anneal_alpha_end=40.0)
    alphas = [anneal_alpha(cfg, s) for s in range(50)]
    assert alphas[0] == pytest.approx(2.0) and all(a < b for a, b in zip(alphas, alphas[1:]))
    assert anneal_alpha(cfg, 50) is None and anneal_alpha(TrainConfig(anneal_frac=0.0), 0) is None


def test_presets_differ_per_quant():
    tiny = preset_config("tiny", "ternary")
    assert tiny.model["dim"] == 128 and tiny.model["n_layers"] == 4 and tiny.model["max_seq_len"] == 64
    assert tiny.batch_size == 12 and tiny.max_steps == 2000 and tiny.tokenizer == "char"
    assert preset_config("small", "ternary").tokenizer == "bpe"
    for quant in ("ternary", "binary", "none"):
        assert preset_config("tiny", quant).quant == quant


# -- training ------------------------------------------------------------------------------------

def test_short_run_lowers_the_loss(corpus, tmp_path):
    out = tmp_path / "run"
    progress = train(micro_config(corpus, max_steps=40, eval_interval=5), out, show_progress=False)
    rows = read_metrics(out / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(5, 45, 5))
    assert progress.step == 40 and rows[-1]["val_loss"] < rows[0]["val_loss"] - 0.3
    assert rows[-1]["val_ppl"] == pytest.approx(torch.tensor(rows[-1]["val_loss"]).exp().item(), rel=1e-4)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "meta.json", "train_state.pt"):
        assert (out / "latest" / name).is_file()
    assert json.loads((out / "latest" / "meta.json").read_text())["step"] == 40


@pytest.mark.parametrize("quant, extra", [
    ("ternary", {}),
    ("binary", dict(anneal_frac=0.5, latent_clamp=2.0, grad_scale=0.5, grad_accum=2, two_stage=True)),
    ("none", dict(label_smoothing=0.1, schedule="wsd")),
])
def test_resume_is_bit_identical(corpus, tmp_path, quant, extra):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(micro_config(corpus, quant=quant, **extra), straight, show_progress=False)
    train(micro_config(corpus, quant=quant, **extra), split, show_progress=False, stop_after=4)
    assert json.loads((split / "latest" / "meta.json").read_text())["step"] == 4
    train(TrainConfig(), split, resume=split, show_progress=False)
    a, b = weights(straight), weights(split)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows_a, rows_b = read_metrics(straight / "metrics.csv"), read_metrics(split / "metrics.csv")
    assert [[r[c] for c in DETERMINISTIC_COLUMNS] for r in rows_a] == [[r[c] for c in DETERMINISTIC_COLUMNS]
                                                                       for r in rows_b]


def test_resume_without_the_optimizer_state_differs(corpus, tmp_path):
    """The resume test is not vacuous: losing part of the state changes the result."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(micro_config(corpus), straight, show_progress=False)
    train(micro_config(corpus), split, show_progress=False, stop_after=4)
    state = torch.load(split / "latest" / "train_state.pt", weights_only=False)
    state["optimizer"]["state"] = {}
    torch.save(state, split / "latest" / "train_state.pt")
    train(TrainConfig(), split, resume=split, show_progress=False)
    a, b = weights(straight), weights(split)
    assert not all(torch.equal(a[k], b[k]) for k in a)


# -- the CLIs with bad input -------------------------------------------------------------------------

def test_cli_trains_plots_and_samples(corpus, tmp_path):
    out = tmp_path / "cli"
    args = ["--data", str(corpus), "--max-steps", "4", "--eval-interval", "2", "--eval-batches", "1",
            "--batch-size", "2", "--quiet", "--plot", "--out", str(out)]
    for item in ("dim=32", "n_layers=1", "n_heads=2", "n_kv_heads=2", "ffn_dim=64", "max_seq_len=16"):
        args += ["--set", item]
    result = invoke(train_cli.main, args)
    assert result.exit_code == 0, result.stderr
    assert "quantized" in result.stderr and "bits/param" in result.stderr
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = invoke(sample_cli.main, [str(out), "--prompt", "the king", "-n", "6", "--seed", "1"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("the king") and len(result.stdout) == len("the king") + 6
    again = invoke(sample_cli.main, [str(out), "--prompt", "the king", "-n", "6", "--seed", "1"])
    assert again.stdout == result.stdout
    # past the 16-token context the window slides (docs/SAMPLING.md); only a prompt that does not fit is an error
    slid = invoke(sample_cli.main, [str(out), "--prompt", "the king", "-n", "40", "--seed", "1"])
    assert slid.exit_code == 0 and len(slid.stdout) == len("the king") + 40, slid.stderr
    assert_one_line_error(invoke(sample_cli.main, [str(out), "--prompt", "the king " * 3, "-n", "1"]),
                          "longer than the model's context")
    assert_one_line_error(invoke(sample_cli.main, [str(out), "--prompt", "Zebra", "-n", "2"]))
    assert_one_line_error(invoke(train_cli.main, ["--resume", str(out), "--lr", "0.1"]), "--lr")
    (out / "latest" / "config.json").write_text('{"dim": 32, "n_layers": ')
    assert_one_line_error(invoke(sample_cli.main, [str(out), "--prompt", "the", "-n", "2"]), "config.json")
    assert_one_line_error(invoke(train_cli.main, ["--resume", str(out), "--max-steps", "6"]), "config.json")


def test_cli_missing_and_empty_corpus(tmp_path):
    missing = invoke(train_cli.main, ["--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")])
    assert_one_line_error(missing, "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_one_line_error(invoke(train_cli.main, ["--data", str(empty), "--out", str(tmp_path / "o")]))


def test_cli_tokenizer_vocab_mismatch(corpus, tmp_path):
    from onebit.tokenizer import train_char_tokenizer

    tok = tmp_path / "tokenizer.json"
    train_char_tokenizer(corpus.read_text()).save(tok)
    result = invoke(train_cli.main, ["--data", str(corpus), "--tokenizer", str(tok), "--vocab-size", "4096",
                                     "--out", str(tmp_path / "o")])
    assert_one_line_error(result, "vocab")


def test_cli_checkpoint_vocab_mismatch(random_checkpoint):
    ckpt = random_checkpoint()
    cfg = json.loads((ckpt / "latest" / "config.json").read_text())
    (ckpt / "latest" / "config.json").write_text(json.dumps({**cfg, "vocab_size": cfg["vocab_size"] + 3}))
    assert_one_line_error(invoke(sample_cli.main, [str(ckpt), "--prompt", "Speak", "-n", "2"]))


def test_cli_bad_flags(corpus, tmp_path):
    assert_one_line_error(invoke(train_cli.main, ["--data", str(corpus)]), "--out")
    assert_one_line_error(invoke(train_cli.main, ["--data", str(corpus), "--out", str(tmp_path / "o"),
                                                  "--set", "activation=tanh"]), "activation")
    assert_one_line_error(invoke(train_cli.main, ["--resume", str(tmp_path / "none")]))
    assert_one_line_error(invoke(plot_cli.main, [str(tmp_path)]), "metrics")


def test_cli_stop_and_resume_matches_straight_run(corpus, tmp_path):
    args = ["--data", str(corpus), "--max-steps", "6", "--eval-interval", "2", "--eval-batches", "1",
            "--ckpt-interval", "100", "--batch-size", "2", "--quiet"]
    for item in ("dim=32", "n_layers=1", "n_heads=2", "n_kv_heads=2", "ffn_dim=64", "max_seq_len=16"):
        args += ["--set", item]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert invoke(train_cli.main, args + ["--out", str(straight)]).exit_code == 0
    assert invoke(train_cli.main, args + ["--out", str(split), "--stop-after", "3"]).exit_code == 0
    assert json.loads((split / "latest" / "meta.json").read_text())["step"] == 3
    resumed = invoke(train_cli.main, ["--resume", str(split), "--quiet"])
    assert resumed.exit_code == 0, resumed.stderr
    a, b = weights(straight), weights(split)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows_a, rows_b = read_metrics(straight / "metrics.csv"), read_metrics(split / "metrics.csv")
    assert [[r[c] for c in DETERMINISTIC_COLUMNS] for r in rows_a] == [[r[c] for c in DETERMINISTIC_COLUMNS]
                                                                       for r in rows_b]


def test_progress_in_a_log_file_is_throttled(corpus, tmp_path, capsys):
    """stderr that is not a terminal gets the bar's first and last states, not a line per step."""
    train(micro_config(corpus, max_steps=40, eval_interval=40), tmp_path / "run", show_progress=True)
    draws = capsys.readouterr().err.replace("\r", "\n").count("train:")
    assert 1 <= draws <= 4, f"{draws} progress lines for 40 steps"
