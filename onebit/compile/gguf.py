"""`onebit-export CKPT --format gguf -o model.gguf`: llama.cpp's `bitnet` or `llama` architecture,
whichever the model's shape is, written with the PyPI `gguf` package (docs/INTEROP.md).

`bitnet` (SiLU-gated MLP, sub-norms, tied embedding: BitNet b1.58 as first released): each
BitLinear becomes a TQ2_0 (`--pack t2`) or TQ1_0 (`--pack t1.6`) tensor holding its ternary codes
with block scale 1, and a one-element F32 `.scale` tensor holding onebit's scale `s`, which
llama.cpp's bitnet graph multiplies each matmul's result by: codes and scales are kept bit for bit.
The embedding is also the LM head (the bitnet graph always ties them).

`llama` (SiLU-gated, no sub-norms, tied or untied): the llama graph reads no `.scale` tensors, so
the scale goes into every block's own scale, an f16: codes are kept exactly, the scale rounded to
f16 (a relative change of at most 2^-11). llama.cpp ropes llama's Q and K as adjacent pairs where
onebit (like Hugging Face) rotates the two halves of a head, so their rows are permuted as
llama.cpp's own converter does; the permutation moves whole rows and changes no code.

The embedding and an untied head are F32 or F16, the norms F32. A byte-level BPE tokenizer goes in
as llama.cpp's `gpt2` vocabulary (with the `gpt-2` or `llama-bpe` pre-tokenizer); a char tokenizer
cannot be expressed there, so such a file has none and llama.cpp takes token ids.

Other shapes are refused with the reason; BitNet b1.58 2B4T's squared-ReLU MLP among them: both
graphs hard-code SiLU (llama.cpp's bitnet graph reads no activation key), and no llama.cpp
architecture has squared ReLU with sub-norms. TQ2_0/TQ1_0 blocks hold 256 weights, so every
BitLinear's input width must be a multiple of 256.
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

BLOCK = 256  # QK_K: weights per TQ2_0 / TQ1_0 block
QTYPES = {"t2": "TQ2_0", "t1.6": "TQ1_0"}
PRE = {GPT2: "gpt-2", LLAMA3: "llama-bpe"}


class GGUFExportError(OnebitError):
    """A checkpoint that no llama.cpp architecture here can express."""


def gguf_arch(cfg: ModelConfig) -> str:
    """"bitnet" or "llama" for the model's shape; GGUFExportError with every reason otherwise."""
    reasons = []
    if cfg.quant != "ternary" or getattr(cfg, "precision", None):
        reasons.append(f"quant is {cfg.quant}{' with a precision map' if getattr(cfg, 'precision', None) else ''} "
                       "(TQ2_0/TQ1_0 hold ternary layers)")
    if cfg.activation != "silu" or not cfg.gated:
        reasons.append(f"the MLP is {'gated ' if cfg.gated else ''}{cfg.activation}; llama.cpp's bitnet and llama "
                       "graphs are SiLU-gated (no llama.cpp architecture has BitNet 2B4T's squared ReLU with "
                       "sub-norms)")
    if cfg.norm != "rmsnorm" or cfg.pos != "rope" or cfg.qk_norm or cfg.residual_scale != 1.0:
        reasons.append("it needs RMSNorm, RoPE, no qk_norm and residual_scale 1")
    if cfg.subln and not cfg.tie_embeddings:
        reasons.append("the embedding is untied (the bitnet graph, the one with sub-norms, uses token_embd as the "
                       "LM head)")
    for width, what in ((cfg.dim, "dim"), (cfg.ffn_dim, "ffn_dim")):
        if width % BLOCK:
            reasons.append(f"{what} {width} is not a multiple of {BLOCK} (TQ2_0/TQ1_0 blocks)")
    if reasons:
        raise GGUFExportError("cannot export to a llama.cpp architecture: " + "; ".join(reasons))
    return "bitnet" if cfg.subln else "llama"


def rope_pairs_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of a Q or K projection reordered so that llama.cpp's adjacent-pair RoPE (the llama
    graph's) equals onebit's rotate-half RoPE: in each head, rows (j, j + half) become (2j, 2j + 1)."""
    out_features = w.shape[0]
    half = out_features // n_heads // 2
    return w.reshape(n_heads, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_halves_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse of rope_pairs_rows."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


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
    if tok.pretokenizer not in PRE:  # llama.cpp's SentencePiece vocabulary ("llama") is not written yet
        raise GGUFExportError(f"a {tok.pretokenizer} tokenizer has no GGUF form here yet")
    if tok.add_prefix_space:  # llama.cpp's gpt-2 pre-tokenizer would not put the space in
        raise GGUFExportError("a ByteLevel tokenizer with add_prefix_space has no GGUF form here yet")
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
    arch = gguf_arch(cfg)
    if pack not in QTYPES:
        raise GGUFExportError(f"--pack must be one of {', '.join(QTYPES)} for gguf, got {pack!r}")
    if embed_dtype not in ("f32", "f16"):
        raise GGUFExportError(f"--embed-dtype {embed_dtype} has no lossless GGUF form here; use f32 or f16")
    qtype = Q[QTYPES[pack]]
    bitlinear = set(bitlinear_shapes(cfg.to_dict()))
    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch)
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
                    codes = codes.float()
                    if arch == "bitnet":
                        # block scale d = max|codes| = 1 (0 for an all-zero block): the codes stay exact
                        writer.add_tensor(gname, quants.quantize(codes.numpy(), qtype), raw_dtype=qtype)
                        writer.add_tensor(names.gguf_scale_name(gname), np.array([scale.item()], np.float32))
                        continue
                    if name.endswith(("q_proj.weight", "k_proj.weight")):
                        codes = rope_pairs_rows(codes, cfg.n_heads if "q_proj" in name else cfg.n_kv_heads)
                    # d = max|codes * s| = s, rounded to f16 when stored; codes = round(x / d) exactly
                    writer.add_tensor(gname, quants.quantize((codes * scale).numpy(), qtype), raw_dtype=qtype)
                elif name in ("embed.weight", "head.weight") and embed_dtype == "f16":
                    writer.add_tensor(gname, w.float().numpy().astype(np.float16))
                else:
                    writer.add_tensor(gname, w.float().numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out.stat().st_size


def read_gguf_bitlinears(path: Path) -> dict[str, tuple[np.ndarray, float]]:
    """onebit BitLinear name -> (int8 codes, scale) read back from a GGUF this module wrote: the
    `.scale` tensor of a bitnet file, the (f16) block scale of a llama file, whose Q/K rows are put
    back in onebit's order."""
    from gguf import GGUFReader
    from gguf import quants

    reader = GGUFReader(str(path))
    field = reader.fields["general.architecture"]
    arch = bytes(field.parts[field.data[0]]).decode()
    heads = {k: int(reader.fields[f"{arch}.{k}"].parts[-1][0]) for k in ("attention.head_count",
                                                                          "attention.head_count_kv")}
    tensors = {t.name: t for t in reader.tensors}
    out = {}
    for gname, t in tensors.items():
        if not gname.endswith(".weight") or t.tensor_type.name not in QTYPES.values():
            continue
        values = quants.dequantize(np.asarray(t.data), t.tensor_type)
        if arch == "bitnet":
            scale = float(np.asarray(tensors[names.gguf_scale_name(gname)].data).reshape(-1)[0])
        else:
            scale = float(np.abs(values).max())
            values = values / scale if scale else values
            if gname.endswith(("attn_q.weight", "attn_k.weight")):
                values = rope_halves_rows(values, heads["attention.head_count" if "attn_q" in gname
                                                        else "attention.head_count_kv"])
        out[names.from_gguf(gname)] = (np.rint(values).astype(np.int8), scale)
    return out
