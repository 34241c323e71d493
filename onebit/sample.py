"""onebit-sample: generate text from a checkpoint with the PyTorch reference (the oracle).

stdout carries the prompt and then the generated text, streamed token by token, and nothing
else; statistics go to stderr (onebit/textstream.py, shared with run_c and run_ort).
"""

from __future__ import annotations

from pathlib import Path

import click
import torch

from onebit.checkpoint import load_checkpoint
from onebit.errors import cli_errors
from onebit.generate import generate
from onebit.sampling import SamplerConfig, check_request
from onebit.textstream import TextStream, sampler_options


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(path_type=Path))
@sampler_options
@cli_errors
def main(checkpoint: Path, prompt: str, n: int, sampler: SamplerConfig) -> None:
    """Continue PROMPT with the model in CHECKPOINT (a training run's directory)."""
    torch.set_num_threads(1)  # single-token decode gains nothing from threads on a tiny model
    ckpt = load_checkpoint(checkpoint)
    tokenizer = ckpt.tokenizer
    prompt_ids = tokenizer.encode(prompt)
    check_request(ckpt.model, prompt_ids, n)  # before any output: an error leaves stdout empty
    stream = TextStream(prompt)
    generate(ckpt.model, prompt_ids, n, sampler, on_token=lambda t: stream.write(tokenizer.token_bytes(t)))
    stream.close(len(prompt_ids))


if __name__ == "__main__":
    main()
