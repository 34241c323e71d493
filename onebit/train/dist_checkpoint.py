"""Sharded checkpoints: under FSDP every rank writes its own shard (torch.distributed.checkpoint).

A sharded checkpoint is a version folder of the usual run layout (run/latest -> checkpoints/
000003-step40/, docs/TRAINING.md) holding config.json, tokenizer.json, train_state.pt (without
the optimizer) and meta.json, as a full checkpoint does, and a `sharded/` folder of
torch.distributed.checkpoint files in place of model.safetensors; the weights and the optimizer
state are in there. Nothing gathers the model on one rank to write it, so a model that only fits
sharded can still be saved. All ranks must see the same filesystem.

Readers: onebit.train.checkpoint.load_checkpoint reads either kind (so export, ONNX export,
`onebit sample`, a teacher and resuming on any number of processes, with or without FSDP, all
accept both); torch.distributed.checkpoint re-slices the shards for the reader.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from onebit.train import distributed
from onebit.train.checkpoint import (LATEST, Checkpoint, CheckpointError, checkpoint_meta, commit_version,
                                     new_version, read_checkpoint_parts, write_checkpoint_files)
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
    try:
        return (version_dir(path) / SHARDS_DIR / ".metadata").is_file()
    except OSError:  # not a folder, unreadable: the full-checkpoint loader names what is wrong
        return False


# ----------------------------------------------------------------------------------------------
# Writing (every rank)


def save_sharded(trainer: "Trainer", meta: dict) -> None:
    """Every rank writes its shard of the weights and optimizer state; rank 0 writes the rest and commits."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    world, out_dir, cfg = trainer.world, Path(trainer.out_dir), trainer.model.cfg
    meta_text = tmp = name = None
    if world.is_main:
        meta_text = checkpoint_meta(cfg, meta)
        tmp, name = new_version(out_dir, meta.get("step"))
    tmp, name = distributed.broadcast_object(world, (tmp, name))
    state = {"model": get_model_state_dict(trainer.model),
             "optim": get_optimizer_state_dict(trainer.model, trainer.optimizer)}
    dcp.save(state, checkpoint_id=Path(tmp) / SHARDS_DIR)  # returns once every rank's shard is written
    train_state = trainer.state_dict(with_optimizer=False)
    if world.is_main:
        write_checkpoint_files(tmp, cfg, trainer.tokenizer, meta_text, train_state)
        commit_version(out_dir, tmp, name)


# ----------------------------------------------------------------------------------------------
# Reading (any number of processes, or none)


def load_sharded_checkpoint(path: Path, device: str = "cpu") -> Checkpoint:
    """A sharded checkpoint put back together in this process (load_checkpoint calls it)."""
    folder, config, meta, tokenizer = read_checkpoint_parts(path, weights_file=False)
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
    import torch.distributed.checkpoint as dcp  # 0.8 s of imports that a full checkpoint never needs
    try:
        with warnings.catch_warnings():  # reading in one process is the intent, not a mistake to warn of
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=folder / SHARDS_DIR, no_dist=no_dist)
    except (dcp.CheckpointException, RuntimeError, ValueError, OSError) as e:
        raise CheckpointError(f"{folder / SHARDS_DIR}: unreadable sharded checkpoint "
                              f"({distributed.first_line(e)[:300]})") from None
