"""Export a onebit checkpoint to ONNX: a KV-cached decoder graph for onnxruntime.

Two graphs, the same model, the same tensor names (docs/DESIGN.md):

* ``model.onnx`` ("native") stores every BitLinear as ``com.microsoft::MatMulNBits`` with 2-bit
  codes, for onnxruntime on CPU, CUDA and WebGPU;
* ``model_web.onnx`` ("web") uses standard ONNX ops only, for onnxruntime-web's WASM backend, which
  has no fast MatMulNBits kernel: the same 2-bit codes are unpacked to integer weights by a
  subgraph of constants that onnxruntime folds once when the session is created.

Both compute DESIGN.md's per-token absmax int8 activation quantization in standard ops. The graph
is built by hand with ``onnx.helper`` rather than traced: the model is regular, so a builder keeps
initializer names equal to the PyTorch names, places the packed weights exactly, and needs no
optimizer pass that would rename them (docs/ONNX.md explains the choices and the measurements).

Inputs and outputs follow onnxruntime-genai / Transformers.js: ``input_ids``, ``attention_mask``,
``position_ids``, ``past_key_values.{i}.key|value`` in; ``logits``, ``present.{i}.key|value`` out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from onebit import packing
from onebit.chat_template import generation_tokens
from onebit.config import ModelConfig
from onebit.errors import OnebitError
from onebit.onnx_files import CONFIG_PROP, GENERATION_PROP, GRAPH_FILES, GRAPH_PROP, TOKENIZER_FILE
from onebit.train import quant
from onebit.train.model import Transformer

OPSET = 18  # BitwiseAnd (the web graph's unpacking) needs 18; onnxruntime-web runs it
MS_DOMAIN = "com.microsoft"
MAX_PROTO_BYTES = 2**31 - 1  # protobuf's limit on one self-contained file
# A masked score: finite so that a row with every key masked (a padding query) stays NaN-free.
MASKED_SCORE = -1e30


class OnnxExportError(OnebitError):
    """A checkpoint or an option that cannot be exported to ONNX."""


@dataclass
class OnnxOptions:
    """Knobs of the exported graphs; the defaults are the measured best (docs/ONNX.md)."""

    graphs: tuple[str, ...] = ("native", "web")
    block_size: int = 128  # MatMulNBits block length along K: 16, 32, 64 or 128
    accuracy_level: int = 4  # MatMulNBits: 4 = int8 compute (fast path), 0 = fp32 (dequantize)
    web_matmul: str = "float"  # web graph: "float" (MatMul on integer-valued fp32) or "int8" (MatMulInteger)

    def validate(self) -> "OnnxOptions":
        unknown = sorted(set(self.graphs) - set(GRAPH_FILES))
        if unknown or not self.graphs:
            raise OnnxExportError(f"graphs must be a non-empty subset of {', '.join(GRAPH_FILES)}, got {self.graphs}")
        if self.block_size not in (16, 32, 64, 128):
            raise OnnxExportError(f"block_size must be 16, 32, 64 or 128, got {self.block_size}")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise OnnxExportError(f"accuracy_level must be 0..4, got {self.accuracy_level}")
        if self.web_matmul not in ("float", "int8"):
            raise OnnxExportError(f"web_matmul must be 'float' or 'int8', got {self.web_matmul!r}")
        return self


# ----------------------------------------------------------------------------------------------
# Packing


def pack_2bit_blocks(codes: np.ndarray, block_size: int) -> np.ndarray:
    """Codes in {0, 1, 2} [N, K] -> MatMulNBits' B, uint8 [N, K_pad / block_size, block_size / 4].

    Element k of a row sits in byte k // 4 of the padded row, bits 2 * (k % 4); padding along K
    has code 1 (weight 0), like DESIGN.md's packed layouts.
    """
    n, k = codes.shape
    k_pad = -(-k // block_size) * block_size
    padded = np.ones((n, k_pad), dtype=np.uint8)
    padded[:, :k] = codes
    quads = padded.reshape(n, k_pad // 4, 4)
    packed = quads[..., 0] | (quads[..., 1] << 2) | (quads[..., 2] << 4) | (quads[..., 3] << 6)
    return packed.astype(np.uint8).reshape(n, k_pad // block_size, block_size // 4)


def pack_nbit_blocks(codes: np.ndarray, bits: int, block_size: int) -> np.ndarray:
    """Unsigned codes [N, K] (int4: q + 8, int8: q + 128, MatMulNBits' default zero points) ->
    uint8 [N, K_pad / block_size, block_size * bits / 8]: element k in byte k * bits // 8, the
    earlier element in the lower bits; padding along K is the zero point (weight 0)."""
    n, k = codes.shape
    per = 8 // bits
    k_pad = -(-k // block_size) * block_size
    padded = np.full((n, k_pad), 1 << (bits - 1), dtype=np.uint8)
    padded[:, :k] = codes
    groups = padded.reshape(n, k_pad // per, per)
    packed = np.zeros(groups.shape[:2], dtype=np.uint8)
    for i in range(per):
        packed |= groups[..., i] << (bits * i)
    return packed.reshape(n, k_pad // block_size, block_size * bits // 8)


def unpack_2bit_blocks(packed: np.ndarray, k: int) -> np.ndarray:
    """Inverse of pack_2bit_blocks: codes uint8 [N, K]."""
    n = packed.shape[0]
    flat = packed.reshape(n, -1, 1)
    codes = (flat >> np.array([0, 2, 4, 6], dtype=np.uint8)) & 3
    return codes.reshape(n, -1)[:, :k]


# ----------------------------------------------------------------------------------------------
# A tiny graph builder


class _Builder:
    """Collects nodes and initializers; every op's outputs get unique, readable names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._names: set[str] = set()
        self._consts: dict[tuple, str] = {}

    def _unique(self, base: str) -> str:
        name, n = base, 1
        while name in self._names:
            n += 1
            name = f"{base}_{n}"
        self._names.add(name)
        return name

    def initializer(self, name: str, array: np.ndarray) -> str:
        if name in self._names:
            raise OnnxExportError(f"duplicate tensor name {name}")
        self._names.add(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, value, dtype=np.float32) -> str:
        """A small constant, shared by every node that uses the same value."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.initializer(f"const.{len(self._consts)}", array)
        return self._consts[key]

    def op(self, op_type: str, inputs: list[str], scope: str, n_out: int = 1, outputs: list[str] | None = None,
           domain: str = "", **attrs):
        name = self._unique(f"{scope}/{op_type}")
        if outputs is None:
            outputs = [self._unique(f"{name}:{i}") for i in range(n_out)]
        else:
            self._names.update(outputs)
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=name, domain=domain or None, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs


# ----------------------------------------------------------------------------------------------
# The decoder graph


class _DecoderGraph:
    """Emits the forward of docs/DESIGN.md, step by step, named after onebit/train/model.py."""

    def __init__(self, model: Transformer, kind: str, options: OnnxOptions):
        self.model, self.cfg, self.kind, self.opt = model, model.cfg, kind, options
        self.g = _Builder()
        self.state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}

    # -- small helpers --------------------------------------------------------------------------

    def weight(self, name: str) -> str:
        return self.g.initializer(name, self.state[name].numpy().astype(np.float32))

    def axes(self, *axes: int) -> str:
        return self.g.const(list(axes), np.int64)

    def norm(self, x: str, name: str) -> str:
        """RMSNorm or bias-free LayerNorm over the last axis, fp32, as model.Norm."""
        g, cfg = self.g, self.cfg
        w = self.weight(f"{name}.weight")
        if cfg.norm == "layernorm":
            return g.op("LayerNormalization", [x, w], name, axis=-1, epsilon=cfg.norm_eps)
        ms = g.op("ReduceMean", [g.op("Mul", [x, x], name), self.axes(-1)], name, keepdims=1)
        inv = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [ms, g.const(cfg.norm_eps)], name)], name)], name)
        return g.op("Mul", [g.op("Mul", [x, inv], name), w], name)

    def quantize_activation(self, x: str, scope: str) -> tuple[str, str]:
        """Per-token absmax int8 (quant.quantize_activation): codes as fp32 and the scale a."""
        g = self.g
        amax = g.op("ReduceMax", [g.op("Abs", [x], scope), self.axes(-1)], scope, keepdims=1)
        a = g.op("Div", [g.const(127.0), g.op("Max", [amax, g.const(packing.EPS)], scope)], scope)
        xq = g.op("Clip", [g.op("Round", [g.op("Mul", [x, a], scope)], scope), g.const(-128.0), g.const(127.0)], scope)
        return xq, a

    def bitlinear(self, xq: str, a: str, name: str) -> str:
        """y = (xq . Q^T) * (s / a), with Q stored as 2-bit codes (DESIGN.md)."""
        g, cfg = self.g, self.cfg
        w = self.state[f"{name}.weight"]
        n, k = w.shape
        if cfg.quant == "none":
            wt = g.op("Transpose", [self.weight(f"{name}.weight")], name, perm=[1, 0])
            return g.op("MatMul", [xq, wt], name)  # xq is the unquantized input here
        kind = cfg.layer_quant(name)
        if kind in quant.INT_LEVELS:
            return self.int_bitlinear(xq, a, name, kind)
        codes, scale = quant.quantize_weight(w, kind)
        packed = pack_2bit_blocks((codes + 1).to(torch.uint8).numpy(), self.opt.block_size)
        b = g.initializer(f"{name}.weight", packed)
        s_over_a = g.op("Div", [g.const(float(scale)), a], name)
        if self.kind == "native":
            n_blocks = packed.shape[1]
            # scale 1 in every block: the kernel's output is the integer dot product itself and
            # the single fp32 multiply by s / a below is DESIGN.md's
            scales = g.initializer(f"{name}.weight.scales", np.ones((n, n_blocks), np.float32))
            zp = g.initializer(f"{name}.weight.zero_points",
                               np.full((n, -(-n_blocks // 4)), 0b01010101, np.uint8))  # zero point 1 per block
            dot = g.op("MatMulNBits", [xq, b, scales, zp], name, domain=MS_DOMAIN, K=k, N=n, bits=2,
                       block_size=self.opt.block_size, accuracy_level=self.opt.accuracy_level)
        else:
            wq = self.unpacked_weight(b, n, k, name)
            if self.opt.web_matmul == "int8":
                xi = g.op("Cast", [xq], name, to=TensorProto.INT8)
                dot = g.op("Cast", [g.op("MatMulInteger", [xi, wq], name)], name, to=TensorProto.FLOAT)
            else:
                dot = g.op("MatMul", [xq, wq], name)  # integer-valued fp32: exact below 2^24
        return g.op("Mul", [dot, s_over_a], name)

    def int_bitlinear(self, xq: str, a: str, name: str, kind: str) -> str:
        """An int4 / int8 layer of a mixed model: y = (xq . Q^T) * (s_row / a), per-row scales.

        native: MatMulNBits bits 4 or 8 with unit block scales and the default zero points
        (2^(bits-1)), so that it returns the integer dot product as for 2-bit codes; web: the
        codes as stored (int4 nibbles unpacked by folded constants, int8 as int8), and a float64
        MatMul, exact like the PyTorch eval forward (fp32 sums of int8 products are not, past
        K ~ 1000), or MatMulInteger.
        """
        g = self.g
        bits = 4 if kind == "int4" else 8
        codes, scale = quant.quantize_weight(self.state[f"{name}.weight"], kind)
        n, k = codes.shape
        unsigned = (codes.to(torch.int16) + (1 << (bits - 1))).to(torch.uint8).numpy()
        s_over_a = g.op("Div", [g.initializer(f"{name}.weight.row_scale", scale.numpy().astype(np.float32)), a], name)
        if self.kind == "native":
            packed = pack_nbit_blocks(unsigned, bits, self.opt.block_size)
            b = g.initializer(f"{name}.weight", packed)
            scales = g.initializer(f"{name}.weight.scales", np.ones((n, packed.shape[1]), np.float32))
            dot = g.op("MatMulNBits", [xq, b, scales], name, domain=MS_DOMAIN, K=k, N=n, bits=bits,
                       block_size=self.opt.block_size, accuracy_level=self.opt.accuracy_level)
            return g.op("Mul", [dot, s_over_a], name)
        if bits == 8:
            wq = g.initializer(f"{name}.weight", (unsigned.astype(np.int16) - 128).astype(np.int8))
        else:
            packed = g.initializer(f"{name}.weight", pack_nbit_blocks(unsigned, 4, 2).reshape(n, -1))
            flat = g.op("Reshape", [packed, g.const([n, -1, 1], np.int64)], name)
            nibbles = g.op("BitwiseAnd", [g.op("BitShift", [flat, g.const([0, 4], np.uint8)], name, direction="RIGHT"),
                                          g.const(15, np.uint8)], name)
            nibbles = g.op("Reshape", [nibbles, g.const([n, -1], np.int64)], name)
            nibbles = g.op("Slice", [nibbles, g.const([0], np.int64), g.const([k], np.int64), self.axes(1)], name)
            wq = g.op("Sub", [g.op("Cast", [nibbles], name, to=TensorProto.INT8), g.const(8, np.int8)], name)
        wt = g.op("Transpose", [wq], name, perm=[1, 0])  # [K, N], folded at load
        if self.opt.web_matmul == "int8":
            xi = g.op("Cast", [xq], name, to=TensorProto.INT8)
            dot = g.op("Cast", [g.op("MatMulInteger", [xi, wt], name)], name, to=TensorProto.FLOAT)
        else:
            x64 = g.op("Cast", [xq], name, to=TensorProto.DOUBLE)
            dot = g.op("MatMul", [x64, g.op("Cast", [wt], name, to=TensorProto.DOUBLE)], name)
            dot = g.op("Cast", [dot], name, to=TensorProto.FLOAT)
        return g.op("Mul", [dot, s_over_a], name)

    def unpacked_weight(self, packed: str, n: int, k: int, name: str) -> str:
        """Q^T [K, N] (int8 or fp32) from the 2-bit codes, by ops on constants only (folded at load)."""
        g = self.g
        flat = g.op("Reshape", [packed, g.const([n, -1, 1], np.int64)], name)
        shifted = g.op("BitShift", [flat, g.const([0, 2, 4, 6], np.uint8)], name, direction="RIGHT")
        codes = g.op("BitwiseAnd", [shifted, g.const(3, np.uint8)], name)
        codes = g.op("Reshape", [codes, g.const([n, -1], np.int64)], name)
        codes = g.op("Slice", [codes, g.const([0], np.int64), g.const([k], np.int64), self.axes(1)], name)
        to = TensorProto.INT8 if self.opt.web_matmul == "int8" else TensorProto.FLOAT
        dtype = np.int8 if self.opt.web_matmul == "int8" else np.float32
        w = g.op("Sub", [g.op("Cast", [codes], name, to=to), g.const(1, dtype)], name)
        return g.op("Transpose", [w], name, perm=[1, 0])

    def linear_input(self, x: str, scope: str) -> tuple[str, str | None]:
        if self.cfg.quant == "none":
            return x, None
        return self.quantize_activation(x, scope)

    def heads(self, x: str, n_heads: int, scope: str) -> str:
        """[B, T, n * head_dim] -> [B, n, T, head_dim]."""
        g = self.g
        x = g.op("Reshape", [x, g.const([0, 0, n_heads, self.cfg.head_dim], np.int64)], scope)
        return g.op("Transpose", [x], scope, perm=[0, 2, 1, 3])

    def rope(self, x: str, cos: str, sin: str, scope: str) -> str:
        """Rotate-half RoPE as model.apply_rope."""
        g, half = self.g, self.cfg.head_dim // 2
        x1, x2 = g.op("Split", [x, g.const([half, half], np.int64)], scope, n_out=2, axis=-1)
        lo = g.op("Sub", [g.op("Mul", [x1, cos], scope), g.op("Mul", [x2, sin], scope)], scope)
        hi = g.op("Add", [g.op("Mul", [x2, cos], scope), g.op("Mul", [x1, sin], scope)], scope)
        return g.op("Concat", [lo, hi], scope, axis=-1)

    def act(self, x: str, scope: str) -> str:
        g, kind = self.g, self.cfg.activation
        if kind == "silu":
            return g.op("Mul", [x, g.op("Sigmoid", [x], scope)], scope)
        if kind == "relu2":
            r = g.op("Relu", [x], scope)
            return g.op("Mul", [r, r], scope)
        # tanh-approximated GELU, written out (opset 18 has no Gelu)
        cube = g.op("Mul", [g.op("Mul", [x, x], scope), x], scope)
        inner = g.op("Add", [x, g.op("Mul", [cube, g.const(0.044715)], scope)], scope)
        t = g.op("Tanh", [g.op("Mul", [inner, g.const(math.sqrt(2.0 / math.pi))], scope)], scope)
        half_x = g.op("Mul", [x, g.const(0.5)], scope)
        return g.op("Mul", [half_x, g.op("Add", [t, g.const(1.0)], scope)], scope)

    def residual(self, x: str, delta: str, scope: str) -> str:
        g = self.g
        if self.cfg.residual_scale != 1.0:
            delta = g.op("Mul", [delta, g.const(self.cfg.residual_scale)], scope)
        return g.op("Add", [x, delta], scope)

    # -- the forward ----------------------------------------------------------------------------

    def attention_mask(self, past_key: str) -> str:
        """Allowed [B, 1, T, S]: causal over cache slots (query i sits at slot S - T + i) and
        not padding (attention_mask[b, j] != 0)."""
        g, scope = self.g, "mask"
        t = g.op("Gather", [g.op("Shape", ["input_ids"], scope), g.const(1, np.int64)], scope, axis=0)
        p = g.op("Gather", [g.op("Shape", [past_key], scope), g.const(2, np.int64)], scope, axis=0)
        s = g.op("Add", [p, t], scope)
        zero, one = g.const(0, np.int64), g.const(1, np.int64)
        rows = g.op("Add", [g.op("Range", [zero, t, one], scope), p], scope)
        rows = g.op("Unsqueeze", [rows, self.axes(1)], scope)
        cols = g.op("Unsqueeze", [g.op("Range", [zero, s, one], scope), self.axes(0)], scope)
        causal = g.op("LessOrEqual", [cols, rows], scope)  # [T, S]
        keep = g.op("Cast", [g.op("Unsqueeze", ["attention_mask", self.axes(1, 2)], scope)], scope,
                    to=TensorProto.BOOL)  # [B, 1, 1, S]
        return g.op("And", [causal, keep], scope)

    def attention(self, i: int, h: str, allowed: str, rope: tuple[str, str] | None) -> str:
        g, cfg = self.g, self.cfg
        scope = f"layers.{i}.attn"
        hq, ha = self.linear_input(h, scope)
        q = self.heads(self.bitlinear(hq, ha, f"{scope}.q_proj"), cfg.n_heads, scope)
        k = self.heads(self.bitlinear(hq, ha, f"{scope}.k_proj"), cfg.n_kv_heads, scope)
        v = self.heads(self.bitlinear(hq, ha, f"{scope}.v_proj"), cfg.n_kv_heads, scope)
        if cfg.qk_norm:
            q = self.norm(q, f"{scope}.q_norm")
            k = self.norm(k, f"{scope}.k_norm")
        if rope is not None:
            q, k = self.rope(q, *rope, scope), self.rope(k, *rope, scope)
        k = g.op("Concat", [f"past_key_values.{i}.key", k], scope, outputs=[f"present.{i}.key"], axis=2)
        v = g.op("Concat", [f"past_key_values.{i}.value", v], scope, outputs=[f"present.{i}.value"], axis=2)
        group = cfg.n_heads // cfg.n_kv_heads
        if group > 1:  # grouped-query attention: kv head j serves query heads j*group .. j*group+group-1
            expand = g.const([1, 1, group, 1, 1], np.int64)
            merged = g.const([0, cfg.n_heads, -1, cfg.head_dim], np.int64)
            k = g.op("Reshape", [g.op("Expand", [g.op("Unsqueeze", [k, self.axes(2)], scope), expand], scope), merged], scope)
            v = g.op("Reshape", [g.op("Expand", [g.op("Unsqueeze", [v, self.axes(2)], scope), expand], scope), merged], scope)
        scores = g.op("MatMul", [q, g.op("Transpose", [k], scope, perm=[0, 1, 3, 2])], scope)
        scores = g.op("Mul", [scores, g.const(1.0 / math.sqrt(cfg.head_dim))], scope)
        scores = g.op("Where", [allowed, scores, g.const(MASKED_SCORE)], scope)
        a = g.op("MatMul", [g.op("Softmax", [scores], scope, axis=-1), v], scope)
        a = g.op("Transpose", [a], scope, perm=[0, 2, 1, 3])
        a = g.op("Reshape", [a, g.const([0, 0, cfg.n_heads * cfg.head_dim], np.int64)], scope)
        if cfg.subln:
            a = self.norm(a, f"{scope}.sub_norm")
        aq, aa = self.linear_input(a, f"{scope}.o_proj")
        return self.bitlinear(aq, aa, f"{scope}.o_proj")

    def mlp(self, i: int, h: str) -> str:
        g, cfg = self.g, self.cfg
        scope = f"layers.{i}.mlp"
        hq, ha = self.linear_input(h, scope)
        up = self.bitlinear(hq, ha, f"{scope}.up_proj")
        if cfg.gated:
            u = g.op("Mul", [self.act(self.bitlinear(hq, ha, f"{scope}.gate_proj"), scope), up], scope)
        else:
            u = self.act(up, scope)
        if cfg.subln:
            u = self.norm(u, f"{scope}.sub_norm")
        uq, ua = self.linear_input(u, f"{scope}.down_proj")
        return self.bitlinear(uq, ua, f"{scope}.down_proj")

    def build(self) -> onnx.ModelProto:
        g, cfg = self.g, self.cfg
        x = g.op("Gather", [self.weight("embed.weight"), "input_ids"], "embed", axis=0)
        rope = None
        if cfg.pos == "learned":
            x = g.op("Add", [x, g.op("Gather", [self.weight("pos_embed.weight"), "position_ids"], "pos_embed")], "pos_embed")
        else:
            half = cfg.head_dim // 2
            cos_t = g.initializer("rope_cos", self.model.rope_cos.numpy()[:, :half].astype(np.float32))
            sin_t = g.initializer("rope_sin", self.model.rope_sin.numpy()[:, :half].astype(np.float32))
            # [B, T, half] -> [B, 1, T, half], broadcast over heads
            rope = tuple(g.op("Unsqueeze", [g.op("Gather", [t, "position_ids"], "rope", axis=0), self.axes(1)], "rope")
                         for t in (cos_t, sin_t))
        allowed = self.attention_mask("past_key_values.0.key")
        for i in range(cfg.n_layers):
            x = self.residual(x, self.attention(i, self.norm(x, f"layers.{i}.attn_norm"), allowed, rope),
                              f"layers.{i}")
            x = self.residual(x, self.mlp(i, self.norm(x, f"layers.{i}.mlp_norm")), f"layers.{i}")
        x = self.norm(x, "norm")
        head = "embed.weight" if cfg.tie_embeddings else self.weight("head.weight")
        head_t = g.op("Transpose", [head], "head", perm=[1, 0])  # folded once at load; the file keeps one copy
        g.op("MatMul", [x, head_t], "head", outputs=["logits"])
        return self.model_proto()

    def model_proto(self) -> onnx.ModelProto:
        cfg = self.cfg
        kv = ["batch_size", cfg.n_kv_heads, "past_sequence_length", cfg.head_dim]
        present = ["batch_size", cfg.n_kv_heads, "total_sequence_length", cfg.head_dim]
        inputs = [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
            helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        ]
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                 ["batch_size", "sequence_length", cfg.vocab_size])]
        for i in range(cfg.n_layers):
            for part in ("key", "value"):
                inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{part}", TensorProto.FLOAT, kv))
                outputs.append(helper.make_tensor_value_info(f"present.{i}.{part}", TensorProto.FLOAT, present))
        graph = helper.make_graph(self.g.nodes, f"onebit_{self.kind}", inputs, outputs, self.g.initializers)
        opsets = [helper.make_opsetid("", OPSET)]
        if self.kind == "native":
            opsets.append(helper.make_opsetid(MS_DOMAIN, 1))
        proto = helper.make_model(graph, opset_imports=opsets, producer_name="onebit")
        proto.ir_version = 8  # onnxruntime-web 1.30 and older runtimes read IR 8
        helper.set_model_props(proto, {CONFIG_PROP: json.dumps(cfg.to_dict()), GRAPH_PROP: self.kind})
        return proto


def build_onnx(model: Transformer, kind: str = "native", options: OnnxOptions | None = None) -> onnx.ModelProto:
    """The decoder graph of `model` ("native" or "web"), checked by onnx.checker."""
    options = (options or OnnxOptions()).validate()
    if kind not in GRAPH_FILES:
        raise OnnxExportError(f"graph kind must be one of {', '.join(GRAPH_FILES)}, got {kind!r}")
    proto = _DecoderGraph(model, kind, options).build()
    size = proto.ByteSize()
    if size > MAX_PROTO_BYTES:
        raise OnnxExportError(f"the {kind} graph is {size / 2**30:.2f} GiB: over protobuf's 2 GB limit for one file")
    onnx.checker.check_model(proto)
    return proto


# ----------------------------------------------------------------------------------------------
# The output folder


def genai_config(cfg: ModelConfig, tokenizer, filename: str, generation: dict | None = None) -> dict:
    """onnxruntime-genai's genai_config.json for the decoder `filename` (greedy search by default);
    an imported model's own EOS ids and BOS (`generation`, onebit.chat_template.generation_tokens)."""
    eot = tokenizer.special_tokens.get("<|endoftext|>")
    # A char vocabulary has no end-of-text token: an empty eos list makes onnxruntime-genai stop
    # at max_length only, like every onebit runtime (docs/SAMPLING.md); bos/pad just need a valid id.
    eos = [] if eot is None else [eot]
    filler = 0 if eot is None else eot
    generation = generation or {}
    if generation.get("eos_token_ids"):
        eos = list(generation["eos_token_ids"])
        filler = eos[0]
    return {
        "model": {
            "bos_token_id": generation.get("bos_token_id", filler),
            "context_length": cfg.max_seq_len,
            "decoder": {
                "session_options": {"log_id": "onebit", "provider_options": []},
                "filename": filename,
                "head_size": cfg.head_dim,
                "hidden_size": cfg.dim,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "position_ids": "position_ids",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "num_attention_heads": cfg.n_heads,
                "num_hidden_layers": cfg.n_layers,
                "num_key_value_heads": cfg.n_kv_heads,
            },
            "eos_token_id": eos,
            "pad_token_id": filler,
            "type": "llama",
            "vocab_size": cfg.vocab_size,
        },
        "search": {
            "diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0,
            "max_length": cfg.max_seq_len, "min_length": 0, "no_repeat_ngram_size": 0, "num_beams": 1,
            "num_return_sequences": 1, "past_present_share_buffer": False, "repetition_penalty": 1.0,
            "temperature": 1.0, "top_k": 1, "top_p": 1.0,
        },
    }


def tokenizer_config(cfg: ModelConfig, tokenizer, generation: dict | None = None) -> dict:
    """The tokenizer_config.json that Transformers / Transformers.js / onnxruntime-genai read
    (with an imported model's own EOS, BOS and chat template from `generation`)."""
    eot = "<|endoftext|>" if "<|endoftext|>" in tokenizer.special_tokens else None
    own = {k: v for k, v in (generation or {}).items() if k in ("bos_token", "eos_token", "chat_template")}
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": cfg.max_seq_len,
        "bos_token": eot, "eos_token": eot, "unk_token": None, "pad_token": eot,
        "add_bos_token": False, "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "onebit_kind": tokenizer.kind,
        **own,
    }


EXPORT_FILES = (*GRAPH_FILES.values(), TOKENIZER_FILE, "tokenizer_config.json", "genai_config.json")


def export_model(model: Transformer, tokenizer, out_dir: Path, options: OnnxOptions | None = None,
                 provenance: dict | None = None, generation: dict | None = None) -> list[Path]:
    """Write the graphs, genai_config.json and the tokenizer files into out_dir; the paths written.
    `generation`: an imported model's BOS, EOS ids and chat template (generation_tokens), kept in
    each graph's onebit.generation property for `onebit run-ort`.  The folder appears complete or
    not at all (onebit.atomic.atomic_dir); an existing one is replaced only if it holds nothing but
    a previous export's files."""
    from onebit.atomic import atomic_dir

    options = (options or OnnxOptions()).validate()
    if tokenizer.vocab_size != model.cfg.vocab_size:
        raise OnnxExportError(f"tokenizer has {tokenizer.vocab_size} tokens but the model {model.cfg.vocab_size}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OnnxExportError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir():
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in EXPORT_FILES)
        if foreign:
            raise OnnxExportError(f"{out_dir} holds files that are not an ONNX export ({', '.join(foreign[:3])}"
                                  f"{', ...' if len(foreign) > 3 else ''}); choose a new or empty folder")
    model = model.eval().float()
    protos = {kind: build_onnx(model, kind, options) for kind in options.graphs}  # all built before any write
    names = [GRAPH_FILES[kind] for kind in protos] + [TOKENIZER_FILE, "tokenizer_config.json", "genai_config.json"]
    with atomic_dir(out_dir) as tmp:
        for kind, proto in protos.items():
            props = {"onebit.provenance": json.dumps(provenance, default=str)} if provenance else {}
            if generation:
                props[GENERATION_PROP] = json.dumps(generation)
            if props:
                helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, **props})
            (tmp / GRAPH_FILES[kind]).write_bytes(proto.SerializeToString())
        tokenizer.save(tmp / TOKENIZER_FILE)
        main = GRAPH_FILES["native" if "native" in options.graphs else "web"]
        for name, data in (("tokenizer_config.json", tokenizer_config(model.cfg, tokenizer, generation)),
                           ("genai_config.json", genai_config(model.cfg, tokenizer, main, generation))):
            (tmp / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return [out_dir / name for name in names]


def export_onnx(checkpoint_dir: Path, out_dir: Path, **options) -> None:
    """`onebit-export CHECKPOINT_DIR --format onnx -o OUT`: options are OnnxOptions' fields."""
    from onebit.train.checkpoint import load_checkpoint

    try:
        opts = OnnxOptions(**options)
    except TypeError as e:
        raise OnnxExportError(f"unknown ONNX export option: {e}") from None
    if isinstance(opts.graphs, str):
        opts.graphs = tuple(g for g in opts.graphs.split(",") if g)
    ckpt = load_checkpoint(Path(checkpoint_dir))
    provenance = {k: ckpt.meta.get(k) for k in ("step", "val_loss", "onebit_version") if k in ckpt.meta}
    provenance["source"] = str(checkpoint_dir)
    export_model(ckpt.model, ckpt.tokenizer, Path(out_dir), opts, provenance,
                 generation_tokens(ckpt.meta, ckpt.tokenizer))
