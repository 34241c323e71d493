"""The onebit transformer: a decoder-only language model whose linear layers are BitLinear.

Read it top to bottom: config, BitLinear, norms, RoPE, attention, MLP, block, model. The forward
follows docs/DESIGN.md step by step, and every other runtime (NumPy, C, ONNX) names its steps
after this one.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from onebit.config import ModelConfig
from onebit.train import quant

# ----------------------------------------------------------------------------------------------
# BitLinear


class BitLinear(nn.Module):
    """A linear layer with ternary, binary, int4 or int8 weights and per-token int8 activations.

    Training forwards fake-quantized tensors through a straight-through estimator; eval computes
    exactly what every runtime computes: (xq . Q^T) * (s / a), integer products then one scale.
    """

    def __init__(self, in_features: int, out_features: int, quant_kind: str = "ternary"):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.quant = quant_kind
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.grad_scale = 1.0
        self.anneal_alpha: float | None = None  # soft quantizer sharpness; None = hard
        self.fused = True  # quant.BitLinearFn; False = quant.bitlinear_reference, the same training
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quant == "none":
            return F.linear(x, self.weight)
        if not self.training:
            codes, scale = quant.quantize_weight(self.weight, self.quant)
            xq, a = quant.quantize_activation(x)
            if self.quant in quant.INT_LEVELS and not quant.exact_in_fp32(self.in_features, self.quant):
                # |x * q| reaches 128 * 127: past K ~ 1000 fp32 sums of int8 products stop being
                # exact; float64 sums are, and are rounded to fp32 once, as C rounds its int32
                acc = F.linear(xq.double(), codes.double()).float()
            else:
                acc = F.linear(xq, codes)
            return (acc * (scale / a)).to(x.dtype)
        # int4/int8 never anneal: 15 or 255 levels are already smooth enough
        if self.anneal_alpha is None or self.quant in quant.INT_LEVELS:
            if self.fused:
                return quant.BitLinearFn.apply(x, self.weight, self.quant, self.grad_scale)
            return quant.bitlinear_reference(x, self.weight, self.quant, self.grad_scale)
        xq, a = quant.quantize_activation(x)
        x_fake = quant.ste(x, (xq / a).to(x.dtype))
        scale = quant.weight_scale(self.weight).detach()
        w_fake = quant.soft_codes(self.weight, scale, self.quant, self.anneal_alpha) * scale
        return F.linear(x_fake, w_fake.to(x_fake.dtype))

    @torch.no_grad()
    def clamp_latent_(self, limit: float) -> None:
        """Keep latent weights within limit * mean|W| so that they can still flip."""
        if self.quant in quant.INT_LEVELS:
            return  # absmax scales: clamping would only move the scale, not free stuck weights
        bound = float(limit * quant.weight_scale(self.weight))
        self.weight.clamp_(-bound, bound)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, quant={self.quant}"


# ----------------------------------------------------------------------------------------------
# Norms and positions


class Norm(nn.Module):
    """RMSNorm or bias-free LayerNorm, computed in fp32."""

    def __init__(self, size: int, kind: str, eps: float):
        super().__init__()
        self.kind, self.eps = kind, eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        if self.kind == "rmsnorm":
            y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        else:
            y = F.layer_norm(xf, (xf.shape[-1],), None, None, self.eps)
        return (y * self.weight).to(x.dtype)


def rope_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, [max_seq_len, head_dim/2], computed in float64 and rounded to fp32."""
    half = head_dim // 2
    freqs = theta ** (-torch.arange(half, dtype=torch.float64) * 2.0 / head_dim)
    angles = torch.arange(max_seq_len, dtype=torch.float64)[:, None] * freqs[None, :]
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE; x is [B, H, T, head_dim], cos/sin are [T, head_dim/2]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


# ----------------------------------------------------------------------------------------------
# Blocks


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.dropout = cfg.dropout
        inner, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        self.q_proj = BitLinear(cfg.dim, inner, cfg.quant)
        self.k_proj = BitLinear(cfg.dim, kv, cfg.quant)
        self.v_proj = BitLinear(cfg.dim, kv, cfg.quant)
        self.q_norm = Norm(cfg.head_dim, cfg.norm, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = Norm(cfg.head_dim, cfg.norm, cfg.norm_eps) if cfg.qk_norm else None
        self.sub_norm = Norm(inner, cfg.norm, cfg.norm_eps) if cfg.subln else None
        self.o_proj = BitLinear(inner, cfg.dim, cfg.quant)

    def forward(self, x, rope, past=None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        present = (k, v)
        group = self.n_heads // self.n_kv_heads
        if group > 1:
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        S = k.shape[2]
        # query i sits at position S - T + i and sees keys 0 .. S - T + i
        mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
        dropout = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        a = a.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        if self.sub_norm is not None:
            a = self.sub_norm(a)
        return self.o_proj(a), present


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.activation = cfg.activation
        self.gate_proj = BitLinear(cfg.dim, cfg.ffn_dim, cfg.quant) if cfg.gated else None
        self.up_proj = BitLinear(cfg.dim, cfg.ffn_dim, cfg.quant)
        self.sub_norm = Norm(cfg.ffn_dim, cfg.norm, cfg.norm_eps) if cfg.subln else None
        self.down_proj = BitLinear(cfg.ffn_dim, cfg.dim, cfg.quant)

    def act(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation == "silu":
            return F.silu(x)
        if self.activation == "relu2":
            return F.relu(x).square()
        return F.gelu(x, approximate="tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is not None:
            u = self.act(self.gate_proj(x)) * self.up_proj(x)
        else:
            u = self.act(self.up_proj(x))
        if self.sub_norm is not None:
            u = self.sub_norm(u)
        return self.down_proj(u)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.residual_scale = cfg.residual_scale
        self.attn_norm = Norm(cfg.dim, cfg.norm, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = Norm(cfg.dim, cfg.norm, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, rope, past=None):
        a, present = self.attn(self.attn_norm(x), rope, past)
        x = x + self.residual_scale * self.drop(a)
        x = x + self.residual_scale * self.drop(self.mlp(self.mlp_norm(x)))
        return x, present


# ----------------------------------------------------------------------------------------------
# The model


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos_embed = nn.Embedding(cfg.max_seq_len, cfg.dim) if cfg.pos == "learned" else None
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = Norm(cfg.dim, cfg.norm, cfg.norm_eps)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.pos == "rope":
            cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self._init_weights()
        for name, m in self.named_modules():
            if isinstance(m, BitLinear) and cfg.quant != "none":
                m.quant = cfg.layer_quant(name)  # the precision map, if any (DESIGN.md)

    def _init_weights(self) -> None:
        std = 0.02
        nn.init.normal_(self.embed.weight, std=std)
        if self.pos_embed is not None:
            nn.init.normal_(self.pos_embed.weight, std=std)
        if self.head is not None:
            nn.init.normal_(self.head.weight, std=std)
        # GPT-2: scale the projections that write into the residual stream by depth
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=std / math.sqrt(2 * self.cfg.n_layers))

    def bitlinears(self) -> list[BitLinear]:
        return [m for m in self.modules() if isinstance(m, BitLinear)]

    def forward(self, tokens: torch.Tensor, past=None, start_pos: int = 0):
        """Logits [B, T, vocab] and the new KV-cache (a (k, v) pair per layer).

        past: the previous call's cache or None; start_pos: position of tokens[:, 0].
        """
        B, T = tokens.shape
        end = start_pos + T
        if end > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {end} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
        x = self.embed(tokens)  # token embedding
        if self.pos_embed is not None:
            x = x + self.pos_embed.weight[start_pos:end]  # learned absolute positions
        rope = (self.rope_cos[start_pos:end], self.rope_sin[start_pos:end]) if self.cfg.pos == "rope" else None
        presents = []
        for i, layer in enumerate(self.layers):
            x, present = layer(x, rope, None if past is None else past[i])
            presents.append(present)
        x = self.norm(x)  # final norm
        head = self.embed.weight if self.head is None else self.head.weight
        logits = F.linear(x, head.to(x.dtype))  # LM head, full precision
        return logits, presents

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        logits, _ = self(tokens)
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1),
                               label_smoothing=label_smoothing)

    def set_anneal(self, alpha: float | None) -> None:
        for m in self.bitlinears():
            m.anneal_alpha = alpha

    def set_fused(self, fused: bool) -> None:
        for m in self.bitlinears():
            m.fused = fused

    def set_grad_scale(self, factor: float) -> None:
        for m in self.bitlinears():
            m.grad_scale = factor

    def param_stats(self) -> dict:
        """Counts for the compression report: total, quantized and effective bits per parameter."""
        total = sum(p.numel() for p in self.parameters())
        layers = self.bitlinears() if self.cfg.quant != "none" else []
        quantized = sum(m.weight.numel() for m in layers)
        bits = sum(m.weight.numel() * quant.bits_per_weight(m.quant) for m in layers) + (total - quantized) * 32
        return {
            "total_params": total,
            "quantized_params": quantized,
            "bits_per_param": bits / total,
            "compression_vs_f32": 32 * total / bits,
        }
