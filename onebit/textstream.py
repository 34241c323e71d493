"""What every generator CLI shares: the sampler options and the stdout contract.

stdout carries the prompt and then the generated text, streamed token by token, and nothing else,
so the outputs of onebit-sample, run_c and run_ort compare byte for byte; statistics go to stderr.
Token bytes pass through one incremental UTF-8 decoder: a character split across byte-level BPE
tokens is printed once complete, and bytes that never form a character become U+FFFD.
"""

from __future__ import annotations

import codecs
import functools
import sys
import time
from typing import Callable

import click

from onebit.errors import cli_errors
from onebit.sampling import GenerateError, SamplerConfig

DEFAULTS = SamplerConfig()
MAX_NEW_TOKENS = 1 << 24  # onebit-run's bound too: a run of -n tokens ends


def check_prompt(prompt: str) -> str:
    """A command-line prompt must be UTF-8: Python hands bytes that are not as lone surrogates."""
    for i, char in enumerate(prompt):
        if 0xDC80 <= ord(char) <= 0xDCFF:
            offset = len(prompt[:i].encode("utf-8", "surrogateescape"))
            raise GenerateError(f"prompt: text is not valid UTF-8 (byte 0x{ord(char) - 0xDC00:02x} at offset {offset})")
    return prompt


def sampler_options(fn: Callable) -> Callable:
    """Add --prompt, -n, the sampler flags, --ignore-eos and --chat; the command receives prompt, n,
    sampler (ignore_eos is part of it) and chat."""
    options = [
        click.option("--prompt", "-p", default="\n", show_default=True, help="Text to continue."),
        click.option("-n", "--max-new-tokens", "n", type=int, default=200, show_default=True,
                     help="Tokens to generate (past the context, the window slides: docs/SAMPLING.md)."),
        click.option("--temperature", type=float, default=DEFAULTS.temperature, show_default=True,
                     help="Softmax temperature; 0 = greedy."),
        click.option("--top-k", type=int, default=DEFAULTS.top_k, show_default=True,
                     help="Sample among the k most likely tokens; 0 = off."),
        click.option("--top-p", type=float, default=DEFAULTS.top_p, show_default=True,
                     help="Nucleus sampling: the smallest set with this much probability; 1 = off."),
        click.option("--repeat-penalty", type=float, default=DEFAULTS.repeat_penalty, show_default=True,
                     help="Penalize the recent tokens (CTRL rule: positive logits divided, negative multiplied); 1 = off."),
        click.option("--repeat-window", type=int, default=DEFAULTS.repeat_window, show_default=True,
                     help="How many recent tokens the repeat penalty looks at."),
        click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True,
                     help="Sampler seed: the same seed gives the same text in every runtime."),
        click.option("--ignore-eos", is_flag=True, default=False, show_default=True,
                     help="Keep generating past the model's end-of-sequence token (for benchmarks); "
                          "by default generation stops there."),
        click.option("--chat", is_flag=True, default=False, show_default=True,
                     help="The prompt is a user message: wrap it in the model's chat template."),
    ]

    @functools.wraps(fn)
    @cli_errors  # a bad sampler setting is a one-line error too
    def wrapper(*args, temperature, top_k, top_p, repeat_penalty, repeat_window, seed, ignore_eos, **kwargs):
        sampler = SamplerConfig(temperature=temperature, top_k=top_k, top_p=top_p, repeat_penalty=repeat_penalty,
                                repeat_window=repeat_window, seed=seed, ignore_eos=ignore_eos)
        check_prompt(kwargs["prompt"])
        if not 0 <= kwargs["n"] <= MAX_NEW_TOKENS:
            raise GenerateError(f"-n must be in [0, {MAX_NEW_TOKENS}], got {kwargs['n']}")
        return fn(*args, sampler=sampler.validate(), **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def stream_bytes(token_bytes: bytes, token: int, eos: frozenset[int], sampler: SamplerConfig) -> bytes:
    """What stdout shows of a token: nothing for the end-of-sequence token that ends generation
    (its text, such as `<|eot_id|>`, is no part of the answer), else its bytes."""
    return b"" if token in eos and not sampler.ignore_eos else token_bytes


class TextStream:
    """Writes the prompt, then each token's bytes as text; close() reports speed on stderr."""

    def __init__(self, prompt: str):
        self._out = sys.stdout
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._start = time.perf_counter()
        self._count = 0
        self._out.write(prompt)
        self._out.flush()

    def write(self, token_bytes: bytes) -> None:
        self._count += 1
        self._out.write(self._utf8.decode(token_bytes))
        self._out.flush()

    def close(self, n_prompt: int, label: str = "") -> None:
        self._out.write(self._utf8.decode(b"", final=True))
        self._out.flush()
        elapsed = time.perf_counter() - self._start
        rate = self._count / max(elapsed, 1e-9)
        print(f"\n{n_prompt} prompt + {self._count} new tokens in {elapsed:.2f}s ({rate:.1f} tokens/s"
              f"{', ' + label if label else ''})", file=sys.stderr)
