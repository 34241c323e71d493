"""`onebit-export`: fold a checkpoint's BitLinears to packed codes and write a `.1bit` file.

Each BitLinear is folded exactly as the eval forward does it (`quant.quantize_weight`): the codes
are packed (T2 / T1.6 for ternary, B1 for binary) and the fp32 scale goes into the directory record;
int4 (I4) and int8 (I8) layers of a mixed model carry per-row scales in a NAME.scale tensor.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch

import onebit
from onebit import packing
from onebit.atomic import atomic_path
from onebit.chat_template import ChatTemplateError, chat_pieces, generation_tokens
from onebit.errors import OnebitError, cli_errors
from onebit.format import EMBED_DTYPE, HEAD_DTYPE, ROW_SCALED, TensorData, bitlinear_dtypes, write_stream
from onebit.tokenizer import Tokenizer
from onebit.train import quant
from onebit.train.checkpoint import Checkpoint, load_checkpoint

PACKS = ("t2", "t1.6")
EMBED_DTYPES = ("f32", "f16", "i8")
HEAD_DTYPES = ("f32", "f16", "i8", "i4")
F16_MAX = 65504.0


class ExportError(OnebitError):
    """A checkpoint that cannot be exported with the requested options."""


@dataclass
class ExportOptions:
    pack: str = "t2"
    embed_dtype: str = "f16"
    head_dtype: str | None = None  # None: the head is stored as the embedding is (and a tied head is not stored)

    def head(self) -> str:
        return self.head_dtype or self.embed_dtype


def effective_pack(quant_kind: str, pack: str, mixed: bool = False) -> str:
    """Binary models always pack as B1; ternary ones, and the ternary layers of a mixed one, as asked."""
    return "b1" if quant_kind == "binary" and not mixed else pack


PACK_FN = {"T2": packing.pack_t2, "T1_6": packing.pack_t16, "B1": packing.pack_b1}


def bitlinear_tensors(name: str, w: torch.Tensor, kind: str, dtype: str) -> list[TensorData]:
    """One BitLinear folded as the eval forward folds it: packed codes (and per-row scales for int4/int8)."""
    codes, scale = quant.quantize_weight(w, kind)
    codes_np = _numpy(codes).astype(np.int8)
    if dtype in ROW_SCALED:
        data = packing.pack_i4(codes_np) if dtype == "I4" else codes_np
        return [TensorData(name, dtype, codes_np.shape, data),
                TensorData(name + ".scale", "F32", (codes_np.shape[0],), _numpy(scale))]
    return [TensorData(name, dtype, codes_np.shape, PACK_FN[dtype](codes_np), float(scale))]


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).contiguous().numpy()


def _float_tensor(name: str, w: np.ndarray, dtype: str) -> list[TensorData]:
    if dtype == "F32":
        return [TensorData(name, "F32", w.shape, w)]
    if dtype == "F16":
        if np.abs(w).max() > F16_MAX:
            raise ExportError(f"{name} has values beyond the f16 range; export with --embed-dtype f32 or i8")
        return [TensorData(name, "F16", w.shape, w.astype(np.float16))]
    if dtype == "I4":  # the int4 head: per-row scales searched for the least error, FORMAT.md "LM head"
        q, scale = packing.quantize_rows_mse(w, 7)
        return [TensorData(name, "I4", w.shape, packing.pack_i4(q)), TensorData(name + ".scale", "F32", scale.shape, scale)]
    q, scale = packing.quantize_rows_i8(w)
    return [TensorData(name, "I8", w.shape, q), TensorData(name + ".scale", "F32", scale.shape, scale)]


def tokenizer_tensors(tok: Tokenizer) -> list[TensorData]:
    pieces = [tok.token_bytes(i) for i in range(tok.vocab_size)]
    offsets = np.zeros(tok.vocab_size + 1, dtype=np.int64)
    np.cumsum([len(p) for p in pieces], out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise ExportError("tokenizer vocabulary is too large for I32 offsets")
    blob = np.frombuffer(b"".join(pieces), dtype=np.uint8)
    if blob.size == 0:
        raise ExportError("tokenizer has no token bytes")
    out = [TensorData("tokenizer.tokens", "U8", (blob.size,), blob),
           TensorData("tokenizer.offsets", "I32", offsets.shape, offsets.astype(np.int32))]
    merges = np.array(tok.merges(), dtype=np.int32).reshape(-1, 3)
    if len(merges):
        out.append(TensorData("tokenizer.merges", "I32", merges.shape, merges))
    if tok.sentencepiece is not None:
        flags = tok.token_flags()
        out.append(TensorData("tokenizer.flags", "U8", flags.shape, flags))
    return out


def tokenizer_meta(tok: Tokenizer) -> dict:
    """The metadata `tokenizer` object's encoding fields (docs/FORMAT.md)."""
    out = {"type": tok.kind, "vocab_size": tok.vocab_size, "pretokenizer": tok.pretokenizer,
           "special_tokens": dict(tok.special_tokens)}
    if tok.add_prefix_space:
        out["add_prefix_space"] = True
    if tok.ignore_merges:
        out["ignore_merges"] = True
    if tok.sentencepiece is not None:
        out["sentencepiece"] = dict(tok.sentencepiece)
    return out


def model_tensors(ckpt: Checkpoint, opts: ExportOptions) -> list[TensorData]:
    """Every tensor of the file, in state_dict order, then the tokenizer's."""
    cfg = ckpt.config
    pack = effective_pack(cfg.quant, opts.pack, cfg.mixed)
    dtypes = bitlinear_dtypes(cfg.to_dict(), pack)
    embed_dtype = EMBED_DTYPE[opts.embed_dtype]
    out: list[TensorData] = []
    state = ckpt.model.state_dict()
    for name, w in state.items():
        if name in dtypes:
            out += bitlinear_tensors(name, w, cfg.layer_quant(name), dtypes[name])
        elif name == "embed.weight":
            out += _float_tensor(name, _numpy(w), embed_dtype)
        elif name == "head.weight":
            out += _float_tensor(name, _numpy(w), HEAD_DTYPE[opts.head()])
        else:
            out.append(TensorData(name, "F32", tuple(w.shape), _numpy(w)))
    if cfg.tie_embeddings and opts.head() != opts.embed_dtype:  # a tied head in its own dtype: stored once more
        out += _float_tensor("head.weight", _numpy(state["embed.weight"]), HEAD_DTYPE[opts.head()])
    return out + tokenizer_tensors(ckpt.tokenizer)


def tokenizer_generation_meta(ckpt: Checkpoint) -> dict:
    """BOS, EOS and the chat template from the checkpoint's meta.json, and the template's fixed
    pieces for the C runtime's --chat (onebit/chat_template.py); empty for models trained here."""
    out = generation_tokens(ckpt.meta, ckpt.tokenizer)
    if "chat_template" in out:
        try:
            out.update(chat_pieces(out))
        except ChatTemplateError as e:
            print(f"note: onebit-run --chat will refuse this model: {e}", file=sys.stderr)
    return out


def file_meta(ckpt: Checkpoint, opts: ExportOptions, source: str) -> dict:
    cfg, tok = ckpt.config, ckpt.tokenizer
    return {
        "config": cfg.to_dict(),
        "quant": {"weights": "mixed" if cfg.mixed else cfg.quant, "pack": effective_pack(cfg.quant, opts.pack, cfg.mixed),
                  "activations": "int8-absmax-per-token", "embed_dtype": opts.embed_dtype,
                  **({"head_dtype": opts.head_dtype} if opts.head_dtype else {})},
        "tokenizer": {**tokenizer_meta(tok), **tokenizer_generation_meta(ckpt)},
        "provenance": {"onebit_version": onebit.__version__, "step": ckpt.meta.get("step"),
                       "val_loss": ckpt.meta.get("val_loss"), "source": source},
    }


# ----------------------------------------------------------------------------------------------
# Size report


def _kind(t: TensorData) -> str:
    if t.name.startswith("layers.") and (t.dtype in ("T2", "T1_6", "B1", "I4") or "_proj.weight" in t.name):
        return "bitlinear"  # an int4 / int8 layer's per-row scales count with it
    if t.name.startswith("tokenizer."):
        return "tokenizer"
    if t.name.startswith(("embed.", "head.", "pos_embed.")):
        return t.name.split(".")[0]
    return "norms"


def size_report(tensors: list[TensorData], file_size: int) -> dict:
    """Bytes per tensor kind, bytes and bits per quantized weight, compression vs f32."""
    by_kind: dict[str, int] = {}
    for t in tensors:
        by_kind[_kind(t)] = by_kind.get(_kind(t), 0) + t.data.nbytes
    by_kind["overhead"] = file_size - sum(by_kind.values())
    quantized = sum(int(np.prod(t.shape)) for t in tensors if _kind(t) == "bitlinear" and not t.name.endswith(".scale"))
    model_params = sum(int(np.prod(t.shape)) for t in tensors
                       if _kind(t) != "tokenizer" and not t.name.endswith(".scale"))
    bitlinear_bytes = by_kind.get("bitlinear", 0)
    return {"bytes_by_kind": by_kind, "quantized_params": quantized, "model_params": model_params,
            "bytes_per_quantized_param": bitlinear_bytes / quantized,
            "bits_per_quantized_param": 8 * bitlinear_bytes / quantized,
            "file_size": file_size, "f32_size": 4 * model_params,
            "compression_vs_f32": 4 * model_params / file_size}


def format_report(report: dict, pack_note: str = "") -> str:
    lines = [f"{'kind':<12}{'bytes':>12}"]
    lines += [f"{kind:<12}{n:>12,}" for kind, n in report["bytes_by_kind"].items()]
    lines += [f"{'total':<12}{report['file_size']:>12,}",
              f"quantized weights: {report['quantized_params']:,} at "
              f"{report['bits_per_quantized_param']:.3f} bits ({report['bytes_per_quantized_param']:.4f} bytes) each"
              + pack_note,
              f"model params: {report['model_params']:,}; as f32 {report['f32_size']:,} bytes; "
              f"compression vs f32: {report['compression_vs_f32']:.2f}x"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Entry points


@dataclass
class ExportResult:
    report: dict
    meta: dict
    tensors: list[TensorData]


def load_for_export(checkpoint_dir: Path) -> Checkpoint:
    """A full checkpoint read lazily (one tensor in memory at a time), or an FSDP-sharded one."""
    from onebit.compile.lazy import load_lazy_checkpoint
    from onebit.train.dist_checkpoint import is_sharded

    try:
        sharded = is_sharded(checkpoint_dir)
    except OSError:
        sharded = False  # let the loader name what is wrong with the folder
    return load_checkpoint(checkpoint_dir) if sharded else load_lazy_checkpoint(checkpoint_dir)


def export_1bit(checkpoint_dir: Path, out: Path, opts: ExportOptions, c_header: Path | None = None,
                c_name: str = "onebit_model") -> ExportResult:
    """Write `out` (and the C header) atomically; returns the size report, metadata and tensors."""
    from onebit.compile.cheader import check_c_name, write_c_header

    if opts.pack not in PACKS or opts.embed_dtype not in EMBED_DTYPES or opts.head() not in HEAD_DTYPES:
        raise ExportError(f"unknown --pack {opts.pack!r}, --embed-dtype {opts.embed_dtype!r} or "
                          f"--head-dtype {opts.head_dtype!r}")
    if c_header is not None:
        check_c_name(c_name)
    ckpt = load_for_export(checkpoint_dir)
    if ckpt.config.quant == "none":
        raise ExportError(f"{checkpoint_dir}: the model is not quantized (quant = none); "
                          ".1bit holds ternary or binary models")
    with torch.no_grad():
        tensors = model_tensors(ckpt, opts)
    meta = file_meta(ckpt, opts, source=str(checkpoint_dir))
    # the header is written before the .1bit is committed: a failure leaves neither half-done
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            size = write_stream(f, meta, tensors)
        if c_header is not None:
            write_c_header(c_header, tmp.read_bytes(), meta["config"], c_name)
    return ExportResult(size_report(tensors, size), meta, tensors)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint_dir", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True,
              help="Output .1bit file (or output directory with --format onnx).")
@click.option("--pack", type=click.Choice(PACKS), default=None,
              help="Ternary packing: t2 (2 bits a weight) or t1.6 (5 weights a byte, the smaller file; the x86 runtime "
                   "copies it to 2 bits at load and runs it as fast as t2, elsewhere t2 is faster); binary models "
                   "always pack as b1.  [default: t2]")
@click.option("--embed-dtype", type=click.Choice(EMBED_DTYPES), default="f16", show_default=True,
              help="Storage of the embedding (and of the head, unless --head-dtype is given).")
@click.option("--head-dtype", type=click.Choice(HEAD_DTYPES), default=None,
              help="Storage of the LM head, when it should differ from --embed-dtype: i4 is int4 with per-row "
                   "scales and int8 activations (half the bytes of i8; docs/FORMAT.md \"LM head\"); a tied head "
                   "is then stored a second time.  .1bit only.  [default: as --embed-dtype]")
@click.option("--emit-c-header", "c_header", type=click.Path(path_type=Path), default=None,
              help="Also write a C header holding the file's bytes.  [default: none]")
@click.option("--c-name", default="onebit_model", show_default=True, help="C array name in the header.")
@click.option("--format", "fmt", type=click.Choice(["1bit", "onnx", "hf", "gguf"]), default="1bit", show_default=True,
              help="Output format: one .1bit file, a folder of ONNX graphs (docs/ONNX.md), a Hugging Face "
                   "BitNetForCausalLM folder, or a llama.cpp GGUF file (bitnet or llama architecture by the model's "
                   "shape; TQ2_0, or TQ1_0 with --pack t1.6; docs/INTEROP.md).")
@click.option("--hf-weights", type=click.Choice(["packed", "latent"]), default="packed", show_default=True,
              help="--format hf: packed 2-bit codes with onebit's exact scales (offline autobitlinear), or the "
                   "latent fp32 weights (online autobitlinear, for fine-tuning in transformers).")
@click.option("--onnx-graphs", default="native,web", show_default=True,
              help="ONNX graphs to write: native (MatMulNBits) and/or web (standard ops).")
@click.option("--onnx-block-size", type=click.Choice(["16", "32", "64", "128"]), default="128", show_default=True,
              help="MatMulNBits block size of the native graph.")
@click.option("--onnx-accuracy-level", type=click.Choice(["0", "4"]), default="4", show_default=True,
              help="MatMulNBits accuracy_level (4 = int8 activations, the fast CPU path).")
@click.option("--onnx-web-matmul", type=click.Choice(["float", "int8"]), default="float", show_default=True,
              help="Web graph matmul: fp32 MatMul on integer codes, or MatMulInteger.")
@cli_errors
def main(checkpoint_dir: Path, out: Path, pack: str | None, embed_dtype: str, head_dtype: str | None, c_header: Path | None,
         c_name: str, fmt: str, onnx_graphs: str, onnx_block_size: str, onnx_accuracy_level: str,
         onnx_web_matmul: str, hf_weights: str) -> None:
    """Compile CHECKPOINT_DIR into a packed .1bit file (or ONNX, or a Hugging Face folder)."""
    torch.set_num_threads(1)
    if head_dtype is not None and fmt != "1bit":
        raise ExportError(f"--head-dtype needs --format 1bit (the {fmt} export keeps its own head)")
    if fmt == "hf":
        if c_header is not None:
            raise ExportError("--emit-c-header needs --format 1bit")
        from onebit.compile.hf import export_hf

        size = export_hf(load_for_export(checkpoint_dir), out, hf_weights)
        print(f"wrote {out} (BitNetForCausalLM, {hf_weights} weights, model.safetensors {size:,} bytes)",
              file=sys.stderr)
        return
    if fmt == "gguf":
        if c_header is not None:
            raise ExportError("--emit-c-header needs --format 1bit")
        if out.is_dir() or not out.parent.is_dir():
            raise ExportError(f"output {out} must be a file in an existing folder")
        from onebit.compile.gguf import QTYPES, export_gguf, gguf_arch

        ckpt = load_for_export(checkpoint_dir)
        size = export_gguf(ckpt, out, pack or "t2", embed_dtype)
        print(f"wrote {out} (llama.cpp {gguf_arch(ckpt.config)}, {QTYPES[pack or 't2']} layers, {size:,} bytes)",
              file=sys.stderr)
        return
    if fmt == "onnx":
        if c_header is not None:
            raise ExportError("--emit-c-header needs --format 1bit")
        from onebit.compile.onnx_export import export_onnx  # onnx is a heavy import: only when asked

        export_onnx(checkpoint_dir, out, graphs=onnx_graphs, block_size=int(onnx_block_size),
                     accuracy_level=int(onnx_accuracy_level), web_matmul=onnx_web_matmul)
        return
    for target in (out, c_header):
        if target is not None and target.is_dir():
            raise ExportError(f"output {target} is a directory; give a file name")
        if target is not None and not target.parent.is_dir():
            raise ExportError(f"output directory {target.parent} does not exist")
    result = export_1bit(checkpoint_dir, out, ExportOptions(pack or "t2", embed_dtype, head_dtype), c_header, c_name)
    used = result.meta["quant"]["pack"]
    note = f" (binary model: packed as {used}, --pack {pack} ignored)" if pack and used != pack else ""
    print(format_report(result.report, note), file=sys.stderr)
    print(f"wrote {out}" + (f" and {c_header}" if c_header else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
