"""The BitNet b1.58 2B4T shape end to end: Hugging Face folder -> onebit-import -> onebit-export -> C.

    python tools/bench_interop.py [--layers 30] [--tokens 32]

1. Writes (once, cached under ~/.cache/onebit/bench_interop; ONEBIT_CACHE moves it) a random
   `BitNetForCausalLM` folder in the 2B4T release's deployment form, straight into safetensors:
   its config (2560 wide, 30 layers, 20/5 heads, 6912 FFN, vocab 128256, tied, relu2), uint8
   codes four to a byte with a BF16 inverse `weight_scale` (`bitlinear` class), BF16 embedding and
   norms, and a Llama-3-style tokenizer.json of 128000 byte-level BPE tokens and 256 special ones
   with the 2B4T split regex. The weights are random; only sizes and speeds mean anything.
2. Runs `onebit-import`, `onebit-export` (T2, f16 embedding) and `onebit-export --format hf` as
   child processes and reports wall time and peak RSS (GNU time), then the output sizes.
3. Runs the C CLI (`onebit-run --bench`, greedy) and reports its load time, prefill and decode
   speeds and peak RSS.

`--steps` runs some of these now; each step's figures (with the time and the load average at its
start and end) are kept in the work folder's results.json and printed with the later ones, so the
long import can run at low priority while only the C run is timed on a quiet machine.

This is a benchmark, not a test: nothing is compared against a peer here (tools/bench_peers.py
does that for llama.cpp); the point is that the real 2B shape imports, exports and runs, and what
that costs in time, memory and disk on the machine it prints.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("ONEBIT_CACHE", Path.home() / ".cache" / "onebit")) / "bench_interop"
SHAPE = dict(hidden_size=2560, intermediate_size=6912, num_attention_heads=20, num_key_value_heads=5,
             vocab_size=128256, max_position_embeddings=4096)
SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bf16(x: np.ndarray) -> np.ndarray:
    """fp32 -> bfloat16 bits (round to nearest even), as uint16."""
    bits = x.astype(np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def byte_chars() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def write_tokenizer(folder: Path) -> None:
    """128000 byte-level BPE tokens (bytes, all byte pairs, then pair+byte triples) + 256 specials."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    chars = byte_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    merges = []
    for a in chars:
        for b in chars:
            merges.append((a, b))
            vocab[a + b] = len(vocab)
    pairs = [a + b for a in chars for b in chars]
    for p in pairs:
        for c in chars:
            if len(vocab) == 128000:
                break
            merges.append((p, c))
            vocab[p + c] = len(vocab)
        if len(vocab) == 128000:
            break
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    named = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 6: "<|start_header_id|>", 7: "<|end_header_id|>",
             9: "<|eot_id|>"}
    tok.add_special_tokens([named.get(i, f"<|reserved_special_token_{i}|>") for i in range(256)])
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", 128000)])
    tok.save(str(folder / "tokenizer.json"))
    template = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
                "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": template}))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 128000, "eos_token_id": [128001, 128009]}))


def write_hf_folder(folder: Path, layers: int, seed: int) -> None:
    sys.path.insert(0, str(REPO))
    from onebit.safetensors_stream import LazyTensor, write_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    dim, ffn, heads, kv = SHAPE["hidden_size"], SHAPE["intermediate_size"], 20, 5
    hd = dim // heads
    config = {"architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "hidden_act": "relu2",
              "num_hidden_layers": layers, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
              "tie_word_embeddings": True, "torch_dtype": "bfloat16", "bos_token_id": 128000,
              "eos_token_id": [128001, 128009], "attention_bias": False,
              "quantization_config": {"quant_method": "bitnet", "linear_class": "bitlinear",
                                      "quantization_mode": "offline"}, **SHAPE}
    rng = np.random.default_rng(seed)
    tensors = [LazyTensor("model.embed_tokens.weight", "BF16", (SHAPE["vocab_size"], dim),
                          lambda: bf16(rng.standard_normal((SHAPE["vocab_size"], dim), np.float32) * 0.02))]
    ones = lambda n: (lambda: bf16(np.ones(n, np.float32)))  # noqa: E731
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors += [LazyTensor(p + "input_layernorm.weight", "BF16", (dim,), ones(dim)),
                    LazyTensor(p + "post_attention_layernorm.weight", "BF16", (dim,), ones(dim)),
                    LazyTensor(p + "self_attn.attn_sub_norm.weight", "BF16", (dim,), ones(dim)),
                    LazyTensor(p + "mlp.ffn_sub_norm.weight", "BF16", (ffn,), ones(ffn))]
        for name, out, k in (("self_attn.q_proj", heads * hd, dim), ("self_attn.k_proj", kv * hd, dim),
                             ("self_attn.v_proj", kv * hd, dim), ("self_attn.o_proj", dim, heads * hd),
                             ("mlp.gate_proj", ffn, dim), ("mlp.up_proj", ffn, dim), ("mlp.down_proj", dim, ffn)):
            tensors.append(LazyTensor(p + name + ".weight", "U8", (out // 4, k),
                                      lambda out=out, k=k: random_packed(rng, out // 4, k)))
            tensors.append(LazyTensor(p + name + ".weight_scale", "BF16", (1,),
                                      lambda: bf16(np.array([rng.uniform(20.0, 60.0)], np.float32))))
    tensors.append(LazyTensor("model.norm.weight", "BF16", (dim,), ones(dim)))
    write_safetensors(folder / "model.safetensors", tensors, {"format": "pt"})
    write_tokenizer(folder)
    (folder / "config.json").write_text(json.dumps(config, indent=2))  # last: marks the folder complete


def random_packed(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    """uint8 [rows, k], four random codes in {0, 1, 2} a byte (3 is no ternary code)."""
    b = np.zeros((rows, k), np.uint8)
    for i in range(4):
        b |= rng.integers(0, 3, (rows, k), dtype=np.uint8) << np.uint8(2 * i)
    return b


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MiB, stderr) of a child process under GNU time."""
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, errors="replace")
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    return wall, int(rss.group(1)) / 1024 if rss else float("nan"), done.stderr


STEPS = ("import", "export", "hf", "run")


def step_lines(results: dict) -> list[str]:
    """The recorded results of every step run so far, one line each (with the load it ran under)."""
    out = []
    if "import" in results:
        r = results["import"]
        out.append(f"onebit-import: {r['wall']:.1f} s wall, peak RSS {r['rss']:.0f} MiB; checkpoint "
                   f"{r['ckpt_bytes'] / 2**30:.2f} GiB  [{r['when']}, load {r['load']}]")
    if "export" in results:
        r = results["export"]
        out.append(f"onebit-export (T2, f16 embed): {r['wall']:.1f} s wall, peak RSS {r['rss']:.0f} MiB; "
                   f".1bit {r['bytes'] / 2**30:.3f} GiB ({r['bytes']:,} bytes)  [{r['when']}, load {r['load']}]")
    if "hf" in results:
        r = results["hf"]
        out.append(f"onebit-export --format hf (packed): {r['wall']:.1f} s wall, peak RSS {r['rss']:.0f} MiB; "
                   f"folder {r['bytes'] / 2**30:.2f} GiB  [{r['when']}, load {r['load']}]")
    if "run" in results:
        r = results["run"]
        out.append(f"onebit-run ({r['threads']} thread(s), {r['tokens']} prompt + {r['tokens']} new tokens): "
                   f"{r['wall']:.1f} s wall, peak RSS {r['rss']:.0f} MiB  [{r['when']}, load {r['load']}]")
        out += [f"  {line}" for line in r["stats"]]
    return out


def load_now() -> str:
    """The 1-minute load average: the figures above are only as good as the machine was quiet."""
    return f"{os.getloadavg()[0]:.2f}"


@click.command()
@click.option("--layers", default=30, show_default=True, help="Number of layers (30 is the 2B4T shape).")
@click.option("--tokens", default=32, show_default=True, help="Prompt tokens and generated tokens for the C run.")
@click.option("--threads", default=1, show_default=True, help="onebit-run threads.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights.")
@click.option("--steps", default=",".join(STEPS), show_default=True,
              help="Comma-separated steps to run now (import, export, hf, run); each later step reads the "
                   "previous one's output, so a long import can run once and the C run be timed apart.")
@click.option("--keep/--no-keep", default=False, show_default=True,
              help="Keep the imported checkpoint (about 10 GB), the .1bit and the HF export after the run "
                   "(always kept when --steps does not end with run).")
def main(layers: int, tokens: int, threads: int, seed: int, steps: str, keep: bool) -> None:
    """Import, export and run the 2B4T shape; print times, memory and sizes."""
    chosen = [s.strip() for s in steps.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STEPS]
    if unknown or not chosen:
        raise click.BadParameter(f"steps must be among {', '.join(STEPS)}, got {steps!r}", param_hint="--steps")
    hf = CACHE / f"hf-2b4t-l{layers}-seed{seed}"
    if not (hf / "config.json").is_file():
        log(f"writing the random 2B4T-shaped folder {hf} (once)")
        write_hf_folder(hf, layers, seed)
    work = CACHE / f"work-l{layers}-seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    ckpt, model, hf_out = work / "ckpt", work / "model.1bit", work / "hf-export"
    record = work / "results.json"
    results = json.loads(record.read_text()) if record.is_file() else {}
    bin_dir = Path(sys.executable).parent
    when = lambda: time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())  # noqa: E731
    for step in chosen:
        log(f"{step} ...")
        if step == "import":
            load = load_now()
            wall, rss, _ = timed([str(bin_dir / "onebit-import"), str(hf), "--out", str(ckpt), "--no-progress"])
            results[step] = dict(wall=wall, rss=rss, when=when(), load=f"{load}-{load_now()}",
                                 ckpt_bytes=sum(p.stat().st_size for p in ckpt.iterdir() if p.is_file()))
        elif step == "export":
            load = load_now()
            wall, rss, _ = timed([str(bin_dir / "onebit-export"), str(ckpt), "-o", str(model)])
            results[step] = dict(wall=wall, rss=rss, when=when(), load=f"{load}-{load_now()}",
                                 bytes=model.stat().st_size)
        elif step == "hf":
            load = load_now()
            wall, rss, _ = timed([str(bin_dir / "onebit-export"), str(ckpt), "--format", "hf", "-o", str(hf_out)])
            results[step] = dict(wall=wall, rss=rss, when=when(), load=f"{load}-{load_now()}",
                                 bytes=sum(p.stat().st_size for p in hf_out.iterdir()))
        else:
            subprocess.run(["make", "-s", "-C", str(REPO / "runtime_c"), "BUILD=build/bench_interop", "all"],
                           check=True)
            cli = REPO / "runtime_c" / "build" / "bench_interop" / "onebit-run"
            load = load_now()
            wall, rss, err = timed([str(cli), "-m", str(model), "--bench", "--prompt-tokens", str(tokens),
                                    "-n", str(tokens), "--temperature", "0", "--ctx", str(2 * tokens + 8),
                                    "-t", str(threads)])
            stats = [line.strip() for line in err.splitlines()
                     if re.search(r"load|prefill|decode|tok/s", line, re.I) and "Maximum" not in line]
            results[step] = dict(wall=wall, rss=rss, when=when(), load=f"{load}-{load_now()}", stats=stats,
                                 threads=threads, tokens=tokens)
        record.write_text(json.dumps(results, indent=1))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"command: python tools/bench_interop.py --layers {layers} --tokens {tokens} --threads {threads} "
          f"--steps {','.join(chosen)}")
    print(f"HF folder (packed 2-bit, bf16 embedding): {sum(p.stat().st_size for p in hf.iterdir()) / 2**30:.2f} GiB")
    for line in step_lines(results):
        print(line)
    if chosen[-1] == "run" and not keep:
        for folder in (ckpt, hf_out):
            if folder.is_dir():
                for p in folder.iterdir():
                    p.unlink()
        model.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
