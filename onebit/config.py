"""ModelConfig: the shape of an onebit transformer, saved as config.json and in `.1bit` metadata.

Every stage reads it (the trainer builds the model from it, the compiler writes it into the file,
the runtimes rebuild the forward from it), so it lives here, apart from torch. The fields are
documented in docs/DESIGN.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from fnmatch import fnmatchcase
from pathlib import Path

from onebit.errors import OnebitError

QUANT_KINDS = ("ternary", "binary", "none")
# what one BitLinear may be in a precision map (docs/DESIGN.md, "Mixed precision")
PRECISION_KINDS = ("binary", "ternary", "int4", "int8")
NORMS = ("rmsnorm", "layernorm")
POSITIONS = ("rope", "learned")
ACTIVATIONS = ("silu", "relu2", "gelu")


class ConfigError(OnebitError):
    """A model configuration that cannot describe a model."""


def parse_precision(spec: str) -> dict[str, str]:
    """A precision map from the command line: PATTERN=KIND pairs separated by commas, a JSON object,
    or the path of a JSON file holding one (or holding {"precision": {...}}, as onebit search writes)."""
    text = spec.strip()
    if not text.startswith("{") and "=" not in text:
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"--precision {spec!r}: no such file, and not PATTERN=KIND pairs")
        text = path.read_text()
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--precision: not valid JSON ({e.msg} at line {e.lineno})") from None
        data = data.get("precision", data) if isinstance(data, dict) else data
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ConfigError("--precision: expected a JSON object of pattern: kind")
        return data
    result = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        pattern, sep, kind = item.rpartition("=")
        if not sep or not pattern:
            raise ConfigError(f"--precision expects PATTERN=KIND, got {item!r}")
        result[pattern.strip()] = kind.strip()
    return result


@dataclass
class ModelConfig:
    vocab_size: int = 65
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 4
    ffn_dim: int = 512
    max_seq_len: int = 64
    norm: str = "rmsnorm"
    norm_eps: float = 1e-5
    pos: str = "rope"
    rope_theta: float = 10000.0
    activation: str = "relu2"
    gated: bool = True
    qk_norm: bool = False
    subln: bool = True
    residual_scale: float = 1.0
    tie_embeddings: bool = True
    quant: str = "ternary"
    dropout: float = 0.0
    # BitLinear name pattern (fnmatch, e.g. "layers.0.*", "*.down_proj") -> kind; the first
    # pattern that matches a layer decides, unmatched layers are `quant`; empty = uniform `quant`
    precision: dict[str, str] = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def validate(self) -> "ModelConfig":
        # types first: a config.json or `--set norm_eps=abc` may hold anything, and a comparison
        # below would then raise TypeError instead of naming the field
        for name in ("norm_eps", "rope_theta", "residual_scale", "dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"{name} must be a number, got {value!r}")
        for name in ("gated", "qk_norm", "subln", "tie_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("norm", "pos", "activation", "quant"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {getattr(self, name)!r}")
        positive = ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.dim % self.n_heads:
            raise ConfigError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.pos == "rope" and self.head_dim % 2:
            raise ConfigError(f"RoPE needs an even head_dim, got {self.head_dim}")
        for name, allowed in (("norm", NORMS), ("pos", POSITIONS), ("activation", ACTIVATIONS),
                              ("quant", QUANT_KINDS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        for f in fields(self):  # NaN passes every comparison above
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name} must be a finite number, got {value}")
        if self.norm_eps <= 0:
            raise ConfigError(f"norm_eps must be positive, got {self.norm_eps}")
        self._validate_precision()
        return self

    def _validate_precision(self) -> None:
        if not isinstance(self.precision, dict):
            raise ConfigError(f"precision must be an object of pattern: kind, got {self.precision!r}")
        if self.precision and self.quant == "none":
            raise ConfigError("a precision map needs a quantized model (quant ternary or binary)")
        names = self.bitlinear_names()
        for pattern, kind in self.precision.items():
            if kind not in PRECISION_KINDS:
                raise ConfigError(f"precision[{pattern!r}] must be one of {', '.join(PRECISION_KINDS)}, got {kind!r}")
            if not any(fnmatchcase(n, pattern) for n in names):
                raise ConfigError(f"precision pattern {pattern!r} matches no BitLinear "
                                  f"(names look like {names[0]!r})")

    def bitlinear_names(self) -> list[str]:
        """Module names of every BitLinear, in state_dict order (the tensor is NAME.weight)."""
        per_layer = ["attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj"]
        per_layer += (["mlp.gate_proj"] if self.gated else []) + ["mlp.up_proj", "mlp.down_proj"]
        return [f"layers.{i}.{p}" for i in range(self.n_layers) for p in per_layer]

    def layer_quant(self, name: str) -> str:
        """The kind of the BitLinear called `name` (with or without the `.weight` suffix)."""
        name = name.removesuffix(".weight")
        for pattern, kind in self.precision.items():
            if fnmatchcase(name, pattern):
                return kind
        return self.quant

    @property
    def mixed(self) -> bool:
        """True when a precision map is set (even one that resolves to a single kind)."""
        return bool(self.precision)

    def to_dict(self) -> dict:
        # no map, no key: a uniform model's config.json and .1bit metadata stay as they were
        data = asdict(self)
        if not data["precision"]:
            del data["precision"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        if not isinstance(data, dict):
            raise ConfigError("config must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**data).validate()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        try:
            return cls.from_dict(data)
        except TypeError as e:
            raise ConfigError(f"{path}: {e}") from None
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
