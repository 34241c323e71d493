"""Quantizer properties (onebit/train/quant.py) and BitLinear's training vs eval forward."""

from __future__ import annotations

import pytest
import torch

from onebit import packing
from onebit.train import quant
from onebit.train.model import BitLinear


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def test_ternary_codes_and_scale(gen):
    w = torch.randn(48, 80, generator=gen) * 0.05
    codes, scale = quant.quantize_weight(w, "ternary")
    assert set(codes.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert torch.equal(scale, w.abs().mean())
    assert torch.equal(codes, (w / scale).round().clamp(-1, 1))


def test_ternary_scale_floor_for_zero_weights():
    codes, scale = quant.quantize_weight(torch.zeros(4, 8), "ternary")
    assert scale == torch.tensor(packing.EPS) and torch.all(codes == 0)


def test_binary_codes_are_signs_around_the_mean(gen):
    w = torch.randn(32, 64, generator=gen) + 0.3  # an offset, so that centering matters
    codes, scale = quant.quantize_weight(w, "binary")
    assert set(codes.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(codes, torch.where(w >= w.mean(), 1.0, -1.0))
    assert torch.allclose(scale, w.abs().mean())


def test_activation_codes_range_and_absmax(gen):
    x = torch.randn(5, 7, 96, generator=gen) * 3
    xq, a = quant.quantize_activation(x)
    assert xq.min() >= -128 and xq.max() <= 127
    assert torch.equal(xq, xq.round())
    # the largest |x| of each token maps to exactly +-127
    idx = x.abs().argmax(dim=-1, keepdim=True)
    assert torch.equal(xq.gather(-1, idx).abs(), torch.full_like(a, 127.0))
    assert torch.allclose(xq / a, x, atol=float(x.abs().max()) / 127)


def test_rounding_is_half_to_even():
    x = torch.tensor([[0.5, 1.5, 2.5, -0.5, 127.0]])  # absmax 127: a = 1, codes = round(x)
    xq, _ = quant.quantize_activation(x)
    assert xq.tolist() == [[0.0, 2.0, 2.0, -0.0, 127.0]]


@pytest.mark.parametrize("factor", [1.0, 0.25, 3.0])
def test_ste_gradient_is_identity_times_scale(gen, factor):
    x = torch.randn(6, 10, generator=gen, requires_grad=True)
    upstream = torch.randn(6, 10, generator=gen)
    out = quant.ste(x, x.detach().round(), factor)
    assert torch.equal(out, x.detach().round())
    out.backward(upstream)
    assert torch.allclose(x.grad, upstream * factor)


@pytest.mark.parametrize("kind", ["ternary", "binary"])
def test_bitlinear_eval_equals_fake_quant_training_forward(gen, kind):
    torch.manual_seed(0)
    layer = BitLinear(96, 40, kind)
    x = torch.randn(3, 5, 96, generator=gen)
    with torch.no_grad():
        train_out = layer.train()(x)
        eval_out = layer.eval()(x)
    assert torch.allclose(train_out, eval_out, rtol=1e-5, atol=1e-5)
    # and eval is exactly the integer product scaled once, as every runtime computes it
    codes, s = quant.quantize_weight(layer.weight, kind)
    xq, a = quant.quantize_activation(x)
    assert torch.equal(eval_out, torch.nn.functional.linear(xq, codes) * (s / a))


@pytest.mark.parametrize("kind", ["ternary", "binary"])
def test_bitlinear_weight_gradient_is_straight_through(gen, kind):
    torch.manual_seed(0)
    layer = BitLinear(32, 16, kind).train()
    layer.grad_scale = 0.5
    x = torch.randn(4, 32, generator=gen)
    layer(x).sum().backward()
    xq, a = quant.quantize_activation(x)
    expected = 0.5 * torch.ones(4, 16).T @ (xq / a)  # d/dW of sum(x_fake W^T), scaled
    assert torch.allclose(layer.weight.grad, expected, rtol=1e-5, atol=1e-6)


def test_soft_codes_approach_hard_codes(gen):
    w = torch.randn(64, 64, generator=gen) * 0.02
    scale = quant.weight_scale(w)
    hard = quant.ternary_codes(w, scale)
    u = (w / scale).abs()
    away = ((u - 0.5).abs() > 0.05) & ((u - 1.5).abs() > 0.05)  # tanh steps converge slowly at the edges
    soft = quant.soft_codes(w, scale, "ternary", 200.0)
    assert torch.allclose(soft[away], hard[away], atol=1e-3)
    assert (quant.soft_codes(w, scale, "ternary", 1.0) - hard).abs().max() > 0.1


def test_clamp_latent_bounds_weights(gen):
    layer = BitLinear(16, 8, "ternary")
    with torch.no_grad():
        layer.weight.copy_(torch.randn(8, 16, generator=gen))
    bound = 1.5 * float(quant.weight_scale(layer.weight.detach()))
    layer.clamp_latent_(1.5)
    assert layer.weight.abs().max() <= bound + 1e-6


# ----------------------------------------------------------------------------------------------
# The fused BitLinear (quant.BitLinearFn) against the autograd reference


def _forward_backward(fn, x, w, upstream):
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    out = fn(x, w)
    out.backward(upstream)
    return out.detach(), x.grad, w.grad


@pytest.mark.parametrize("kind", ["ternary", "binary", "int4", "int8"])
@pytest.mark.parametrize("grad_scale", [1.0, 0.5])
def test_fused_bitlinear_matches_reference(gen, kind, grad_scale):
    x = torch.randn(3, 7, 96, generator=gen) * 2
    w = torch.randn(40, 96, generator=gen) * 0.02
    upstream = torch.randn(3, 7, 40, generator=gen)
    ref = _forward_backward(lambda x, w: quant.bitlinear_reference(x, w, kind, grad_scale), x, w, upstream)
    fused = _forward_backward(lambda x, w: quant.BitLinearFn.apply(x, w, kind, grad_scale), x, w, upstream)
    for a, b in zip(ref, fused):
        assert torch.equal(a, b)


def test_fused_bitlinear_under_bf16_autocast(gen):
    x = torch.randn(2, 5, 64, generator=gen)
    w = torch.randn(24, 64, generator=gen) * 0.02
    upstream = torch.randn(2, 5, 24, generator=gen).bfloat16()
    results = []
    for fn in (quant.bitlinear_reference, quant.BitLinearFn.apply):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results.append(_forward_backward(lambda x, w: fn(x, w, "ternary", 1.0), x, w, upstream))
    for a, b in zip(*results):
        assert torch.equal(a, b)
    assert results[1][0].dtype == torch.bfloat16 and results[1][2].dtype == torch.float32


def _train_steps(over: dict, fused: bool, steps: int = 20) -> tuple[list[float], dict]:
    from onebit.config import ModelConfig
    from onebit.train.model import Transformer

    from conftest import MICRO_MODEL

    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_dict({**MICRO_MODEL, "vocab_size": 13, **over})).train()
    model.set_fused(fused)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = torch.Generator().manual_seed(7)
    losses = []
    for _ in range(steps):
        x, y = torch.randint(0, 13, (2, 2, 16), generator=data)
        opt.zero_grad(set_to_none=True)
        loss = model.loss(x, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, model.state_dict()


@pytest.mark.parametrize("over", [
    dict(quant="ternary"),
    dict(quant="binary"),
    dict(quant="ternary", precision={"layers.0.*": "int4", "*.down_proj": "int8", "layers.1.attn.*": "binary"}),
], ids=["ternary", "binary", "int4-int8-binary-map"])
def test_fused_training_matches_reference_over_steps(over):
    ref_losses, ref_weights = _train_steps(over, fused=False)
    losses, weights = _train_steps(over, fused=True)
    # bit for bit: a last-place difference would flip a code sooner or later and training would
    # drift apart by ~1e-3, as it does between world sizes (docs/TRAINING.md)
    assert losses == ref_losses
    assert all(torch.equal(w, ref_weights[name]) for name, w in weights.items())
