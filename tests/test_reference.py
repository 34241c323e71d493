"""The NumPy reference over a packed .1bit file reproduces the PyTorch eval forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onebit import packing
from onebit.compile.export import ExportOptions, export_1bit
from onebit.run import reference
from onebit.run.reference import KVCache, ReferenceError, ReferenceModel
from onebit.sampling import SamplerConfig
from onebit.train.checkpoint import load_checkpoint
from onebit.train.sample import generate

# fp32 forward, same op order; only reduction orders differ (measured ~3e-7).
TOL_F32 = 1e-4
# Summation order differs between torch and NumPy, so an activation x * a may land one ulp on the
# other side of a .5 rounding boundary: one int8 code then differs by 1 and the logits after it by
# ~1e-3 (rare at test sizes; 9 of 32 64-token windows of a trained tiny model). Such a tie must show
# as BitLinear inputs that agree this closely, and the differing codes within this of a .5 boundary.
TIE_INPUT_REL = 1e-5
TIE_MARGIN = 1e-3
# f16 rounds every embedding/head element with relative error <= 2^-11 (unit roundoff 4.9e-4).
# Norms and the int8 quantizers are scale-invariant, so the perturbation reaches the logits with a
# gain of order one (plus the head's own rounding): a few unit roundoffs; we allow 8.
TOL_F16_VS_F32 = 8 * 2.0**-11

VARIANTS = [
    dict(),                                            # GQA (SMALL_CONFIG has n_kv_heads=2), relu2, gated, subln
    dict(n_kv_heads=1, pack="t1.6"),                   # multi-query
    dict(n_kv_heads=4, qk_norm=True),
    dict(pos="learned", pack="t1.6"),
    dict(norm="layernorm", qk_norm=True),
    dict(tie_embeddings=False, pack="t1.6"),
    dict(activation="gelu", gated=False),
    dict(activation="silu", subln=False, residual_scale=0.5, pack="t1.6"),
    dict(activation="relu2", gated=False, norm="layernorm"),
    dict(quant="binary"),
    dict(quant="binary", tie_embeddings=False, pos="learned", activation="silu"),
]


def _torch_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        logits, _ = model(torch.as_tensor(tokens, dtype=torch.long)[None])
    return logits[0].numpy()


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def _scaled(x: np.ndarray) -> np.ndarray:
    """x * a of DESIGN.md's activation quantizer, before rounding."""
    return x * (np.float32(127.0) / np.maximum(np.abs(x).max(-1, keepdims=True), np.float32(packing.EPS)))


def _first_code_mismatch(model, ref: ReferenceModel, tokens: np.ndarray, monkeypatch) -> tuple | None:
    """Inputs of the first BitLinear (in forward order) whose int8 codes differ, torch vs NumPy."""
    torch_in: list[np.ndarray] = []
    hooks = [m.register_forward_hook(lambda m, i, o: torch_in.append(i[0][0].numpy().copy()))
             for m in model.bitlinears()]
    _torch_logits(model, tokens)
    for h in hooks:
        h.remove()
    numpy_in: list[np.ndarray] = []
    real = reference.bitlinear

    def recording(x, w):
        numpy_in.append(x.copy())
        return real(x, w)

    with monkeypatch.context() as m:
        m.setattr(reference, "bitlinear", recording)
        ref.forward(tokens)
    assert len(torch_in) == len(numpy_in)
    for a, b in zip(torch_in, numpy_in):
        if (np.rint(_scaled(a)) != np.rint(_scaled(b))).any():
            return a, b
    return None


def assert_matches_torch(model, ref: ReferenceModel, tokens: np.ndarray, got: np.ndarray, monkeypatch) -> None:
    """Logits within TOL_F32, unless an int8 rounding tie (and nothing else) explains the gap."""
    expected = _torch_logits(model, tokens)
    if _rel(got, expected) < TOL_F32:
        return
    mismatch = _first_code_mismatch(model, ref, tokens, monkeypatch)
    assert mismatch is not None, f"logits differ by {_rel(got, expected):.2e} with identical int8 codes"
    a, b = mismatch
    assert _rel(b, a) < TIE_INPUT_REL
    va, vb = _scaled(a), _scaled(b)
    flipped = np.rint(va) != np.rint(vb)
    assert (np.abs(np.abs(va[flipped] - np.floor(va[flipped])) - 0.5) < TIE_MARGIN).all()


def _tokens(seed: int, vocab: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, n)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) or "default")
def test_reference_matches_torch(random_checkpoint, tmp_path, monkeypatch, variant):
    overrides = dict(variant)
    pack = overrides.pop("pack", "t2")
    seed = VARIANTS.index(variant)
    ckpt_dir = random_checkpoint(randomize=seed, **overrides)
    out = tmp_path / "m.1bit"
    export_1bit(ckpt_dir, out, ExportOptions(pack=pack, embed_dtype="f32"))
    ref = ReferenceModel.load(out)
    model = load_checkpoint(ckpt_dir).model
    tokens = _tokens(seed, model.cfg.vocab_size, model.cfg.max_seq_len)

    prefill = ref.forward(tokens)
    assert prefill.dtype == np.float32
    assert_matches_torch(model, ref, tokens, prefill, monkeypatch)

    cache = KVCache()
    split = 7
    steps = [ref.forward(tokens[:split], cache)] + [ref.forward([t], cache) for t in tokens[split:]]
    assert cache.length == len(tokens)
    assert_matches_torch(model, ref, tokens, np.concatenate(steps), monkeypatch)


@pytest.mark.parametrize("embed_dtype", ["f16", "i8"])
def test_reduced_precision_embeddings(random_checkpoint, tmp_path, embed_dtype):
    """Exact against a torch model holding the same rounded tables; bounded against the original."""
    ckpt_dir = random_checkpoint(randomize=42, tie_embeddings=False)
    out = tmp_path / "m.1bit"
    export_1bit(ckpt_dir, out, ExportOptions(embed_dtype=embed_dtype))
    ref = ReferenceModel.load(out)
    model = load_checkpoint(ckpt_dir).model
    tokens = _tokens(1, model.cfg.vocab_size, 20)
    original = _torch_logits(model, tokens)
    with torch.no_grad():
        for table in (model.embed.weight, model.head.weight):
            w = table.numpy()
            if embed_dtype == "f16":
                rounded = w.astype(np.float16).astype(np.float32)
            else:
                q, scale = packing.quantize_rows_i8(w)
                rounded = q.astype(np.float32) * scale[:, None]
            table.copy_(torch.from_numpy(rounded))
    got = ref.forward(tokens)
    assert _rel(got, _torch_logits(model, tokens)) < TOL_F32
    if embed_dtype == "f16":
        assert 0 < _rel(got, original) < TOL_F16_VS_F32


def test_greedy_generation_matches_torch(random_checkpoint, tmp_path):
    ckpt_dir = random_checkpoint(randomize=7)
    out = tmp_path / "m.1bit"
    export_1bit(ckpt_dir, out, ExportOptions(embed_dtype="f32"))
    ref = ReferenceModel.load(out)
    model = load_checkpoint(ckpt_dir).model
    prompt = _tokens(3, model.cfg.vocab_size, 5).tolist()

    expected, ids = [], list(prompt)
    with torch.no_grad():
        for _ in range(12):
            logits, _ = model(torch.tensor([ids]))
            ids.append(int(logits[0, -1].argmax()))
            expected.append(ids[-1])
    assert ref.generate_greedy(prompt, 12) == expected
    # past the context it slides, exactly like onebit.train.sample.generate (docs/SAMPLING.md)
    long_prompt = _tokens(4, model.cfg.vocab_size, model.cfg.max_seq_len - 2).tolist()
    n = 3 * model.cfg.max_seq_len  # several slides
    got = ref.generate_greedy(long_prompt, n)
    assert len(got) == n
    assert got == generate(model, long_prompt, n, SamplerConfig(temperature=0))
    assert isinstance(ref.decode(expected), str)


def test_reference_rejects_bad_requests(random_checkpoint, tmp_path):
    ckpt_dir = random_checkpoint()
    out = tmp_path / "m.1bit"
    export_1bit(ckpt_dir, out, ExportOptions())
    ref = ReferenceModel.load(out)
    n, vocab = ref.cfg["max_seq_len"], ref.cfg["vocab_size"]
    with pytest.raises(ReferenceError, match="longer than the context"):
        ref.generate_greedy([1] * (n + 1), 1)
    with pytest.raises(ReferenceError, match="exceeds max_seq_len"):
        ref.forward([1] * (n + 1))
    with pytest.raises(ReferenceError, match="out of range"):
        ref.forward([vocab])


def test_decode_uses_file_tokenizer(random_checkpoint, tmp_path):
    ckpt_dir = random_checkpoint()
    out = tmp_path / "m.1bit"
    export_1bit(ckpt_dir, out, ExportOptions())
    tok = load_checkpoint(ckpt_dir).tokenizer
    text = "Speak, speak.\nAll:"
    assert ReferenceModel.load(out).decode(tok.encode(text)) == text
