"""Distillation: a frozen teacher's logits as a second target for the student.

loss = CE(student, data) + kd_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T)).
The T^2 keeps the KL term's gradient the same size as T changes (Hinton et al., 2015). The
teacher is any onebit checkpoint (a full-precision run of the same preset is the usual one) or a
Hugging Face causal LM in a local folder; either way it must share the student's tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from onebit.errors import OnebitError
from onebit.tokenizer import Tokenizer


class TeacherError(OnebitError):
    """A teacher that cannot teach this student (missing, other tokenizer, too short a context)."""


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) per token, averaged over the tokens (fp32)."""
    vocab = student_logits.shape[-1]
    s = F.log_softmax(student_logits.float().reshape(-1, vocab) / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float().reshape(-1, vocab) / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature ** 2


class HFTeacher(nn.Module):
    """A transformers causal LM answering like Transformer: (logits, None)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor):
        return self.model(input_ids=tokens).logits, None


def load_teacher(spec: str, tokenizer: Tokenizer, device: torch.device, seq_len: int) -> nn.Module:
    """The teacher in eval mode with gradients off; its vocabulary must be the student's."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise TeacherError(f"--teacher {spec}: no such checkpoint folder")
    if (path / "config.json").is_file() and _is_hf(path / "config.json"):
        teacher, vocab = _load_hf(path)
    else:
        from onebit.train.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path, device="cpu")
        teacher, vocab = ckpt.model, ckpt.tokenizer.hf.get_vocab(with_added_tokens=True)
        if ckpt.config.max_seq_len < seq_len:
            raise TeacherError(f"--teacher {spec}: its context ({ckpt.config.max_seq_len}) is shorter than the "
                               f"student's ({seq_len})")
    if vocab != tokenizer.hf.get_vocab(with_added_tokens=True):
        raise TeacherError(f"--teacher {spec}: its tokenizer is not the student's (distillation compares "
                           "the two models token by token)")
    teacher.to(device).eval()
    teacher.requires_grad_(False)
    return teacher


def _is_hf(config: Path) -> bool:
    import json

    try:
        return "architectures" in json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def _load_hf(path: Path) -> tuple[nn.Module, dict[str, int]]:
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise TeacherError(f"--teacher {path} is a Hugging Face model: pip install transformers") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, torch_dtype=torch.float32)
        vocab = AutoTokenizer.from_pretrained(str(path), local_files_only=True).get_vocab()
    except (OSError, ValueError) as e:
        raise TeacherError(f"--teacher {path}: cannot load the Hugging Face model ({str(e).splitlines()[0]})") from None
    return HFTeacher(model), vocab
