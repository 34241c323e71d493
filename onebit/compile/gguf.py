"""`onebit-export CKPT --format gguf -o model.gguf`: llama.cpp's `bitnet` architecture, written with
the PyPI `gguf` package (docs/INTEROP.md).

Each BitLinear becomes a TQ2_0 (`--pack t2`) or TQ1_0 (`--pack t1.6`) tensor holding its ternary
codes with block scale 1, and a one-element F32 `.scale` tensor holding onebit's scale `s`, which
llama.cpp's bitnet graph multiplies each matmul's result by. Codes and scales are therefore kept
bit for bit. The embedding (also the LM head: the bitnet graph always ties them) is F32 or F16, the
norms F32. A byte-level BPE tokenizer goes into the file as llama.cpp's `gpt2` vocabulary (with
the `gpt-2` or `llama-bpe` pre-tokenizer); a char tokenizer cannot be expressed there, so such a
file has none and llama.cpp takes token ids.

llama.cpp's bitnet graph is BitNet b1.58 as first released: SiLU-gated MLP, sub-norms, tied
embedding. Other shapes (BitNet b1.58 2B4T's squared ReLU included) have no llama.cpp architecture
and are refused with the reason. TQ2_0/TQ1_0 blocks hold 256 weights, so every BitLinear's input
width must be a multiple of 256.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from onebit import names
from onebit.atomic import atomic_path
from onebit.config import ModelConfig
from onebit.errors import OnebitError
from onebit.format import bitlinear_shapes
from onebit.tokenizer import GPT2, LLAMA3, Tokenizer
from onebit.train import quant
from onebit.train.checkpoint import Checkpoint

ARCH = "bitnet"
BLOCK = 256  # QK_K: weights per TQ2_0 / TQ1_0 block
QTYPES = {"t2": "TQ2_0", "t1.6": "TQ1_0"}
PRE = {GPT2: "gpt-2", LLAMA3: "llama-bpe"}


class GGUFExportError(OnebitError):
    """A checkpoint that llama.cpp's bitnet architecture cannot express."""


def check_bitnet_arch(cfg: ModelConfig) -> None:
    reasons = []
    if cfg.quant != "ternary" or getattr(cfg, "precision", None):
        reasons.append(f"quant is {cfg.quant}{' with a precision map' if getattr(cfg, 'precision', None) else ''} "
                       "(TQ2_0/TQ1_0 hold ternary layers)")
    if cfg.activation != "silu" or not cfg.gated:
        reasons.append(f"the MLP is {'gated ' if cfg.gated else ''}{cfg.activation}; llama.cpp's bitnet graph is "
                       "SiLU-gated (no llama.cpp architecture has BitNet 2B4T's squared ReLU with sub-norms)")
    if not cfg.subln:
        reasons.append("subln is off (the bitnet graph has sub-norms)")
    if cfg.norm != "rmsnorm" or cfg.pos != "rope" or cfg.qk_norm or cfg.residual_scale != 1.0:
        reasons.append("it needs RMSNorm, RoPE, no qk_norm and residual_scale 1")
    if not cfg.tie_embeddings:
        reasons.append("the embedding is untied (the bitnet graph uses token_embd as the LM head)")
    for width, what in ((cfg.dim, "dim"), (cfg.ffn_dim, "ffn_dim")):
        if width % BLOCK:
            reasons.append(f"{what} {width} is not a multiple of {BLOCK} (TQ2_0/TQ1_0 blocks)")
    if reasons:
        raise GGUFExportError("cannot export as llama.cpp bitnet: " + "; ".join(reasons))


def add_hparams(writer, cfg: ModelConfig) -> None:
    """The model's shape as llama.cpp's hyper-parameter keys (shared with tools/bench_peers.py)."""
    writer.add_context_length(cfg.max_seq_len)
    writer.add_embedding_length(cfg.dim)
    writer.add_block_count(cfg.n_layers)
    writer.add_feed_forward_length(cfg.ffn_dim)
    writer.add_head_count(cfg.n_heads)
    writer.add_head_count_kv(cfg.n_kv_heads)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    writer.add_vocab_size(cfg.vocab_size)


def _add_tokenizer(writer, tok: Tokenizer, meta: dict) -> None:
    if tok.kind != "bpe":
        writer.add_tokenizer_model("none")  # llama.cpp then takes token ids only
        return
    import gguf

    vocab = tok.hf.get_vocab(with_added_tokens=True)
    tokens = [""] * tok.vocab_size
    for text, i in vocab.items():
        tokens[i] = text
    special = set(tok.special_tokens.values())
    types = [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(tok.vocab_size)]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(PRE[tok.pretokenizer])
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([f"{tokens[a]} {tokens[b]}" for a, b, _ in tok.merges()])
    bos, eos = meta.get("bos_token_id"), meta.get("eos_token_ids") or []
    if isinstance(bos, int):
        writer.add_bos_token_id(bos)
        writer.add_add_bos_token(bool(meta.get("add_bos_token")))
    if eos:
        writer.add_eos_token_id(int(eos[0]))
    if isinstance(meta.get("chat_template"), str):
        writer.add_chat_template(meta["chat_template"])


def export_gguf(ckpt: Checkpoint, out: Path, pack: str = "t2", embed_dtype: str = "f16") -> int:
    """Write `out` atomically; returns its size in bytes."""
    import gguf
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    cfg = ckpt.config
    check_bitnet_arch(cfg)
    if pack not in QTYPES:
        raise GGUFExportError(f"--pack must be one of {', '.join(QTYPES)} for gguf, got {pack!r}")
    if embed_dtype not in ("f32", "f16"):
        raise GGUFExportError(f"--embed-dtype {embed_dtype} has no lossless GGUF form here; use f32 or f16")
    qtype = Q[QTYPES[pack]]
    bitlinear = set(bitlinear_shapes(cfg.to_dict()))
    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(str(tmp), ARCH)
        writer.add_name(out.stem)
        add_hparams(writer, cfg)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_TQ2_0 if pack == "t2" else gguf.LlamaFileType.MOSTLY_TQ1_0)
        _add_tokenizer(writer, ckpt.tokenizer, ckpt.meta)
        with torch.no_grad():
            for name, w in ckpt.model.state_dict().items():
                gname = names.to_gguf(name)
                if gname is None:
                    raise GGUFExportError(f"{name} has no GGUF counterpart")
                if name in bitlinear:
                    codes, scale = quant.quantize_weight(w, "ternary")
                    # block scale d = max|codes| = 1 (0 for an all-zero block): the codes stay exact
                    writer.add_tensor(gname, quants.quantize(codes.numpy().astype(np.float32), qtype), raw_dtype=qtype)
                    writer.add_tensor(names.gguf_scale_name(gname), np.array([scale.item()], np.float32))
                elif name == "embed.weight" and embed_dtype == "f16":
                    writer.add_tensor(gname, w.float().numpy().astype(np.float16))
                else:
                    writer.add_tensor(gname, w.float().numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out.stat().st_size


def read_gguf_bitlinears(path: Path) -> dict[str, tuple[np.ndarray, float]]:
    """onebit BitLinear name -> (int8 codes, scale) read back from a GGUF this module wrote."""
    from gguf import GGUFReader
    from gguf import quants

    reader = GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    out = {}
    for gname, t in tensors.items():
        if not gname.endswith(".weight") or t.tensor_type.name not in QTYPES.values():
            continue
        values = quants.dequantize(np.asarray(t.data), t.tensor_type)
        scale = float(np.asarray(tensors[names.gguf_scale_name(gname)].data).reshape(-1)[0])
        out[names.from_gguf(gname)] = (values.astype(np.int8), scale)
    return out
