"""Training configuration and the named presets (`tiny`, `small`, `base`), with per-quant defaults.

Each quant kind trains best with different settings (ternary wants a much higher peak LR than
full precision), so a preset is a base plus one override table per `--quant`; the values are the
winners of tools/bench_quality.py, recorded in docs/BENCHMARKS.md and docs/TRAINING.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from onebit.config import ModelConfig
from onebit.errors import OnebitError

SCHEDULES = ("cosine", "linear", "constant", "wsd")


class TrainConfigError(OnebitError):
    """A training configuration that cannot run."""


@dataclass
class TrainConfig:
    # data
    data: str = "tinyshakespeare"
    tokenizer: str = "char"
    vocab_size: int = 4096  # bpe only; a char vocabulary is the corpus' character set
    val_fraction: float = 0.1
    val_data: str | None = None  # a held-out validation corpus (file, folder or glob); replaces val_fraction
    data_workers: int = 0  # processes that tokenize a sharded corpus; 0 = one per CPU, at most 8
    # model (vocab_size comes from the tokenizer)
    model: dict = field(default_factory=dict)
    quant: str = "ternary"
    # optimisation
    max_steps: int = 2000
    batch_size: int = 12
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # final LR = lr * min_lr_ratio
    warmup_steps: int = 100
    schedule: str = "cosine"
    wsd_decay_frac: float = 0.2  # wsd: fraction of the run spent decaying
    two_stage: bool = False  # BitNet b1.58: LR peak drops and weight decay goes to 0 mid-run
    stage2_frac: float = 0.5  # where stage 2 starts
    stage2_lr_ratio: float = 0.5  # stage-2 peak LR as a fraction of lr
    weight_decay: float = 0.1
    decay_embeddings: bool = False
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 = off
    label_smoothing: float = 0.0
    bf16: bool = False
    # BitLinear options
    grad_scale: float = 1.0
    anneal_frac: float = 0.0  # soft-to-hard quantizer over this fraction of the run; 0 = hard
    anneal_alpha_start: float = 2.0
    anneal_alpha_end: float = 40.0
    latent_clamp: float = 0.0  # clamp latent weights to +- this * mean|W|; 0 = off
    # bookkeeping
    init_from: str | None = None  # start from this checkpoint's weights (fresh optimizer and schedule)
    seed: int = 1337
    device: str = "cpu"
    eval_interval: int = 250
    eval_batches: int = 20
    ckpt_interval: int = 1000
    # many processes (torchrun); none of these changes what is computed, only where
    fsdp: bool = False  # shard parameters, gradients and optimizer state (FSDP2) instead of DDP
    sharded_checkpoint: bool = False  # FSDP: every rank writes its shard (torch.distributed.checkpoint)
    dist_timeout: float = 600.0  # seconds a collective may wait for a peer before the run stops
    # speed (none changes the math beyond float rounding)
    compile: bool = False  # torch.compile every transformer block
    activation_checkpointing: bool = False  # recompute each block's activations in the backward pass
    peak_tflops: float = 0.0  # the device's bf16 peak for the MFU figure; 0 = look the GPU up
    # distillation: loss = CE + kd_weight * T^2 * KL(teacher || student) at temperature T
    teacher: str | None = None
    kd_weight: float = 1.0  # used only with a teacher
    kd_temperature: float = 1.0

    def validate(self) -> "TrainConfig":
        for f in fields(self):  # NaN passes every comparison below; 10**20 steps or batches never ends
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise TrainConfigError(f"{f.name} must be a finite number, got {value}")
            if isinstance(value, int) and not isinstance(value, bool) and not -2**31 < value < 2**31:
                raise TrainConfigError(f"{f.name} must be below 2**31 in magnitude, got {value}")
        positive = ("max_steps", "batch_size", "grad_accum", "eval_interval", "eval_batches", "ckpt_interval")
        for name in positive:
            if getattr(self, name) <= 0:
                raise TrainConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.schedule not in SCHEDULES:
            raise TrainConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.lr <= 0:
            raise TrainConfigError(f"lr must be positive, got {self.lr}")
        if self.warmup_steps < 0:
            raise TrainConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        for name in ("min_lr_ratio", "wsd_decay_frac", "stage2_frac", "stage2_lr_ratio", "anneal_frac",
                     "val_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise TrainConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise TrainConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.device not in ("cpu", "cuda"):
            raise TrainConfigError(f"device must be cpu or cuda, got {self.device!r}")
        if self.seed < 0:
            raise TrainConfigError(f"seed must be >= 0, got {self.seed}")
        if self.peak_tflops < 0:
            raise TrainConfigError(f"peak_tflops must be >= 0, got {self.peak_tflops}")
        if self.data_workers < 0:
            raise TrainConfigError(f"data_workers must be >= 0, got {self.data_workers}")
        if self.dist_timeout <= 0:
            raise TrainConfigError(f"dist_timeout must be positive, got {self.dist_timeout}")
        if self.sharded_checkpoint and not self.fsdp:
            raise TrainConfigError("sharded_checkpoint needs fsdp (DDP and single runs write full checkpoints)")
        if self.kd_weight < 0 or self.kd_temperature <= 0:
            raise TrainConfigError(f"kd_weight must be >= 0 and kd_temperature > 0, got {self.kd_weight}, "
                                   f"{self.kd_temperature}")
        return self

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig.from_dict({**self.model, "vocab_size": vocab_size, "quant": self.quant})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainConfigError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**data).validate()


# BitNet b1.58-style ~124M: ReLU²-GLU, SubLN, RoPE, RMSNorm (ModelConfig's defaults), tied embeddings
BASE_MODEL = dict(dim=768, n_layers=12, n_heads=12, n_kv_heads=12, ffn_dim=2560, max_seq_len=1024)
TINY_MODEL = dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=4, ffn_dim=512, max_seq_len=64)
SMALL_MODEL = dict(dim=256, n_layers=6, n_heads=8, n_kv_heads=4, ffn_dim=768, max_seq_len=256)

# The tiny preset is nanoGPT's CPU "baby GPT" shape: 4 layers, 4 heads, dim 128, context 64,
# batch 12, 2000 steps, characters. Per-quant rows: see docs/TRAINING.md for how they were chosen.
PRESETS: dict[str, dict] = {
    "tiny": {
        "base": dict(tokenizer="char", model=TINY_MODEL, max_steps=2000, batch_size=12, warmup_steps=100,
                     eval_interval=250, eval_batches=20, ckpt_interval=1000),
        # full precision: SwiGLU, no SubLN, the nanoGPT peak LR
        "none": dict(lr=4e-3, weight_decay=0.1, model=dict(activation="silu", gated=True, subln=False)),
        # ternary/binary: BitNet's ReLU²-GLU + SubLN, twice the FFN width (ternary weights are cheap),
        # and the two-stage schedule (LR peak halves and weight decay goes to 0 half-way)
        "ternary": dict(lr=4e-3, weight_decay=0.1, two_stage=True, model=dict(ffn_dim=1024)),
        "binary": dict(lr=4e-3, weight_decay=0.1, two_stage=True, model=dict(ffn_dim=1024)),
    },
    "small": {
        "base": dict(tokenizer="bpe", vocab_size=4096, model=SMALL_MODEL, max_steps=5000, batch_size=16,
                     warmup_steps=200, eval_interval=500, eval_batches=20, ckpt_interval=1000),
        "none": dict(lr=2e-3, model=dict(activation="silu", gated=True, subln=False)),
        "ternary": dict(lr=3e-3),
        "binary": dict(lr=3e-3),
    },
    # For GPUs (CUDA, bf16 autocast, fused AdamW); never run in this project's tests or benchmarks.
    # 512 sequences of 1024 tokens (~0.5M tokens) per step: 32 per micro-batch across all
    # processes, 16 micro-batches; 20000 steps is ~10B tokens. Bring a corpus: --data.
    "base": {
        "base": dict(tokenizer="bpe", vocab_size=32000, model=BASE_MODEL, max_steps=20000, batch_size=32,
                     grad_accum=16, warmup_steps=750, eval_interval=500, eval_batches=50, ckpt_interval=1000,
                     bf16=True, device="cuda", activation_checkpointing=True),
        "none": dict(lr=6e-4, model=dict(activation="silu", gated=True, subln=False)),
        "ternary": dict(lr=1.5e-3, two_stage=True),
        "binary": dict(lr=1.5e-3, two_stage=True),
    },
}

DEFAULT_PRESET = "tiny"


def preset_config(name: str, quant: str) -> TrainConfig:
    """The preset's base settings with the quant kind's overrides merged on top."""
    if name not in PRESETS:
        raise TrainConfigError(f"unknown preset {name!r} (choose {', '.join(PRESETS)})")
    if quant not in PRESETS[name]:
        raise TrainConfigError(f"unknown quant kind {quant!r} (choose ternary, binary, none)")
    base, over = PRESETS[name]["base"], PRESETS[name][quant]
    merged = {**base, **over, "quant": quant}
    merged["model"] = {**base.get("model", {}), **over.get("model", {})}
    return TrainConfig(**merged)
