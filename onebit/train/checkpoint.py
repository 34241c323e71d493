"""Checkpoints: a directory of model.safetensors, config.json, tokenizer.json, meta.json (+ train_state.pt).

Every file is written atomically, and meta.json is removed first and written last: a directory
without meta.json is a checkpoint whose save did not finish, and loading it says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import onebit
from onebit.atomic import atomic_path, atomic_write_text
from onebit.config import ConfigError, ModelConfig
from onebit.errors import OnebitError
from onebit.tokenizer import Tokenizer, TokenizerError
from onebit.train.model import Transformer

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "meta.json"
TRAIN_STATE_FILE = "train_state.pt"
REQUIRED_FILES = (CONFIG_FILE, TOKENIZER_FILE, MODEL_FILE, META_FILE)


class CheckpointError(OnebitError):
    """A checkpoint directory that is missing, incomplete or inconsistent."""


@dataclass
class Checkpoint:
    model: Transformer
    config: ModelConfig
    tokenizer: Tokenizer
    meta: dict


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return _finite(value.item())
    if hasattr(value, "item"):  # numpy scalars
        return _finite(value.item())
    raise TypeError(f"meta value {value!r} of type {type(value).__name__} is not JSON-serialisable")


def _finite(value: Any) -> Any:
    """meta with NaN and infinities (a diverged val_loss) replaced by null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def save_checkpoint(out_dir: Path, model: Transformer, tokenizer: Tokenizer, meta: dict,
                    train_state: dict | None = None) -> None:
    """Write a complete checkpoint; meta gets "onebit_version" and "quant" when it lacks them.

    A stale train_state.pt is removed when train_state is None, so that a checkpoint never pairs
    weights with the optimizer state of another step.
    """
    out_dir = Path(out_dir)
    cfg = model.cfg
    if tokenizer.vocab_size != cfg.vocab_size:
        raise CheckpointError(f"tokenizer vocab size {tokenizer.vocab_size} != model vocab_size {cfg.vocab_size}")
    meta = {"onebit_version": onebit.__version__, "quant": cfg.quant, **meta}
    # fail before touching disk; strict JSON (no NaN) so that C and JavaScript can read it too
    meta_text = json.dumps(_finite(meta), indent=2, default=_json_default, allow_nan=False) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META_FILE).unlink(missing_ok=True)

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})
    atomic_write_text(out_dir / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2) + "\n")
    tokenizer.save(out_dir / TOKENIZER_FILE)
    if train_state is not None:
        with atomic_path(out_dir / TRAIN_STATE_FILE) as tmp:
            torch.save(train_state, tmp)
    else:
        (out_dir / TRAIN_STATE_FILE).unlink(missing_ok=True)
    atomic_write_text(out_dir / META_FILE, meta_text)


def _checkpoint_dir(path: Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_file():
        if path.name in REQUIRED_FILES + (TRAIN_STATE_FILE,):
            return path.parent
        raise CheckpointError(f"checkpoint {path} is a file; expected a checkpoint directory")
    return path


def load_checkpoint(path: Path, device: str = "cpu") -> Checkpoint:
    """Load and validate a checkpoint directory; the model comes back in eval mode on device."""
    ckpt = _checkpoint_dir(path)
    for name in REQUIRED_FILES:
        if not (ckpt / name).is_file():
            hint = " (the save did not finish)" if name == META_FILE else ""
            raise CheckpointError(f"checkpoint {ckpt}: missing {name}{hint}")

    config = _load_config(ckpt / CONFIG_FILE)
    meta = _load_json(ckpt / META_FILE)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{ckpt / META_FILE}: expected a JSON object")
    try:
        tokenizer = Tokenizer.load(ckpt / TOKENIZER_FILE)
    except TokenizerError as e:
        raise CheckpointError(str(e)) from None
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(f"checkpoint {ckpt}: tokenizer has {tokenizer.vocab_size} tokens "
                              f"but config.json says vocab_size {config.vocab_size}")

    try:
        tensors = load_file(str(ckpt / MODEL_FILE))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{ckpt / MODEL_FILE}: unreadable safetensors file ({_first_line(e)})") from None
    model = Transformer(config)
    _check_tensors(ckpt / MODEL_FILE, tensors, model.state_dict())
    model.load_state_dict(tensors)
    model.to(device).eval()
    return Checkpoint(model=model, config=config, tokenizer=tokenizer, meta=meta)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({_first_line(e)})") from None


def _load_config(path: Path) -> ModelConfig:
    data = _load_json(path)
    if isinstance(data, dict):
        _check_config_types(path, data)
    try:
        return ModelConfig.from_dict(data)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except TypeError as e:  # a wrongly typed value that validate() compares or formats
        raise CheckpointError(f"{path}: invalid value ({e})") from None


def _check_config_types(path: Path, data: dict) -> None:
    """ModelConfig.validate checks ranges; this catches e.g. "residual_scale": "1" before it breaks a forward."""
    defaults = ModelConfig()
    for f in fields(ModelConfig):
        if f.name not in data:
            continue
        value, default = data[f.name], getattr(defaults, f.name)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, type(default)) and not isinstance(value, bool)
        if not ok:
            raise CheckpointError(f"{path}: {f.name} must be a {type(default).__name__}, got {value!r}")


def _check_tensors(path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    def listing(names: list[str]) -> str:
        shown = ", ".join(names[:3])
        return shown + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")

    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise CheckpointError(f"{path}: missing tensor(s) {listing(missing)} that config.json requires")
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise CheckpointError(f"{path}: unexpected tensor(s) {listing(unexpected)} not in the model config.json describes")
    for name, want in expected.items():
        got = tensors[name]
        if tuple(got.shape) != tuple(want.shape):
            raise CheckpointError(f"{path}: tensor {name} has shape {list(got.shape)}, "
                                  f"config.json needs {list(want.shape)}")
        if not got.is_floating_point():
            raise CheckpointError(f"{path}: tensor {name} has dtype {got.dtype}, expected a float type")


def load_train_state(path: Path) -> dict | None:
    """The optimizer/RNG state saved beside the weights, or None when there is none.

    Loaded with torch's weights_only unpickler: tensors, numbers, strings and containers only.
    """
    file = _checkpoint_dir(path) / TRAIN_STATE_FILE
    if not file.is_file():
        return None
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign pickles
        raise CheckpointError(f"{file}: unreadable train state ({_first_line(e)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: expected a dict, got {type(state).__name__}")
    return state
