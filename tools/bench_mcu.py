"""Footprint, stack and instructions per token of the Cortex-M firmware (examples/mcu) under QEMU.

Builds the firmware for a model (a checkpoint, or a seeded random model of the tiny preset's
trained shape: speed and size do not depend on the weights), then runs it on mps3-an547
(Cortex-M55) with the MVE kernels and with the scalar ones, and on mps2-an386 (Cortex-M4) with the
DSP kernels and the scalar ones, under `-icount shift=0`.  Prints the machine, the commands, flash / RAM from arm-none-eabi-size, the
stack high-water mark, the instructions per generated token and the ratio to the scalar build in
the same run.  QEMU does not model timing: tokens/s are estimates at one instruction per cycle.

    .venv/bin/python tools/bench_mcu.py [--checkpoint runs/tiny] [--tokens 100]
"""

from __future__ import annotations

import platform
import re
import subprocess
import tempfile
from pathlib import Path

import click
import torch

from onebit.config import ModelConfig
from onebit.tokenizer import train_char_tokenizer
from onebit.train.checkpoint import save_checkpoint
from onebit.train.model import Transformer
from onebit.train.presets import TINY_MODEL

REPO = Path(__file__).resolve().parent.parent
MCU = REPO / "examples" / "mcu"
RUNS = (("an547", "mve", 480e6), ("an547", "scalar", 480e6), ("an386", "dsp", 240e6), ("an386", "scalar", 240e6))
SECTIONS = (".text", ".model", ".data", ".bss", ".stack", ".arena")


def random_tiny(out: Path) -> Path:
    text = "\n" + "".join(chr(0x20 + i) for i in range(64))  # a 65-character vocabulary, as tinyshakespeare's
    tokenizer = train_char_tokenizer(text)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**dict(TINY_MODEL, ffn_dim=1024), vocab_size=tokenizer.vocab_size))
    save_checkpoint(out, model, tokenizer, {"step": 0, "val_loss": None})
    return out


def sizes(elf: Path) -> dict[str, int]:
    text = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\.\w+)\s+(\d+)", text, re.M) if m[1] in SECTIONS}


@click.command()
@click.option("--checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Checkpoint to compile in.  [default: a random model of the tiny preset's shape]")
@click.option("--tokens", default=100, show_default=True, help="Tokens to generate per run.")
@click.option("--prompt", default="ROMEO:", show_default=True, help="Prompt (characters of the model's vocabulary).")
def main(checkpoint: Path | None, tokens: int, prompt: str) -> None:
    """Build and run the firmware on both boards; print a table."""
    qemu = subprocess.run(["qemu-system-arm", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    gcc = subprocess.run(["arm-none-eabi-gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"machine: {platform.node()} {platform.machine()}; {qemu}; {gcc}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = checkpoint or random_tiny(tmp / "ckpt")
        header = tmp / "model.h"
        subprocess.run(["onebit", "export", str(ckpt), "-o", str(tmp / "model.1bit"), "--emit-c-header", str(header)],
                       check=True, capture_output=True)
        rows = []
        for board, isa, hz in RUNS:
            build = ["make", "-s", "-C", str(MCU), f"BOARD={board}", f"MODEL={header}", f"BUILD={tmp / 'build'}"]
            subprocess.run(build + ["all"], check=True, capture_output=True)
            cmd = build + [f"N_NEW={tokens}", f"PROMPT={prompt}", f"ISA={isa}", "run"]
            print("command:", " ".join(cmd))
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            err = done.stderr
            per_token = float(re.search(r"per decoded token (\d+)", err)[1])
            prefill = float(re.search(r"prefill\+first token (\d+)", err)[1])
            stack = int(re.search(r"stack high-water (\d+)", err)[1])
            arena = int(re.search(r"arena (\d+) bytes", err)[1])
            got = re.search(r"isa (\w+)", err)[1]
            rows.append((board, got, hz, sizes(tmp / "build" / board / "firmware.elf"), stack, arena, prefill, per_token))
    scalar = {b: r[7] for r in rows for b in [r[0]] if r[1] == "scalar"}
    print("| board | kernels | flash: code + model (bytes) | RAM: data+bss, stack used, arena used (bytes) "
          "| instructions, prompt + first token | instructions per token | vs scalar, same board | "
          "estimate at 1 instr/cycle |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for board, isa, hz, sz, stack, arena, prefill, per_token in rows:
        ratio = scalar[board] / per_token
        print(f"| {board} | {isa} | {sz['.text']:,} + {sz['.model']:,} | {sz['.data'] + sz['.bss']:,}, {stack:,}, "
              f"{arena:,} | {prefill:,.0f} | {per_token:,.0f} | {ratio:.2f}x | "
              f"{hz / per_token:.1f} tok/s at {hz / 1e6:.0f} MHz |")


if __name__ == "__main__":
    main()
