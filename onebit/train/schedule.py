"""Per-step schedules: learning rate, weight decay and the soft-to-hard quantizer sharpness.

Every value is a pure function of the step, so a resumed run needs no scheduler state beyond the
step counter and reproduces an uninterrupted run exactly.
"""

from __future__ import annotations

import math

from onebit.train.presets import TrainConfig


def _decay_shape(cfg: TrainConfig, progress: float) -> float:
    """1 at the end of warmup down to 0 at the end of the run (progress in [0, 1])."""
    progress = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == "linear":
        return 1.0 - progress
    if cfg.schedule == "constant":
        return 1.0
    # wsd: warmup, stable, then a linear decay over the last wsd_decay_frac of the run
    start = 1.0 - cfg.wsd_decay_frac
    if progress <= start or cfg.wsd_decay_frac == 0:
        return 1.0
    return 1.0 - (progress - start) / cfg.wsd_decay_frac


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """LR for optimizer step `step` (0-based)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(cfg.max_steps - cfg.warmup_steps, 1)
    progress = (step - cfg.warmup_steps) / span
    peak = cfg.lr
    if cfg.two_stage and step >= cfg.stage2_frac * cfg.max_steps:
        # BitNet b1.58 two-stage: the peak drops half-way and the decay continues from there
        peak = cfg.lr * cfg.stage2_lr_ratio
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (peak - floor) * _decay_shape(cfg, progress) if peak > floor else peak


def weight_decay(cfg: TrainConfig, step: int) -> float:
    """Weight decay of the decayed group; the two-stage schedule switches it off in stage 2."""
    if cfg.two_stage and step >= cfg.stage2_frac * cfg.max_steps:
        return 0.0
    return cfg.weight_decay


def anneal_alpha(cfg: TrainConfig, step: int) -> float | None:
    """Soft quantizer sharpness growing geometrically; None (hard) after anneal_frac of the run."""
    end = cfg.anneal_frac * cfg.max_steps
    if cfg.anneal_frac == 0 or cfg.quant == "none" or step >= end:
        return None
    t = step / end
    return cfg.anneal_alpha_start * (cfg.anneal_alpha_end / cfg.anneal_alpha_start) ** t
