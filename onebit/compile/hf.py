"""`onebit-export CKPT --format hf -o DIR`: a Hugging Face `BitNetForCausalLM` folder.

transformers loads it offline with `AutoModelForCausalLM.from_pretrained(DIR)` (docs/INTEROP.md).
Two weight forms, both through transformers' own BitNet quantizer (`quantization_config`):

- `packed` (default): `autobitlinear` in `offline` mode. Each BitLinear is stored as transformers'
  packed uint8 `[ceil(out/4), in]` (four codes a byte, `c + 1` in bits `2i`, output row
  `i * ceil(out/4) + r` in stored row `r`) and `weight_scale` = onebit's fp32 scale `s`, which
  AutoBitLinear multiplies by. Codes and scales are onebit's exactly: the import gives them back.
- `latent`: `autobitlinear` in `online` mode with the latent fp32 weights, for fine-tuning in
  transformers; its WeightQuant computes `1 / mean|W|` and multiplies, so a weight that sits on a
  rounding boundary may quantize differently there (never seen on the test models).

Only configs that are a BitNetForCausalLM are written; anything else is refused with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from onebit import names
from onebit.atomic import atomic_write_text
from onebit.config import ModelConfig
from onebit.errors import OnebitError
from onebit.format import bitlinear_shapes
from onebit.safetensors_stream import LazyTensor, write_safetensors
from onebit.train import quant
from onebit.train.checkpoint import Checkpoint
from onebit.train.model import Transformer

HF_FORMS = ("packed", "latent")
HF_ACT = {"relu2": "relu2", "silu": "silu", "gelu": "gelu_pytorch_tanh"}
PACK_FACTOR = 4


class HFExportError(OnebitError):
    """A checkpoint that BitNetForCausalLM cannot express."""


def check_bitnet_shape(cfg: ModelConfig) -> None:
    """Refuse, naming the reason, a config that BitNetForCausalLM cannot express."""
    reasons = []
    if cfg.quant != "ternary":
        reasons.append(f"quant is {cfg.quant} (BitNet is ternary)")
    if getattr(cfg, "precision", None):
        reasons.append("it has a per-layer precision map (BitNet quantizes every layer alike)")
    if cfg.norm != "rmsnorm":
        reasons.append(f"norm is {cfg.norm} (BitNet uses RMSNorm)")
    if cfg.pos != "rope":
        reasons.append(f"pos is {cfg.pos} (BitNet uses RoPE)")
    if not cfg.gated:
        reasons.append("the MLP is not gated")
    if not cfg.subln:
        reasons.append("subln is off (BitNet has sub-norms before o_proj and down_proj)")
    if cfg.qk_norm:
        reasons.append("qk_norm is on (BitNet has no q/k norms)")
    if cfg.residual_scale != 1.0:
        reasons.append(f"residual_scale is {cfg.residual_scale} (BitNet adds residuals unscaled)")
    if reasons:
        raise HFExportError("cannot export as BitNetForCausalLM: " + "; ".join(reasons))


def hf_config(cfg: ModelConfig, meta: dict, form: str) -> dict:
    mode = "offline" if form == "packed" else "online"
    out = {
        "architectures": ["BitNetForCausalLM"], "model_type": "bitnet",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.dim, "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim, "hidden_act": HF_ACT[cfg.activation],
        "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta}, "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": cfg.tie_embeddings, "attention_bias": False, "attention_dropout": 0.0,
        "initializer_range": 0.02, "use_cache": True, "dtype": "float32",
        "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                "quantization_mode": mode, "use_rms_norm": False, "modules_to_not_convert": None},
    }
    bos, eos = meta.get("bos_token_id"), meta.get("eos_token_ids") or []
    out["bos_token_id"] = bos if isinstance(bos, int) else None
    out["eos_token_id"] = (eos[0] if len(eos) == 1 else list(eos)) if eos else None
    return out


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """int8 codes [out, in] in {-1, 0, 1} -> transformers' packed uint8 [ceil(out/4), in]."""
    out_f, in_f = codes.shape
    rows = -(-out_f // PACK_FACTOR)
    padded = np.ones((rows * PACK_FACTOR, in_f), np.uint8)  # padding rows hold code 1 (= weight 0)
    padded[:out_f] = (codes + 1).astype(np.uint8)
    packed = np.zeros((rows, in_f), np.uint8)
    for i in range(PACK_FACTOR):
        packed |= padded[i * rows:(i + 1) * rows] << (2 * i)
    return packed


def _tensors(ckpt: Checkpoint, form: str) -> list[LazyTensor]:
    """The folder's tensors, each read (and quantized) only when the writer reaches it: with the
    lazy checkpoint of onebit-export, memory stays about one tensor, not the model (a packed
    BitLinear's codes and scale come from one read, held until the scale is written)."""
    state = ckpt.model.state_dict()  # a dict of tensors, or LazyWeights reading each on demand
    with torch.device("meta"):
        shapes = {name: tuple(t.shape) for name, t in Transformer(ckpt.config).state_dict().items()}
    bitlinear = set(bitlinear_shapes(ckpt.config.to_dict()))
    last: dict[str, tuple[np.ndarray, float]] = {}

    def quantized(name: str) -> tuple[np.ndarray, float]:
        if name not in last:
            last.clear()
            codes, scale = quant.quantize_weight(state[name].detach(), "ternary")
            last[name] = (codes.to(torch.int8).numpy(), scale.item())
        return last[name]

    out: list[LazyTensor] = []
    for name in state.keys():
        hf_name = names.to_hf(name)
        if hf_name is None:
            raise HFExportError(f"{name} has no BitNetForCausalLM counterpart")
        shape = shapes[name]
        if name not in bitlinear or form == "latent":
            out.append(LazyTensor(hf_name, "F32", shape, lambda n=name: state[n].detach().float().numpy()))
            continue
        packed_shape = (-(-shape[0] // PACK_FACTOR), shape[1])
        out.append(LazyTensor(hf_name, "U8", packed_shape, lambda n=name: pack_codes(quantized(n)[0])))
        out.append(LazyTensor(names.hf_scale_name(hf_name), "F32", (1,),
                              lambda n=name: np.array([quantized(n)[1]], np.float32)))
    return out


def tokenizer_config(ckpt: Checkpoint) -> dict:
    meta, tok = ckpt.meta, ckpt.tokenizer

    def text(i) -> str | None:
        return tok.token_bytes(i).decode("utf-8", errors="replace") if isinstance(i, int) else None

    eos = meta.get("eos_token_ids") or []
    out = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": ckpt.config.max_seq_len,
           "bos_token": text(meta.get("bos_token_id")), "eos_token": text(eos[0]) if eos else None,
           "clean_up_tokenization_spaces": False}
    if isinstance(meta.get("chat_template"), str):
        out["chat_template"] = meta["chat_template"]
    return {k: v for k, v in out.items() if v is not None}


def export_hf(ckpt: Checkpoint, out: Path, form: str = "packed") -> int:
    """Write the folder (files atomically, config.json last); returns the safetensors size."""
    if form not in HF_FORMS:
        raise HFExportError(f"--hf-weights must be one of {', '.join(HF_FORMS)}, got {form!r}")
    check_bitnet_shape(ckpt.config)
    odd = [n for n, (rows, _) in bitlinear_shapes(ckpt.config.to_dict()).items() if rows % PACK_FACTOR]
    if form == "packed" and odd:
        raise HFExportError(f"cannot pack {odd[0]} for transformers: its {bitlinear_shapes(ckpt.config.to_dict())[odd[0]][0]} "
                            "output rows are not a multiple of 4 (transformers' BitLinear needs that); "
                            "use --hf-weights latent")
    if out.exists() and not out.is_dir():
        raise HFExportError(f"output {out} is a file; --format hf writes a folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").unlink(missing_ok=True)
    with torch.no_grad():
        size = write_safetensors(out / "model.safetensors", _tensors(ckpt, form), {"format": "pt"})
    ckpt.tokenizer.save(out / "tokenizer.json")
    atomic_write_text(out / "tokenizer_config.json", json.dumps(tokenizer_config(ckpt), indent=2) + "\n")
    config = hf_config(ckpt.config, ckpt.meta, form)
    generation = {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]}
    atomic_write_text(out / "generation_config.json", json.dumps(generation, indent=2) + "\n")
    atomic_write_text(out / "config.json", json.dumps(config, indent=2) + "\n")
    return size
