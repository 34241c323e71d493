"""`onebit-import HF_DIR --out DIR`: a Hugging Face `BitNetForCausalLM` folder -> an onebit checkpoint.

Both weight forms that transformers loads are read (docs/INTEROP.md):

- latent: full-precision `nn.Linear` weights (`quantization_config` absent, or `autobitlinear`
  in `online` mode). They are the checkpoint's latent weights unchanged, so onebit's absmean rule
  quantizes them, exactly as transformers' online `WeightQuant` does.
- deployment: `bitlinear` (the 2B4T release) or `autobitlinear` in `offline` mode. The weight is
  uint8 `[out/4, in]`, four ternary codes a byte: stored row `r`, bits `2i..2i+1` hold code `c`
  of output row `i * out/4 + r`, value `c - 1` (transformers.integrations.bitnet.pack_weights).
  `bitlinear` divides its matmul by `weight_scale` (so the scale is `1 / weight_scale`);
  `autobitlinear` multiplies by it, and may also store the codes unpacked as floats.

The checkpoint stores latent weights, and the exporter re-quantizes them with absmean. For the
deployment form the importer therefore builds latent weights whose absmean quantization gives back
exactly the stored codes and scale (`latent_weights`), checked bit for bit as each tensor is written.

Reading is lazy (safetensors memory-maps; one tensor is materialised at a time) and so is writing
(onebit/safetensors_stream.py): the importer holds about two copies of the largest tensor.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from safetensors import safe_open

import onebit
from onebit import names
from onebit.atomic import atomic_write_text
from onebit.config import ConfigError, ModelConfig
from onebit.errors import OnebitError, cli_errors
from onebit.format import bitlinear_shapes, float_shapes
from onebit.progress import progress_bar
from onebit.safetensors_stream import LazyTensor, write_safetensors
from onebit.tokenizer import Tokenizer, TokenizerError
from onebit.train import quant
from onebit.train.checkpoint import CONFIG_FILE, META_FILE, MODEL_FILE, TOKENIZER_FILE, TRAIN_STATE_FILE

ARCHITECTURE = "BitNetForCausalLM"
ACTIVATIONS = {"relu2": "relu2", "silu": "silu", "gelu_pytorch_tanh": "gelu"}
PACK_FACTOR = 4  # ternary codes per uint8 in transformers' packed layout


class ImportError_(OnebitError):
    """A Hugging Face folder that cannot be mapped onto an onebit model."""


@dataclass
class WeightForm:
    """How the BitLinear weights of a folder are stored (see the module docstring)."""

    kind: str  # "latent" or "codes"
    scale_inverted: bool = False  # bitlinear: the matmul is divided by weight_scale
    note: str = ""


@dataclass
class HFModel:
    folder: Path
    config: ModelConfig
    form: WeightForm
    files: dict[str, Path]  # HF tensor name -> safetensors file
    hf_config: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Reading the folder


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise ImportError_(f"{path.parent}: missing {path.name} ({what})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ImportError_(f"{path}: not valid JSON ({str(e).splitlines()[0]})") from None


def _weight_form(qc: dict | None) -> WeightForm:
    if qc is None:
        return WeightForm("latent", note="no quantization_config: the weights are taken as latent weights "
                                         "and quantized with absmean (transformers runs this folder unquantized)")
    if not isinstance(qc, dict):
        raise ImportError_("config.json: quantization_config must be an object")
    method = qc.get("quant_method")
    if method != "bitnet":
        raise ImportError_(f"config.json: quantization_config.quant_method {method!r} is not supported (need 'bitnet')")
    if qc.get("use_rms_norm"):
        raise ImportError_("config.json: quantization_config.use_rms_norm adds an RMSNorm before every BitLinear; "
                           "onebit models have none")
    skip = [m for m in qc.get("modules_to_not_convert") or [] if m not in ("lm_head",)]
    if skip:
        raise ImportError_(f"config.json: quantization_config.modules_to_not_convert {skip} leaves layers "
                           "unquantized; onebit quantizes every projection")
    linear, mode = qc.get("linear_class", "bitlinear"), qc.get("quantization_mode", "offline")
    if linear not in ("bitlinear", "autobitlinear") or mode not in ("online", "offline"):
        raise ImportError_(f"config.json: unknown quantization_config linear_class {linear!r} / "
                           f"quantization_mode {mode!r}")
    if linear == "bitlinear":  # transformers' BitLinear always holds packed codes, whatever the mode
        return WeightForm("codes", scale_inverted=True)
    if mode == "online":
        return WeightForm("latent")
    return WeightForm("codes")


def _rope_theta(hf: dict) -> float:
    rope = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    kind = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise ImportError_(f"config.json: rope type {kind!r} is not supported (onebit uses plain RoPE)")
    theta = rope.get("rope_theta", hf.get("rope_theta", 500000.0))
    if not isinstance(theta, (int, float)) or theta <= 0:
        raise ImportError_(f"config.json: rope_theta must be a positive number, got {theta!r}")
    return float(theta)


def model_config(hf: dict) -> ModelConfig:
    """The onebit ModelConfig of a BitNetForCausalLM config.json (transformers' defaults for absent keys)."""
    archs = hf.get("architectures") or []
    if hf.get("model_type") != "bitnet" or (archs and ARCHITECTURE not in archs):
        got = ", ".join(archs) or hf.get("model_type") or "unknown"
        raise ImportError_(f"config.json: architecture {got} is not {ARCHITECTURE}")
    act = hf.get("hidden_act", "relu2")
    if act not in ACTIVATIONS:
        raise ImportError_(f"config.json: hidden_act {act!r} is not supported ({', '.join(ACTIVATIONS)})")
    for key in ("attention_bias", "mlp_bias"):
        if hf.get(key):
            raise ImportError_(f"config.json: {key} is set; onebit models have no biases")
    dim, heads = hf.get("hidden_size", 2560), hf.get("num_attention_heads", 20)
    head_dim = hf.get("head_dim")
    if head_dim is not None and isinstance(dim, int) and isinstance(heads, int) and heads and head_dim * heads != dim:
        raise ImportError_(f"config.json: head_dim {head_dim} x {heads} heads != hidden_size {dim}; "
                           "onebit needs head_dim = hidden_size / num_attention_heads")
    try:
        return ModelConfig(
            vocab_size=hf.get("vocab_size", 128256), dim=dim, n_layers=hf.get("num_hidden_layers", 30),
            n_heads=heads, n_kv_heads=hf.get("num_key_value_heads") or heads,
            ffn_dim=hf.get("intermediate_size", 6912), max_seq_len=hf.get("max_position_embeddings", 2048),
            norm="rmsnorm", norm_eps=float(hf.get("rms_norm_eps", 1e-5)), pos="rope", rope_theta=_rope_theta(hf),
            activation=ACTIVATIONS[act], gated=True, qk_norm=False, subln=True, residual_scale=1.0,
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)), quant="ternary",
        ).validate()
    except (ConfigError, TypeError, ValueError) as e:
        raise ImportError_(f"config.json: {e}") from None


def _weight_files(folder: Path) -> dict[str, Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index, "the shard index").get("weight_map")
        if not isinstance(weight_map, dict):
            raise ImportError_(f"{index}: no weight_map object")
        files = {name: folder / file for name, file in weight_map.items()}
        for path in set(files.values()):
            if not path.is_file():
                raise ImportError_(f"{index}: shard {path.name} is missing")
        return files
    single = folder / "model.safetensors"
    if not single.is_file():
        raise ImportError_(f"{folder}: no model.safetensors or model.safetensors.index.json")
    try:
        with safe_open(str(single), framework="pt") as f:
            return {name: single for name in f.keys()}
    except Exception as e:  # safetensors raises its own error type for a bad header
        raise ImportError_(f"{single}: unreadable safetensors file ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_hf_model(folder: Path) -> HFModel:
    hf = _read_json(folder / "config.json", "the model's configuration")
    if not isinstance(hf, dict):
        raise ImportError_(f"{folder / 'config.json'}: expected a JSON object")
    config = model_config(hf)
    form = _weight_form(hf.get("quantization_config"))
    return HFModel(folder, config, form, _weight_files(folder), hf)


# ----------------------------------------------------------------------------------------------
# Tensors


class _Reader:
    """Lazy tensor reads across shards, one open file at a time."""

    def __init__(self, files: dict[str, Path]):
        self.files = files
        self._open: tuple[Path, Any] | None = None

    def shape_dtype(self, name: str) -> tuple[tuple[int, ...], str]:
        sl = self._handle(name).get_slice(name)
        return tuple(sl.get_shape()), sl.get_dtype()

    def get(self, name: str) -> torch.Tensor:
        return self._handle(name).get_tensor(name)

    def _handle(self, name: str) -> Any:
        if name not in self.files:
            raise ImportError_(f"missing tensor {name}")
        path = self.files[name]
        if self._open is None or self._open[0] != path:
            self.close()
            self._open = (path, safe_open(str(path), framework="pt").__enter__())
        return self._open[1]

    def close(self) -> None:
        if self._open is not None:
            self._open[1].__exit__(None, None, None)
            self._open = None


def unpack_codes(packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """transformers' packed uint8 [ceil(out/4), in] -> int8 codes in {-1, 0, 1}, [out, in]."""
    rows = packed.shape[0]
    parts = [((packed >> (2 * i)) & 3) for i in range(PACK_FACTOR)]
    codes = torch.cat(parts, dim=0)[:out_features].to(torch.int8) - 1
    return codes


def latent_weights(codes: torch.Tensor, scale: float) -> tuple[torch.Tensor, bool]:
    """fp32 latent weights W with quant.quantize_weight(W, "ternary") == (codes, scale), and whether
    the scale came back bit for bit.

    Nonzero codes get magnitude c ~ scale * n / nnz (so mean|W| ~ scale) and zeros stay 0; since
    |W / scale| >= 1 the round-clip gives back every code. The fp32 mean is monotone in c and in
    any one element, so bisection over float bit patterns finds the largest c whose computed mean
    stays <= scale, then raises one element (which the clip keeps at code +-1) until the mean is
    exactly scale. When fp32 division cannot produce that value at all, the nearest one is kept
    (the caller reports it).
    """
    target = np.float32(scale)
    q = codes.to(torch.float32)
    nnz = int(torch.count_nonzero(q))
    if nnz == 0:  # every output of this layer is 0 whatever the scale
        return torch.zeros_like(q), True
    n = q.numel()

    def mean_of(w: torch.Tensor) -> np.float32:
        return np.float32(quant.weight_scale(w).item())

    def first_at_least(lo: float, hi: float, make) -> int:
        """Bit pattern of the smallest fp32 v in [lo, hi] with mean_of(make(v)) >= target."""
        lo_bits, hi_bits = int(np.float32(lo).view(np.int32)), int(np.float32(hi).view(np.int32))
        while lo_bits < hi_bits:
            mid = (lo_bits + hi_bits) // 2
            if mean_of(make(_f32(mid))) >= target:
                hi_bits = mid
            else:
                lo_bits = mid + 1
        return lo_bits

    w = _grid_latent(q, n, nnz, target, mean_of)
    if w is not None:
        return w, True
    c0 = float(target) * n / nnz
    uniform = lambda v: q * float(v)  # noqa: E731
    c_bits = first_at_least(c0 * 0.999, c0 * 1.001, uniform)
    if mean_of(uniform(_f32(c_bits))) == target:
        return uniform(_f32(c_bits)), True
    c = float(_f32(c_bits - 1))  # the mean is now just below target
    flat = torch.nonzero(q.reshape(-1))[0].item()
    sign = float(q.reshape(-1)[flat])

    def raised(v: np.float32) -> torch.Tensor:
        out = uniform(c).reshape(-1)
        out[flat] = sign * float(v)
        return out.reshape(q.shape)

    # one mean ulp is about n ulps of target in the sum; allow a few
    v_bits = first_at_least(c, c + 8.0 * n * float(np.spacing(target)), raised)
    best = min((raised(_f32(b)) for b in (v_bits - 1, v_bits)), key=lambda w: abs(float(mean_of(w)) - float(target)))
    return best, bool(mean_of(best) == target)


def _grid_latent(q: torch.Tensor, n: int, nnz: int, target: np.float32, mean_of) -> torch.Tensor | None:
    """The fast path of latent_weights. torch's mean is fl(S / n) for the fp32 sum S, so first find
    fp32 sums T with fl(T / n) == target; then magnitudes that are integer multiples of a power of
    two u dividing T, so that T / u < 2^24 and every partial sum is exact in any summation order:
    the computed sum is T whatever torch's reduction does. None when no such T and u fit nnz
    weights of at least half the scale each (large tensors with few zeros)."""
    t = float(target)
    nf = np.float32(n)
    t0 = np.float32(t * n)
    candidates = [np.float32(t0 + np.float32(k) * np.spacing(t0)) for k in (0, -1, 1, -2, 2, -3, 3, -4, 4)]
    nonzero = (q != 0).reshape(-1)
    rank = None
    for total in candidates:
        if np.float32(total / nf) != target:
            continue
        ulp = float(np.spacing(total))
        mantissa = int(round(float(total) / ulp))
        low_bit = mantissa & -mantissa
        for shift in range(low_bit.bit_length() - 1, -1, -1):  # largest u first: fewest units per weight
            u = ulp * 2**shift
            m = mantissa >> shift
            floor_units = math.floor(0.5 * t / u) + 1  # the least units that still code +-1
            if m < nnz * floor_units:
                continue
            base, extra = divmod(m, nnz)
            if rank is None:
                rank = torch.cumsum(nonzero.to(torch.int64), 0).reshape(q.shape)  # 1-based among nonzeros
            magnitude = torch.where(rank <= extra, float((base + 1) * u), float(base * u))
            w = q * magnitude
            if mean_of(w) == target:
                return w
            break
    return None


def _f32(bits: int) -> np.float32:
    return np.int32(bits).view(np.float32)


@dataclass
class ImportReport:
    config: ModelConfig
    form: WeightForm
    tensors: int
    bitlinears: int
    file_size: int
    seconds: float
    tokenizer: str
    special: dict
    inexact_scales: list  # (tensor, stored scale, the scale onebit computes), off by an fp32 ulp


def _convert(model: HFModel, reader: _Reader, name: str, shape: tuple[int, ...], bitlinear: bool,
             inexact: list) -> np.ndarray:
    """The onebit tensor `name` (fp32), read and converted from its HF tensor(s)."""
    hf_name = names.to_hf(name)
    if hf_name is None:
        raise ImportError_(f"{name} has no Hugging Face counterpart")
    if name == "head.weight" and hf_name not in reader.files:
        raise ImportError_(f"missing tensor {hf_name} (config.json says tie_word_embeddings is false)")
    got_shape, dtype = reader.shape_dtype(hf_name)
    if not bitlinear or model.form.kind == "latent":
        if got_shape != shape:
            raise ImportError_(f"tensor {hf_name} has shape {list(got_shape)}, config.json needs {list(shape)}")
        if dtype not in ("F32", "F16", "BF16", "F64"):
            raise ImportError_(f"tensor {hf_name} has dtype {dtype}, expected a float type")
        return reader.get(hf_name).to(torch.float32).numpy()

    out_f, in_f = shape
    packed_shape = (-(-out_f // PACK_FACTOR), in_f)
    if dtype == "U8" and got_shape == packed_shape:
        codes = unpack_codes(reader.get(hf_name), out_f)
    elif dtype in ("F32", "F16", "BF16") and got_shape == shape and not model.form.scale_inverted:
        codes = reader.get(hf_name).to(torch.float32)
        if not bool(((codes == -1) | (codes == 0) | (codes == 1)).all()):
            raise ImportError_(f"tensor {hf_name}: offline autobitlinear weights must be ternary codes -1, 0, 1")
        codes = codes.to(torch.int8)
    else:
        raise ImportError_(f"tensor {hf_name} has shape {list(got_shape)} ({dtype}); the packed form needs "
                           f"uint8 {list(packed_shape)}")
    if bool((codes > 1).any()):  # the unused 2-bit value 3
        raise ImportError_(f"tensor {hf_name} holds the 2-bit value 3, which is no ternary code")
    scale_name = names.hf_scale_name(hf_name)
    s_shape, _ = reader.shape_dtype(scale_name)
    if s_shape not in ((1,), ()):
        raise ImportError_(f"tensor {scale_name} has shape {list(s_shape)}; expected one per-tensor scale")
    stored = np.float32(reader.get(scale_name).to(torch.float32).reshape(-1)[0].item())
    if not np.isfinite(stored) or stored <= 0:
        raise ImportError_(f"tensor {scale_name} is {float(stored)}; a scale must be positive and finite")
    scale = np.float32(1.0) / stored if model.form.scale_inverted else stored
    w, exact = latent_weights(codes, float(scale))
    got_codes, got_scale = quant.quantize_weight(w, "ternary")
    if not torch.equal(got_codes.to(torch.int8), codes):
        raise ImportError_(f"{hf_name}: internal error, latent weights do not reproduce the codes")
    if not exact:
        inexact.append((name, float(scale), float(got_scale)))
    return w.numpy()


def _special_tokens(folder: Path, tok: Tokenizer, hf: dict) -> dict:
    """BOS/EOS ids and the chat template from tokenizer_config.json and generation_config.json."""
    tc = _optional_json(folder / "tokenizer_config.json")
    gc = _optional_json(folder / "generation_config.json")
    vocab = tok.hf.get_vocab(with_added_tokens=True)

    def token_id(value: Any) -> int | None:
        if isinstance(value, dict):
            value = value.get("content")
        return vocab.get(value) if isinstance(value, str) else None

    def ids(value: Any) -> list[int]:
        value = value if isinstance(value, list) else [value]
        return [int(v) for v in value if isinstance(v, int) and 0 <= v < tok.vocab_size]

    bos = gc.get("bos_token_id", hf.get("bos_token_id"))
    bos = bos if isinstance(bos, int) and 0 <= bos < tok.vocab_size else token_id(tc.get("bos_token"))
    eos = ids(gc.get("eos_token_id", hf.get("eos_token_id")))
    tc_eos = token_id(tc.get("eos_token"))
    if tc_eos is not None and tc_eos not in eos:
        eos.append(tc_eos)
    template = tc.get("chat_template")
    if isinstance(template, list):  # several named templates: the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    # does the tokenizer.json post-processor prepend BOS itself (Llama-3 does)?
    with_special = tok.hf.encode("a", add_special_tokens=True).ids
    add_bos = bool(with_special) and bos is not None and with_special[0] == bos
    if isinstance(tc.get("add_bos_token"), bool):
        add_bos = tc["add_bos_token"]
    return {"bos_token_id": bos, "eos_token_ids": eos, "add_bos_token": add_bos,
            "chat_template": template if isinstance(template, str) else None}


def _optional_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    data = _read_json(path, "")
    return data if isinstance(data, dict) else {}


def import_hf(folder: Path, out: Path, show_progress: bool = True) -> ImportReport:
    """Write the onebit checkpoint `out` from the Hugging Face folder; meta.json last."""
    start = time.perf_counter()
    model = read_hf_model(folder)
    try:
        tok = Tokenizer.load(folder / "tokenizer.json")
    except TokenizerError as e:
        raise ImportError_(str(e)) from None
    cfg = model.config
    if tok.vocab_size != cfg.vocab_size:
        raise ImportError_(f"{folder}: tokenizer.json has {tok.vocab_size} tokens but config.json says "
                           f"vocab_size {cfg.vocab_size}; onebit needs them equal")
    special = _special_tokens(folder, tok, model.hf_config)

    shapes = {**float_shapes(cfg.to_dict()), **bitlinear_shapes(cfg.to_dict())}
    bitlinear = set(bitlinear_shapes(cfg.to_dict()))
    order = _state_dict_order(cfg, shapes)
    expected_hf = {names.to_hf(n) for n in order}
    if model.form.kind == "codes":
        expected_hf |= {names.hf_scale_name(names.to_hf(n)) for n in bitlinear}
    if cfg.tie_embeddings:
        expected_hf.add("lm_head.weight")  # some writers store the tied copy too; it is ignored
    unknown = sorted(set(model.files) - expected_hf)
    if unknown:
        raise ImportError_(f"{folder}: tensor {unknown[0]} has no onebit counterpart"
                           + (f" (+{len(unknown) - 1} more)" if len(unknown) > 1 else ""))

    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).unlink(missing_ok=True)
    reader = _Reader(model.files)
    inexact: list[tuple[str, float, float]] = []
    bar = progress_bar(total=len(order), desc="import", unit="tensor", disable=not show_progress)
    try:
        tensors = [LazyTensor(n, "F32", shapes[n],
                              lambda n=n: _convert(model, reader, n, shapes[n], n in bitlinear, inexact))
                   for n in order]
        size = write_safetensors(out / MODEL_FILE, tensors, {"format": "pt"}, on_tensor=lambda t: bar.update(1))
    finally:
        bar.close()
        reader.close()
    atomic_write_text(out / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2) + "\n")
    tok.save(out / TOKENIZER_FILE)
    (out / TRAIN_STATE_FILE).unlink(missing_ok=True)
    meta = {"onebit_version": onebit.__version__, "quant": cfg.quant, "step": 0, "val_loss": None,
            "imported_from": {"format": "hf", "path": str(folder), "weights": model.form.kind,
                              "scale_inverted": model.form.scale_inverted},
            **special}
    atomic_write_text(out / META_FILE, json.dumps(meta, indent=2) + "\n")
    return ImportReport(cfg, model.form, len(order), len(bitlinear), size, time.perf_counter() - start,
                        tok.kind, special, inexact)


def _state_dict_order(cfg: ModelConfig, shapes: dict) -> list[str]:
    """The tensors in onebit.train.model.Transformer's state_dict order, without building the model."""
    order = ["embed.weight"]
    for i in range(cfg.n_layers):
        for rest in ("attn_norm.weight", "attn.q_proj.weight", "attn.k_proj.weight", "attn.v_proj.weight",
                     "attn.sub_norm.weight", "attn.o_proj.weight", "mlp_norm.weight", "mlp.gate_proj.weight",
                     "mlp.up_proj.weight", "mlp.sub_norm.weight", "mlp.down_proj.weight"):
            order.append(f"layers.{i}.{rest}")
    order += ["norm.weight", "head.weight"]
    return [n for n in order if n in shapes]


# ----------------------------------------------------------------------------------------------
# Where the folder comes from


def resolve_source(source: str) -> Path:
    """A local folder as is; otherwise a hub id ("org/name") fetched through huggingface_hub."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists():
        raise ImportError_(f"{source} is a file; give the Hugging Face model folder")
    if source.count("/") != 1 or source.startswith((".", "/")):
        raise ImportError_(f"{source}: no such folder (and not a hub id of the form org/name)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ImportError_(f"{source}: no such folder, and huggingface_hub is not installed to fetch it") from None
    try:
        return Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors"]))
    except Exception as e:  # offline, unknown repo, gated model: all one line for the user
        raise ImportError_(f"{source}: no such folder, and the hub download failed ({_first_line(e)})") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source")
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True,
              help="Checkpoint folder to write (model.safetensors, config.json, tokenizer.json, meta.json).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@cli_errors
def main(source: str, out: Path, progress: bool) -> None:
    """Import SOURCE, a Hugging Face BitNetForCausalLM folder (or hub id), as an onebit checkpoint.

    The checkpoint works with `onebit sample`, `onebit export` and `onebit train --resume`.
    """
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    if out.exists() and not out.is_dir():
        raise ImportError_(f"output {out} is a file; give a folder")
    folder = resolve_source(source)
    report = import_hf(folder, out, show_progress=progress)
    if report.form.note:
        print(f"note: {report.form.note}", file=sys.stderr)
    if report.inexact_scales:
        name, stored, got = report.inexact_scales[0]
        print(f"note: {len(report.inexact_scales)} of {report.bitlinears} scales are no fp32 mean of their "
              f"layer's weights and were kept to the nearest one, an ulp away (first: {name}, "
              f"{stored!r} -> {got!r})", file=sys.stderr)
    c = report.config
    print(f"imported {report.bitlinears} BitLinears ({report.form.kind} weights) and "
          f"{report.tensors - report.bitlinears} other tensors: dim {c.dim}, {c.n_layers} layers, "
          f"{c.n_heads}/{c.n_kv_heads} heads, ffn {c.ffn_dim}, vocab {c.vocab_size}, "
          f"{report.tokenizer} tokenizer; {report.file_size:,} bytes in {report.seconds:.1f} s", file=sys.stderr)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
