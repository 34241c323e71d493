"""The sampler and the decode loop that every runtime reproduces (docs/SAMPLING.md's executable form).

NumPy only: the sampler works on fp32 arrays with a portable PRNG (PCG32) instead of torch's RNG, so
that C and JavaScript reproduce every draw exactly, and the runtimes' Python front ends (onebit/run/)
share it without importing PyTorch. onebit/train/sample.py drives it with the PyTorch model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Collection, Sequence

import numpy as np

from onebit.errors import OnebitError

_MASK64 = (1 << 64) - 1
_MASK32 = (1 << 32) - 1
_PCG_MULT = 6364136223846793005
_PCG_INC = (54 << 1) | 1  # pcg32_srandom_r(seed, 54): the stream of the PCG reference demo


class GenerateError(OnebitError):
    """A generation request the model cannot serve (empty prompt, longer than the context)."""


@dataclass
class SamplerConfig:
    temperature: float = 0.8  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # >= 1 = off
    repeat_penalty: float = 1.0  # 1 = off
    repeat_window: int = 64  # last N tokens of the context (prompt included) that are penalized
    seed: int = 0
    ignore_eos: bool = False  # keep generating past an end-of-sequence token (benchmarks)

    def validate(self) -> "SamplerConfig":
        if not 0 <= self.temperature < math.inf:
            raise GenerateError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise GenerateError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise GenerateError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 < self.repeat_penalty < math.inf:
            raise GenerateError(f"repeat_penalty must be a finite number > 0, got {self.repeat_penalty}")
        if self.repeat_window < 0:
            raise GenerateError(f"repeat_window must be >= 0, got {self.repeat_window}")
        return self


class Pcg32:
    """PCG32 (XSH RR, 64-bit state), seeded as pcg32_srandom_r(seed, 54)."""

    def __init__(self, seed: int):
        self.state = 0
        self.next_u32()
        self.state = (self.state + (seed & _MASK64)) & _MASK64
        self.next_u32()

    def next_u32(self) -> int:
        old = self.state
        self.state = (old * _PCG_MULT + _PCG_INC) & _MASK64
        xorshifted = (((old >> 18) ^ old) >> 27) & _MASK32
        rot = old >> 59
        return ((xorshifted >> rot) | (xorshifted << ((-rot) & 31))) & _MASK32

    def next_float(self) -> np.float32:
        """Top 24 bits times 2^-24: exact in fp32, uniform in [0, 1)."""
        return np.float32((self.next_u32() >> 8) * (1.0 / 16777216.0))


def apply_repeat_penalty(logits: np.ndarray, context: Sequence[int], penalty: float, window: int) -> np.ndarray:
    """CTRL / llama.cpp penalty on each distinct id among the last `window` context tokens."""
    out = logits.astype(np.float32, copy=True)
    if penalty == 1.0 or window == 0:
        return out
    p = np.float32(penalty)
    for tok in set(context[-window:]):
        out[tok] = out[tok] / p if out[tok] > 0 else out[tok] * p
    return out


def greedy(logits: np.ndarray) -> int:
    """argmax; np.argmax already returns the lowest id among ties."""
    return int(np.argmax(logits))


def candidates(logits: np.ndarray, top_k: int) -> np.ndarray:
    """Token ids by descending logit, ties by ascending id, cut to the top k when 0 < k."""
    order = np.lexsort((np.arange(logits.shape[0]), -logits.astype(np.float64)))
    return order[:top_k] if 0 < top_k < order.shape[0] else order


def softmax_sorted(sorted_logits: np.ndarray) -> np.ndarray:
    """fp32 softmax over logits already in descending order; exp in float64 rounded to fp32,
    because libms disagree on fp32 expf far more often than on (float)exp(double)."""
    shifted = (sorted_logits - sorted_logits[0]).astype(np.float32)
    e = np.exp(shifted.astype(np.float64)).astype(np.float32)
    total = np.cumsum(e, dtype=np.float32)[-1]  # sequential fp32 sum, in candidate order
    return (e / total).astype(np.float32)


class Sampler:
    """One token from a logits vector, exactly as docs/SAMPLING.md specifies."""

    def __init__(self, config: SamplerConfig):
        self.config = config.validate()
        self.rng = Pcg32(config.seed)

    def __call__(self, logits: np.ndarray, context: Sequence[int]) -> int:
        cfg = self.config
        logits = apply_repeat_penalty(np.asarray(logits, dtype=np.float32), context,
                                      cfg.repeat_penalty, cfg.repeat_window)
        if cfg.temperature == 0:
            return greedy(logits)
        logits = (logits / np.float32(cfg.temperature)).astype(np.float32)
        ids = candidates(logits, cfg.top_k)
        probs = softmax_sorted(logits[ids])
        cum = np.cumsum(probs, dtype=np.float32)
        keep = ids.shape[0]
        if cfg.top_p < 1.0:
            # smallest prefix whose cumulative probability reaches top_p (at least one token)
            reached = np.nonzero(cum >= np.float32(cfg.top_p))[0]
            if reached.shape[0]:
                keep = int(reached[0]) + 1
        r = np.float32(self.rng.next_float() * cum[keep - 1])
        hit = np.nonzero(r < cum[:keep])[0]
        return int(ids[hit[0]] if hit.shape[0] else ids[keep - 1])


def slide_keep(ctx: int) -> int:
    """How many of the last tokens a slide keeps (docs/SAMPLING.md, "Beyond the context")."""
    return max(1, ctx // 2)


def check_request(model, prompt_ids: Sequence[int], max_new_tokens: int) -> None:
    """GenerateError unless the prompt is non-empty, in the vocabulary and fits in the context
    (the new tokens may go past it: the decode loop slides, docs/SAMPLING.md)."""
    if not prompt_ids:
        raise GenerateError("the prompt is empty: generation needs at least one token")
    if max_new_tokens < 0:
        raise GenerateError(f"the number of new tokens must be >= 0, got {max_new_tokens}")
    limit = model.cfg.max_seq_len
    if len(prompt_ids) > limit:
        raise GenerateError(f"the prompt ({len(prompt_ids)} tokens) is longer than the model's context of "
                            f"{limit} tokens (the prompt itself must fit)")
    bad = [t for t in prompt_ids if not 0 <= t < model.cfg.vocab_size]
    if bad:
        raise GenerateError(f"token id {bad[0]} is outside the vocabulary of {model.cfg.vocab_size}")


# forward(tokens, past, pos) -> (logits of the last token, new cache); past None = a fresh cache
Forward = Callable[[list[int], object, int], tuple[object, object]]


def decode_loop(forward: Forward, ctx: int, prompt_ids: Sequence[int], max_new_tokens: int,
                sampler: SamplerConfig, on_token: Callable[[int], None] | None = None,
                eos: Collection[int] = ()) -> list[int]:
    """The decode loop every Python runtime shares: prefill, sample, step, slide past the context.

    max_new_tokens are produced, or fewer when one of `eos` (the model's end-of-sequence ids) is
    sampled and not sampler.ignore_eos: that token is the last one returned (and seen by on_token),
    as in the C runtime's ob_generate. Past the context the loop slides (docs/SAMPLING.md, "Beyond
    the context: the sliding window").
    """
    sample = Sampler(sampler)
    context = list(prompt_ids)
    out: list[int] = []
    if max_new_tokens == 0:
        return out
    logits, past = forward(context, None, 0)
    pos = len(context)  # the position the next evaluated token takes (= tokens in the cache)
    while True:
        tok = sample(logits, context[-ctx:])  # the penalty looks at most ctx tokens back
        context.append(tok)
        out.append(tok)
        if on_token is not None:
            on_token(tok)
        if len(out) == max_new_tokens or (tok in eos and not sampler.ignore_eos):
            return out
        if pos == ctx:  # slide: refill the cache with the last keep tokens at positions 0..keep-1
            keep = slide_keep(ctx)
            logits, past = forward(context[-keep:], None, 0)
            pos = keep
        else:
            logits, past = forward([tok], past, pos)
            pos += 1
