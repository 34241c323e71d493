"""The browser demo (examples/web) in a real headless Chromium against onnxruntime's native output,
on both of the page's backends: onebit.wasm (the C runtime, model.1bit) and onnxruntime-web
(model_web.onnx), switched with the page's selector; both must give the same tokens.

Needs Debian's chromium and examples/web/node_modules (examples/web/setup.sh installs both);
skipped with the reason when they are absent.  The onebit.wasm backend also needs the WebAssembly
toolchain (tools/setup_system.sh); without it only onnxruntime-web is checked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from onebit.compile.export import ExportOptions, export_1bit
from onebit.compile.onnx_export import OnnxOptions, export_model
from onebit.config import ModelConfig
from onebit.run.ort import OrtDecoder, generate_ort
from onebit.sampling import SamplerConfig
from onebit.tokenizer import EOT, Tokenizer, train_bpe_tokenizer, train_char_tokenizer
from onebit.train.checkpoint import save_checkpoint
from onebit.train.model import Transformer

REPO = Path(__file__).resolve().parent.parent
WEB = REPO / "examples" / "web"
CHROMIUM = Path("/usr/bin/chromium")
HAVE_WASM = (all(shutil.which(t) for t in ("clang", "wasm-ld", "llvm-ar", "make"))
             and Path("/usr/lib/wasm32-wasi/libc.a").is_file())
NAMES = {"onebit": "onebit.wasm", "ort": "onnxruntime-web"}
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish? Caf\u00e9 na\u00efve \u2014 1603.\n")


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is absent (examples/web/setup.sh installs it)"
    for package in ("onnxruntime-web", "playwright-core"):
        if not (WEB / "node_modules" / package).is_dir():
            return f"examples/web/node_modules/{package} is absent (run examples/web/setup.sh)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


@pytest.fixture(scope="module")
def backends() -> list[str]:
    """The page's backends to check: onebit.wasm first (built here) when the toolchain is there."""
    if not HAVE_WASM:
        return ["ort"]
    done = subprocess.run(["make", "-C", str(REPO / "runtime_c"), "-s", "wasm"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return ["onebit", "ort"]


def export(tokenizer: Tokenizer, out: Path, seed: int, context: int = 96) -> Path:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=tokenizer.vocab_size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128,
                      max_seq_len=context, tie_embeddings=False)
    model = Transformer(cfg)
    with torch.no_grad():  # a livelier random model than the init's: varied tokens to compare
        model.embed.weight.normal_(0, 0.3)
        model.head.weight.normal_(0, 0.3)
    export_model(model, tokenizer, out, OnnxOptions(graphs=("web",)))
    save_checkpoint(out / "ckpt", model, tokenizer, {"step": 0, "val_loss": None})
    # f32 embedding and head: the same weights as the ONNX graph, so the same tokens
    export_1bit(out / "ckpt", out / "model.1bit", ExportOptions(embed_dtype="f32"))
    return out


class Server:
    """examples/web/server.mjs on a free port of 127.0.0.1."""

    def __init__(self, model_dir: Path):
        self.proc = subprocess.Popen(["node", str(WEB / "server.mjs"), "--model", str(model_dir), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("serving "):
            self.close()
            raise RuntimeError(f"server did not start: {line}{self.proc.stderr.read()}")
        self.url = line.split()[1]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def browse(model_dir: Path, out: Path, prompt: str, n: int, sampler: SamplerConfig,
           backends: list[str]) -> tuple[int, dict]:
    server = Server(model_dir)
    try:
        args = ["node", str(WEB / "browser_test.mjs"), "--url", server.url, "--prompt", prompt, "--n", str(n),
                "--backends", ",".join(backends),
                "--out", str(out), "--temperature", str(sampler.temperature), "--top-k", str(sampler.top_k),
                "--top-p", str(sampler.top_p), "--repeat-penalty", str(sampler.repeat_penalty),
                "--repeat-window", str(sampler.repeat_window),
                "--seed", str(sampler.seed), "--chromium", str(CHROMIUM)]
        done = subprocess.run(args, capture_output=True, text=True, timeout=240)
    finally:
        server.close()
    lines = done.stdout.strip().splitlines()
    assert lines, f"no output from the browser driver: {done.stderr}"
    return done.returncode, json.loads(lines[-1])


def check_against_native(model_dir: Path, tokenizer: Tokenizer, tmp_path: Path, prompt: str, n: int,
                         sampler: SamplerConfig, backends: list[str]) -> list[dict]:
    rc, page = browse(model_dir, tmp_path, prompt, n, sampler, backends)
    assert rc == 0 and page["problems"] == [], page
    prompt_ids = tokenizer.encode(prompt)
    expected = generate_ort(OrtDecoder(model_dir, "web"), prompt_ids, n, sampler)
    assert [run["backend"] for run in page["runs"]] == [NAMES[b] for b in backends]
    for run in page["runs"]:
        # onebit.wasm: the C tokenizer, sampler and context slide; onnxruntime-web: the graph on
        # WASM with the JavaScript tokenizer and sampler
        assert run["promptIds"] == prompt_ids, run["backend"]
        assert run["ids"] == expected, run["backend"]
        assert run["text"] == prompt + tokenizer.decode(expected)
        assert run["stats"].startswith(f"{run['backend']}: ") and "tokens/s" in run["stats"]
        assert run["isolated"] is True
        assert f"{run['backend']} " in page["speeds"]  # each backend's tokens/s stays on the page
    assert (tmp_path / "screenshot.png").stat().st_size > 1000
    return page["runs"]


def test_browser_greedy_tokens_equal_onnxruntime_char(tmp_path, backends):
    tokenizer = train_char_tokenizer(TEXT)
    model_dir = export(tokenizer, tmp_path / "model", seed=1, context=24)
    # 18 prompt + 48 new tokens on a 24-token context: several slides (docs/SAMPLING.md)
    # greedy (argmax, no draw); the penalty keeps a random model from repeating one token
    greedy = SamplerConfig(temperature=0, repeat_penalty=2.0, repeat_window=8)
    runs = check_against_native(model_dir, tokenizer, tmp_path, "First Citizen:\nYou", 48, greedy, backends)
    assert len(set(runs[0]["ids"])) > 3


def test_browser_sampled_tokens_equal_onnxruntime_bpe(tmp_path, backends):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT * 3, encoding="utf-8")
    tokenizer = train_bpe_tokenizer([corpus], 300)
    model_dir = export(tokenizer, tmp_path / "model", seed=2, context=40)  # the 40 new tokens slide
    prompt = f"Speak, speak!{EOT}Caf\u00e9 \u2014 you're  all resolved?"
    sampler = SamplerConfig(temperature=0.9, top_k=40, top_p=0.9, repeat_penalty=1.3, seed=7)
    check_against_native(model_dir, tokenizer, tmp_path, prompt, 40, sampler, backends)


@pytest.mark.parametrize("backend,missing", [("ort", "tokenizer.json"), ("onebit", "model.1bit")])
def test_browser_driver_fails_on_console_errors(tmp_path, backends, backend, missing):
    if backend not in backends:
        pytest.skip("no WebAssembly toolchain for onebit.wasm (tools/setup_system.sh)")
    tokenizer = train_char_tokenizer(TEXT)
    model_dir = export(tokenizer, tmp_path / "model", seed=3)
    (model_dir / missing).unlink()  # the page's fetch gets a 404: a console error
    rc, page = browse(model_dir, tmp_path, "All:", 4, SamplerConfig(temperature=0), [backend])
    assert rc == 1 and any(missing in p or "404" in p for p in page["problems"]), page
