"""Model FLOPs per token and model FLOPs utilization (MFU), for the training log.

FLOPs per token = 6 * (matmul weights) + 12 * n_layers * dim * context: forward and backward of
every weight matrix (the LM head included, the embedding lookup not), plus attention's scores and
weighted sum (the PaLM paper's appendix B formula, without halving for the causal mask). MFU is
achieved FLOP/s over the hardware's dense bf16 peak, summed over the processes.
"""

from __future__ import annotations

from onebit.config import ModelConfig

# dense bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets (SXM parts where both exist)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0,
                    "A10": 125.0, "RTX 4090": 165.0, "RTX 3090": 71.0}


def flops_per_token(cfg: ModelConfig) -> float:
    kv = cfg.n_kv_heads * cfg.head_dim
    attn = cfg.dim * (cfg.dim + 2 * kv) + cfg.dim * cfg.dim
    mlp = (3 if cfg.gated else 2) * cfg.dim * cfg.ffn_dim
    matmul = cfg.n_layers * (attn + mlp) + cfg.vocab_size * cfg.dim
    return 6.0 * matmul + 12.0 * cfg.n_layers * cfg.dim * cfg.max_seq_len


def device_peak_tflops(device_name: str) -> float | None:
    """The table's peak for a CUDA device name such as 'NVIDIA H100 80GB HBM3', else None."""
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key in device_name:
            return PEAK_BF16_TFLOPS[key]
    return None


def mfu(tokens_per_s: float, cfg: ModelConfig, peak_tflops: float, processes: int) -> float:
    return tokens_per_s * flops_per_token(cfg) / (peak_tflops * 1e12 * processes)
