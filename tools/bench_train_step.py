"""The price of quantization-aware training: one training step, ternary against full precision.

Every model has the ternary tiny preset's shape (ReLU²-GLU, SubLN, FFN 1024), so the ratio is
what the quantizers cost and nothing else; the full-precision tiny preset (SwiGLU, FFN 512, the
shape `--quant none` trains) is timed too, as the figure the issue started from. A step is what
the trainer runs: zero_grad, forward, cross-entropy, backward, clip, AdamW. The variants take
turns, round after round, so a change of load hits them all; each reports its median round.

    .venv/bin/python tools/bench_train_step.py
"""

from __future__ import annotations

import os
import shlex
import statistics
import sys
import time
import weakref
from pathlib import Path
from typing import Callable

import click
import torch
from machine import cpu_name  # tools/machine.py

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onebit.config import ModelConfig  # noqa: E402
from onebit.train.model import Transformer  # noqa: E402
from onebit.train.presets import preset_config  # noqa: E402

VOCAB = 65  # the tiny preset's character vocabulary on tinyshakespeare


def machine(threads: int) -> str:
    cpu = cpu_name()
    return f"{cpu}, {os.cpu_count()} cores, {threads} torch thread(s), torch {torch.__version__}"


def build(preset_quant: str, quant: str, fused: bool, compiled: bool) -> Transformer:
    """A model of the tiny preset's `preset_quant` shape, trained as `quant`."""
    cfg = preset_config("tiny", preset_quant)
    model = Transformer(ModelConfig.from_dict({**cfg.model, "vocab_size": VOCAB, "quant": quant}))
    model.set_fused(fused)
    if compiled:
        for layer in model.layers:
            layer.compile()
    return model.train()


def stepper(model: Transformer, batch: int, seed: int) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    gen = torch.Generator().manual_seed(seed)
    seq = model.cfg.max_seq_len

    def step() -> None:
        x = torch.randint(0, VOCAB, (batch, seq), generator=gen)
        y = torch.randint(0, VOCAB, (batch, seq), generator=gen)
        opt.zero_grad(set_to_none=True)
        model.loss(x, y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def saved_bytes(model: Transformer, batch: int) -> int:
    """Bytes autograd still holds for the backward pass at the end of one forward (each storage
    once; tensors saved by graph branches that were already freed, such as a detached STE
    branch, do not count)."""
    saved: list[weakref.ref] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        # a detached alias: holding t itself would tie a node that saves its own output to that
        # output in a cycle, and keep alive what autograd frees without the hook
        alias = t.detach()
        saved.append(weakref.ref(alias))
        return alias

    x = torch.zeros(batch, model.cfg.max_seq_len, dtype=torch.long)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model.loss(x, x)
    alive = [t for t in (r() for r in saved) if t is not None]
    held = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in alive}
    del loss, alive
    return sum(held.values())


VARIANTS = {
    # name: (preset shape, quant, fused quantizer, torch.compile per block)
    "fp, ternary shape": ("ternary", "none", True, False),
    "ternary, fused": ("ternary", "ternary", True, False),
    "ternary, reference": ("ternary", "ternary", False, False),
    "fp, fp preset shape": ("none", "none", True, False),
}


@click.command()
@click.option("--rounds", type=int, default=7, show_default=True, help="Rounds; each variant runs once per round.")
@click.option("--steps", type=int, default=10, show_default=True, help="Timed steps per variant and round.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed steps per variant first.")
@click.option("--batch", type=int, default=12, show_default=True, help="Sequences per step (the tiny preset's).")
@click.option("--threads", type=int, default=1, show_default=True, help="torch threads.")
@click.option("--compile", "compiled", is_flag=True,
              help="Also time the ternary step with torch.compile on every block (compiling takes minutes).")
@click.option("--profile", is_flag=True, help="Also print torch.profiler's top operators for 5 steps of each "
                                             "of the first three variants (the profiler adds its own overhead).")
def main(rounds: int, steps: int, warmup: int, batch: int, threads: int, compiled: bool, profile: bool) -> None:
    """Time a training step of ternary and full-precision tiny models side by side."""
    torch.set_num_threads(threads)
    variants = dict(VARIANTS)
    if compiled:
        variants["ternary, fused, compiled"] = ("ternary", "ternary", True, True)
    steps_of, saved = {}, {}
    for i, (name, spec) in enumerate(variants.items()):
        torch.manual_seed(1337)
        model = build(*spec)
        saved[name] = saved_bytes(model, batch) if not spec[3] else None
        steps_of[name] = stepper(model, batch, seed=i)
        for _ in range(warmup):
            steps_of[name]()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, step in steps_of.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            times[name].append((time.perf_counter() - t0) / steps)
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    fp = ms["fp, ternary shape"]
    command = shlex.join(["tools/bench_train_step.py", *sys.argv[1:]])
    lines = [f"Machine: {machine(threads)}.", f"Command: `{command}` (median of {rounds} rounds of {steps} steps).",
             "", "| step | ms | ratio to FP, same shape | saved for backward |", "|---|---|---|---|"]
    lines += [f"| {name} | {t:.1f} | {t / fp:.2f}x | "
              f"{'-' if saved[name] is None else f'{saved[name] / 2**20:.1f} MiB'} |" for name, t in ms.items()]
    click.echo("\n".join(lines))
    if profile:
        for name in list(variants)[:3]:
            click.echo(f"\n{name}: self CPU time per operator, 5 steps\n{profile_table(steps_of[name])}")


def profile_table(step: Callable[[], None]) -> str:
    from torch.profiler import profile

    with profile() as prof:
        for _ in range(5):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)


if __name__ == "__main__":
    main()
