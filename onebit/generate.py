"""Reference generation: the PyTorch model driven by the shared decode loop and sampler.

docs/SAMPLING.md is the specification and onebit/sampling.py its executable form; this file is the
oracle that the C and ONNX runtimes are tested against.
"""

from __future__ import annotations

from typing import Callable

import torch

from onebit.model import Transformer
from onebit.sampling import SamplerConfig, check_request, decode_loop

@torch.no_grad()
def generate(model: Transformer, prompt_ids: list[int], max_new_tokens: int, sampler: SamplerConfig,
             on_token: Callable[[int], None] | None = None) -> list[int]:
    """The new tokens (prompt excluded) of a KV-cached decode with the PyTorch model (the oracle);
    on_token sees each as it arrives."""
    check_request(model, prompt_ids, max_new_tokens)
    device = next(model.parameters()).device

    def forward(tokens: list[int], past, pos: int):
        logits, past = model(torch.tensor([tokens], device=device), past, pos)
        return logits[0, -1].float().cpu().numpy(), past

    was_training = model.training
    model.eval()
    try:
        return decode_loop(forward, model.cfg.max_seq_len, prompt_ids, max_new_tokens, sampler, on_token)
    finally:
        model.train(was_training)
