"""End of sequence and --chat in every runtime.

A transformers-made BitNet is imported after its eos_token_id is set to a token its greedy path
reaches a few steps in: transformers stops there, and so must PyTorch onebit, the NumPy reference,
C (library, onebit-run, cffi CLI), onnxruntime and the wasm JS API, each at the same token; with
the off switch (`--ignore-eos`, `ignore_eos`, `ignoreEos`) each generates the full count. `--chat`
builds the prompt from the model's chat template: the C runtime's stored pieces give the tokens of
Hugging Face's apply_chat_template, and every runtime then generates the same tokens."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from hf_fixtures import CHAT_TEMPLATE, hf_greedy, llama3_tokenizer, save_hf_bitnet  # noqa: E402

from onebit.chat_template import ChatTemplateError, chat_pieces  # noqa: E402
from onebit.compile.export import ExportOptions, export_1bit  # noqa: E402
from onebit.sampling import SamplerConfig  # noqa: E402
from onebit.train.checkpoint import load_checkpoint  # noqa: E402
from onebit.train.hf_import import import_hf  # noqa: E402
from onebit.train.sample import generate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROMPT = "First Citizen: hear me"
N = 14
GREEDY = SamplerConfig(temperature=0.0)
NO_EOS = SamplerConfig(temperature=0.0, ignore_eos=True)
MESSAGE = " \u3000Who are you, villain?\n "  # leading/trailing whitespace the template's trim strips


def _set_eos(folder: Path, eos: list[int]) -> None:
    for name in ("config.json", "generation_config.json"):
        data = json.loads((folder / name).read_text())
        data["eos_token_id"] = eos
        (folder / name).write_text(json.dumps(data, indent=2))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(checkpoint dir, .1bit path, ONNX dir, prompt ids, full greedy path, index of the EOS in it)."""
    base = tmp_path_factory.mktemp("eos")
    tok = llama3_tokenizer()
    folder = save_hf_bitnet(base / "hf", "packed", seed=3, tokenizer=tok)
    ids = tok.encode(PROMPT, add_special_tokens=False).ids
    full = hf_greedy(folder, ids, N)
    # the first token from step 3 on that the path has not produced before ends the sequence
    stop = next(i for i in range(3, N - 3) if full[i] not in full[:i])
    _set_eos(folder, [full[stop], tok.token_to_id("<|eot_id|>")])
    assert hf_greedy(folder, ids, N, stop_at_eos=True) == full[:stop + 1]
    import_hf(folder, base / "ckpt", show_progress=False)
    export_1bit(base / "ckpt", base / "m.1bit", ExportOptions(embed_dtype="f32"))
    from onebit.compile.onnx_export import export_onnx

    export_onnx(base / "ckpt", base / "onnx", graphs="native")
    return {"hf": folder, "ckpt": base / "ckpt", "bin": base / "m.1bit", "onnx": base / "onnx", "ids": ids,
            "full": full, "stop": stop, "tok": tok}


def test_every_runtime_stops_at_the_same_eos(model):
    from onebit.run.c import Model
    from onebit.run.ort import OrtDecoder, generate_ort
    from onebit.run.reference import ReferenceModel

    ids, full, stop = model["ids"], model["full"], model["stop"]
    expected = full[:stop + 1]  # the EOS token is the last one returned, as transformers does
    ckpt = load_checkpoint(model["ckpt"])
    eos = set(ckpt.meta["eos_token_ids"])
    assert full[stop] in eos
    assert generate(ckpt.model, ids, N, GREEDY, eos=eos) == expected
    assert generate(ckpt.model, ids, N, NO_EOS, eos=eos) == full
    ref = ReferenceModel.load(model["bin"])
    assert ref.generate_greedy(ids, N) == expected
    assert ref.generate_greedy(ids, N, ignore_eos=True) == full
    c = Model(model["bin"], kv="f32")  # PyTorch's twin: the f32 KV-cache
    assert full[stop] in c.shared.eos_tokens
    assert c.generate(ids, N, temperature=0.0) == expected
    assert c.generate(ids, N, temperature=0.0, ignore_eos=True) == full
    decoder = OrtDecoder(model["onnx"])
    assert generate_ort(decoder, ids, N, GREEDY) == expected
    assert generate_ort(decoder, ids, N, NO_EOS) == full


def _cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=300)


def _clis(model) -> dict[str, list[str]]:
    from onebit.run.native import locate_cli

    py = sys.executable
    return {
        "onebit-sample": [py, "-m", "onebit.train.sample", str(model["ckpt"])],
        "onebit-run": [str(locate_cli()), "-m", str(model["bin"]), "--kv", "f32"],  # PyTorch's twin
        "run_c": [py, "-m", "onebit.run_c", "-m", str(model["bin"]), "--kv", "f32"],
        "run-ort": [py, "-m", "onebit.run_ort", "--model", str(model["onnx"])],
    }


def test_clis_print_up_to_the_eos_and_past_it_with_ignore_eos(model):
    tok, full, stop = model["tok"], model["full"], model["stop"]
    stopped = PROMPT + tok.decode(full[:stop], skip_special_tokens=False)
    everything = PROMPT + tok.decode(full, skip_special_tokens=False)
    for name, cmd in _clis(model).items():
        common = ["-p", PROMPT, "-n", str(N), "--temperature", "0"]
        done = _cli(cmd + common)
        assert done.returncode == 0, (name, done.stderr)
        assert done.stdout == stopped, name
        done = _cli(cmd + common + ["--ignore-eos"])
        assert done.returncode == 0, (name, done.stderr)
        assert done.stdout == everything, name


def test_bench_generates_the_full_count(model):
    """--bench implies --ignore-eos in both `onebit-run` and `onebit run`: benchmarks measure N tokens."""
    clis = _clis(model)
    for name in ("onebit-run", "run_c"):
        done = _cli(clis[name] + ["-p", PROMPT, "-n", str(N), "--temperature", "0", "--bench"])
        assert done.returncode == 0, (name, done.stderr)
        assert f"+ {N} new tokens" in done.stderr, name
        assert done.stdout == PROMPT + model["tok"].decode(model["full"], skip_special_tokens=False), name
        assert "load: " in done.stderr, name


@pytest.mark.skipif(not all(shutil.which(t) for t in ("clang", "wasm-ld", "llvm-ar", "node", "make"))
                    or not Path("/usr/lib/wasm32-wasi/libc.a").is_file(),
                    reason="the WebAssembly build needs clang, lld, llvm, wasi-libc and node (tools/setup_system.sh)")
def test_wasm_js_api_stops_at_the_eos(model):
    wasm = REPO / "runtime_c" / "build" / "wasm"
    done = subprocess.run(["make", "-C", str(REPO / "runtime_c"), "-s", "wasm"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    script = """
import { readFileSync } from 'node:fs';
import { Onebit } from 'WASM/onebit.mjs';
const [model, n] = process.argv.slice(1);
const ob = await Onebit.load(readFileSync('WASM/onebit.wasm'), readFileSync(model), { kv: 'f32' });
const out = [];
for (const ignoreEos of [false, true]) out.push(ob.generate(PROMPT, Number(n), { temperature: 0, ignoreEos }).ids);
process.stdout.write(JSON.stringify(out));
ob.close();
""".replace("WASM", str(wasm)).replace("PROMPT", json.dumps(PROMPT))
    done = subprocess.run(["node", "--input-type=module", "-e", script, str(model["bin"]), str(N)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    stopped, everything = json.loads(done.stdout)
    assert stopped == model["full"][:model["stop"] + 1]
    assert everything == model["full"]


# ----------------------------------------------------------------------------------------------
# --chat


def _chat_ids(hf_tok, messages) -> list[int]:
    """apply_chat_template's token ids (a list, or a BatchEncoding in newer transformers)."""
    ids = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids if isinstance(ids, list) else ids["input_ids"])


def test_c_chat_prompt_tokens_equal_apply_chat_template(model):
    from transformers import AutoTokenizer

    from onebit.run.c import SharedModel

    hf_tok = AutoTokenizer.from_pretrained(model["hf"])
    messages = [{"role": "user", "content": MESSAGE}]
    expected = _chat_ids(hf_tok, messages)
    shared = SharedModel(model["bin"])
    text = shared.chat_prompt(MESSAGE)
    assert text == hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert shared.encode(text) == expected
    meta = shared.metadata()["tokenizer"]
    assert meta["chat_trim"] is True and meta["chat_prefix"].startswith("<|begin_of_text|>")


def test_chat_greedy_output_is_equal_across_runtimes(model):
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(model["hf"])
    messages = [{"role": "user", "content": MESSAGE}]
    ids = _chat_ids(hf_tok, messages)
    expected = hf_greedy(model["hf"], ids, N, stop_at_eos=True)
    rendered = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    eos = set(load_checkpoint(model["ckpt"]).meta["eos_token_ids"])
    shown = expected[:-1] if expected[-1] in eos else expected
    want = rendered + model["tok"].decode(shown, skip_special_tokens=False)
    for name, cmd in _clis(model).items():
        done = _cli(cmd + ["-p", MESSAGE, "-n", str(N), "--temperature", "0", "--chat"])
        assert done.returncode == 0, (name, done.stderr)
        assert done.stdout == want, name


def test_chat_without_a_template_is_one_line(random_checkpoint, tmp_path):
    from onebit.run.native import locate_cli

    ckpt = random_checkpoint()
    export_1bit(ckpt, tmp_path / "m.1bit", ExportOptions())
    for cmd in ([str(locate_cli()), "-m", str(tmp_path / "m.1bit")],
                [sys.executable, "-m", "onebit.run_c", "-m", str(tmp_path / "m.1bit")],
                [sys.executable, "-m", "onebit.train.sample", str(ckpt)]):
        done = _cli(cmd + ["-p", "hi", "--chat", "-n", "3"])
        assert done.returncode != 0 and done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "chat template" in lines[0], done.stderr


@pytest.mark.parametrize("template, trim", [
    (CHAT_TEMPLATE, True),
    ("{% for m in messages %}### {{ m.role }}:\n{{ m.content }}\n{% endfor %}"
     "{% if add_generation_prompt %}### assistant:\n{% endif %}", False),
])
def test_chat_pieces_reproduce_the_template(template, trim):
    from onebit.chat_template import template_for

    meta = {"chat_template": template, "bos_token": "<s>"}
    pieces = chat_pieces(meta)
    assert pieces["chat_trim"] is trim
    for message in ("hello", "  two\nlines \t", "\u2003emoji 🙂\u3000"):
        rendered = template_for({"tokenizer": meta}).render([{"role": "user", "content": message}])
        body = message.strip() if trim else message
        assert rendered == pieces["chat_prefix"] + body + pieces["chat_suffix"]


@pytest.mark.parametrize("template, why", [
    ("{% for m in messages %}{{ m.content | replace('\\n', ' ') }}{% endfor %}", "other than by stripping"),
    ("{% for m in messages %}{{ m.content | upper }}{% endfor %}", "exactly once"),
    ("{% for m in messages %}{{ m.content }}{{ m.content|length }}{% endfor %}", "depends on the message"),
    ("{% for m in messages %}{{ m.content }}{{ m.content }}{% endfor %}", "exactly once"),
])
def test_chat_pieces_refuse_templates_without_fixed_pieces(template, why):
    with pytest.raises(ChatTemplateError, match=why):
        chat_pieces({"chat_template": template})
