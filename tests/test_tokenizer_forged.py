"""Forged tokenizer.json files that make HF `tokenizers` panic, abort or allocate without bound
(issue 12): Tokenizer.load refuses each with one TokenizerError and nothing on stderr.

Each forged file is loaded in a child process: a regression there is a Rust abort, which would
otherwise take the test process with it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

import pytest

from onebit.tokenizer import Tokenizer, TokenizerError, _rust_panics_silenced, train_bpe_tokenizer

TEXT = "the quick brown fox jumps over the lazy dog, twice: the quick brown fox.\n" * 20


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> dict:
    corpus = tmp_path_factory.mktemp("forged") / "corpus.txt"
    corpus.write_text(TEXT)
    return json.loads(train_bpe_tokenizer([corpus], 300).to_str())


def _longest_merge_overrun(d: dict) -> None:
    """A merge of the longest token with itself: both in the vocabulary, their concatenation
    longer than every token (HF's BpeBuilder overruns its buffer: a panic)."""
    longest = max(d["model"]["vocab"], key=lambda t: len(t.encode()))
    d["model"]["merges"].append([longest, longest])


def _legacy_merge_overrun(d: dict) -> None:
    _longest_merge_overrun(d)
    d["model"]["merges"] = [" ".join(m) for m in d["model"]["merges"]]


def _prefix_inside_a_character(d: dict) -> None:
    """A one-byte continuing_subword_prefix cut off the first byte of 'é': HF builds an invalid
    UTF-8 string, pyo3 cannot raise it, the process aborts."""
    vocab = d["model"]["vocab"]
    vocab.update({"é": len(vocab), "aé": len(vocab) + 1})
    d["model"].update(continuing_subword_prefix="x", merges=[["a", "é"]])


def _huge_id(d: dict) -> None:
    """HF's to_str walks every id up to the largest (minutes and gigabytes near 2^32)."""
    d["model"]["vocab"]["a"] = 4_000_000_000


def _unk_only_an_added_token(d: dict) -> None:
    """HF loads it, then fails to encode any text that needs the unknown token."""
    d["model"]["unk_token"] = "<unk>"
    d["added_tokens"].append({"id": len(d["model"]["vocab"]), "content": "<unk>", "single_word": False,
                              "lstrip": False, "rstrip": False, "normalized": False, "special": True})


def _wordpiece(d: dict) -> None:
    d["model"]["type"] = "WordPiece"


def _bad_precompiled_normalizer(d: dict) -> None:
    """Not checked before HF (onebit refuses every normalizer of a byte-level BPE, after loading):
    HF panics while deserializing it; only the fd 2 capture keeps the panic hook's lines away."""
    d["normalizer"] = {"type": "Precompiled", "precompiled_charsmap": base64.b64encode(b"\xff" * 7).decode()}


FORGED: dict[str, tuple[Callable[[dict], None], str]] = {
    "merge-overrun": (_longest_merge_overrun, "is not in the vocabulary"),
    "legacy-merge-overrun": (_legacy_merge_overrun, "is not in the vocabulary"),
    "prefix-inside-a-character": (_prefix_inside_a_character, "continuing_subword_prefix"),
    "huge-id": (_huge_id, "has id 4000000000"),
    "unk-only-an-added-token": (_unk_only_an_added_token, "unk_token '<unk>' is not in the BPE model's vocabulary"),
    "wordpiece": (_wordpiece, "unsupported tokenizer model 'WordPiece'"),
    "bad-precompiled-normalizer": (_bad_precompiled_normalizer, "not a valid tokenizer.json (Precompiled"),
}

LOAD_EACH = """
import json, sys
from onebit.tokenizer import Tokenizer, TokenizerError
for path in sys.argv[1:]:
    try:
        Tokenizer.load(path)
        print(json.dumps([path, "loaded"]), flush=True)
    except TokenizerError as e:
        print(json.dumps([path, str(e)]), flush=True)
"""


def test_forged_files_are_one_error_each_and_silent(spec: dict, tmp_path: Path) -> None:
    paths = []
    for name, (forge, _) in FORGED.items():
        d = json.loads(json.dumps(spec))
        forge(d)
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(d), encoding="utf-8")
    env = {**os.environ, "RUST_BACKTRACE": "1"}  # a panic hook would print a backtrace too
    done = subprocess.run([sys.executable, "-c", LOAD_EACH, *map(str, paths)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == "", done.stderr[-3000:]
    results = dict(json.loads(line) for line in done.stdout.splitlines())
    for (name, (_, expect)), path in zip(FORGED.items(), paths):
        assert expect in results[str(path)], (name, results[str(path)])
        assert "\n" not in results[str(path)]


def test_stderr_written_during_a_load_reaches_stderr(capfd) -> None:
    with _rust_panics_silenced():
        os.write(2, b"a warning from inside\n")
    assert capfd.readouterr().err == "a warning from inside\n"


def test_a_panics_hook_output_is_dropped(capfd) -> None:
    class PanicException(BaseException):  # pyo3's is found by its name
        pass

    with pytest.raises(PanicException), _rust_panics_silenced():
        os.write(2, b"thread '<unnamed>' panicked at src/lib.rs:1:1:\n")
        raise PanicException("boom")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_concurrent_loads_leave_stderr_where_it_was(spec: dict, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(spec))
    d = json.loads(json.dumps(spec))
    _bad_precompiled_normalizer(d)
    bad.write_text(json.dumps(d))
    before = os.fstat(2)
    errors: list[BaseException] = []

    def work(path: Path) -> None:
        for _ in range(20):
            try:
                Tokenizer.load(path)
            except TokenizerError:
                pass
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

    threads = [threading.Thread(target=work, args=(p,)) for p in (good, bad, good, bad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = os.fstat(2)
    assert not errors
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


def test_padding_and_truncation_of_the_file_are_not_applied(spec: dict, tmp_path: Path) -> None:
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(spec))
    d = json.loads(json.dumps(spec))
    d["truncation"] = {"direction": "Right", "max_length": 3, "strategy": "LongestFirst", "stride": 0}
    # (tests/fuzz/tokenizer/forged-padding-fixed-1e12.json asks 10^12: HF aborted allocating it)
    d["padding"] = {"strategy": {"Fixed": 2048}, "direction": "Right", "pad_to_multiple_of": None, "pad_id": 0,
                    "pad_type_id": 0, "pad_token": "<|endoftext|>"}
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(d))
    want = Tokenizer.load(plain).encode(TEXT)
    tok = Tokenizer.load(forged)
    assert len(want) > 3
    assert tok.encode(TEXT) == want
    assert [i for ids in tok.encode_stream([TEXT[:50], TEXT[50:]]) for i in ids] == want
    tok.save(tmp_path / "saved.json")
    saved = json.loads((tmp_path / "saved.json").read_text())
    assert saved["padding"] is None and saved["truncation"] is None
