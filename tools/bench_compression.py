"""What `onebit-export` writes: file sizes per shape, pack and embedding dtype, and how close the
stored model is to the PyTorch one (docs/BENCHMARKS.md, ## Compression).

    ONEBIT_DATA_DIR=../shared/data .venv/bin/python tools/bench_compression.py [--checkpoint RUN]

Sizes: for each shape (the tiny preset's at ffn 512 and at its trained ffn 1024, and the small
preset's, all with the char tokenizer of tinyshakespeare, vocab 65), a freshly initialised model is
exported with every pack and embedding dtype; sizes do not depend on the weights.  The columns are
the exporter's own size report (onebit.compile.export.size_report).

Fidelity on random models: seeded models with N(0, 1) embeddings and random norm weights, several
architecture variants, exported with each embedding dtype; max |logits(file) - logits(PyTorch)| /
max |logits(PyTorch)| over a 48-token prefill, the file run by onebit/run/reference.py (NumPy).

With --checkpoint RUN (a trained char-tokenizer run): mean next-token loss over --windows random
64-token windows of the run's validation split, PyTorch eval against the file at each embedding
dtype (t2; t1.6 holds the same codes).  Deterministic: no timing, the load does not matter.
"""

from __future__ import annotations

import platform
import shlex
import sys
import tempfile
from pathlib import Path

import click
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onebit.compile.export import ExportOptions, export_1bit  # noqa: E402
from onebit.config import ModelConfig  # noqa: E402
from onebit.run.reference import ReferenceModel  # noqa: E402
from onebit.tokenizer import train_char_tokenizer  # noqa: E402
from onebit.train.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from onebit.train.data import _resolve_shakespeare, default_cache_dir, load_token_data  # noqa: E402
from onebit.train.model import Transformer  # noqa: E402
from onebit.train.presets import SMALL_MODEL, TINY_MODEL  # noqa: E402

SHAPES = {"tiny": TINY_MODEL, "tiny-ffn1024": {**TINY_MODEL, "ffn_dim": 1024}, "small": SMALL_MODEL}
# (weights, pack) rows; a binary model always packs as b1
PACKS = [("ternary", "t2"), ("ternary", "t1.6"), ("binary", "b1")]
EMBEDS = ("f32", "f16", "i8")
VARIANTS = {  # the fidelity models: the options the forward pass branches on
    "default": {},
    "layernorm+learned+gelu": {"norm": "layernorm", "pos": "learned", "activation": "gelu"},
    "silu-glu, no subln": {"activation": "silu", "gated": True, "subln": False},
    "qk_norm, gqa, untied": {"qk_norm": True, "n_kv_heads": 1, "tie_embeddings": False},
    "binary": {"quant": "binary"},
}


def size_rows(tokenizer, work: Path) -> list[str]:
    rows = []
    for shape, fields in SHAPES.items():
        for quant, pack in PACKS:
            cfg = ModelConfig(**{**fields, "vocab_size": tokenizer.vocab_size, "quant": quant})
            torch.manual_seed(0)
            ckpt = work / f"{shape}-{quant}"
            if not ckpt.exists():
                save_checkpoint(ckpt, Transformer(cfg), tokenizer, {"step": 0})
            for embed in EMBEDS:
                r = export_1bit(ckpt, work / "m.1bit", ExportOptions("t2" if pack == "b1" else pack, embed)).report
                kinds = r["bytes_by_kind"]
                rows.append(f"| {shape} | {quant} | {r['quantized_params']:,} | {embed} | {pack} | "
                            f"{kinds['bitlinear']:,} | {r['bits_per_quantized_param']:.3f} | {kinds['embed']:,} | "
                            f"{r['file_size']:,} | {r['f32_size']:,} | {r['compression_vs_f32']:.1f}x |")
    return rows


def random_model(seed: int, overrides: dict, vocab_size: int) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(**{"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 128,
                         "max_seq_len": 64, "vocab_size": vocab_size, **overrides})
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif name.startswith(("embed.", "pos_embed.")):
                p.normal_(0, 1)
    return model


def fidelity_rows(tokenizer, work: Path) -> list[str]:
    rows = []
    tokens = torch.randint(0, tokenizer.vocab_size, (48,), generator=torch.Generator().manual_seed(1))
    for seed, (name, overrides) in enumerate(VARIANTS.items()):
        model = random_model(seed, overrides, tokenizer.vocab_size)
        with torch.no_grad():
            ref = model(tokens[None])[0][0].numpy()  # (logits, cache); logits [1, T, vocab]
        ckpt = work / f"fidelity-{seed}"
        save_checkpoint(ckpt, model, tokenizer, {"step": 0})
        gaps = []
        for embed in EMBEDS:
            export_1bit(ckpt, work / "f.1bit", ExportOptions("t2", embed))
            got = ReferenceModel.load(work / "f.1bit").forward(tokens.numpy())
            gaps.append(float(np.abs(got - ref).max() / np.abs(ref).max()))
        rows.append(f"| {name} | " + " | ".join(f"{g:.1e}" for g in gaps) + " |")
    return rows


def loss_rows(run: Path, windows: int, work: Path) -> list[str]:
    ckpt = load_checkpoint(run)
    cfg, meta = ckpt.model.cfg, ckpt.meta
    data = load_token_data(meta["train_config"]["data"], ckpt.tokenizer, default_cache_dir(),
                           meta["train_config"]["val_fraction"])
    val = np.asarray(data.val, dtype=np.int64)
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(val) - cfg.max_seq_len - 1, windows)

    def mean_loss(logits_of) -> float:
        total = 0.0
        for s in starts:
            x, y = val[s:s + cfg.max_seq_len], val[s + 1:s + cfg.max_seq_len + 1]
            logits = logits_of(x).astype(np.float64)
            logp = logits - logits.max(-1, keepdims=True)
            logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
            total += -logp[np.arange(len(y)), y].mean()
        return total / windows

    with torch.no_grad():
        rows = [f"| PyTorch eval (f32) | | | {mean_loss(lambda x: ckpt.model(torch.from_numpy(x)[None])[0][0].numpy()):.5f} |"]
    for embed in EMBEDS:
        sizes = {}
        for pack in ("t2", "t1.6"):
            sizes[pack] = export_1bit(run, work / f"{pack}.1bit", ExportOptions(pack, embed)).report["file_size"]
        ref = ReferenceModel.load(work / "t2.1bit")
        rows.append(f"| `.1bit`, embed {embed} | {sizes['t2']:,} | {sizes['t1.6']:,} | {mean_loss(ref.forward):.5f} |")
    return rows


@click.command()
@click.option("--checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A trained char-tokenizer run: also the loss table over its validation windows.  [default: none]")
@click.option("--windows", type=click.IntRange(1), default=32, show_default=True,
              help="Validation windows for --checkpoint.")
def main(checkpoint: Path | None, windows: int) -> None:
    """Print the size, fidelity and (with --checkpoint) loss tables as markdown."""
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
          f"torch {torch.__version__}")
    print("command: " + " ".join(shlex.quote(a) for a in ["tools/bench_compression.py", *sys.argv[1:]]))
    tokenizer = train_char_tokenizer(_resolve_shakespeare().read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print("\n| preset | weights | BitLinear params | embed | pack | BitLinear bytes | bits/w | embed bytes | "
              "file bytes | f32 bytes | vs f32 |\n|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|")
        print("\n".join(size_rows(tokenizer, work)))
        print("\nmax |logits(file) - logits(PyTorch)| / max |logits(PyTorch)|, 48-token prefill, random models:\n")
        print("| variant | embed f32 | embed f16 | embed i8 |\n|---|---:|---:|---:|")
        print("\n".join(fidelity_rows(tokenizer, work)))
        if checkpoint is not None:
            print(f"\n{checkpoint}: mean next-token loss over {windows} random validation windows\n")
            print("| model | t2 bytes | t1.6 bytes | loss |\n|---|---:|---:|---:|")
            print("\n".join(loss_rows(checkpoint, windows, work)))


if __name__ == "__main__":
    main()
