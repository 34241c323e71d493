"""Training that survives crashes: SIGKILL at random moments, a torn metrics.csv, a full disk.

The kill test runs `onebit train` in a forked child process, kills it 20+ times (half of the kills aimed at a
checkpoint save in progress), resumes it each time, and checks that the run ends bit-identical to
one that was never interrupted.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import skip_unless_ci
from onebit.train.checkpoint import CheckpointError, load_checkpoint, load_train_state, save_checkpoint
from onebit.train.metrics import DETERMINISTIC_COLUMNS, read_metrics
from onebit.train.trainer import main as train_main

# imported here, once, rather than in each forked child: AdamW's first construction imports
# torch._dynamo, which takes seconds
torch.optim.AdamW([torch.zeros(1, requires_grad=True)])

KILLS = 20
MODEL = ("dim=16", "n_layers=1", "n_heads=2", "n_kv_heads=2", "ffn_dim=32", "max_seq_len=16")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    rng = random.Random(11)
    words = ["to", "be", "or", "not", "the", "king", "shall", "love", "night", "crown", "my", "lord"]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(6)) for _ in range(300)) + "\n")
    return path


def _train_args(corpus: Path, out: Path, max_steps: int) -> list[str]:
    args = ["--data", str(corpus), "--tokenizer", "char", "--max-steps", str(max_steps), "--batch-size", "2",
            "--eval-interval", "3", "--eval-batches", "1", "--ckpt-interval", "2", "--warmup-steps", "5",
            "--lr", "0.01", "--seed", "5", "--quiet", "--out", str(out)]
    for item in MODEL:
        args += ["--set", item]
    return args


def _resume_args(out: Path) -> list[str]:
    return ["--resume", str(out), "--quiet"]


def _spawn(args: list[str], tmp_path: Path, stderr: Path | None = None) -> int:
    """`onebit train ARGS` in a forked child: a real process to kill, without paying torch's import again."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 70
    try:  # the child: never return into pytest
        # pytest's capture has replaced sys.stderr: point both the fds and the objects at our files
        sys.stderr = open(stderr or os.devnull, "w", buffering=1)
        sys.stdout = open(os.devnull, "w")
        os.dup2(sys.stderr.fileno(), 2)
        os.dup2(sys.stdout.fileno(), 1)
        os.environ["ONEBIT_CACHE_DIR"] = str(tmp_path / "cache")
        train_main(args, prog_name="onebit train")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        os._exit(code)


def _wait(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


class _Child:
    """A forked training run that the test kills (or finds finished)."""

    def __init__(self, pid: int):
        self.pid, self.exit = pid, None

    def done(self) -> bool:
        if self.exit is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.exit = os.waitstatus_to_exitcode(status)
        return self.exit is not None

    def kill(self) -> int:
        if not self.done():
            os.kill(self.pid, signal.SIGKILL)
            self.exit = _wait(self.pid)
        return self.exit


def _run(args: list[str], tmp_path: Path) -> tuple[int, str]:
    log = tmp_path / f"stderr-{time.monotonic_ns()}.txt"
    rc = _wait(_spawn(args, tmp_path, log))
    return rc, log.read_text()


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _temp_versions(out: Path) -> set[str]:
    """Version folders being written, or left half-written by an earlier kill."""
    try:
        return {p.name for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")}
    except FileNotFoundError:
        return set()


def _wait_for_training(child: _Child, metrics: Path, old_inode: int | None) -> None:
    """Until the run has started its loop: metrics.csv is (re)written just before the first step."""
    deadline = time.monotonic() + 120
    while _inode(metrics) in (None, old_inode):
        assert not child.done(), f"the run ended (exit {child.exit}) before its first step"
        assert time.monotonic() < deadline, "the training process did not start within 120 s"
        time.sleep(0.002)


def _state(out: Path) -> tuple[dict, dict, list]:
    weights = load_file(str(out / "latest" / "model.safetensors"))
    state = load_train_state(out)
    rows = [[r[c] for c in DETERMINISTIC_COLUMNS] for r in read_metrics(out / "metrics.csv")]
    return weights, state, rows


def _assert_same_tree(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same_tree(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tree(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and a != a:
        assert b != b, where
    elif not where.endswith("/elapsed_s"):  # wall-clock time, the one thing a resume cannot repeat
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_sigkill_at_random_moments_then_resume_is_bit_identical(corpus: Path, tmp_path: Path) -> None:
    # long enough that 20 kills cannot reach the end on a fast machine: a kill lets a process run
    # at most 4 saves (8 steps) or 0.1 s
    max_steps = 300
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    rc, err = _run(_train_args(corpus, straight, max_steps), tmp_path)
    assert rc == 0, err

    rng = random.Random(2024)
    in_save = 0
    for kill in range(KILLS):
        metrics = killed / "metrics.csv"
        resume = (killed / "latest").exists()
        old_inode, torn = _inode(metrics), _temp_versions(killed)
        child = _Child(_spawn(_resume_args(killed) if resume else _train_args(corpus, killed, max_steps), tmp_path))
        try:
            _wait_for_training(child, metrics, old_inode)
            if rng.random() < 0.5:  # aim at a save: the 1st to 4th that this process starts
                nth, seen = rng.randint(1, 4), set()
                while len(seen) < nth and not child.done():
                    seen |= _temp_versions(killed) - torn
                    time.sleep(0.0002)
            else:
                time.sleep(rng.uniform(0.0, 0.1))
        finally:
            rc = child.kill()
        assert rc == -signal.SIGKILL, f"the run ended before kill {kill + 1} (exit {rc}): make max_steps larger"
        in_save += bool(_temp_versions(killed) - torn)
        if (killed / "latest").exists():  # every kill leaves a loadable checkpoint
            load_checkpoint(killed)
    # half of the kills aim at a save; a few of those find the save already over
    assert in_save >= 3, f"only {in_save} of {KILLS} kills landed in the middle of a save"
    rc, err = _run(_resume_args(killed), tmp_path)
    assert rc == 0, err

    (w_a, state_a, rows_a), (w_b, state_b, rows_b) = _state(straight), _state(killed)
    _assert_same_tree(w_a, w_b, "weights")
    _assert_same_tree(state_a, state_b, "train_state")
    assert rows_a == rows_b
    assert json.loads((killed / "latest" / "meta.json").read_text())["step"] == max_steps
    assert [p.name for p in (killed / "checkpoints").iterdir()] == [os.readlink(killed / "latest").split("/")[-1]]


def test_torn_metrics_line_is_repaired_on_resume(corpus: Path, tmp_path: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _run(_train_args(corpus, straight, 12), tmp_path)[0] == 0
    rc, err = _run(_train_args(corpus, split, 12) + ["--stop-after", "8"], tmp_path)
    assert rc == 0, err
    with (split / "metrics.csv").open("ab") as f:  # a row cut short by a crash in its write
        f.write(b"9,2.71")
    rc, err = _run(_resume_args(split), tmp_path)
    assert rc == 0 and "torn last row" in err, err
    strip = lambda rows: [[r[c] for c in DETERMINISTIC_COLUMNS] for r in rows]  # noqa: E731
    assert strip(read_metrics(straight / "metrics.csv")) == strip(read_metrics(split / "metrics.csv"))


# ----------------------------------------------------------------------------------------------
# a full disk


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 100 KiB tmpfs: room for one checkpoint of the micro model (76 KiB in 4 KiB pages), not two."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100k", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        skip_unless_ci(f"cannot mount a tmpfs for the full-disk test: {result.stderr.strip()} (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_gives_one_error_and_keeps_the_last_checkpoint(corpus: Path, small_disk: Path,
                                                                   tmp_path: Path) -> None:
    out = small_disk / "run"
    rc, err = _run(_train_args(corpus, out, 20), tmp_path)
    assert rc == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert lines[-1].startswith("error: could not save a checkpoint") and "no space left on device" in lines[-1]
    assert "previous checkpoint is intact" in lines[-1]
    ckpt = load_checkpoint(out)
    assert ckpt.meta["step"] == 2 and load_train_state(out)["step"] == 2
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # nothing half-written stays


def test_full_disk_in_save_checkpoint(small_disk: Path) -> None:
    from onebit.config import ModelConfig
    from onebit.tokenizer import train_char_tokenizer
    from onebit.train.model import Transformer

    tokenizer = train_char_tokenizer("abcdefgh\n")
    model = Transformer(ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=2, ffn_dim=32, max_seq_len=16,
                                    vocab_size=tokenizer.vocab_size))
    save_checkpoint(small_disk, model, tokenizer, {"step": 1})
    with pytest.raises(CheckpointError, match="no space left on device.*previous checkpoint is intact"):
        save_checkpoint(small_disk, model, tokenizer, {"step": 2}, train_state={"big": torch.zeros(40_000)})
    assert load_checkpoint(small_disk).meta["step"] == 1
