"""torch.distributed for the trainer: who am I, the process group, and the collectives it needs.

torchrun (or any launcher that sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT)
starts one process per device. With no such environment, or WORLD_SIZE=1, nothing here touches
torch.distributed and the trainer runs exactly as a plain single process.

A collective that fails (a peer died, or stopped answering for longer than the timeout) becomes
DistributedError, a one-line error, so that the surviving ranks exit instead of hanging.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist

from onebit.errors import OnebitError

DEFAULT_TIMEOUT_S = 600


class DistributedError(OnebitError):
    """A process group that cannot start, or a peer that failed during training."""


@dataclass(frozen=True)
class World:
    """This process' place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when there is a process group to talk to (more than one process)."""
        return self.size > 1 and dist.is_available() and dist.is_initialized()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise DistributedError(f"{name} must be a non-negative integer, got {raw!r}")
    return int(raw)


def world_from_env() -> World:
    """The launcher's environment, or a world of one."""
    size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if size < 1 or rank >= size:
        raise DistributedError(f"RANK {rank} does not fit WORLD_SIZE {size}")
    return World(rank=rank, size=size, local_rank=local_rank)


def start(device_type: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> World:
    """Join the process group when launched as one of several processes; NCCL on CUDA, gloo on CPU."""
    world = world_from_env()
    if world.size == 1:
        return world
    if dist.is_initialized():
        return world
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise DistributedError(f"WORLD_SIZE is {world.size} but {name} is not set (launch with torchrun)")
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        # NCCL collectives are asynchronous: without this a dead peer is noticed only at the timeout
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        torch.cuda.set_device(world.local_rank)
    try:
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s),
                                rank=world.rank, world_size=world.size)
    except (RuntimeError, ValueError, dist.DistError) as e:
        raise DistributedError(f"rank {world.rank}: could not join the {world.size}-process group "
                               f"({first_line(e)})") from None
    return world


def stop(world: World) -> None:
    if world.active:
        dist.destroy_process_group()


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@contextmanager
def peer_failures(world: World) -> Iterator[None]:
    """Turn an error raised by a collective into one line naming this rank."""
    try:
        yield
    except OnebitError:
        raise
    except (RuntimeError, dist.DistError) as e:
        # only communication failures; a RuntimeError of this rank's own is a bug to show whole
        if not world.active or not is_peer_failure(e):
            raise
        raise DistributedError(f"rank {world.rank} of {world.size}: another training process failed or stopped "
                               f"answering; stopping ({first_line(e)[:300]})") from None


# gloo reports a dead peer as a plain RuntimeError; these words tell it from other RuntimeErrors
_PEER_WORDS = ("gloo", "nccl", "connection", "timed out", "timeout", "socket", "broken pipe", "peer")


def is_peer_failure(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, dist.DistError) or any(word in text for word in _PEER_WORDS)


def mean_across(world: World, values: list[float]) -> list[float]:
    """Each value averaged over the ranks (unchanged in a world of one)."""
    if not world.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / world.size).tolist()


def broadcast_object(world: World, obj: Any) -> Any:
    """Rank 0's obj on every rank."""
    if not world.active:
        return obj
    box = [obj if world.is_main else None]
    dist.broadcast_object_list(box, src=0, device=_collective_device())
    return box[0]


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def rank_slice(n: int, world: World) -> slice:
    """This rank's share of n items (n divisible by the world size)."""
    per = n // world.size
    return slice(world.rank * per, (world.rank + 1) * per)
