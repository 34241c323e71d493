"""A short atheris pass over the Python readers (tools/fuzz/fuzz_readers.py), and its findings replayed.

The run is bounded in seconds; any exception other than FormatError / TokenizerError fails it.
`python tools/fuzz/fuzz_readers.py TARGET SEEDS -max_total_time=N` is the long run (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from onebit.tokenizer import train_bpe_tokenizer

pytest.importorskip("atheris", reason="atheris (the dev extra) is not installed")

REPO = Path(__file__).resolve().parent.parent
HARNESS = REPO / "tools" / "fuzz" / "fuzz_readers.py"
FINDINGS = Path(__file__).resolve().parent / "fuzz"
SECONDS = 4


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, random_checkpoint) -> dict[str, Path]:
    from onebit.compile.export import ExportOptions, export_1bit

    root = tmp_path_factory.mktemp("seeds")
    fmt, tok = root / "format", root / "tokenizer"
    fmt.mkdir()
    tok.mkdir()
    ckpt = random_checkpoint()
    export_1bit(ckpt, fmt / "t2.1bit", ExportOptions(pack="t2", embed_dtype="f16"))
    export_1bit(random_checkpoint(quant="binary", pos="learned"), fmt / "b1.1bit", ExportOptions(embed_dtype="i8"))
    (tok / "char.json").write_bytes((ckpt / "latest" / "tokenizer.json").read_bytes())
    corpus = root / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 50)
    train_bpe_tokenizer([corpus], 300).save(tok / "bpe.json")
    return {"format": fmt, "tokenizer": tok}


def _fuzz(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HARNESS), *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.mark.parametrize("target", ["format", "tokenizer"])
def test_short_fuzz_run_finds_nothing(target: str, seeds: dict[str, Path], tmp_path: Path) -> None:
    done = _fuzz(target, seeds[target], f"-max_total_time={SECONDS}", "-seed=1", f"-artifact_prefix={tmp_path}/",
                 cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Done" in done.stderr


@pytest.mark.parametrize("target", sorted(p.name for p in FINDINGS.iterdir() if p.is_dir()))
def test_findings_stay_fixed(target: str, tmp_path: Path) -> None:
    inputs = sorted((FINDINGS / target).iterdir())
    done = _fuzz(target, *inputs, cwd=tmp_path)  # libFuzzer runs each file once
    assert done.returncode == 0, done.stderr[-4000:]
