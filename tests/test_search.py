"""onebit search and training with a precision map: solvers against brute force, a small search
whose exported file is checked against the budget, reproducibility, and the trainer's flags."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_word_corpus

from onebit.compile.search import Search, SearchError, SearchOptions, greedy, knapsack, main, parse_size
from onebit.format import read_1bit
from onebit.train.checkpoint import load_checkpoint
from onebit.train.presets import TrainConfig
from onebit.train.trainer import train

# dim 128: below it a B1 row (padded to 128 weights) is larger than a T1.6 one
MODEL = dict(dim=128, n_layers=1, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=32)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ONEBIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A ternary model trained for a few steps on a small corpus of its own."""
    root = tmp_path_factory.mktemp("search_base")
    write_word_corpus(root / "corpus.txt", seed=7)
    cfg = TrainConfig(data=str(root / "corpus.txt"), tokenizer="char", model=MODEL, quant="ternary", max_steps=12,
                      batch_size=4, lr=1e-2, warmup_steps=2, eval_interval=12, eval_batches=2, ckpt_interval=12,
                      seed=3)
    train(cfg, root / "run", show_progress=False)
    return root / "run"


# -- solvers ---------------------------------------------------------------------------------------

def _random_problem(seed: int, layers: int = 5):
    rng = np.random.default_rng(seed)
    kinds = ["binary", "ternary", "int4", "int8"]
    delta = {f"l{i}": dict(zip(kinds, sorted(rng.uniform(0, 1, 4))[::-1])) for i in range(layers)}
    cost = {f"l{i}": dict(zip(kinds, (np.array([1, 2, 4, 8]) * rng.integers(1, 5) * 64).tolist()))
            for i in range(layers)}
    return delta, cost


def _brute_force(delta, cost, budget):
    names, best = list(delta), (np.inf, None)
    for pick in itertools.product(*(list(delta[n]) for n in names)):
        if sum(cost[n][k] for n, k in zip(names, pick)) <= budget:
            loss = sum(delta[n][k] for n, k in zip(names, pick))
            best = min(best, (loss, pick), key=lambda b: b[0])
    return best


@pytest.mark.parametrize("seed", range(6))
def test_knapsack_is_optimal_and_greedy_feasible(seed):
    delta, cost = _random_problem(seed)
    cheapest = sum(min(c.values()) for c in cost.values())
    for budget in (cheapest - 64, cheapest, cheapest + 640, cheapest + 2048):
        want, _ = _brute_force(delta, cost, budget)
        got = knapsack(delta, cost, budget)
        g = greedy(delta, cost, budget)
        if not np.isfinite(want):
            assert got is None and g is None
            continue
        assert sum(cost[n][got[n]] for n in got) <= budget
        assert sum(delta[n][got[n]] for n in got) == pytest.approx(want)
        assert sum(cost[n][g[n]] for n in g) <= budget
        assert sum(delta[n][g[n]] for n in g) >= want - 1e-12


@pytest.mark.parametrize("text, expected", [("400KB", 400_000), ("1.5MB", 1_500_000), ("300KiB", 307_200),
                                            ("12345", 12345), ("2 mib", 2 * 2**20)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "KB", "1.5 parsecs", "-3MB"])
def test_parse_size_rejects(text):
    with pytest.raises(SearchError):
        parse_size(text)


# -- a small search ---------------------------------------------------------------------------------

def _opts(**over) -> SearchOptions:
    return SearchOptions(**{**dict(calib_batches=2, anchor_steps=2, finetune_steps=2, sweep=1, seed=1,
                                   show_progress=False), **over})


def _uniform_sizes(base: Path, tmp_path: Path) -> dict[str, int]:
    s = Search(base, tmp_path / "sizes", _opts(max_size=10**9))
    return {k: s.size_of({n: k for n in s.names}) for k in ("binary", "ternary", "int4", "int8")}


def test_search_exports_within_the_budget_and_is_reproducible(base, tmp_path):
    sizes = _uniform_sizes(base, tmp_path)
    assert sizes["binary"] < sizes["ternary"] < sizes["int4"] < sizes["int8"]
    budget = (sizes["binary"] + sizes["ternary"]) // 2
    a = Search(base, tmp_path / "a", _opts(max_size=budget)).run()
    written = tmp_path / "a" / "checkpoint.1bit"
    assert written.stat().st_size == a["size"] <= budget  # checked on the exported file itself
    f = read_1bit(written)
    assert f.meta["quant"]["weights"] == "mixed"
    kinds = set(a["map"].values())
    assert kinds <= {"binary", "ternary", "int4", "int8"} and len(kinds) > 1
    assert set(a["methods"]) == {"knapsack", "greedy", "fisher"}
    assert a["methods"][a["method"]]["measured_calib_loss"] == min(m["measured_calib_loss"] for m in a["methods"].values())
    saved = json.loads((tmp_path / "a" / "precision.json").read_text())["precision"]
    assert saved == a["map"] == load_checkpoint(tmp_path / "a" / "checkpoint").config.precision
    assert (tmp_path / "a" / "pareto.png").stat().st_size > 0
    b = Search(base, tmp_path / "b", _opts(max_size=budget)).run()
    assert b["map"] == a["map"] and b["val_loss"] == a["val_loss"] and b["size"] == a["size"]


def test_search_by_bits_per_weight(base, tmp_path):
    r = Search(base, tmp_path / "bpw", _opts(max_bits_per_weight=1.3, anchor_steps=0)).run()
    assert r["bits_per_weight"] <= 1.3
    f = read_1bit(tmp_path / "bpw" / "checkpoint.1bit")
    packed = sum(t.size for n, t in f.tensors.items() if n.startswith("layers.") and "_proj.weight" in n)
    weights = sum(int(np.prod(t.shape)) for n, t in f.tensors.items() if n.endswith("_proj.weight"))
    assert 8 * packed / weights == pytest.approx(r["bits_per_weight"])


def test_search_distils_the_map_and_the_baselines_alike(base, tmp_path):
    r = Search(base, tmp_path / "kd", _opts(max_bits_per_weight=1.3, finetune_teacher="anchor", kd_weight=0.5,
                                           kd_temperature=2.0, finetune_baselines=("ternary",))).run()
    runs = {"map": tmp_path / "kd" / "checkpoint", "baseline": tmp_path / "kd" / "baselines" / "ternary"}
    for run in runs.values():
        tc = load_checkpoint(run).meta["train_config"]
        assert (tc["teacher"], tc["kd_weight"], tc["kd_temperature"]) == (str(tmp_path / "kd" / "anchor"), 0.5, 2.0)
    assert load_checkpoint(tmp_path / "kd" / "anchor").meta["train_config"]["teacher"] is None
    plain = Search(base, tmp_path / "plain", _opts(max_bits_per_weight=1.3)).run()
    assert plain["map"] == r["map"]  # the same search; only the fine-tune's loss changes
    assert plain["val_loss"] != r["val_loss"]
    assert load_checkpoint(tmp_path / "plain" / "checkpoint").meta["train_config"]["teacher"] is None


def test_search_finetune_tool_repeats_the_searchs_finetune(base, tmp_path):
    import subprocess
    import sys

    r = Search(base, tmp_path / "s", _opts(max_bits_per_weight=1.3, finetune_teacher="anchor")).run()
    tool = Path(__file__).resolve().parents[1] / "tools" / "search_finetune.py"
    args = [sys.executable, str(tool), str(base), "--map", str(tmp_path / "s" / "precision.json"), "--seed", "1",
            "--finetune-steps", "2", "--finetune-teacher", str(tmp_path / "s" / "anchor")]
    again = subprocess.run(args + ["--out", str(tmp_path / "again")], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"val loss {r['val_loss']:.4f}, {r['size']:,} bytes" in again.stdout
    assert load_checkpoint(tmp_path / "again").meta["train_config"] == \
        load_checkpoint(tmp_path / "s" / "checkpoint").meta["train_config"]
    plain = [sys.executable, str(tool), str(base), "--map", "ternary", "--seed", "2", "--finetune-steps", "2"]
    other = subprocess.run(plain + ["--out", str(tmp_path / "seed2")], capture_output=True, text=True)
    assert other.returncode == 0, other.stderr
    assert load_checkpoint(tmp_path / "seed2").meta["train_config"]["seed"] == 2
    seed2 = load_checkpoint(tmp_path / "seed2")
    assert seed2.meta["train_config"]["teacher"] is None
    assert set(seed2.config.precision.values()) == {"ternary"}


@pytest.mark.parametrize("args, message", [
    (["--max-size", "1KB"], "over the budget"),
    (["--max-size", "lots"], "expected a number"),
    ([], "exactly one of"),
    (["--max-size", "1MB", "--kinds", "int3"], "unknown kind"),
    (["--max-size", "1MB", "--finetune-teacher", "no/such/run"], "no such checkpoint folder"),
    (["--max-size", "1MB", "--finetune-teacher", "anchor", "--anchor-steps", "0"], "needs --anchor-steps"),
    (["--max-size", "1MB", "--kd-temperature", "0"], "--kd-temperature > 0"),
])
def test_search_cli_errors_are_one_line(base, tmp_path, args, message):
    result = CliRunner().invoke(main, [str(base), "--out", str(tmp_path / "o"), "--quiet", *args])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1] and "Traceback" not in result.stderr


# -- training with a map ------------------------------------------------------------------------------

def test_train_with_a_map_fresh_and_resumed(base, tmp_path):
    from onebit.train.trainer import main as train_main

    corpus = str(base.parent / "corpus.txt")
    out = tmp_path / "fresh"
    common = ["--data", corpus, "--tokenizer", "char", "--batch-size", "4", "--eval-batches", "2",
              "--set", "dim=32", "--set", "n_layers=2", "--set", "ffn_dim=64", "--set", "max_seq_len=32",
              "--set", "n_heads=4", "--set", "n_kv_heads=2", "--quiet"]
    result = CliRunner().invoke(train_main, ["--out", str(out), "--max-steps", "4", "--stop-after", "2",
                                             "--precision", "layers.0.*=int4,*.down_proj=int8", *common])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(train_main, ["--resume", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(out)
    assert ckpt.meta["step"] == 4
    assert ckpt.config.precision == {"layers.0.*": "int4", "*.down_proj": "int8"}
    assert [m.quant for m in ckpt.model.bitlinears()][:8] == ["int4"] * 7 + ["ternary"]


def test_init_from_keeps_the_weights_and_changes_the_map(base, tmp_path):
    from onebit.train.trainer import main as train_main

    out = tmp_path / "ft"
    data = ["--data", str(base.parent / "corpus.txt")]
    result = CliRunner().invoke(train_main, [*data, "--init-from", str(base), "--precision", "*=binary", "--out", str(out),
                                             "--max-steps", "1", "--lr", "1e-9", "--warmup-steps", "0",
                                             "--eval-batches", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    src, ft = load_checkpoint(base), load_checkpoint(out)
    assert ft.config.precision == {"*": "binary"} and ft.config.dim == src.config.dim
    a, b = src.model.state_dict(), ft.model.state_dict()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4  # one step at lr 1e-9
    bad = CliRunner().invoke(train_main, [*data, "--init-from", str(base), "--precision", "*=int3", "--out",
                                          str(tmp_path / "bad"), "--max-steps", "1", "--quiet"])
    assert bad.exit_code == 1 and "must be one of" in bad.stderr


def test_switching_to_int_kinds_keeps_the_checkpoints_function():
    """init-from: ternary/binary layers that become int4/int8 compute what they computed before."""
    import torch

    from onebit.config import ModelConfig
    from onebit.train.model import Transformer
    from onebit.train.trainer import _keep_function

    torch.manual_seed(0)
    src = Transformer(ModelConfig(n_layers=2, precision={"layers.1.*": "binary"})).eval()
    dst = Transformer(ModelConfig(n_layers=2, precision={"layers.0.*": "int4", "layers.1.*": "int8"})).eval()
    dst.load_state_dict(src.state_dict())
    x = torch.randint(0, 65, (2, 20))
    with torch.no_grad():
        before, changed = src(x)[0], dst(x)[0]
        _keep_function(src, dst)
        after = dst(x)[0]
    assert (changed - before).abs().max() > 1e-2  # the latents alone are another network
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_one_layer_losses_replay_the_blocks_before_the_switched_layer():
    """Sensitivities replay the unchanged blocks' outputs: the same losses as whole forwards."""
    import torch

    from onebit.compile.search import Evaluator
    from onebit.config import ModelConfig
    from onebit.train.model import Transformer

    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=3, precision={"layers.1.*": "int8"})
    model = Transformer(cfg)
    batches = [(torch.randint(0, 65, (2, 24)), torch.randint(0, 65, (2, 24))) for _ in range(2)]
    names = cfg.bitlinear_names()
    base = {n: cfg.layer_quant(n) for n in names}
    jobs = [(n, k) for n in names[::3] + [names[-1]] for k in ("binary", "int4") if k != base[n]]
    assert {int(n.split(".")[1]) for n, _ in jobs} == {0, 1, 2}
    counted = []
    fast = Evaluator(model, cfg, batches, {}, "t").one_layer_losses(base, jobs, lambda: counted.append(1))
    whole = Evaluator(model, cfg, batches, {}, "t")
    assert len(counted) == len(jobs) and len(set(fast.values())) == len(jobs)
    for (n, k), loss in fast.items():
        assert loss == whole.loss({**base, n: k})
    assert [type(b).__name__ for b in model.layers] == ["Block"] * 3  # the model is left as it was
    assert [m.quant for m in model.bitlinears()] == [base[n] for n in names]


def test_the_anchor_is_reused_only_when_it_is_the_one_asked_for(base, tmp_path):
    """A finished anchor in --out is reused (a copy in another folder too); another kind set,
    learning rate or length trains it again instead of measuring on a stale one."""
    import shutil

    from onebit.compile.search import anchor_matches

    s = Search(base, tmp_path / "a", _opts(max_bits_per_weight=1.3))
    s.use_anchor()
    anchor = tmp_path / "a" / "anchor"
    assert load_checkpoint(anchor).config.precision == {n: "int8" for n in s.names}
    shutil.copytree(anchor, tmp_path / "b" / "anchor")
    for where, over, reused in [("a", {}, True), ("b", {}, True), ("b", dict(kinds=("binary", "ternary", "int4")), False),
                                ("b", dict(finetune_lr=2e-3), False), ("b", dict(anchor_steps=3), False)]:
        o = _opts(max_bits_per_weight=1.3, **over)
        t = Search(base, tmp_path / where, o)
        top = max(o.kinds, key=["binary", "ternary", "int4", "int8"].index)
        assert anchor_matches(tmp_path / where / "anchor",
                              t._finetune_config({n: top for n in t.names}, o.anchor_steps)) == reused
    t = Search(base, tmp_path / "b", _opts(max_bits_per_weight=1.3, kinds=("binary", "ternary", "int4")))
    t.use_anchor()
    assert load_checkpoint(tmp_path / "b" / "anchor").config.precision == {n: "int4" for n in t.names}
    assert t.sens_base == {n: "int4" for n in t.names}
