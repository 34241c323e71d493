"""Data parallelism for the trainer: DDP (every rank holds the model) or FSDP2 (each holds a shard).

The trainer calls one TrainLoss module for the training forward. DDP must see that forward (its
hooks decide when gradients are all-reduced), so the module DDP wraps is the loss, not the bare
Transformer; FSDP2 shards the Transformer in place, block by block and then the root. In a world
of one nothing is wrapped and the forward is exactly Transformer.loss.

Saved state is always in the single-process layout (full tensors; optimizer state keyed by the
parameter's position), whatever the mode, so a run moves freely between 1 process, DDP and FSDP.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from onebit.train.distributed import World
from onebit.train.model import Transformer


class TrainLoss(nn.Module):
    """Cross-entropy of the model (plus, with teacher logits, the distillation term); returns (loss, ce)."""

    def __init__(self, model: Transformer, label_smoothing: float = 0.0, kd_weight: float = 0.0,
                 kd_temperature: float = 1.0):
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing
        self.kd_weight, self.kd_temperature = kd_weight, kd_temperature

    def forward(self, x: torch.Tensor, y: torch.Tensor,
                teacher_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if teacher_logits is None:
            loss = self.model.loss(x, y, label_smoothing=self.label_smoothing)
            return loss, loss
        from onebit.train.distill import kd_loss

        logits, _ = self.model(x)
        ce = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1),
                             label_smoothing=self.label_smoothing)
        kd = kd_loss(logits, teacher_logits, self.kd_temperature)
        return ce + self.kd_weight * kd, ce


class Parallel:
    """The training forward of one rank, and the gradient-sync switch for accumulation."""

    def __init__(self, model: Transformer, loss: TrainLoss, world: World, fsdp: bool, device: torch.device):
        self.model, self.world, self.fsdp = model, world, fsdp and world.active
        self.mode = "single" if not world.active else ("fsdp" if self.fsdp else "ddp")
        self.module: nn.Module = loss
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index if device.index is not None else torch.cuda.current_device()] \
                if device.type == "cuda" else None
            self.module = DDP(loss, device_ids=ids)
        elif self.mode == "fsdp":
            shard_model(model, device)

    @contextmanager
    def sync(self, sync_gradients: bool) -> Iterator[None]:
        """Around one micro-batch's forward and backward: reduce gradients only when sync_gradients."""
        if self.mode == "ddp" and not sync_gradients:
            with self.module.no_sync():  # type: ignore[operator]
                yield
        elif self.mode == "fsdp":
            self.model.set_requires_gradient_sync(sync_gradients)  # type: ignore[attr-defined]
            yield
        else:
            with nullcontext():
                yield

    # -- state in the single-process layout -------------------------------------------------------

    def full_model_state(self) -> dict[str, torch.Tensor]:
        """Full CPU tensors on rank 0 (other ranks: {}); every rank must call it under FSDP."""
        if self.mode != "fsdp":
            return {k: v.detach().to("cpu") for k, v in self.model.state_dict().items()}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def full_optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict:
        """optimizer.state_dict() as one process would have it (rank 0; others may get {})."""
        if self.mode != "fsdp":
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        named = get_optimizer_state_dict(self.model, optimizer,
                                         options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.world.is_main:
            return {}
        return _by_position(named)

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        if self.mode != "fsdp":
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        named = _by_name(state, optimizer, self.model)
        set_optimizer_state_dict(self.model, optimizer, named, options=StateDictOptions(full_state_dict=True))


def prepare_blocks(model: Transformer, activation_checkpointing: bool, compile_blocks: bool) -> None:
    """Per-block speed options, applied before wrapping; parameter names stay as they are."""
    for layer in model.layers:
        if activation_checkpointing:
            _checkpoint_activations(layer)
        if compile_blocks:
            layer.compile()


def _checkpoint_activations(block: nn.Module) -> None:
    """Keep only the block's input; its activations are recomputed in the backward pass."""
    from torch.utils.checkpoint import checkpoint

    forward = block.forward

    def checkpointed(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    block.forward = checkpointed  # type: ignore[method-assign]


def shard_model(model: Transformer, device: torch.device) -> None:
    """FSDP2 over every block, then the root (embedding, final norm, head)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    import torch.distributed as dist

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for layer in model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


def _by_position(named: dict) -> dict:
    """A name-keyed optimizer state (torch.distributed.checkpoint) as optimizer.state_dict() keys it."""
    ids: dict[str, int] = {}
    groups = []
    for group in named["param_groups"]:
        groups.append({**group, "params": [ids.setdefault(name, len(ids)) for name in group["params"]]})
    return {"state": {ids[name]: value for name, value in named["state"].items()}, "param_groups": groups}


def _by_name(state: dict, optimizer: torch.optim.Optimizer, model: nn.Module) -> dict:
    names = {id(p): name for name, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    groups = []
    for group in state["param_groups"]:
        groups.append({**group, "params": [order[i] for i in group["params"]]})
    return {"state": {order[int(i)]: value for i, value in state["state"].items()}, "param_groups": groups}
