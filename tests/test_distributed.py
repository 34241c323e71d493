"""Training on several processes (torchrun, gloo on CPU) gives what one process gives.

Every run here is the same tiny model for 20 steps; the comparisons are to float tolerance (an
all-reduce sums in a different order than one process does), never exact. Full precision agrees
to ~5e-7. Ternary agrees to ~1e-3 only: a rounding-level difference moves an int8 activation code
across a rounding boundary now and then, and the straight-through training follows that code, so
the runs drift apart slowly (measured: 7e-4 at most after 20 steps, on weights of magnitude 0.06;
a different seed differs by 1e-1).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import write_word_corpus

from onebit.train import trainer as train_cli
from onebit.train.checkpoint import load_checkpoint
from onebit.train.metrics import read_metrics

MODEL = ("dim=32", "n_layers=2", "n_heads=4", "n_kv_heads=2", "ffn_dim=64", "max_seq_len=16")
STEPS = 20
LAUNCH_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_word_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", seed=11)


@pytest.fixture
def env(tmp_path) -> dict:
    """One thread per process (the machine is shared) and a cache of our own."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "ONEBIT_THREADS": "1",
            "ONEBIT_CACHE_DIR": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}


def run_args(corpus: Path, *extra: str, quant: str = "ternary") -> list[str]:
    args = ["--data", str(corpus), "--quant", quant, "--max-steps", str(STEPS), "--batch-size", "4",
            "--grad-accum", "2", "--lr", "1e-2", "--warmup-steps", "2", "--eval-interval", "5",
            "--eval-batches", "2", "--ckpt-interval", "100", "--seed", "5", "--latent-clamp", "2.0",
            "--dist-timeout", "60", "--quiet"]
    for item in MODEL:
        args += ["--set", item]
    return args + list(extra)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, args: list[str], env: dict, nodes: tuple[int, int] | None = None,
             port: int | None = None) -> subprocess.Popen:
    launch = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nodes is None:
        launch += ["--standalone"]
    else:
        node_rank, n_nodes = nodes
        launch += [f"--nnodes={n_nodes}", f"--node-rank={node_rank}", "--rdzv-backend=c10d",
                   f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=onebit-test"]
    return subprocess.Popen(launch + ["-m", "onebit.train"] + args, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> str:
    try:
        out, err = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"launch timed out:\n{err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    return err


def single(args: list[str]) -> None:
    result = CliRunner().invoke(train_cli.main, args)
    assert result.exit_code == 0, (result.stderr, result.exception)


TOLERANCE = {"ternary": 2e-3, "none": 1e-5}


def assert_same_run(a: Path, b: Path, quant: str = "ternary") -> None:
    tol = TOLERANCE[quant]
    rows_a, rows_b = read_metrics(a / "metrics.csv"), read_metrics(b / "metrics.csv")
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b] == [5, 10, 15, 20]
    for ra, rb in zip(rows_a, rows_b):
        for col in ("train_loss", "val_loss"):
            assert ra[col] == pytest.approx(rb[col], rel=tol), (col, ra, rb)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=0, atol=tol), (k, (wa[k] - wb[k]).abs().max())


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run).model.state_dict()


def saved_step(run: Path) -> int:
    return load_checkpoint(run).meta["step"]


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    """The uninterrupted one-process run every launch below is held to (made once)."""
    out = tmp_path_factory.mktemp("reference") / "one"
    single(run_args(corpus, "--out", str(out)))
    return out


def test_two_processes_match_one(corpus, env, tmp_path, reference):
    out = tmp_path / "ddp"
    err = finish(torchrun(2, run_args(corpus, "--out", str(out)), env))
    assert "2 processes (ddp)" in err and "2 sequences per rank" in err
    assert err.count("params ") == 1  # only rank 0 logs
    assert_same_run(reference, out)
    # the comparison can fail: a different seed is a different run
    other = tmp_path / "other"
    single(run_args(corpus, "--out", str(other), "--seed", "6"))
    with pytest.raises(AssertionError):
        assert_same_run(reference, other)


def test_fsdp_matches_ddp_and_resumes_on_one_process(corpus, env, tmp_path, reference):
    """FSDP for 12 steps on 2 ranks, stopped there, then the rest on 1 process: the uninterrupted run."""
    out = tmp_path / "fsdp"
    err = finish(torchrun(2, run_args(corpus, "--out", str(out), "--fsdp", "--stop-after", "12"), env))
    assert "2 processes (fsdp)" in err
    assert saved_step(out) == 12
    single(["--resume", str(out), "--quiet"])
    assert_same_run(reference, out)


def test_fsdp_sharded_checkpoint_exports_and_resumes(corpus, env, tmp_path, reference):
    """Each rank writes its shard at step 8; export reads the shards; FSDP on 2 ranks resumes from them."""
    from onebit.compile.export import ExportOptions, export_1bit
    from onebit.format import read_1bit
    from onebit.train.dist_checkpoint import is_sharded

    out = tmp_path / "sharded"
    finish(torchrun(2, run_args(corpus, "--out", str(out), "--fsdp", "--sharded-checkpoint", "--stop-after", "8"),
                    env))
    assert is_sharded(out) and not (out / "latest" / "model.safetensors").exists()
    assert saved_step(out) == 8
    exported = tmp_path / "sharded.1bit"
    export_1bit(out, exported, ExportOptions())
    packed, gathered = read_1bit(exported), load_checkpoint(out).model.state_dict()
    assert packed.meta["provenance"]["step"] == 8
    assert torch.equal(torch.from_numpy(packed.array("norm.weight").astype("float32")), gathered["norm.weight"])
    assert_onnx_and_sample_read_shards(out, tmp_path)
    finish(torchrun(2, ["--resume", str(out), "--full-checkpoint", "--quiet"], env))
    assert not is_sharded(out)
    assert_same_run(reference, out)


def assert_onnx_and_sample_read_shards(sharded: Path, tmp_path: Path) -> None:
    """ONNX export and `onebit sample` read the shards: the same greedy tokens as the model put
    back together in this process, and as a full checkpoint of it."""
    from onebit.compile.onnx_export import export_onnx
    from onebit.run.ort import OrtDecoder, generate_ort
    from onebit.sampling import SamplerConfig
    from onebit.train import sample as sample_cli
    from onebit.train.checkpoint import save_checkpoint
    from onebit.train.sample import generate

    ckpt = load_checkpoint(sharded)
    prompt, greedy = ckpt.tokenizer.encode("the king"), SamplerConfig(temperature=0)
    export_onnx(sharded, tmp_path / "onnx", graphs="web")  # the web graph computes DESIGN.md exactly
    assert generate_ort(OrtDecoder(tmp_path / "onnx", "web"), prompt, 12, greedy) == generate(ckpt.model, prompt, 12,
                                                                                              greedy)
    full = tmp_path / "full"
    save_checkpoint(full, ckpt.model, ckpt.tokenizer, ckpt.meta)
    texts = [CliRunner().invoke(sample_cli.main, [str(path), "--prompt", "the king", "-n", "12", "--temperature", "0"])
             for path in (sharded, full)]
    assert texts[0].exit_code == 0, texts[0].output
    assert texts[0].stdout == texts[1].stdout and texts[0].stdout.startswith("the king")


def test_two_nodes_match_one(corpus, env, tmp_path):
    """Two torchrun launches meeting at a rendezvous on 127.0.0.1; full precision, to 1e-5."""
    one, out, port = tmp_path / "one", tmp_path / "nodes", free_port()
    single(run_args(corpus, "--out", str(one), quant="none"))
    args = run_args(corpus, "--out", str(out), quant="none")
    nodes = [torchrun(1, args, env, nodes=(rank, 2), port=port) for rank in range(2)]
    for proc in nodes:
        finish(proc)
    assert_same_run(one, out, quant="none")


def test_a_dead_rank_stops_the_others(corpus, env, tmp_path):
    """Rank 1 is killed mid-run; rank 0 exits with one clear line instead of waiting forever."""
    out, port = tmp_path / "dead", free_port()
    args = [sys.executable, "-m", "onebit.train"] + run_args(corpus, "--out", str(out), "--max-steps", "100000",
                                                             "--eval-interval", "1", "--dist-timeout", "30")
    procs = []
    for rank in range(2):
        rank_env = {**env, "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen(args, env=rank_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        deadline = time.monotonic() + LAUNCH_TIMEOUT_S
        while not ((out / "metrics.csv").is_file() and len(read_metrics(out / "metrics.csv")) >= 2):
            assert time.monotonic() < deadline and procs[0].poll() is None, procs[0].stderr.read()[-3000:]
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGKILL)
        _, err = procs[0].communicate(timeout=90)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert procs[0].returncode == 1, err[-3000:]
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("error: rank 0 of 2: another training process failed"), err[-3000:]
    assert "Traceback" not in err


def test_batch_must_divide_among_the_processes(corpus, tmp_path, monkeypatch):
    from onebit.train.distributed import DistributedError, World
    from onebit.train.presets import TrainConfig

    monkeypatch.setenv("ONEBIT_CACHE_DIR", str(tmp_path / "cache"))
    cfg = TrainConfig(data=str(corpus), model=dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=2, ffn_dim=64,
                                                   max_seq_len=16), batch_size=3)
    with pytest.raises(DistributedError, match="--batch-size 3 does not divide evenly among 2 processes"):
        train_cli.new_run(cfg, tmp_path / "odd", world=World(rank=0, size=2))


def test_only_communication_errors_blame_a_peer():
    from onebit.train.distributed import is_peer_failure

    assert is_peer_failure(RuntimeError("[gloo/transport/tcp/pair.cc:537] Read error: Connection reset by peer"))
    assert is_peer_failure(torch.distributed.DistBackendError("NCCL watchdog timed out"))
    assert not is_peer_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)"))
