"""Sharded checkpoints: under FSDP every rank writes its own shard (torch.distributed.checkpoint).

A sharded checkpoint is a version folder of the usual run layout (run/latest -> checkpoints/
000003-step40/, docs/TRAINING.md) holding config.json, tokenizer.json, train_state.pt (without
the optimizer) and meta.json, as a full checkpoint does, and a `sharded/` folder of
torch.distributed.checkpoint files in place of model.safetensors; the weights and the optimizer
state are in there. Nothing gathers the model on one rank to write it, so a model that only fits
sharded can still be saved. All ranks must see the same filesystem.

Readers: `load_any_checkpoint` (export, and resuming on any number of processes, with or without
FSDP) reads either kind; torch.distributed.checkpoint re-slices the shards for the reader.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed.checkpoint as dcp

from onebit.config import ConfigError, ModelConfig
from onebit.tokenizer import Tokenizer, TokenizerError
from onebit.train import distributed
from onebit.train.checkpoint import (CONFIG_FILE, LATEST, META_FILE, TOKENIZER_FILE, TRAIN_STATE_FILE, VERSIONS_DIR,
                                     Checkpoint, CheckpointError, load_checkpoint)
from onebit.train.model import Transformer

if TYPE_CHECKING:
    from onebit.train.trainer import Trainer

SHARDS_DIR = "sharded"


def version_dir(path: Path) -> Path:
    """The folder holding a checkpoint's files: path itself, or the version its `latest` names."""
    path = Path(path)
    latest = path / LATEST
    return latest.resolve() if latest.is_dir() else path


def is_sharded(path: Path) -> bool:
    return (version_dir(path) / SHARDS_DIR / ".metadata").is_file()


# ----------------------------------------------------------------------------------------------
# Writing (every rank)


def save_sharded(trainer: "Trainer", meta: dict) -> None:
    """Every rank writes its shard of the weights and optimizer state; rank 0 writes the rest and commits."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    world, out_dir = trainer.world, Path(trainer.out_dir)
    versions = out_dir / VERSIONS_DIR
    name = tmp = None
    if world.is_main:
        versions.mkdir(parents=True, exist_ok=True)
        name = _next_version(versions, meta.get("step"))
        tmp = tempfile.mkdtemp(dir=versions, prefix=f".{name}.", suffix=".tmp")
    name, tmp = distributed.broadcast_object(world, (name, tmp))
    state = {"model": get_model_state_dict(trainer.model),
             "optim": get_optimizer_state_dict(trainer.model, trainer.optimizer)}
    dcp.save(state, checkpoint_id=Path(tmp) / SHARDS_DIR)
    train_state = trainer.state_dict(with_optimizer=False)
    if world.is_main:
        _commit(out_dir, Path(tmp), name, trainer, meta, train_state)


def _commit(out_dir: Path, tmp: Path, name: str, trainer: "Trainer", meta: dict, train_state: dict) -> None:
    """The small files, fsync, then one rename and one symlink switch (as full checkpoints do)."""
    import onebit

    meta = {"onebit_version": onebit.__version__, "quant": trainer.model.cfg.quant, **meta}
    try:
        os.chmod(tmp, 0o755)
        (tmp / CONFIG_FILE).write_text(json.dumps(trainer.model.cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
        trainer.tokenizer.save(tmp / TOKENIZER_FILE)
        torch.save(train_state, tmp / TRAIN_STATE_FILE)
        finite = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in meta.items()}
        (tmp / META_FILE).write_text(json.dumps(finite, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        for path in [*tmp.rglob("*"), tmp / SHARDS_DIR, tmp]:
            _fsync(path)
        final = tmp.parent / name
        os.rename(tmp, final)
        link = out_dir / LATEST
        link_tmp = out_dir / f".{LATEST}.tmp"
        link_tmp.unlink(missing_ok=True)
        os.symlink(f"{VERSIONS_DIR}/{name}", link_tmp)
        os.replace(link_tmp, link)
        _fsync(out_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not save a sharded checkpoint in {out_dir}: {e.strerror or e}") from None
    for old in tmp.parent.iterdir():
        if old.name != name and old.name.split("-")[0].isdigit():
            shutil.rmtree(old, ignore_errors=True)


def _next_version(versions: Path, step: object) -> str:
    numbers = [int(p.name.split("-")[0]) for p in versions.iterdir() if p.name.split("-")[0].isdigit()]
    return f"{max(numbers, default=0) + 1:06d}" + (f"-step{step}" if isinstance(step, int) else "")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------
# Reading (any number of processes, or none)


def load_any_checkpoint(path: Path, device: str = "cpu") -> Checkpoint:
    """A full checkpoint through onebit.train.checkpoint, or a sharded one put back together."""
    if not is_sharded(path):
        return load_checkpoint(path, device=device)
    folder = version_dir(path)
    if not (folder / META_FILE).is_file():
        raise CheckpointError(f"checkpoint {folder}: missing {META_FILE} (the save did not finish)")
    try:
        config = ModelConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")))
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        tokenizer = Tokenizer.load(folder / TOKENIZER_FILE)
    except (OSError, ValueError, TypeError, ConfigError, TokenizerError) as e:
        raise CheckpointError(f"checkpoint {folder}: {distributed.first_line(e)}") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(f"checkpoint {folder}: tokenizer has {tokenizer.vocab_size} tokens "
                              f"but config.json says vocab_size {config.vocab_size}")
    model = Transformer(config)
    weights = {"model": model.state_dict()}
    _read(folder, weights)
    model.load_state_dict(weights["model"])
    model.to(device).eval()
    return Checkpoint(model=model, config=config, tokenizer=tokenizer, meta=meta)


def load_sharded_optimizer(path: Path, trainer: "Trainer") -> None:
    """The optimizer state of a sharded checkpoint, re-sliced for this run's ranks (or one process)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    state = {"optim": get_optimizer_state_dict(trainer.model, trainer.optimizer)}
    _read(version_dir(path), state, no_dist=not trainer.world.active)
    set_optimizer_state_dict(trainer.model, trainer.optimizer, state["optim"])


def _read(folder: Path, state: dict, no_dist: bool = True) -> None:
    try:
        with warnings.catch_warnings():  # reading in one process is the intent, not a mistake to warn of
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=folder / SHARDS_DIR, no_dist=no_dist)
    except (dcp.CheckpointException, RuntimeError, ValueError, OSError) as e:
        raise CheckpointError(f"{folder / SHARDS_DIR}: unreadable sharded checkpoint "
                              f"({distributed.first_line(e)[:300]})") from None
