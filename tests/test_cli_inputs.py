"""Every command-line tool over a matrix of bad inputs (issue 12, "Every CLI, every bad input").

Each case runs one tool in a subprocess and expects: a non-zero exit (1 for a bad input, 2 for a
usage error, 130 for Ctrl-C), no traceback, stderr ending in one `error:` line (click's usage
errors end in its `Error:` line), and no output file, not even a partial or temp one. The cases
run concurrently (they are mostly interpreter start-up), then one test per case checks its result.
Running as root, the tools run with CAP_DAC_OVERRIDE dropped (setpriv) so that unreadable files
and read-only folders are what they are for everyone else.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from conftest import skip_unless_ci
from onebit.config import ModelConfig
from onebit.tokenizer import train_char_tokenizer
from onebit.train.checkpoint import save_checkpoint
from onebit.train.model import Transformer

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
BIN = Path(PY).parent
C_CLI = Path(os.environ.get("ONEBIT_RUN_CLI", REPO / "runtime_c" / "build" / "onebit-run"))
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
BAD_UTF8 = b"\xff\xfe\xc3"
HUGE = "99999999999999999999"

TOOLS: dict[str, list] = {
    "train": [PY, "-m", "onebit.cli", "train"],
    "export": [PY, "-m", "onebit.cli", "export"],
    "sample": [PY, "-m", "onebit.cli", "sample"],
    "inspect": [PY, "-m", "onebit.cli", "inspect"],
    "run": [PY, "-m", "onebit.cli", "run"],
    "run_c": [PY, "-m", "onebit.run_c"],
    "run_ort": [PY, "-m", "onebit.run_ort"],
    "onebit-run": [str(C_CLI)],
    # the per-stage scripts that predate `onebit`
    "onebit-train": [str(BIN / "onebit-train")],
    "onebit-export": [str(BIN / "onebit-export")],
    "onebit-sample": [str(BIN / "onebit-sample")],
    "onebit-run-ort": [str(BIN / "onebit-run-ort")],
}


class W:
    """The fixture folder's paths (see `world`)."""

    def __init__(self, root: Path):
        self.root = root
        self.corpus, self.empty, self.binary = root / "corpus.txt", root / "empty.txt", root / "binary.txt"
        self.secret = root / "secret.txt"  # unreadable
        self.dir, self.ro = root / "dir", root / "ro"  # an empty folder; a read-only one
        self.foreign = root / "foreign"  # a folder holding someone's file
        self.ckpt, self.other, self.mixed = root / "ckpt", root / "other", root / "mixed"
        self.locked = root / "locked"  # a checkpoint whose weights are unreadable
        self.model, self.truncated, self.garbage = root / "model.1bit", root / "truncated.1bit", root / "garbage.1bit"
        self.locked_model = root / "locked.1bit"
        self.onnx, self.onnx_other = root / "onnx", root / "onnx_other"
        self.out = root / "out"  # each case writes under out/<case id>/

    def nope(self, name: str = "nope") -> Path:
        return self.root / name


def _checkpoint(path: Path, text: str) -> None:
    tokenizer = train_char_tokenizer(text)
    torch.manual_seed(0)
    config = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=32,
                         vocab_size=tokenizer.vocab_size)
    save_checkpoint(path, Transformer(config), tokenizer, {"step": 0})


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> W:
    from onebit.compile.export import ExportOptions, export_1bit
    from onebit.compile.onnx_export import export_onnx

    w = W(tmp_path_factory.mktemp("cli"))
    w.corpus.write_text(TEXT * 40)
    w.empty.write_bytes(b"")
    w.binary.write_bytes(b"Before we \xff\xfe proceed\n" * 20)
    w.secret.write_text(TEXT)
    w.dir.mkdir()
    w.ro.mkdir()
    w.foreign.mkdir()
    (w.foreign / "notes.txt").write_text("not an export\n")
    w.out.mkdir()
    _checkpoint(w.ckpt, TEXT)
    _checkpoint(w.other, "abcdefghijklmnopqrstuvwxyz \n")
    shutil.copytree(w.ckpt, w.mixed, symlinks=True)  # the weights of one vocabulary, the tokenizer of another
    shutil.copy(w.other / "latest" / "tokenizer.json", w.mixed / "latest" / "tokenizer.json")
    shutil.copytree(w.ckpt, w.locked, symlinks=True)
    export_1bit(w.ckpt, w.model, ExportOptions())
    blob = w.model.read_bytes()
    w.truncated.write_bytes(blob[: len(blob) // 2])
    w.garbage.write_bytes(b"\x00garbage" * 16)
    shutil.copy(w.model, w.locked_model)
    export_onnx(w.ckpt, w.onnx)
    shutil.copytree(w.onnx, w.onnx_other)
    shutil.copy(w.other / "latest" / "tokenizer.json", w.onnx_other / "tokenizer.json")
    for path in (w.secret, w.locked / "latest" / "model.safetensors", w.locked_model):
        path.chmod(0)
    w.ro.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    return w


@dataclass
class Case:
    tool: str
    what: str
    args: Callable[[W], list]
    expect: str = ""  # a fragment of the error line
    rc: int = 1
    output: Callable[[W], Path] | None = None  # where no file may be left (an empty folder may)
    absent: Callable[[W], Path] | None = None  # what must not exist afterwards, not even as an empty folder
    logs: bool = False  # the tool may log lines (train's settings) before its error
    interrupt: bool = False  # send SIGINT once it is in the middle of its work
    permissions: bool = False  # needs file permissions to hold (root: setpriv)
    known: str = ""  # an open bug, with its owner: xfail(strict) until fixed

    @property
    def id(self) -> str:
        return f"{self.tool}: {self.what}".replace(" ", "_")


def _gen(w: W, tool: str) -> list:
    """The model argument of each generator."""
    if tool in ("sample", "onebit-sample"):
        return [w.ckpt]
    if tool in ("run_ort", "onebit-run-ort"):
        return ["--model", w.onnx]
    return ["-m", w.model]


def _generator_cases(tool: str, only: tuple[str, ...] = ()) -> list[Case]:
    """The prompt and sampler matrix; `only` picks some (a tool that imports torch costs seconds a case)."""
    long_run = ["-n", str(1 << 24), "--temperature", "0"]
    cases = [
        Case(tool, "unknown flag", lambda w: [*_gen(w, tool), "--bogus"], "--bogus", rc=1 if tool == "onebit-run" else 2),
        Case(tool, "empty prompt", lambda w: [*_gen(w, tool), "-p", ""], "empty"),
        Case(tool, "huge prompt", lambda w: [*_gen(w, tool), "-p", "Speak " * 20000], "longer than"),
        Case(tool, "invalid UTF-8 prompt", lambda w: [*_gen(w, tool), "-p", BAD_UTF8], "not valid UTF-8"),
        Case(tool, "prompt outside the vocabulary", lambda w: [*_gen(w, tool), "-p", "Zebra"], "Z"),
        Case(tool, "negative -n", lambda w: [*_gen(w, tool), "-n", "-1"], "-n"),
        Case(tool, "enormous -n", lambda w: [*_gen(w, tool), "-n", HUGE], "-n"),
        Case(tool, "NaN temperature", lambda w: [*_gen(w, tool), "--temperature", "nan"], "temperature"),
        Case(tool, "Ctrl-C while generating", lambda w: [*_gen(w, tool), "-p", "Speak", *long_run], "interrupted",
             rc=130, interrupt=True),
    ]
    return [c for c in cases if not only or c.what in only]


def _model_file_cases(tool: str) -> list[Case]:
    flag = [] if tool == "inspect" else ["-m"]
    return [
        Case(tool, "missing model", lambda w: [*flag, w.nope("nope.1bit")], "nope.1bit"),
        Case(tool, "a folder as the model", lambda w: [*flag, w.dir], "dir"),
        Case(tool, "empty model file", lambda w: [*flag, w.empty], "empty.txt"),
        Case(tool, "not a .1bit file", lambda w: [*flag, w.garbage], "garbage.1bit"),
        Case(tool, "truncated model", lambda w: [*flag, w.truncated], "truncated.1bit"),
        # click checks a readable path itself: a usage error (exit 2), one `Error:` line
        Case(tool, "unreadable model", lambda w: [*flag, w.locked_model], "ermission" if tool == "onebit-run" else
             "not readable", rc=1 if tool == "onebit-run" else 2, permissions=True),
    ]


CASES: list[Case] = [
    # -- onebit train
    Case("train", "unknown flag", lambda w: ["--bogus"], rc=2),
    Case("train", "missing corpus", lambda w: ["--data", w.nope("nope.txt"), "--out", w.out / "t1" / "run"],
         "nope.txt", absent=lambda w: w.out / "t1"),
    Case("train", "unreadable corpus", lambda w: ["--data", w.secret, "--out", w.out / "t4"], "ermission",
         permissions=True, absent=lambda w: w.out / "t4"),
    Case("train", "invalid UTF-8 corpus", lambda w: ["--data", w.binary, "--out", w.out / "t5"], "UTF-8",
         absent=lambda w: w.out / "t5"),
    Case("train", "enormous steps", lambda w: ["--data", w.corpus, "--max-steps", HUGE, "--out", w.out / "t7"],
         "max_steps", absent=lambda w: w.out / "t7"),
    Case("train", "NaN learning rate", lambda w: ["--data", w.corpus, "--lr", "nan", "--out", w.out / "t8"], "lr",
         absent=lambda w: w.out / "t8"),
    Case("train", "a file as the run folder", lambda w: ["--data", w.corpus, "--out", w.corpus], "corpus.txt"),
    Case("train", "read-only run folder", lambda w: ["--data", w.corpus, "--out", w.ro / "run"], "ermission",
         output=lambda w: w.ro / "run", permissions=True),
    Case("train", "checkpoint of another vocabulary",
         lambda w: ["--init-from", w.other, "--data", w.corpus, "--out", w.out / "t10"], "vocabulary", logs=True,
         absent=lambda w: w.out / "t10"),
    Case("train", "Ctrl-C while training",
         lambda w: ["--data", w.corpus, "--max-steps", "100000", "--eval-interval", "1000", "--ckpt-interval", "3",
                    "--set", "dim=32", "--set", "n_layers=1", "--set", "max_seq_len=32", "--out", w.out / "t11"],
         "interrupted", rc=130, logs=True, interrupt=True),
    # -- onebit export
    Case("export", "missing checkpoint", lambda w: [w.nope(), "-o", w.out / "e2.1bit"], "does not exist",
         output=lambda w: w.out / "e2.1bit"),
    Case("export", "a folder as the output", lambda w: [w.ckpt, "-o", w.dir], "is a directory"),
    Case("export", "read-only output folder", lambda w: [w.ckpt, "-o", w.ro / "m.1bit"], "ermission",
         output=lambda w: w.ro / "m.1bit", permissions=True),
    Case("export", "C header in a read-only folder",
         lambda w: [w.ckpt, "-o", w.out / "e4.1bit", "--emit-c-header", w.ro / "m.h"], "ermission",
         output=lambda w: w.out / "e4.1bit", permissions=True),
    Case("export", "ONNX into a read-only folder", lambda w: [w.ckpt, "--format", "onnx", "-o", w.ro / "onnx"],
         "ermission", output=lambda w: w.ro / "onnx", permissions=True),
    Case("export", "ONNX into a folder of other files", lambda w: [w.ckpt, "--format", "onnx", "-o", w.foreign],
         "not an ONNX export", output=lambda w: w.foreign),
    Case("export", "unreadable weights", lambda w: [w.locked, "-o", w.out / "e5.1bit"], "ermission",
         output=lambda w: w.out / "e5.1bit", permissions=True),
    Case("export", "checkpoint of another vocabulary", lambda w: [w.mixed, "-o", w.out / "e6.1bit"], "vocab_size",
         output=lambda w: w.out / "e6.1bit"),
    # -- onebit sample (the PyTorch generator)
    Case("sample", "missing checkpoint", lambda w: [w.nope()], "does not exist"),
    Case("sample", "checkpoint of another vocabulary", lambda w: [w.mixed], "vocab_size"),
    Case("sample", "unreadable weights", lambda w: [w.locked], "ermission", permissions=True),
    *_generator_cases("sample", ("invalid UTF-8 prompt", "huge prompt", "NaN temperature", "Ctrl-C while generating")),
    # -- onebit inspect
    Case("inspect", "unknown flag", lambda w: [w.model, "--bogus"], rc=2),
    *_model_file_cases("inspect"),
    # -- onebit run / python -m onebit.run_c (the C runtime through cffi)
    *_model_file_cases("run_c"),
    *_generator_cases("run_c"),
    Case("run_c", "perplexity of a missing file", lambda w: ["-m", w.model, "--ppl", w.nope("nope.txt")], "nope.txt"),
    Case("run_c", "perplexity of a folder", lambda w: ["-m", w.model, "--ppl", w.dir], "dir"),
    Case("run_c", "perplexity of invalid UTF-8", lambda w: ["-m", w.model, "--ppl", w.binary], "UTF-8"),
    Case("run_c", "enormous context", lambda w: ["-m", w.model, "--ctx", HUGE], "ctx"),
    Case("run_c", "zero threads", lambda w: ["-m", w.model, "-t", "0"], "threads"),
    Case("run", "missing model", lambda w: ["-m", w.nope("nope.1bit")], "nope.1bit"),
    # -- python -m onebit.run_ort (onnxruntime)
    Case("run_ort", "missing model folder", lambda w: ["--model", w.nope()], "nope"),
    Case("run_ort", "a file as the model folder", lambda w: ["--model", w.model], "model.1bit"),
    Case("run_ort", "a folder without graphs", lambda w: ["--model", w.dir], "dir"),
    Case("run_ort", "tokenizer of another vocabulary", lambda w: ["--model", w.onnx_other], "tokens"),
    Case("run_ort", "negative threads", lambda w: ["--model", w.onnx, "--threads", "-3"], "threads"),
    *_generator_cases("run_ort"),
    # -- onebit-run (the C CLI)
    *_model_file_cases("onebit-run"),
    *_generator_cases("onebit-run"),
    Case("onebit-run", "no model", lambda w: [], "model"),
    Case("onebit-run", "a flag without its value", lambda w: ["-m"], "-m"),
    Case("onebit-run", "enormous context", lambda w: ["-m", w.model, "--ctx", HUGE], "ctx"),
    Case("onebit-run", "perplexity of a folder", lambda w: ["-m", w.model, "--ppl", w.dir], "dir"),
    # -- the old scripts
    Case("onebit-train", "unknown flag", lambda w: ["--bogus"], rc=2),
    Case("onebit-export", "missing checkpoint", lambda w: [w.nope(), "-o", w.out / "a2.1bit"], "does not exist"),
    Case("onebit-sample", "NaN temperature", lambda w: [w.ckpt, "--temperature", "nan"], "temperature"),
    Case("onebit-run-ort", "missing model folder", lambda w: ["--model", w.nope()], "nope"),
]


# ----------------------------------------------------------------------------------------------
# running a case


@dataclass
class Result:
    rc: int
    stderr: str
    new_files: list[str] = field(default_factory=list)


def _argv(case: Case, w: W) -> list:
    argv = [*TOOLS[case.tool], *case.args(w)]
    if case.permissions and os.geteuid() == 0:
        # root reads and writes through any mode bits; without these capabilities it does not
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *argv]
    return [a if isinstance(a, bytes) else str(a) for a in argv]


def _snapshot(w: W) -> set[str]:
    """Every path a tool might write into: the per-case outputs, the read-only and the input folders."""
    return {str(p.relative_to(w.root)) for p in w.root.rglob("*")
            if "cache" not in p.parts and (p.is_symlink() or not p.is_dir())}  # files: an empty folder is no output


def _run(case: Case, w: W) -> Result:
    env = {**os.environ, "ONEBIT_CACHE_DIR": str(w.root / "cache" / case.id), "ONEBIT_THREADS": "1",
           "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    if case.interrupt:
        return _interrupt(case, w, env)
    try:
        done = subprocess.run(_argv(case, w), env=env, capture_output=True, timeout=600, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Result(-1, "timed out after 600 s (unbounded time?)")
    return Result(done.returncode, done.stderr.decode("utf-8", "replace"))


def _interrupt(case: Case, w: W, env: dict) -> Result:
    """Start the tool, wait until it is working (text on stdout, or a training checkpoint), then SIGINT."""
    # a runner that started us in the background may have set SIGINT to "ignore", which children
    # inherit (and Python then never raises KeyboardInterrupt): give the tool the default handling
    proc = subprocess.Popen(_argv(case, w), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        if case.tool.endswith("train"):
            out = Path(case.args(w)[-1])
            deadline = time.monotonic() + 120
            while not (out / "latest").exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        else:
            proc.stdout.read(len("Speak") + 8)  # the prompt, then some generated text
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=180)  # generous: a loaded 2-core CI machine
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return Result(proc.returncode, err.decode("utf-8", "replace"))


@pytest.fixture(scope="module")
def results(world: W) -> dict[str, Result]:
    """Every case, four at a time (they wait mostly on interpreter start-up), the interrupts one by one."""
    if not C_CLI.is_file():
        done = subprocess.run(["make", "-C", str(REPO / "runtime_c"), "all"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    before = _snapshot(world)
    quiet = [c for c in CASES if not c.interrupt]
    with ThreadPoolExecutor(max_workers=4) as pool:
        out = dict(zip([c.id for c in quiet], pool.map(lambda c: _run(c, world), quiet)))
    for case in CASES:
        if case.interrupt:
            out[case.id] = _run(case, world)
    after = _snapshot(world)
    for result in out.values():
        result.new_files = sorted(after - before)
    return out


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, world: W, results: dict[str, Result]) -> None:
    if case.permissions and os.geteuid() == 0 and shutil.which("setpriv") is None:
        skip_unless_ci("running as root without setpriv: mode bits do not stop root")
    if case.known:
        pytest.xfail(case.known) if _fails(case, world, results[case.id]) else pytest.fail(
            f"fixed? remove `known` from the case: {case.known}")
    problem = _fails(case, world, results[case.id])
    assert problem is None, problem


def _fails(case: Case, world: W, result: Result) -> str | None:
    """Why the result breaks the contract, or None."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    context = f"exit {result.rc}, stderr:\n{result.stderr[-3000:]}"
    if "Traceback" in result.stderr:
        return f"a traceback: {context}"
    if result.rc != case.rc:
        return f"expected exit {case.rc}: {context}"
    if not lines:
        return f"nothing on stderr: {context}"
    last = lines[-1]
    if not last.startswith("error: " if case.rc != 2 else "Error: "):
        return f"the last stderr line is not the error: {context}"
    if case.rc == 1 and not case.logs and len(lines) != 1:
        return f"more than one line on stderr: {context}"
    if case.expect and case.expect not in last:
        return f"{case.expect!r} not in the error line {last!r}"
    if case.output is not None:
        prefix = str(case.output(world).relative_to(world.root))
        leftover = [name for name in result.new_files if name == prefix or name.startswith(prefix + "/")]
        if leftover:
            return f"left behind {leftover}"
    if case.absent is not None and case.absent(world).exists():
        return f"left {case.absent(world)} behind"
    return None


def test_no_temp_file_is_left_anywhere(world: W, results: dict[str, Result]) -> None:
    new = next(iter(results.values())).new_files
    assert not [name for name in new if name.endswith(".tmp") or "/." in "/" + name]
