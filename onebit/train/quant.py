"""The one reference for quantization in PyTorch: the trainer and the exporter use this file.

The math is in docs/DESIGN.md. Everything runs in fp32 with EPS = 1e-5, and rounding is
round-half-to-even (torch.round, np.rint, C nearbyintf) so that every runtime agrees bit for bit.
onebit/packing.py is the NumPy half (the packed layouts), shared with the runtimes.
"""

from __future__ import annotations

import math

import torch

from onebit.packing import EPS

# ----------------------------------------------------------------------------------------------
# Weights


def weight_scale(w: torch.Tensor) -> torch.Tensor:
    """Per-tensor scale mean(|W|) shared by ternary and binary (a 0-d fp32 tensor)."""
    return w.float().abs().mean().clamp(min=EPS)


def ternary_codes(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Round-clip W / scale to {-1, 0, +1} (as fp32 values)."""
    return (w.float() / scale).round().clamp(-1, 1)


def binary_codes(w: torch.Tensor) -> torch.Tensor:
    """sign(W - mean W) with sign(0) = +1, so every weight is -1 or +1."""
    w = w.float()
    return torch.where(w - w.mean() >= 0, 1.0, -1.0)


# int4 / int8: symmetric, one scale per output row, the largest code kept off the asymmetric end
INT_LEVELS = {"int4": 7, "int8": 127}


def int_codes(w: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric codes: s_r = max(max|W_r|, eps) / L, Q = clamp(round(W / s_r), -L, L).

    The scale comes back shaped [rows] (one per output feature), in fp32.
    """
    levels = INT_LEVELS[kind]
    w = w.float()
    scale = w.abs().amax(dim=1).clamp(min=EPS) / levels
    return (w / scale[:, None]).round().clamp(-levels, levels), scale


def exact_in_fp32(k: int, kind: str) -> bool:
    """Whether fp32 sums of K products of int8 activations (|x| <= 128) and `kind` codes are exact."""
    return k * 128 * INT_LEVELS.get(kind, 1) < 1 << 24


def quantize_weight(w: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer-valued codes Q and the fp32 scale s, with W ~ Q * s.

    Ternary and binary: one 0-d scale for the tensor; int4 and int8: a scale per row, shaped [rows].
    """
    if kind in INT_LEVELS:
        return int_codes(w, kind)
    scale = weight_scale(w)
    if kind == "ternary":
        return ternary_codes(w, scale), scale
    if kind == "binary":
        return binary_codes(w), scale
    raise ValueError(f"cannot quantize weights as {kind!r}")


def soft_codes(w: torch.Tensor, scale: torch.Tensor, kind: str, alpha: float) -> torch.Tensor:
    """A differentiable stand-in for the codes that becomes the hard quantizer as alpha grows.

    Ternary: a sum of two tanh steps at +-0.5 (round-clip in the limit); binary: tanh.
    """
    u = w.float() / scale
    if kind == "ternary":
        return 0.5 * (torch.tanh(alpha * (u - 0.5)) + torch.tanh(alpha * (u + 0.5)))
    return torch.tanh(alpha * (w.float() - w.float().mean()) / scale)


# ----------------------------------------------------------------------------------------------
# Activations


def activation_scale(x: torch.Tensor) -> torch.Tensor:
    """Per-token absmax scale a = 127 / max|x| (shape [..., 1])."""
    return 127.0 / x.float().abs().amax(dim=-1, keepdim=True).clamp(min=EPS)


def quantize_activation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token int8 codes (as fp32 values in [-128, 127]) and their scale a, x ~ xq / a."""
    a = activation_scale(x)
    return (x.float() * a).round().clamp(-128, 127), a


# ----------------------------------------------------------------------------------------------
# Straight-through estimator


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by a constant on the way back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:  # type: ignore[override]
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad * ctx.factor, None


def ste(x: torch.Tensor, x_quant: torch.Tensor, grad_scale: float = 1.0) -> torch.Tensor:
    """Forward the quantized value, backward the identity (times grad_scale)."""
    out = x + (x_quant - x).detach()
    if grad_scale != 1.0:
        out = _ScaleGrad.apply(out, grad_scale)
    return out


def fake_quant_weight(w: torch.Tensor, kind: str) -> torch.Tensor:
    """The dequantized weight the training forward multiplies by: Q * s (per-row s for int4/int8)."""
    codes, scale = quantize_weight(w, kind)
    return codes * scale[:, None] if kind in INT_LEVELS else codes * scale


def bitlinear_reference(x: torch.Tensor, w: torch.Tensor, kind: str, grad_scale: float = 1.0) -> torch.Tensor:
    """The training forward of a hard-quantized BitLinear, built from autograd ops: the reference
    that BitLinearFn must match, and the path for anything BitLinearFn does not cover."""
    xq, a = quantize_activation(x)
    x_fake = ste(x, (xq / a).to(x.dtype))
    w_fake = ste(w, fake_quant_weight(w.detach(), kind), grad_scale)
    return torch.nn.functional.linear(x_fake, w_fake.to(x_fake.dtype))


class BitLinearFn(torch.autograd.Function):
    """bitlinear_reference as one autograd node: the same numbers, bit for bit.

    The reference builds a graph node for every quantizer op, only for the straight-through
    estimator to detach the branch and route the gradient around them. Here the forward runs
    without a graph, in place on one fresh buffer per tensor, and saves the two tensors the matmul
    consumed; the backward is a linear layer's two matmuls, in the order autograd runs them. On
    CPU that gains little (docs/BENCHMARKS.md): the time is in the elementwise passes, which both
    make. Fewer kernels and graph nodes may matter more on a GPU; that is not measured.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, kind: str,  # type: ignore[override]
                grad_scale: float) -> torch.Tensor:
        a = activation_scale(x)  # not torch.aminmax: one pass instead of two, yet several times slower on CPU
        x_fake = (x.float() * a).round_().clamp_(-128, 127).div_(a).to(x.dtype)  # quantize_activation in place
        if kind == "ternary":  # ternary_codes, in place
            scale = weight_scale(w)
            w_fake = (w.float() / scale).round_().clamp_(-1, 1).mul_(scale)
        else:
            w_fake = fake_quant_weight(w, kind)
        # ste's forward value is x + (q - x), which can differ from q by an ulp; ternary training
        # follows such an ulp wherever it flips a code, so the same value is formed here
        x_fake = x_fake.sub_(x).add_(x)
        w_fake = w_fake.sub_(w).add_(w).to(x_fake.dtype)
        if torch.is_autocast_enabled(x.device.type):  # what autocast hands F.linear
            dtype = torch.get_autocast_dtype(x.device.type)
            x_fake, w_fake = x_fake.to(dtype), w_fake.to(dtype)
        ctx.save_for_backward(x_fake, w_fake)
        ctx.x_dtype, ctx.w_dtype, ctx.grad_scale = x.dtype, w.dtype, grad_scale
        return torch.nn.functional.linear(x_fake, w_fake)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x_fake, w_fake = ctx.saved_tensors
        grad_x = grad_w = None
        grad2d = grad.reshape(-1, grad.shape[-1])
        if ctx.needs_input_grad[0]:
            grad_x = grad2d.mm(w_fake).view(*grad.shape[:-1], w_fake.shape[1]).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            grad_w = x_fake.reshape(-1, x_fake.shape[-1]).t().mm(grad2d).t().to(ctx.w_dtype)
            if ctx.grad_scale != 1.0:
                grad_w = grad_w * ctx.grad_scale
        return grad_x, grad_w, None, None


def bits_per_weight(kind: str) -> float:
    """Information content of one quantized weight (packing overhead not included)."""
    return {"ternary": math.log2(3), "binary": 1.0, "int4": 4.0, "int8": 8.0, "none": 32.0}[kind]
