"""The runtime built for wasm32-wasi (make -C runtime_c wasm): onebit-run under Node's WASI and
the JS API of onebit.wasm generate exactly what the PyTorch model does."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from onebit.sampling import SamplerConfig
from onebit.train.checkpoint import load_checkpoint, save_checkpoint
from onebit.train.sample import generate

RUNTIME = Path(__file__).resolve().parent.parent / "runtime_c"
WASM = RUNTIME / "build" / "wasm"
pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("clang", "wasm-ld", "llvm-ar", "node", "make"))
    or not Path("/usr/lib/wasm32-wasi/libc.a").is_file(),
    reason="the WebAssembly build needs clang, lld, llvm, wasi-libc and node (tools/setup_system.sh)")

# The JS API from Node: MODEL PROMPT N TEMPERATURE SEED ISA KV -> the prompt and continuation on stdout.
JS_GENERATE = """
import { readFileSync } from 'node:fs';
import { Onebit } from 'WASM/onebit.mjs';
const [model, prompt, n, temperature, seed, isa, kv] = process.argv.slice(1);
const env = isa ? { ONEBIT_ISA: isa } : {};
try {
  const ob = await Onebit.load(readFileSync('WASM/onebit.wasm'), readFileSync(model), kv ? { env, kv } : { env });
  const out = ob.generate(prompt, Number(n), { temperature: Number(temperature), seed: Number(seed) });
  process.stdout.write(prompt);
  process.stdout.write(out.bytes);
  console.error(ob.isa);
  ob.close();
} catch (e) {
  console.error(e.message);
  process.exitCode = 1;
}
""".replace("WASM", str(WASM))


@pytest.fixture(scope="module")
def wasm_build() -> Path:
    done = subprocess.run(["make", "-C", str(RUNTIME), "-s", "wasm"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return WASM


@pytest.fixture(scope="module")
def model(random_checkpoint, tmp_path_factory):
    ckpt_dir = random_checkpoint(randomize=5, max_seq_len=64, tie_embeddings=False)
    ckpt = load_checkpoint(ckpt_dir)
    with torch.no_grad():  # a random head so that greedy decoding does not just repeat itself
        ckpt.model.head.weight.normal_(generator=torch.Generator().manual_seed(2))
    save_checkpoint(ckpt_dir, ckpt.model, ckpt.tokenizer, ckpt.meta)
    path = tmp_path_factory.mktemp("wasm") / "m.1bit"
    subprocess.run([sys.executable, "-m", "onebit.compile.export", str(ckpt_dir), "-o", str(path),
                    "--embed-dtype", "f32"], check=True, capture_output=True)  # f32: token-exact
    return ckpt, path


def js_generate(path: Path, prompt: str, n: int, temperature: float, seed: int, isa: str = "", kv: str = "f32"):
    """kv "" = the API's default (f16); f32 is PyTorch's twin."""
    return subprocess.run(["node", "--input-type=module", "-e", JS_GENERATE, str(path), prompt, str(n),
                           str(temperature), str(seed), isa, kv], capture_output=True)


@pytest.mark.parametrize("temperature,seed", [(0.0, 0), (0.9, 3)])
def test_wasi_cli_and_js_api_match_pytorch(wasm_build, model, temperature, seed):
    ckpt, path = model
    prompt = "First Citizen:\n"
    ids = ckpt.tokenizer.encode(prompt)
    # 15 + 100 tokens on a 64-token context: the window slides
    expected = prompt + ckpt.tokenizer.decode(generate(ckpt.model, ids, 100, SamplerConfig(temperature=temperature,
                                                                                           seed=seed)))
    cli = subprocess.run([str(wasm_build / "onebit-run"), "-m", str(path), "-p", prompt, "-n", "100",
                          "--temperature", str(temperature), "--seed", str(seed), "--kv", "f32"], capture_output=True)
    assert cli.returncode == 0, cli.stderr.decode()
    assert cli.stdout.decode() == expected
    for isa in ("", "scalar"):  # the build's best kernels (SIMD128), then the scalar references
        js = js_generate(path, prompt, 100, temperature, seed, isa)
        assert js.returncode == 0, js.stderr.decode()
        assert js.stdout.decode() == expected


def test_default_f16_cache_matches_the_reference(wasm_build, model):
    """The JS API's and the WASI CLI's default KV-cache (f16) against the NumPy reference with an f16
    cache, across a context slide; a bad kv option is one error line."""
    from onebit.run.reference import ReferenceModel

    ckpt, path = model
    prompt = "First Citizen:\n"
    ids = ckpt.tokenizer.encode(prompt)
    expected = prompt + ckpt.tokenizer.decode(ReferenceModel.load(path).generate_greedy(ids, 100, kv="f16"))
    cli = subprocess.run([str(wasm_build / "onebit-run"), "-m", str(path), "-p", prompt, "-n", "100",
                          "--temperature", "0"], capture_output=True)
    assert cli.returncode == 0, cli.stderr.decode()
    assert cli.stdout.decode() == expected
    for isa in ("", "scalar"):
        js = js_generate(path, prompt, 100, 0.0, 0, isa, kv="")
        assert js.returncode == 0, js.stderr.decode()
        assert js.stdout.decode() == expected
    bad = js_generate(path, prompt, 1, 0.0, 0, "", kv="f8")
    assert bad.returncode == 1
    assert bad.stderr.decode().splitlines() == ["onebit: kv must be 'f16' or 'f32', got f8"]


def test_bad_input_is_one_line(wasm_build, tmp_path):
    missing = subprocess.run([str(wasm_build / "onebit-run"), "-m", str(tmp_path / "missing.1bit")],
                             capture_output=True, text=True)
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [f"error: {tmp_path / 'missing.1bit'}: No such file or directory"]
    junk = tmp_path / "junk.1bit"
    junk.write_bytes(b"not a model" * 10)
    js = js_generate(junk, "a", 1, 0.0, 0)
    assert js.returncode == 1
    lines = js.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onebit: ")
