"""onebit-sample: generate text from a checkpoint with the PyTorch reference (the oracle).

stdout carries the prompt and then the generated text, streamed token by token, and nothing
else; statistics go to stderr. Tokens are streamed as bytes through an incremental UTF-8 decoder,
so a character split across byte-level BPE tokens is printed once it is complete.
"""

from __future__ import annotations

import codecs
import sys
import time
from pathlib import Path

import click
import torch

from onebit.checkpoint import load_checkpoint
from onebit.errors import cli_errors
from onebit.generate import SamplerConfig, check_request, generate

DEFAULTS = SamplerConfig()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--prompt", "-p", default="\n", show_default=True, help="text to continue")
@click.option("-n", "--max-new-tokens", "n", type=int, default=200, show_default=True)
@click.option("--temperature", type=float, default=DEFAULTS.temperature, show_default=True, help="0 = greedy")
@click.option("--top-k", type=int, default=DEFAULTS.top_k, show_default=True, help="0 = off")
@click.option("--top-p", type=float, default=DEFAULTS.top_p, show_default=True, help="1 = off")
@click.option("--repeat-penalty", type=float, default=DEFAULTS.repeat_penalty, show_default=True)
@click.option("--repeat-window", type=int, default=DEFAULTS.repeat_window, show_default=True)
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
@cli_errors
def main(checkpoint: Path, prompt: str, n: int, temperature: float, top_k: int, top_p: float,
         repeat_penalty: float, repeat_window: int, seed: int) -> None:
    """Continue PROMPT with the model in CHECKPOINT (a training run's directory)."""
    torch.set_num_threads(1)  # single-token decode gains nothing from threads on a tiny model
    sampler = SamplerConfig(temperature=temperature, top_k=top_k, top_p=top_p, repeat_penalty=repeat_penalty,
                            repeat_window=repeat_window, seed=seed).validate()
    ckpt = load_checkpoint(checkpoint)
    tokenizer = ckpt.tokenizer
    prompt_ids = tokenizer.encode(prompt)
    check_request(ckpt.model, prompt_ids, n)  # before any output: an error leaves stdout empty

    out = sys.stdout
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out.write(prompt)
    out.flush()

    def emit(token: int) -> None:
        out.write(decoder.decode(tokenizer.token_bytes(token)))
        out.flush()

    start = time.perf_counter()
    tokens = generate(ckpt.model, prompt_ids, n, sampler, on_token=emit)
    elapsed = time.perf_counter() - start
    out.write(decoder.decode(b"", final=True))
    out.flush()
    print(f"\n{len(prompt_ids)} prompt + {len(tokens)} new tokens in {elapsed:.2f}s "
          f"({len(tokens) / max(elapsed, 1e-9):.1f} tokens/s)", file=sys.stderr)


if __name__ == "__main__":
    main()
