"""Checkpoints: model.safetensors, config.json, tokenizer.json, meta.json (+ train_state.pt) in a folder.

A run folder keeps its checkpoint in checkpoints/000007-step40/ and a `latest` symlink to it. A save
never touches the checkpoint it replaces: it writes a new version folder beside it, fsyncs every
file and the folder, and only then turns `latest` to the new one in one rename, so that a crash at
any moment leaves `latest` on a complete checkpoint; older versions are removed after the switch.
load_checkpoint(run folder) follows `latest`. A folder of the files themselves (a version folder,
or a run folder of the layout before versions) is a checkpoint too; meta.json is written last, so
such a folder without it is a save that did not finish.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import onebit
from onebit.atomic import fsync_path
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
VERSIONS_DIR = "checkpoints"
LATEST = "latest"


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


def checkpoint_meta(cfg: ModelConfig, meta: dict) -> str:
    """meta.json's text: meta with "onebit_version" and "quant" added, NaN and infinities as null.

    Strict JSON, so that C and JavaScript can read it too; raises TypeError before anything is on disk.
    """
    meta = {"onebit_version": onebit.__version__, "quant": cfg.quant, **meta}
    return json.dumps(_finite(meta), indent=2, default=_json_default, allow_nan=False) + "\n"


def new_version(out_dir: Path, step: Any) -> tuple[Path, str]:
    """A hidden folder in out_dir/checkpoints/ to write the next checkpoint version in, and the name
    commit_version will give it (000007-step40).

    A save is new_version, write_checkpoint_files, commit_version; save_checkpoint and the sharded
    writer (onebit/train/dist_checkpoint.py) both go through the three."""
    versions = Path(out_dir) / VERSIONS_DIR
    try:
        versions.mkdir(parents=True, exist_ok=True)
        name = _next_version(versions, step)
        tmp = Path(tempfile.mkdtemp(dir=versions, prefix=f".{name}.", suffix=".tmp"))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the checkpoint from other users
    except OSError as e:
        raise _save_error(Path(out_dir), e, versions) from None
    return tmp, name


def write_checkpoint_files(tmp: Path, cfg: ModelConfig, tokenizer: Tokenizer, meta_text: str,
                           train_state: dict | None, tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Fill the version folder tmp (from new_version): model.safetensors when tensors are given (a
    sharded checkpoint writes its weights itself), config, tokenizer, train state, then meta.json,
    whose presence marks a finished save. On failure tmp is removed and CheckpointError raised."""
    out_dir = tmp.parent.parent
    try:
        if tensors is not None:
            save_file(tensors, str(tmp / MODEL_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
        tokenizer.save(tmp / TOKENIZER_FILE)
        if train_state is not None:
            torch.save(train_state, tmp / TRAIN_STATE_FILE)
        (tmp / META_FILE).write_text(meta_text, encoding="utf-8")
    except Exception as e:  # safetensors and torch report a full disk in their own exception types
        error = _save_error(out_dir, e, tmp.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        raise error from None
    except BaseException:  # Ctrl-C: nothing half-written stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def commit_version(out_dir: Path, tmp: Path, name: str) -> None:
    """Make the finished version folder `tmp` (from new_version) out_dir's latest checkpoint.

    Every file and folder in it is fsynced, it is renamed to `name`, and `latest` switches to it in
    one rename; only then are older versions removed. On failure tmp is removed, the previous
    checkpoint stays latest, and CheckpointError is raised.
    """
    out_dir, versions = Path(out_dir), Path(tmp).parent
    try:
        for path in sorted(tmp.rglob("*"), reverse=True):  # children before their folder
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())  # safetensors creates 0600
            fsync_path(path)
        fsync_path(tmp)
        os.rename(tmp, versions / name)
        fsync_path(versions)
    except Exception as e:
        error = _save_error(out_dir, e, versions)
        shutil.rmtree(tmp, ignore_errors=True)
        raise error from None
    except BaseException:  # Ctrl-C: nothing half-written stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        _replace_symlink(out_dir / LATEST, f"{VERSIONS_DIR}/{name}")
        fsync_path(out_dir)
    except OSError as e:
        shutil.rmtree(versions / name, ignore_errors=True)
        raise _save_error(out_dir, e, versions) from None
    # committed: what follows only tidies (older versions, the plain files of the old layout), and a
    # crash in it loses nothing, since the loader follows `latest` and ignores both
    for old in versions.iterdir():
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    for plain in REQUIRED_FILES + (TRAIN_STATE_FILE,):
        if (out_dir / plain).is_file():
            (out_dir / plain).unlink(missing_ok=True)


def save_checkpoint(out_dir: Path, model: Transformer, tokenizer: Tokenizer, meta: dict,
                    train_state: dict | None = None) -> None:
    """Write a complete checkpoint and make it out_dir's latest; meta gets "onebit_version" and "quant".

    Any failure (a full disk included) leaves the previous checkpoint as it was and raises
    CheckpointError; a checkpoint never pairs weights with the optimizer state of another step.
    """
    out_dir = Path(out_dir)
    cfg = model.cfg
    if tokenizer.vocab_size != cfg.vocab_size:
        raise CheckpointError(f"tokenizer vocab size {tokenizer.vocab_size} != model vocab_size {cfg.vocab_size}")
    meta_text = checkpoint_meta(cfg, meta)  # fails before touching disk
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp, name = new_version(out_dir, meta.get("step"))
    write_checkpoint_files(tmp, cfg, tokenizer, meta_text, train_state, tensors)
    commit_version(out_dir, tmp, name)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _next_version(versions: Path, step: Any) -> str:
    """000007-step40: numbered past every version already there, so a name is never reused."""
    numbers = [int(p.name.split("-")[0]) for p in versions.iterdir() if p.name.split("-")[0].isdigit()]
    number = max(numbers, default=0) + 1
    return f"{number:06d}" + (f"-step{step}" if isinstance(step, int) and not isinstance(step, bool) else "")


def _save_error(out_dir: Path, e: BaseException, versions: Path) -> CheckpointError:
    full = isinstance(e, OSError) and e.errno == errno.ENOSPC
    if not full:  # torch.save's message for a full disk is "unexpected pos ..."
        try:
            stat = os.statvfs(versions if versions.is_dir() else out_dir)
            full = stat.f_bavail * stat.f_frsize < (1 << 16)
        except OSError:
            pass
    reason = "no space left on device" if full else (e.strerror if isinstance(e, OSError) and e.strerror
                                                      else _first_line(e))
    kept = (" (the previous checkpoint is intact)"
            if (out_dir / LATEST).exists() or (out_dir / META_FILE).is_file() else "")
    return CheckpointError(f"could not save a checkpoint in {out_dir}: {reason}{kept}")


def _replace_symlink(link: Path, target: str) -> None:
    """Point link at target in one rename: a reader sees the old target or the new one."""
    tmp = link.with_name(f".{link.name}.tmp")  # one writer per run folder
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def checkpoint_dir(path: Path) -> Path:
    """The folder that holds the checkpoint's files: path itself, or the version its `latest` names."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_file():
        if path.name not in REQUIRED_FILES + (TRAIN_STATE_FILE,):
            raise CheckpointError(f"checkpoint {path} is a file; expected a checkpoint directory")
        path = path.parent
    latest = path / LATEST
    if latest.is_symlink() or latest.exists():
        if not latest.is_dir():
            raise CheckpointError(f"checkpoint {path}: {LATEST} points to a missing version "
                                  f"({os.readlink(latest) if latest.is_symlink() else 'not a symlink'})")
        return latest.resolve()
    return path


_checkpoint_dir = checkpoint_dir  # the name onebit/compile/search.py imports


def read_checkpoint_parts(path: Path, weights_file: bool = True) -> tuple[Path, ModelConfig, dict, Tokenizer]:
    """Everything of a checkpoint but its weights: the version folder, config, meta.json and
    tokenizer, each checked and checked against each other (shared with the lazy exporter and the
    sharded loader, whose weights are not in model.safetensors: weights_file=False)."""
    ckpt = checkpoint_dir(path)
    for name in REQUIRED_FILES if weights_file else tuple(n for n in REQUIRED_FILES if n != MODEL_FILE):
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
    return ckpt, config, meta, tokenizer


def load_checkpoint(path: Path, device: str = "cpu") -> Checkpoint:
    """Load and validate a checkpoint directory, full or sharded (FSDP, onebit/train/dist_checkpoint.py);
    the model comes back in eval mode on device."""
    from onebit.train import dist_checkpoint  # imports this module

    if dist_checkpoint.is_sharded(path):
        return dist_checkpoint.load_sharded_checkpoint(path, device)
    ckpt, config, meta, tokenizer = read_checkpoint_parts(path)

    try:
        open(ckpt / MODEL_FILE, "rb").close()  # safetensors reports an unreadable file as a missing one
        tensors = load_file(str(ckpt / MODEL_FILE))
    except OSError as e:
        raise CheckpointError(f"{ckpt / MODEL_FILE}: {e.strerror}") from None
    except (SafetensorError, ValueError) as e:
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
    file = checkpoint_dir(path) / TRAIN_STATE_FILE
    if not file.is_file():
        return None
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign pickles
        raise CheckpointError(f"{file}: unreadable train state ({_first_line(e)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: expected a dict, got {type(state).__name__}")
    return state
