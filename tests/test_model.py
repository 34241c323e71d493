"""Model shapes for every architecture option, tensor names, and KV-cache decode vs full forward."""

from __future__ import annotations

import pytest
import torch

from onebit.config import ConfigError, ModelConfig
from onebit.train.model import Transformer

MICRO = dict(vocab_size=37, dim=32, n_layers=2, n_heads=4, n_kv_heads=4, ffn_dim=64, max_seq_len=16)

VARIANTS = [
    {},
    {"norm": "layernorm"},
    {"pos": "learned"},
    {"activation": "silu"},
    {"activation": "gelu", "gated": False},
    {"n_kv_heads": 2},
    {"n_kv_heads": 1, "qk_norm": True},
    {"subln": False},
    {"tie_embeddings": False},
    {"quant": "binary"},
    {"quant": "none"},
    {"residual_scale": 0.5, "qk_norm": True, "pos": "learned", "quant": "binary"},
]


def build(**over) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(**{**MICRO, **over}))


def tokens(batch: int, length: int, vocab: int = MICRO["vocab_size"], seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def expected_names(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """docs/DESIGN.md's tensor table, written out independently of the model code."""
    hd = cfg.dim // cfg.n_heads
    names = {"embed.weight": (cfg.vocab_size, cfg.dim), "norm.weight": (cfg.dim,)}
    if cfg.pos == "learned":
        names["pos_embed.weight"] = (cfg.max_seq_len, cfg.dim)
    if not cfg.tie_embeddings:
        names["head.weight"] = (cfg.vocab_size, cfg.dim)
    for i in range(cfg.n_layers):
        p = f"layers.{i}."
        names.update({
            p + "attn_norm.weight": (cfg.dim,),
            p + "attn.q_proj.weight": (cfg.n_heads * hd, cfg.dim),
            p + "attn.k_proj.weight": (cfg.n_kv_heads * hd, cfg.dim),
            p + "attn.v_proj.weight": (cfg.n_kv_heads * hd, cfg.dim),
            p + "attn.o_proj.weight": (cfg.dim, cfg.n_heads * hd),
            p + "mlp_norm.weight": (cfg.dim,),
            p + "mlp.up_proj.weight": (cfg.ffn_dim, cfg.dim),
            p + "mlp.down_proj.weight": (cfg.dim, cfg.ffn_dim),
        })
        if cfg.qk_norm:
            names[p + "attn.q_norm.weight"] = (hd,)
            names[p + "attn.k_norm.weight"] = (hd,)
        if cfg.subln:
            names[p + "attn.sub_norm.weight"] = (cfg.n_heads * hd,)
            names[p + "mlp.sub_norm.weight"] = (cfg.ffn_dim,)
        if cfg.gated:
            names[p + "mlp.gate_proj.weight"] = (cfg.ffn_dim, cfg.dim)
    return names


@pytest.mark.parametrize("over", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_shapes_names_and_training_step(over):
    model = build(**over)
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert state == expected_names(model.cfg)
    x, y = tokens(3, 11), tokens(3, 11, seed=1)
    logits, cache = model(x)
    assert logits.shape == (3, 11, MICRO["vocab_size"])
    assert len(cache) == MICRO["n_layers"]
    hd = MICRO["dim"] // MICRO["n_heads"]
    assert cache[0][0].shape == (3, model.cfg.n_kv_heads, 11, hd)
    loss = model.loss(x, y)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("over", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_kv_cache_decode_equals_full_forward(over):
    model = build(**over).eval()
    seq = tokens(2, 13, seed=3)
    with torch.no_grad():
        full, _ = model(seq)
        logits, past = model(seq[:, :5])  # prefill, then one token at a time
        steps = [logits]
        for pos in range(5, 13):
            logits, past = model(seq[:, pos:pos + 1], past, pos)
            steps.append(logits)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_tied_head_is_the_embedding():
    model = build()
    x = tokens(1, 4)
    logits, _ = model(x)
    with torch.no_grad():
        model.embed.weight.mul_(2.0)
    assert not torch.allclose(model(x)[0], logits)


def test_param_stats_counts_bitlinears():
    model = build()
    stats = model.param_stats()
    quantized = sum(m.weight.numel() for m in model.bitlinears())
    assert stats["total_params"] == sum(p.numel() for p in model.parameters())
    assert stats["quantized_params"] == quantized
    assert 1.58 < stats["bits_per_param"] < 32 and stats["compression_vs_f32"] > 1
    assert build(quant="none").param_stats()["compression_vs_f32"] == pytest.approx(1.0)


def test_sequence_longer_than_context_is_refused():
    model = build()
    with pytest.raises(ValueError, match="max_seq_len"):
        model(tokens(1, MICRO["max_seq_len"] + 1))


@pytest.mark.parametrize("bad", [{"dim": 30}, {"n_kv_heads": 3}, {"activation": "tanh"}, {"quant": "int4"},
                                 {"vocab_size": 0}])
def test_invalid_configs_are_refused(bad):
    with pytest.raises(ConfigError):
        ModelConfig(**{**MICRO, **bad}).validate()


def test_config_roundtrip(tmp_path):
    cfg = ModelConfig(**{**MICRO, "qk_norm": True, "pos": "learned"})
    cfg.save(tmp_path / "config.json")
    assert ModelConfig.load(tmp_path / "config.json") == cfg
