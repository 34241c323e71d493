"""Generation with the PyTorch model: `generate()`, the oracle every runtime is tested against, and
the `onebit-sample` command around it.

docs/SAMPLING.md is the specification and onebit/sampling.py (the NumPy sampler and decode loop that
every Python runtime shares) its executable form; this file only supplies the PyTorch forward.
stdout carries the prompt and then the generated text, streamed token by token, and nothing else;
statistics go to stderr (onebit/textstream.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Collection

import click
import torch

from onebit.chat_template import chat_prompt, eos_ids, generation_tokens
from onebit.errors import cli_errors
from onebit.sampling import SamplerConfig, check_request, decode_loop
from onebit.textstream import TextStream, sampler_options, stream_bytes
from onebit.train.checkpoint import load_checkpoint
from onebit.train.model import Transformer


@torch.no_grad()
def generate(model: Transformer, prompt_ids: list[int], max_new_tokens: int, sampler: SamplerConfig,
             on_token: Callable[[int], None] | None = None, eos: Collection[int] = ()) -> list[int]:
    """The new tokens (prompt excluded) of a KV-cached decode with the PyTorch model (the oracle);
    on_token sees each as it arrives. Stops after one of `eos` unless sampler.ignore_eos."""
    check_request(model, prompt_ids, max_new_tokens)
    device = next(model.parameters()).device

    def forward(tokens: list[int], past, pos: int):
        logits, past = model(torch.tensor([tokens], device=device), past, pos)
        return logits[0, -1].float().cpu().numpy(), past

    was_training = model.training
    model.eval()
    try:
        return decode_loop(forward, model.cfg.max_seq_len, prompt_ids, max_new_tokens, sampler, on_token, eos)
    finally:
        model.train(was_training)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(path_type=Path))
@sampler_options
@cli_errors
def main(checkpoint: Path, prompt: str, n: int, sampler: SamplerConfig, chat: bool) -> None:
    """Continue PROMPT with the model in CHECKPOINT (a training run's directory)."""
    torch.set_num_threads(1)  # single-token decode gains nothing from threads on a tiny model
    ckpt = load_checkpoint(checkpoint)
    tokenizer = ckpt.tokenizer
    meta = generation_tokens(ckpt.meta, tokenizer)
    text = chat_prompt(meta, prompt) if chat else prompt
    prompt_ids = tokenizer.encode(text)
    check_request(ckpt.model, prompt_ids, n)  # before any output: an error leaves stdout empty
    stream = TextStream(text)
    eos = eos_ids(meta)
    generate(ckpt.model, prompt_ids, n, sampler, eos=eos,
             on_token=lambda t: stream.write(stream_bytes(tokenizer.token_bytes(t), t, eos, sampler)))
    stream.close(len(prompt_ids))


if __name__ == "__main__":
    main()
