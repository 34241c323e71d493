"""What a smaller LM head costs in quality, before any file is written: a checkpoint's validation
loss and top-1 agreement with its own f32 head when only the head is replaced by a quantized copy.

    python tools/head_quality.py runs/base2000 [--group 32]

The trunk runs once in PyTorch (eval mode, the trainer's fixed validation windows: EVAL_SEED,
eval_batches x batch_size windows of max_seq_len tokens, as tools/file_val_loss.py); its final-normed
hidden states then go through each head variant:
  f32            the checkpoint's head (what the trainer reports)
  i8             per-row int8, f32 activations (the .1bit i8 embedding / head as readers before
                 the int16 activations computed it)
  i8 + a16       per-row int8 with int16 per-token activations (absmax / 32767, round half to
                 even, clamp +-32767): what an i8 head computes now (FORMAT.md "LM head")
  i8 + a8        per-row int8 with int8 per-token activations (DESIGN.md's), for contrast
  i4             per-row int4 (absmax / 7), f32 activations
  i4 + a8        per-row int4 with int8 per-token activations
  i4 mse + a8    per-row int4 whose scale minimizes the row's squared error (absmax / 7 times a
                 ratio in (0.5, 1], packing.quantize_rows_mse), int8 activations: what
                 `--head-dtype i4` writes and computes
  i4 gG          int4 with one scale per G weights of a row (absmax / 7 per group), f32 activations:
                 the group-scaled layout a future format could use (llama.cpp's Q4_0 is G = 32
                 with f16 scales), measured here only, not a .1bit dtype
Loss is the mean over batches of the mean cross-entropy, as the trainer computes it; agreement is
the share of positions whose argmax equals the f32 head's (and, last column, the i8 head's with f32
activations).  Every variant is computed dequantized in f32 (F.linear); the runtimes' exact integer
sums differ from that only by f32 rounding.  The `.1bit` files themselves are measured by
tools/file_val_loss.py in the C runtime.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F

from onebit import packing
from onebit.compile.search import _train_config, fixed_batches
from onebit.train.checkpoint import load_checkpoint
from onebit.train.data import default_cache_dir, load_token_data
from onebit.train.trainer import EVAL_SEED


def rows_q(w: torch.Tensor, levels: int, group: int = 0) -> torch.Tensor:
    """Dequantized symmetric absmax quantization per row (group 0) or per `group` weights of a row."""
    v, k = w.shape
    g = w if group == 0 else F.pad(w, (0, (-k) % group)).view(v, -1, group)
    scale = g.abs().amax(dim=-1, keepdim=True).clamp_min(1e-5) / levels
    q = torch.clamp(torch.round(g / scale), -levels, levels) * scale
    return q.reshape(v, -1)[:, :k] if group else q


def rows_q_mse(w: torch.Tensor, levels: int) -> torch.Tensor:
    """The exporter's int4 head quantization (packing.quantize_rows_mse), dequantized."""
    q, scale = packing.quantize_rows_mse(w.numpy(), levels)
    return torch.from_numpy(q.astype(np.float32) * scale[:, None])


def act_q8(x: torch.Tensor) -> torch.Tensor:
    """DESIGN.md's per-token int8 activations, dequantized."""
    a = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-5)
    return torch.clamp(torch.round(x * a), -128, 127) / a


def act_q16(x: torch.Tensor) -> torch.Tensor:
    """The int8 head's per-token int16 activations (C ob_quantize_i16), dequantized."""
    a = 32767.0 / x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-5)
    return torch.clamp(torch.round(x * a), -32767, 32767) / a


ACTS = {None: lambda x: x, "a8": act_q8, "a16": act_q16}


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--group", default=32, show_default=True, type=click.IntRange(1, 4096),
              help="group size of the group-scaled int4 variant")
def main(checkpoint: Path, group: int) -> None:
    """Validation loss and top-1 agreement of head variants of CHECKPOINT."""
    torch.set_num_threads(1)
    ckpt = load_checkpoint(checkpoint)
    cfg = _train_config(ckpt)
    data = load_token_data(cfg.data, ckpt.tokenizer, default_cache_dir(), cfg.val_fraction)
    batches = fixed_batches(data, "val", cfg.eval_batches, cfg.batch_size, ckpt.config.max_seq_len, EVAL_SEED)
    model = ckpt.model.eval()
    hidden: list[torch.Tensor] = []
    hook = model.norm.register_forward_hook(lambda _m, _i, out: hidden.append(out.detach()))
    with torch.no_grad():
        for x, _ in batches:
            model(x)
    hook.remove()
    w = (model.embed.weight if model.head is None else model.head.weight).detach().float()
    w8 = rows_q(w, 127)
    heads = {"f32": (w, None), "i8": (w8, None), "i8 + a16": (w8, "a16"), "i8 + a8": (w8, "a8"),
             "i4": (rows_q(w, 7), None), "i4 + a8": (rows_q(w, 7), "a8"), "i4 mse + a8": (rows_q_mse(w, 7), "a8"),
             f"i4 g{group}": (rows_q(w, 7, group), None)}
    print(f"{checkpoint}: vocab {w.shape[0]}, dim {w.shape[1]}, {len(batches)} x {cfg.batch_size} windows of "
          f"{ckpt.config.max_seq_len} tokens")
    print("| head | val loss | delta vs f32 | top-1 agreement with f32 | with i8 (f32 activations) |")
    print("|---|---|---|---|---|")
    base_loss, base_top, i8_top = None, None, None
    with torch.no_grad():
        for name, (hw, act) in heads.items():
            losses, tops = [], []
            for h, (_, y) in zip(hidden, batches):
                logits = F.linear(ACTS[act](h), hw)
                losses.append(F.cross_entropy(logits.view(-1, logits.shape[-1]), y.reshape(-1)).item())
                tops.append(logits.argmax(dim=-1).flatten())
            loss, top = float(np.mean(losses)), torch.cat(tops)
            if base_loss is None:
                base_loss, base_top = loss, top
            if name == "i8":
                i8_top = top
            agree = 100 * float((top == base_top).float().mean())
            agree8 = f"{100 * float((top == i8_top).float().mean()):.2f} %" if i8_top is not None else "-"
            print(f"| {name} | {loss:.5f} | {loss - base_loss:+.5f} ({100 * (loss / base_loss - 1):+.3f} %) | "
                  f"{agree:.2f} % | {agree8} |")


if __name__ == "__main__":
    main()
