"""The one tensor-name table: onebit <-> Hugging Face `BitNetForCausalLM` <-> GGUF (llama.cpp).

onebit's names (docs/DESIGN.md) are the names in PyTorch, `.1bit`, the C structs and ONNX. The
importer (onebit/train/hf_import.py) and the exporters (onebit/compile/hf.py, gguf.py) translate
through this table only, so a name that one of them knows and another does not cannot happen.

A `None` means the other side has no such tensor: a model that needs it cannot be translated.
"""

from __future__ import annotations

import re

# (onebit, Hugging Face, GGUF); "{i}" is the layer index.
TABLE: tuple[tuple[str, str | None, str | None], ...] = (
    ("embed.weight", "model.embed_tokens.weight", "token_embd.weight"),
    ("pos_embed.weight", None, None),
    ("layers.{i}.attn_norm.weight", "model.layers.{i}.input_layernorm.weight", "blk.{i}.attn_norm.weight"),
    ("layers.{i}.attn.q_proj.weight", "model.layers.{i}.self_attn.q_proj.weight", "blk.{i}.attn_q.weight"),
    ("layers.{i}.attn.k_proj.weight", "model.layers.{i}.self_attn.k_proj.weight", "blk.{i}.attn_k.weight"),
    ("layers.{i}.attn.v_proj.weight", "model.layers.{i}.self_attn.v_proj.weight", "blk.{i}.attn_v.weight"),
    ("layers.{i}.attn.q_norm.weight", None, "blk.{i}.attn_q_norm.weight"),
    ("layers.{i}.attn.k_norm.weight", None, "blk.{i}.attn_k_norm.weight"),
    ("layers.{i}.attn.sub_norm.weight", "model.layers.{i}.self_attn.attn_sub_norm.weight",
     "blk.{i}.attn_sub_norm.weight"),
    ("layers.{i}.attn.o_proj.weight", "model.layers.{i}.self_attn.o_proj.weight", "blk.{i}.attn_output.weight"),
    ("layers.{i}.mlp_norm.weight", "model.layers.{i}.post_attention_layernorm.weight", "blk.{i}.ffn_norm.weight"),
    ("layers.{i}.mlp.gate_proj.weight", "model.layers.{i}.mlp.gate_proj.weight", "blk.{i}.ffn_gate.weight"),
    ("layers.{i}.mlp.up_proj.weight", "model.layers.{i}.mlp.up_proj.weight", "blk.{i}.ffn_up.weight"),
    ("layers.{i}.mlp.sub_norm.weight", "model.layers.{i}.mlp.ffn_sub_norm.weight", "blk.{i}.ffn_sub_norm.weight"),
    ("layers.{i}.mlp.down_proj.weight", "model.layers.{i}.mlp.down_proj.weight", "blk.{i}.ffn_down.weight"),
    ("norm.weight", "model.norm.weight", "output_norm.weight"),
    ("head.weight", "lm_head.weight", "output.weight"),
)

# The per-tensor scale that sits beside a quantized weight on the other side: HF's `weight_scale`
# buffer, GGUF's `.scale` tensor (llama.cpp multiplies a matmul's result by it).
HF_SCALE_SUFFIX = "_scale"  # "...q_proj.weight" -> "...q_proj.weight_scale"
GGUF_SCALE = ".scale"  # "blk.0.attn_q.weight" -> "blk.0.attn_q.scale"


class NameError_(KeyError):
    """A tensor name that the table does not know."""


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(\d+)") + "$")


_COLUMNS = {"onebit": 0, "hf": 1, "gguf": 2}
_PATTERNS = {col: [(_pattern(row[i]), row) for row in TABLE if row[i] is not None]
             for col, i in _COLUMNS.items()}


def translate(name: str, src: str, dst: str) -> str | None:
    """`name` from column src ("onebit", "hf", "gguf") in column dst; None when dst has no such
    tensor. Raises NameError_ for a name that src does not have."""
    for pattern, row in _PATTERNS[src]:
        m = pattern.match(name)
        if m:
            target = row[_COLUMNS[dst]]
            if target is None:
                return None
            return target.replace("{i}", m.group(1)) if m.groups() else target
    raise NameError_(name)


def to_hf(name: str) -> str | None:
    return translate(name, "onebit", "hf")


def from_hf(name: str) -> str | None:
    return translate(name, "hf", "onebit")


def to_gguf(name: str) -> str | None:
    return translate(name, "onebit", "gguf")


def from_gguf(name: str) -> str | None:
    return translate(name, "gguf", "onebit")


def hf_scale_name(hf_weight: str) -> str:
    return hf_weight + HF_SCALE_SUFFIX


def gguf_scale_name(gguf_weight: str) -> str:
    return gguf_weight.removesuffix(".weight") + GGUF_SCALE
