"""Every command-line tool over a matrix of bad inputs (issue 12, "Every CLI, every bad input").

Each case runs one tool in a subprocess and expects: a non-zero exit (1 for a bad input, 2 for a
usage error, 130 for Ctrl-C), no traceback, stderr ending in one `error:` line (click's usage
errors end in its `Error:` line), and no output file, not even a partial or temp one. The cases
run concurrently (they are mostly interpreter start-up), then one test per case checks its result.
Running as root, the tools run with CAP_DAC_OVERRIDE dropped (setpriv) so that unreadable files
and read-only folders are what they are for everyone else.

The tools: the issue's seven (train, export, sample, inspect, onebit-run, run_c, run_ort; `onebit
run` and the old per-stage scripts are the same functions), and the commands added since (import,
plot, search, chat, serve). Ctrl-C is sent in the middle of generating and of training; export is
too short to interrupt from outside on these models: its Ctrl-C is tests/test_atomic.py's (a
KeyboardInterrupt in the middle of writing leaves nothing), and Ctrl-C while any `onebit COMMAND`
is still importing its stage is the last test here.
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
    # the commands added after the list
    "import": [PY, "-m", "onebit.cli", "import"],
    "plot": [PY, "-m", "onebit.cli", "plot"],
    "search": [PY, "-m", "onebit.cli", "search"],
    "chat": [PY, "-m", "onebit.cli", "chat"],
    "serve": [PY, "-m", "onebit.cli", "serve"],
    # the per-stage scripts that predate `onebit`
    "onebit-train": [str(BIN / "onebit-train")],
    "onebit-export": [str(BIN / "onebit-export")],
    "onebit-sample": [str(BIN / "onebit-sample")],
    "onebit-run-ort": [str(BIN / "onebit-run-ort")],
    "onebit-import": [str(BIN / "onebit-import")],
}
# A tokenizer.json whose BPE merges made HF `tokenizers` panic (found by atheris), and one with a
# Precompiled normalizer that still panics inside HF (caught there, its hook's lines captured)
FORGED_TOKENIZER = REPO / "tests" / "fuzz" / "tokenizer" / "panic-merges-f02cfa50"


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
        self.onnx_locked = root / "onnx_locked"  # an export whose graph is unreadable
        self.run, self.badrun = root / "run", root / "badrun"  # metrics.csv: a real one; garbage
        # a forged tokenizer.json, alone and in a checkpoint, an ONNX export and a HF folder
        self.forged, self.panicky = root / "forged-tokenizer.json", root / "panicky-tokenizer.json"
        self.forged_ckpt, self.forged_onnx, self.forged_hf = root / "forged_ckpt", root / "forged_onnx", root / "forged_hf"
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
    shutil.copytree(w.onnx, w.onnx_locked)
    w.run.mkdir()
    (w.run / "metrics.csv").write_text("step,train_loss,val_loss,val_ppl,lr,tokens_per_s,elapsed_s\n"
                                       "1,4.0,4.1,60.3,0.001,100,1\n2,3.5,3.6,36.6,0.001,100,2\n")
    w.badrun.mkdir()
    (w.badrun / "metrics.csv").write_bytes(b"\x00\xffnot,a\ncsv")
    _forged_tokenizers(w)
    for path in (w.secret, w.locked / "latest" / "model.safetensors", w.locked_model, w.onnx_locked / "model.onnx"):
        path.chmod(0)
    w.ro.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    return w


def _forged_tokenizers(w: W) -> None:
    import base64
    import json

    from hf_fixtures import save_hf_bitnet

    shutil.copy(FORGED_TOKENIZER, w.forged)
    spec = json.loads((w.ckpt / "latest" / "tokenizer.json").read_text())
    spec["normalizer"] = {"type": "Precompiled", "precompiled_charsmap": base64.b64encode(b"\xff" * 7).decode()}
    w.panicky.write_text(json.dumps(spec))
    shutil.copytree(w.ckpt, w.forged_ckpt, symlinks=True)
    (w.forged_ckpt / "latest" / "tokenizer.json").unlink()  # a hard link or a copy: never write through
    shutil.copy(w.forged, w.forged_ckpt / "latest" / "tokenizer.json")
    shutil.copytree(w.onnx, w.forged_onnx)
    shutil.copy(w.forged, w.forged_onnx / "tokenizer.json")
    save_hf_bitnet(w.forged_hf, "latent")
    shutil.copy(w.forged, w.forged_hf / "tokenizer.json")


def _forged_tokenizer_cases() -> list[Case]:
    """Every tool that loads a tokenizer.json (a checkpoint holds one), over the forged one: one line,
    no Rust panic text."""
    want = "is not in the vocabulary"  # the merge check's words, before HF sees the file
    cases = []
    for train in ("train", "onebit-train"):
        cases.append(Case(train, "forged tokenizer.json", lambda w, t=train: [
            "--data", w.corpus, "--tokenizer", w.forged, "--out", w.out / f"{t}-forged"], want,
            absent=lambda w, t=train: w.out / f"{t}-forged"))
    for export in ("export", "onebit-export"):
        cases.append(Case(export, "checkpoint with a forged tokenizer.json", lambda w, t=export: [
            w.forged_ckpt, "-o", w.out / f"{t}-forged.1bit"], want, output=lambda w, t=export: w.out / f"{t}-forged.1bit"))
    for sample in ("sample", "onebit-sample"):
        cases.append(Case(sample, "checkpoint with a forged tokenizer.json", lambda w: [w.forged_ckpt], want))
    for ort in ("run_ort", "onebit-run-ort"):
        cases.append(Case(ort, "ONNX export with a forged tokenizer.json", lambda w: ["--model", w.forged_onnx], want))
    cases.append(Case("search", "checkpoint with a forged tokenizer.json", lambda w: [
        w.forged_ckpt, "--max-size", "100KB", "--out", w.out / "search-forged"], want,
        absent=lambda w: w.out / "search-forged"))
    for imp in ("import", "onebit-import"):
        cases.append(Case(imp, "HF folder with a forged tokenizer.json", lambda w, t=imp: [
            w.forged_hf, "--out", w.out / f"{t}-forged", "--no-progress"], want, absent=lambda w, t=imp: w.out / f"{t}-forged"))
    cases.append(Case("train", "tokenizer.json that panics inside HF", lambda w: [
        "--data", w.corpus, "--tokenizer", w.panicky, "--out", w.out / "train-panicky"], "not a valid tokenizer.json",
        absent=lambda w: w.out / "train-panicky"))
    return cases


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
    Case("train", "a folder as the corpus", lambda w: ["--data", w.dir, "--out", w.out / "t12"], "dir",
         absent=lambda w: w.out / "t12"),
    Case("train", "empty corpus", lambda w: ["--data", w.empty, "--out", w.out / "t13"], "empty.txt",
         absent=lambda w: w.out / "t13"),
    Case("train", "negative steps", lambda w: ["--data", w.corpus, "--max-steps", "-5", "--out", w.out / "t14"],
         "max_steps", absent=lambda w: w.out / "t14"),
    Case("train", "NaN in a model setting", lambda w: ["--data", w.corpus, "--set", "norm_eps=nan", "--out",
                                                       w.out / "t15"], "norm_eps", absent=lambda w: w.out / "t15"),
    Case("train", "missing run to resume", lambda w: ["--resume", w.nope("nope-run")], "nope-run"),
    Case("train", "a file as the run to resume", lambda w: ["--resume", w.corpus], "corpus.txt"),
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
    Case("export", "unknown flag", lambda w: [w.ckpt, "-o", w.out / "e7.1bit", "--bogus"], "--bogus", rc=2,
         output=lambda w: w.out / "e7.1bit"),
    Case("export", "a file as the checkpoint", lambda w: [w.model, "-o", w.out / "e8.1bit"], "model.1bit",
         output=lambda w: w.out / "e8.1bit"),
    Case("export", "a folder without a checkpoint", lambda w: [w.dir, "-o", w.out / "e9.1bit"], "dir",
         output=lambda w: w.out / "e9.1bit"),
    # -- onebit sample (the PyTorch generator)
    Case("sample", "missing checkpoint", lambda w: [w.nope()], "does not exist"),
    Case("sample", "checkpoint of another vocabulary", lambda w: [w.mixed], "vocab_size"),
    Case("sample", "unreadable weights", lambda w: [w.locked], "ermission", permissions=True),
    Case("sample", "a folder without a checkpoint", lambda w: [w.dir], "dir"),
    *_generator_cases("sample"),
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
    Case("run_c", "negative context", lambda w: ["-m", w.model, "--ctx", "-8"], "ctx"),
    Case("run_c", "unreadable perplexity file", lambda w: ["-m", w.model, "--ppl", w.secret], "not readable", rc=2,
         permissions=True),
    Case("run_c", "NaN top-p", lambda w: ["-m", w.model, "--top-p", "nan"], "top"),
    Case("run_c", "memory budget too small", lambda w: ["-m", w.model, "--max-memory", "64K"], "budget"),
    Case("run_c", "negative memory budget", lambda w: ["-m", w.model, "--max-memory", "-1G"], "--max-memory"),
    Case("run", "missing model", lambda w: ["-m", w.nope("nope.1bit")], "nope.1bit"),
    # -- python -m onebit.run_ort (onnxruntime)
    Case("run_ort", "missing model folder", lambda w: ["--model", w.nope()], "nope"),
    Case("run_ort", "a file as the model folder", lambda w: ["--model", w.model], "model.1bit"),
    Case("run_ort", "a folder without graphs", lambda w: ["--model", w.dir], "dir"),
    Case("run_ort", "tokenizer of another vocabulary", lambda w: ["--model", w.onnx_other], "tokens"),
    Case("run_ort", "negative threads", lambda w: ["--model", w.onnx, "--threads", "-3"], "threads"),
    Case("run_ort", "unreadable graph", lambda w: ["--model", w.onnx_locked], "ermission", permissions=True),
    *_generator_cases("run_ort"),
    # -- onebit-run (the C CLI)
    *_model_file_cases("onebit-run"),
    *_generator_cases("onebit-run"),
    Case("onebit-run", "no model", lambda w: [], "model"),
    Case("onebit-run", "a flag without its value", lambda w: ["-m"], "-m"),
    Case("onebit-run", "enormous context", lambda w: ["-m", w.model, "--ctx", HUGE], "ctx"),
    Case("onebit-run", "perplexity of a folder", lambda w: ["-m", w.model, "--ppl", w.dir], "dir"),
    Case("onebit-run", "perplexity of a missing file", lambda w: ["-m", w.model, "--ppl", w.nope("nope.txt")],
         "nope.txt"),
    Case("onebit-run", "perplexity of invalid UTF-8", lambda w: ["-m", w.model, "--ppl", w.binary], "UTF-8"),
    Case("onebit-run", "unreadable perplexity file", lambda w: ["-m", w.model, "--ppl", w.secret], "ermission",
         permissions=True),
    Case("onebit-run", "zero threads", lambda w: ["-m", w.model, "-t", "0"], "-t"),
    Case("onebit-run", "negative context", lambda w: ["-m", w.model, "--ctx", "-8"], "ctx"),
    Case("onebit-run", "NaN top-p", lambda w: ["-m", w.model, "--top-p", "nan"], "top-p"),
    Case("onebit-run", "memory budget too small", lambda w: ["-m", w.model, "--max-memory", "64K"], "budget"),
    Case("onebit-run", "negative memory budget", lambda w: ["-m", w.model, "--max-memory", "-1G"], "--max-memory"),
    Case("onebit-run", "enormous memory budget", lambda w: ["-m", w.model, "--max-memory", HUGE + "T"],
         "--max-memory"),
    Case("onebit-run", "NaN memory budget", lambda w: ["-m", w.model, "--max-memory", "nan"], "--max-memory"),
    # -- the commands added after the list: import, plot, search, chat, serve
    Case("import", "unknown flag", lambda w: [w.dir, "-o", w.out / "i1", "--bogus"], "--bogus", rc=2),
    Case("import", "missing folder", lambda w: [w.nope("nope-hf"), "-o", w.out / "i2"], "nope-hf",
         absent=lambda w: w.out / "i2"),
    Case("import", "a folder without a model", lambda w: [w.dir, "-o", w.out / "i3"], "dir",
         absent=lambda w: w.out / "i3"),
    Case("import", "a file as the model folder", lambda w: [w.corpus, "-o", w.out / "i4"], "corpus.txt",
         absent=lambda w: w.out / "i4"),
    Case("plot", "missing run folder", lambda w: [w.nope("nope-run")], "nope-run"),
    Case("plot", "a run without metrics", lambda w: [w.dir], "metrics.csv"),
    Case("plot", "garbage metrics", lambda w: [w.badrun], "metrics.csv", output=lambda w: w.badrun / "curves.png"),
    Case("plot", "read-only output folder", lambda w: [w.run, "--out", w.ro / "curves.png"], "ermission",
         output=lambda w: w.ro / "curves.png", permissions=True),
    Case("search", "unknown flag", lambda w: [w.ckpt, "--bogus"], "--bogus", rc=2),
    Case("search", "missing checkpoint", lambda w: [w.nope(), "--max-size", "100KB", "--out", w.out / "s1"],
         "nope", absent=lambda w: w.out / "s1"),
    Case("search", "a budget that is not a size", lambda w: [w.ckpt, "--max-size", "lots", "--out", w.out / "s2"],
         "--max-size", absent=lambda w: w.out / "s2"),
    Case("search", "negative budget", lambda w: [w.ckpt, "--max-size", "-5KB", "--out", w.out / "s3"],
         "--max-size", absent=lambda w: w.out / "s3"),
    Case("search", "NaN bits per weight", lambda w: [w.ckpt, "--max-bits-per-weight", "nan", "--out", w.out / "s4"],
         "bits", absent=lambda w: w.out / "s4"),
    Case("chat", "unknown flag", lambda w: [w.model, "--bogus"], "--bogus", rc=2),
    Case("chat", "missing model", lambda w: [w.nope("nope.1bit")], "nope.1bit"),
    Case("chat", "not a .1bit file", lambda w: [w.garbage], "garbage.1bit"),
    Case("chat", "NaN temperature", lambda w: [w.model, "--temperature", "nan"], "temperature"),
    Case("serve", "unknown flag", lambda w: ["-m", w.model, "--bogus"], "--bogus", rc=2),
    Case("serve", "missing model", lambda w: ["-m", w.nope("nope.1bit")], "nope.1bit"),
    Case("serve", "negative port", lambda w: ["-m", w.model, "--port", "-1"], "port"),
    Case("serve", "enormous port", lambda w: ["-m", w.model, "--port", HUGE], "port"),
    # -- the old scripts
    Case("onebit-train", "unknown flag", lambda w: ["--bogus"], rc=2),
    Case("onebit-export", "missing checkpoint", lambda w: [w.nope(), "-o", w.out / "a2.1bit"], "does not exist"),
    Case("onebit-sample", "NaN temperature", lambda w: [w.ckpt, "--temperature", "nan"], "temperature"),
    Case("onebit-run-ort", "missing model folder", lambda w: ["--model", w.nope()], "nope"),
    *_forged_tokenizer_cases(),
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
    if "panicked at" in result.stderr:
        return f"a Rust panic's message: {context}"
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


def test_ctrl_c_while_a_command_is_imported(monkeypatch) -> None:
    """`onebit COMMAND` imports the stage (torch: seconds) after click has started: Ctrl-C there is
    the same one line and exit 130 as anywhere else, not click's "Aborted!" and exit 1."""
    from click.testing import CliRunner

    import onebit.cli

    def interrupted(name: str):
        raise KeyboardInterrupt

    monkeypatch.setattr(onebit.cli.importlib, "import_module", interrupted)
    got = CliRunner().invoke(onebit.cli.main, ["export", "ckpt", "-o", "m.1bit"])
    assert got.exit_code == 130 and got.stderr.strip() == "error: interrupted" and got.stdout == ""
