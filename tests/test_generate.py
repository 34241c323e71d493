"""The sampler of docs/SAMPLING.md (onebit/sampling.py) and reference generation (onebit/train/sample.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onebit.config import ModelConfig
from onebit.sampling import (
    GenerateError,
    Pcg32,
    Sampler,
    SamplerConfig,
    apply_repeat_penalty,
    candidates,
    softmax_sorted,
)
from onebit.train.model import Transformer
from onebit.train.sample import generate

DOC_LOGITS = np.array([1.5, -0.25, 3.0, 3.0, 0.5, -2.0, 2.25, 0.0], dtype=np.float32)
DOC_CONTEXT = [2, 5, 5, 7]


def random_logits(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 2, n).astype(np.float32)


# -- the PRNG and the doc's vectors ------------------------------------------------------------

@pytest.mark.parametrize("seed, expected", [
    (42, [0xA15C02B7, 0x7B47F409, 0xBA1D3330, 0x83D2F293]),  # the PCG reference demo
    (0, [0x47C28B93, 0xB98F6A27, 0x7D3DCB1E, 0xF0761116]),
    (1, [0x9B6BDDA9, 0x0C31FC48, 0xCE97F8EF, 0x822C03D4]),
])
def test_pcg32_vectors(seed, expected):
    rng = Pcg32(seed)
    assert [rng.next_u32() for _ in range(4)] == expected


def test_pcg32_float_is_top_24_bits():
    a, b = Pcg32(7), Pcg32(7)
    for _ in range(100):
        u = a.next_float()
        assert u == np.float32((b.next_u32() >> 8) / 2**24) and 0.0 <= u < 1.0


@pytest.mark.parametrize("cfg, expected", [
    (SamplerConfig(temperature=0), [2] * 12),
    (SamplerConfig(temperature=1.0, seed=1), [3, 2, 6, 3, 3, 2, 3, 6, 2, 3, 3, 2]),
    (SamplerConfig(temperature=0.8, top_k=5, top_p=0.9, repeat_penalty=1.3, repeat_window=4, seed=1),
     [2, 3, 6, 3, 2, 3, 2, 6, 3, 3, 3, 3]),
])
def test_sampling_md_vectors(cfg, expected):
    sample = Sampler(cfg)
    assert [sample(DOC_LOGITS, DOC_CONTEXT) for _ in range(12)] == expected


# -- each step ------------------------------------------------------------------------------------

def test_greedy_is_argmax_with_ties_to_lowest_id():
    logits = random_logits(50, 0)
    assert Sampler(SamplerConfig(temperature=0))(logits, [0]) == int(np.argmax(logits))
    tied = np.array([0.1, 0.9, 0.3, 0.9], dtype=np.float32)
    assert Sampler(SamplerConfig(temperature=0))(tied, [0]) == 1


def test_repeat_penalty_divides_positive_and_multiplies_negative():
    logits = random_logits(20, 1)
    context = [0, 3, 3, 5, 7, 9, 11]
    out = apply_repeat_penalty(logits, context, 2.0, window=4)
    window = {5, 7, 9, 11}
    for i in range(20):
        if i in window:
            assert out[i] == (logits[i] / 2 if logits[i] > 0 else logits[i] * 2)
        else:
            assert out[i] == logits[i]


def test_candidates_order_and_top_k():
    logits = np.array([0.5, 2.0, 2.0, -1.0, 3.0], dtype=np.float32)
    assert candidates(logits, 0).tolist() == [4, 1, 2, 0, 3]
    assert candidates(logits, 2).tolist() == [4, 1]


def test_softmax_sums_to_one():
    p = softmax_sorted(np.sort(random_logits(300, 2))[::-1].copy())
    assert p.dtype == np.float32 and abs(float(p.sum()) - 1.0) < 1e-5 and np.all(np.diff(p) <= 0)


@pytest.mark.parametrize("top_k", [1, 3, 10])
def test_top_k_never_samples_outside_the_top_k(top_k):
    logits = random_logits(40, 3)
    allowed = set(np.argsort(-logits)[:top_k].tolist())
    sample = Sampler(SamplerConfig(temperature=2.0, top_k=top_k, seed=5))
    seen = {sample(logits, [0]) for _ in range(300)}
    assert seen <= allowed and (len(seen) == top_k or top_k == 10)


def test_top_p_keeps_the_smallest_nucleus():
    # probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.75 keeps the first two ids only
    probs = np.array([0.15, 0.5, 0.05, 0.3])
    logits = np.log(probs).astype(np.float32)
    sample = Sampler(SamplerConfig(temperature=1.0, top_p=0.75, seed=11))
    seen = [sample(logits, [0]) for _ in range(400)]
    assert set(seen) == {1, 3}
    assert 0.55 < seen.count(1) / len(seen) < 0.75  # 0.5 / 0.8 renormalised


def test_full_distribution_frequencies_follow_softmax():
    logits = np.array([1.0, 0.0, -1.0, 0.5], dtype=np.float32)
    p = np.exp(logits) / np.exp(logits).sum()
    sample = Sampler(SamplerConfig(temperature=1.0, seed=3))
    counts = np.bincount([sample(logits, [0]) for _ in range(4000)], minlength=4) / 4000
    assert np.allclose(counts, p, atol=0.03)


def test_invalid_sampler_settings():
    for bad in (dict(temperature=-1), dict(top_k=-2), dict(top_p=0.0), dict(top_p=1.5), dict(repeat_penalty=0)):
        with pytest.raises(GenerateError):
            SamplerConfig(**bad).validate()


# -- generation ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=29, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=24)
    return Transformer(cfg).eval()


def test_generate_is_deterministic_with_a_seed(model):
    cfg = SamplerConfig(temperature=1.0, top_k=10, seed=4)
    first = generate(model, [1, 2, 3], 15, cfg)
    assert first == generate(model, [1, 2, 3], 15, cfg)
    assert len(first) == 15 and all(0 <= t < 29 for t in first)
    others = [generate(model, [1, 2, 3], 15, SamplerConfig(temperature=1.0, top_k=10, seed=s)) for s in range(5, 9)]
    assert any(o != first for o in others)


def test_generate_greedy_matches_full_forward_argmax(model):
    prompt = [4, 8, 15]
    out = generate(model, prompt, 8, SamplerConfig(temperature=0))
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(8):
            logits, _ = model(torch.tensor([seq]))
            seq.append(int(torch.argmax(logits[0, -1])))
    assert out == seq[len(prompt):]


def test_generate_streams_each_token(model):
    seen: list[int] = []
    out = generate(model, [5], 6, SamplerConfig(seed=2), on_token=seen.append)
    assert seen == out


def test_generate_refuses_what_does_not_fit(model):
    with pytest.raises(GenerateError, match="longer than the model's context"):
        generate(model, [1] * 25, 1, SamplerConfig())
    assert len(generate(model, [1] * 24, 5, SamplerConfig())) == 5  # the prompt fits: the new tokens slide
    with pytest.raises(GenerateError, match="empty"):
        generate(model, [], 5, SamplerConfig())
    with pytest.raises(GenerateError, match="vocabulary"):
        generate(model, [29], 1, SamplerConfig())
    assert generate(model, [1] * 20, 4, SamplerConfig()) != []


def _sliding_oracle(model: Transformer, prompt: list[int], n: int, cfg: SamplerConfig) -> list[int]:
    """docs/SAMPLING.md's sliding window spelled out with full forwards (no KV-cache): the logits
    are those of the last token of the window that sits in the cache."""
    ctx, keep = model.cfg.max_seq_len, max(1, model.cfg.max_seq_len // 2)
    sample = Sampler(cfg)
    seq, window = list(prompt), list(prompt)  # window: the tokens in the cache, positions 0..
    out = []
    with torch.no_grad():
        while True:
            logits, _ = model(torch.tensor([window]))
            tok = sample(logits[0, -1], seq[-ctx:])
            seq.append(tok)
            out.append(tok)
            if len(out) == n:
                return out
            window = seq[-keep:] if len(window) == ctx else window + [tok]


@pytest.mark.parametrize("prompt_len", [1, 5, 24])
@pytest.mark.parametrize("cfg", [SamplerConfig(temperature=0),
                                 SamplerConfig(temperature=0.9, top_k=8, repeat_penalty=1.3, repeat_window=40, seed=3)])
def test_generate_slides_past_the_context(model, prompt_len, cfg):
    prompt = [(7 * i + 3) % 29 for i in range(prompt_len)]
    n = 80  # max_seq_len 24, keep 12: several slides
    got = generate(model, prompt, n, cfg)
    assert len(got) == n
    assert got == _sliding_oracle(model, prompt, n, cfg)
