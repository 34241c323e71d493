"""onebit-train: train a ternary / binary / full-precision model and checkpoint it.

The loop is deterministic on CPU for a given seed: batches come from one torch.Generator, the
schedules are pure functions of the step (onebit/schedule.py) and every piece of state that
changes from step to step goes into train_state.pt, so `--resume` continues bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import click
import torch
from tqdm import tqdm

import onebit
from onebit.config import QUANT_KINDS, ModelConfig, parse_precision
from onebit.errors import cli_errors
from onebit.progress import progress_bar
from onebit.tokenizer import Tokenizer, make_tokenizer
from onebit.train.checkpoint import load_checkpoint, load_train_state, save_checkpoint
from onebit.train import distributed
from onebit.train.data import TokenData, default_cache_dir, load_token_data, resolve_corpus
from onebit.train.distributed import DistributedError, World
from onebit.train.flops import device_peak_tflops, mfu
from onebit.train.metrics import MetricsLog, perplexity
from onebit.train.model import Transformer
from onebit.train.parallel import Parallel, TrainLoss, prepare_blocks
from onebit.train.presets import DEFAULT_PRESET, PRESETS, TrainConfig, TrainConfigError, preset_config
from onebit.train.schedule import anneal_alpha, learning_rate, weight_decay

EVAL_SEED = 0x5EED  # the fixed validation batches: the same windows at every evaluation
TRAIN_CONFIG_KEY = "train_config"


_WORLD = World()  # this process' rank: only rank 0 logs


def log(message: str) -> None:
    if _WORLD.is_main:
        tqdm.write(message, file=sys.stderr)


def resolve_device(name: str, world: World = World()) -> torch.device:
    """cpu, or cuda (one GPU per process: the launcher's LOCAL_RANK picks it)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainConfigError("--device cuda: no CUDA device is available")
    if name == "cuda" and world.size > 1:
        return torch.device("cuda", world.local_rank)
    return torch.device(name)


def param_groups(model: Transformer, cfg: TrainConfig) -> list[dict]:
    """Decay matrices only: norms (and embeddings unless asked) are excluded from weight decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        is_embedding = name.startswith(("embed.", "pos_embed."))
        if p.ndim < 2 or (is_embedding and not cfg.decay_embeddings):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": cfg.weight_decay, "decay": True},
            {"params": no_decay, "weight_decay": 0.0, "decay": False}]


def format_stats(stats: dict) -> str:
    return (f"params {stats['total_params']:,} total, {stats['quantized_params']:,} quantized; "
            f"{stats['bits_per_param']:.2f} effective bits/param, "
            f"{stats['compression_vs_f32']:.1f}x smaller than f32 "
            "(embedding, norms and head stay f32)")


@dataclass
class Progress:
    """What changes from step to step outside the model and optimizer."""
    step: int = 0
    elapsed_s: float = 0.0
    loss_sum: float = 0.0  # train loss accumulated since the last evaluation
    loss_count: int = 0
    val_loss: float = float("nan")


class Trainer:
    def __init__(self, cfg: TrainConfig, model: Transformer, tokenizer: Tokenizer, data: TokenData,
                 out_dir: Path, device: torch.device, world: World = World(),
                 teacher: Transformer | None = None):
        self.cfg, self.model, self.tokenizer, self.data = cfg, model, tokenizer, data
        self.out_dir, self.device, self.world, self.teacher = out_dir, device, world, teacher
        self.seq_len = model.cfg.max_seq_len
        if cfg.batch_size % world.size:
            raise DistributedError(f"--batch-size {cfg.batch_size} does not divide evenly among {world.size} "
                                   "processes (it is the global batch)")
        self.rows = distributed.rank_slice(cfg.batch_size, world) if world.size > 1 else None
        prepare_blocks(model, cfg.activation_checkpointing, cfg.compile)
        loss = TrainLoss(model, cfg.label_smoothing, cfg.kd_weight, cfg.kd_temperature)
        # wrapped (or sharded) before the optimizer sees the parameters: FSDP replaces them
        self.parallel = Parallel(model, loss, world, cfg.fsdp, device)
        # fused AdamW on CUDA only: on CPU the default (for-each) kernel keeps today's exact numbers
        fused = {"fused": True} if device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                           eps=1e-8, **fused)
        self.peak_tflops = cfg.peak_tflops or (device_peak_tflops(torch.cuda.get_device_name(device))
                                               if device.type == "cuda" else None)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.progress = Progress()
        self.autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
        if cfg.quant != "none":
            model.set_grad_scale(cfg.grad_scale)

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self, with_optimizer: bool = True) -> dict:
        """Everything but the weights; a sharded checkpoint keeps the optimizer state in its shards."""
        return {
            "step": self.progress.step,
            "progress": vars(self.progress).copy(),
            **({"optimizer": self.parallel.full_optimizer_state(self.optimizer)} if with_optimizer else {}),
            "scheduler": {"kind": self.cfg.schedule, "step": self.progress.step},  # schedules are f(step)
            "data_generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            TRAIN_CONFIG_KEY: self.cfg.to_dict(),
        }

    def load_state_dict(self, state: dict, with_optimizer: bool = True) -> None:
        try:
            if with_optimizer:
                self.parallel.load_optimizer_state(self.optimizer, state["optimizer"])
            self.gen.set_state(state["data_generator"])
            torch.set_rng_state(state["torch_rng"])
            if state.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            self.progress = Progress(**state["progress"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise TrainConfigError(f"train_state.pt does not fit this run ({type(e).__name__}: {e})") from None

    def save(self) -> None:
        """Rank 0 writes the checkpoint; under FSDP every rank first takes part in gathering it."""
        meta = {"step": self.progress.step, "val_loss": self.progress.val_loss,
                "onebit_version": onebit.__version__, "quant": self.cfg.quant,
                TRAIN_CONFIG_KEY: self.cfg.to_dict()}
        if self.parallel.mode == "single":
            save_checkpoint(self.out_dir, self.model, self.tokenizer, meta, self.state_dict())
            return
        if self.cfg.sharded_checkpoint:
            from onebit.train.dist_checkpoint import save_sharded

            save_sharded(self, meta)
        else:
            weights, state = self.parallel.full_model_state(), self.state_dict()
            if self.world.is_main:
                save_checkpoint(self.out_dir, full_model(self.model.cfg, weights), self.tokenizer, meta, state)
        distributed.barrier(self.world)  # nobody runs ahead into a checkpoint that is still being written

    # -- steps ---------------------------------------------------------------------------------

    def _batch(self, split: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data.batch(split, self.cfg.batch_size, self.seq_len, gen, rows=self.rows)
        return x.to(self.device), y.to(self.device)

    def _teacher_logits(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.teacher is None:
            return None
        with torch.no_grad(), torch.autocast(**self.autocast):
            return self.teacher(x)[0]

    def train_step(self) -> float:
        cfg, step = self.cfg, self.progress.step
        lr, wd = learning_rate(cfg, step), weight_decay(cfg, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            group["weight_decay"] = wd if group["decay"] else 0.0
        self.model.set_anneal(anneal_alpha(cfg, step))
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(cfg.grad_accum):
            x, y = self._batch("train", self.gen)
            teacher_logits = self._teacher_logits(x)
            # accumulation: one gradient reduction per step, on the last micro-batch
            with self.parallel.sync(micro == cfg.grad_accum - 1):
                with torch.autocast(**self.autocast):
                    loss, ce = self.parallel.module(x, y, teacher_logits)
                (loss / cfg.grad_accum).backward()
            total += ce.item() / cfg.grad_accum
        total = distributed.mean_across(self.world, [total])[0]  # every rank logs and checks the same loss
        if not math.isfinite(total):
            raise TrainConfigError(f"the loss diverged at step {step} (lr {lr:g}); try a lower --lr")
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        if cfg.latent_clamp > 0 and cfg.quant != "none":
            for m in self.model.bitlinears():
                m.clamp_latent_(cfg.latent_clamp)
        self.progress.step += 1
        self.progress.loss_sum += total
        self.progress.loss_count += 1
        return total

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over a fixed set of validation batches, with the deployed (eval) quantizer."""
        self.model.eval()
        gen = torch.Generator().manual_seed(EVAL_SEED)
        losses = []
        for _ in range(self.cfg.eval_batches):
            x, y = self._batch("val", gen)
            # no autocast: the eval BitLinear's integer products are exact only in fp32
            losses.append(self.model.loss(x, y).item())
        self.model.train()
        losses = distributed.mean_across(self.world, losses)  # each rank saw its rows of every batch
        return sum(losses) / len(losses)

    # -- the loop ------------------------------------------------------------------------------

    def run(self, metrics: MetricsLog | None, show_progress: bool = True, stop_after: int | None = None) -> Progress:
        """Train to max_steps, or checkpoint and stop at step stop_after (as if interrupted there).

        metrics is None on every rank but 0.
        """
        cfg, p = self.cfg, self.progress
        tokens_per_step = cfg.batch_size * cfg.grad_accum * self.seq_len
        bar = progress_bar(total=cfg.max_steps, initial=p.step, desc="train", unit="step",
                           disable=not (show_progress and self.world.is_main), dynamic_ncols=True)
        window_start, window_steps = time.perf_counter(), 0
        while p.step < cfg.max_steps:
            t0 = time.perf_counter()
            loss = self.train_step()
            p.elapsed_s += time.perf_counter() - t0
            window_steps += 1
            tokens_per_s = tokens_per_step * window_steps / max(time.perf_counter() - window_start, 1e-9)
            # the postfix first, without a redraw: update() then redraws at most every mininterval
            # (one line per 30 s in a log file; onebit/progress.py)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{learning_rate(cfg, p.step - 1):.2e}",
                            tok_s=f"{tokens_per_s:,.0f}", refresh=False)
            bar.update(1)
            last = p.step == cfg.max_steps
            if p.step % cfg.eval_interval == 0 or last:
                p.val_loss = self.evaluate()
                if metrics is not None:
                    metrics.append({"step": p.step, "train_loss": p.loss_sum / max(p.loss_count, 1),
                                    "val_loss": p.val_loss, "val_ppl": perplexity(p.val_loss),
                                    "lr": learning_rate(cfg, p.step - 1), "tokens_per_s": tokens_per_s,
                                    "elapsed_s": p.elapsed_s})
                speed = f"{tokens_per_s:,.0f} tok/s"
                if self.peak_tflops:
                    speed += f", MFU {100 * mfu(tokens_per_s, self.model.cfg, self.peak_tflops, self.world.size):.1f}%"
                log(f"step {p.step}: train loss {p.loss_sum / max(p.loss_count, 1):.4f}, "
                    f"val loss {p.val_loss:.4f}, val ppl {perplexity(p.val_loss):.2f}; {speed}")
                p.loss_sum, p.loss_count = 0.0, 0
                window_start, window_steps = time.perf_counter(), 0
            stop = stop_after is not None and p.step >= stop_after
            if p.step % cfg.ckpt_interval == 0 or last or stop:
                self.save()
            if stop:
                break
        bar.close()
        return p


# ----------------------------------------------------------------------------------------------
# Building a run


def full_model(cfg: ModelConfig, weights: dict[str, torch.Tensor]) -> Transformer:
    """A plain CPU Transformer holding gathered weights (what rank 0 saves under FSDP)."""
    model = Transformer(cfg)
    model.load_state_dict(weights)
    return model


def _load_data(cfg: TrainConfig, tokenizer: Tokenizer, world: World) -> TokenData:
    """Tokenize once: the first process on each machine fills the cache, the others then read it."""
    def load() -> TokenData:
        return load_token_data(cfg.data, tokenizer, default_cache_dir(), cfg.val_fraction, cfg.val_data,
                               cfg.data_workers)

    data = load() if world.local_rank == 0 else None
    distributed.barrier(world)
    return data if data is not None else load()


def _tokenizer(cfg: TrainConfig, world: World, expect_vocab: int | None) -> Tokenizer:
    """Rank 0 builds (or trains) the tokenizer; every other rank receives the very same one."""
    text = None
    if world.is_main:
        tokenizer = make_tokenizer(cfg.tokenizer, resolve_corpus(cfg.data), cfg.vocab_size)
        if expect_vocab is not None and tokenizer.vocab_size != expect_vocab:
            raise TrainConfigError(f"--vocab-size {expect_vocab} does not match the tokenizer's "
                                   f"{tokenizer.vocab_size} tokens ({cfg.tokenizer})")
        text = tokenizer.to_str()
    text = distributed.broadcast_object(world, text)
    if world.is_main:
        return tokenizer
    from tokenizers import Tokenizer as HFTokenizer

    return Tokenizer(HFTokenizer.from_str(text))


def new_run(cfg: TrainConfig, out_dir: Path, expect_vocab: int | None = None, world: World = World()) -> Trainer:
    device = resolve_device(cfg.device, world)
    if cfg.init_from:
        return init_from_run(cfg, out_dir, device, world)
    tokenizer = _tokenizer(cfg, world, expect_vocab)
    data = _load_data(cfg, tokenizer, world)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = Transformer(cfg.model_config(tokenizer.vocab_size)).to(device)
    return Trainer(cfg, model, tokenizer, data, out_dir, device, world, _teacher(cfg, tokenizer, device))


def init_from_run(cfg: TrainConfig, out_dir: Path, device: torch.device, world: World = World()) -> Trainer:
    """A new run (optimizer and schedule from step 0) that starts from a checkpoint's weights.

    The shape, tokenizer and quant are the checkpoint's; the precision map is this run's when it
    names one (--precision), else the checkpoint's. The map changes no parameter shape, so every
    weight loads as it was and only the quantizers change (docs/SEARCH.md).
    """
    src = load_checkpoint(Path(cfg.init_from))
    shape = src.config.to_dict()
    precision = cfg.model.get("precision", src.config.precision)
    cfg.quant = shape.pop("quant")
    shape.pop("vocab_size")
    shape.pop("precision", None)
    cfg.model = {**shape, **({"precision": precision} if precision else {})}
    model = Transformer(cfg.model_config(src.tokenizer.vocab_size))
    model.load_state_dict(src.model.state_dict())
    _keep_function(src.model, model)
    data = _load_data(cfg, src.tokenizer, world)
    return Trainer(cfg, model.to(device), src.tokenizer, data, out_dir, device, world,
                   _teacher(cfg, src.tokenizer, device))


@torch.no_grad()
def _keep_function(src: Transformer, model: Transformer) -> None:
    """A ternary or binary layer that becomes int4/int8 starts from its dequantized weights Q * s.

    Its latent weights were fitted to the old quantizer (weights past 1.5 s all meant +-s); the
    int grids hold every Q * s exactly (s is a row's absmax, a full code), so the fine-tune starts
    from the very function the checkpoint computed instead of from a different network.
    """
    from onebit.train import quant

    old = {n: m for n, m in src.named_modules() if hasattr(m, "anneal_alpha")}
    for name, m in model.named_modules():
        if name in old and old[name].quant in ("ternary", "binary") and m.quant in quant.INT_LEVELS:
            codes, scale = quant.quantize_weight(old[name].weight, old[name].quant)
            m.weight.copy_(codes * scale)


def resume_config(resume_dir: Path, overrides: dict) -> tuple[TrainConfig, dict]:
    """The checkpointed run's configuration and state; only settings that don't change the past may be overridden."""
    state = load_train_state(resume_dir)
    if state is None:
        raise TrainConfigError(f"{resume_dir}: no train_state.pt to resume from")
    if TRAIN_CONFIG_KEY not in state:
        raise TrainConfigError(f"{resume_dir}/train_state.pt: no training configuration inside")
    return TrainConfig.from_dict({**state[TRAIN_CONFIG_KEY], **overrides}), state


def resume_run(resume_dir: Path, out_dir: Path, cfg: TrainConfig, state: dict, world: World = World()) -> Trainer:
    """Rebuild a run from a checkpoint, on this world size (which may differ from the saving run's)."""
    from onebit.train import dist_checkpoint

    device = resolve_device(cfg.device, world)
    sharded = dist_checkpoint.is_sharded(resume_dir)
    ckpt = load_checkpoint(resume_dir, device=str(device))
    data = _load_data(cfg, ckpt.tokenizer, world)
    trainer = Trainer(cfg, ckpt.model, ckpt.tokenizer, data, out_dir, device, world,
                      _teacher(cfg, ckpt.tokenizer, device))
    if sharded:
        dist_checkpoint.load_sharded_optimizer(resume_dir, trainer)
    trainer.load_state_dict(state, with_optimizer=not sharded)
    return trainer


def _teacher(cfg: TrainConfig, tokenizer: Tokenizer, device: torch.device) -> Transformer | None:
    if not cfg.teacher:
        return None
    from onebit.train.distill import load_teacher

    return load_teacher(cfg.teacher, tokenizer, device, cfg.model_config(tokenizer.vocab_size).max_seq_len)


def train(cfg: TrainConfig, out_dir: Path, resume: Path | None = None, resume_overrides: dict | None = None,
          show_progress: bool = True, expect_vocab: int | None = None, stop_after: int | None = None) -> Progress:
    """Train (or continue) a run into out_dir; returns the final progress (step, val loss).

    Launched by torchrun, this is one rank of a data-parallel run (docs/TRAINING.md); otherwise
    it is the whole run in this process.
    """
    global _WORLD
    state = None
    if resume is not None:
        cfg, state = resume_config(resume, resume_overrides or {})
    cfg.validate()
    world = distributed.start(cfg.device, cfg.dist_timeout)
    _WORLD = world
    try:
        with distributed.peer_failures(world):
            return _train(cfg, world, out_dir, resume, state, show_progress, expect_vocab, stop_after)
    finally:
        distributed.stop(world)
        _WORLD = World()


def _make_run_dir(out_dir: Path) -> list[Path]:
    """mkdir -p out_dir, early, so that an unwritable --out fails before the data is read; the
    folders it created, deepest first."""
    created, p = [], out_dir
    while not p.exists() and p != p.parent:
        created.append(p)
        p = p.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    return created


def _setup(cfg: TrainConfig, world: World, out_dir: Path, resume: Path | None, state: dict | None,
           expect_vocab: int | None) -> Trainer:
    """The run's trainer, or no trace of it: a failure before training starts (a missing corpus, a
    vocabulary mismatch, Ctrl-C while tokenizing) removes the --out folders this run created."""
    created = _make_run_dir(out_dir) if world.is_main else []
    try:
        if resume is not None:
            trainer = resume_run(resume, out_dir, cfg, state or {}, world)
            log(f"resuming {resume} at step {trainer.progress.step} of {trainer.cfg.max_steps}")
            return trainer
        return new_run(cfg, out_dir, expect_vocab, world)
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()  # only if still empty: never anything that another process put there
            except OSError:
                break
        raise


def _train(cfg: TrainConfig, world: World, out_dir: Path, resume: Path | None, state: dict | None,
           show_progress: bool, expect_vocab: int | None, stop_after: int | None) -> Progress:
    trainer = _setup(cfg, world, out_dir, resume, state, expect_vocab)
    log(format_stats(trainer.model.param_stats()))
    log(f"tokenizer {trainer.tokenizer.kind}, vocab {trainer.tokenizer.vocab_size}; "
        f"{trainer.data.train.shape[0]:,} train / {trainer.data.val.shape[0]:,} val tokens")
    if world.size > 1:
        c = trainer.cfg
        log(f"{world.size} processes ({trainer.parallel.mode}): global batch {c.batch_size} x {c.grad_accum} "
            f"micro-batch(es) per step; {c.batch_size // world.size} sequences per rank per micro-batch")
    metrics = None
    if world.is_main:
        start = trainer.progress.step if resume is not None else None
        source = resume / "metrics.csv" if resume is not None else None
        metrics = MetricsLog(out_dir / "metrics.csv", resume_step=start, source=source)
    return trainer.run(metrics, show_progress, stop_after)


# ----------------------------------------------------------------------------------------------
# CLI

# flags that a resumed run may change: they don't alter what has been trained so far
RESUMABLE = ("max_steps", "device", "eval_interval", "ckpt_interval", "fsdp", "sharded_checkpoint", "dist_timeout",
             "data_workers", "compile", "activation_checkpointing", "peak_tflops")


def preset_default(field_name: str, preset: str = DEFAULT_PRESET) -> str:
    """How --help shows a setting that the preset decides: its value per quant kind in `preset`."""
    values = {quant: getattr(preset_config(preset, quant), field_name) for quant in QUANT_KINDS}
    shown = {quant: "off" if v is None else v for quant, v in values.items()}
    if len(set(map(str, shown.values()))) == 1:
        return f"[default: the preset's; {preset}: {shown['ternary']}]"
    return f"[default: the preset's; {preset}: " + ", ".join(f"{q} {v}" for q, v in shown.items()) + "]"


def preset_option(flag: str, field_name: str, help_text: str, **kwargs) -> Callable:
    """A training flag whose default comes from the preset (None here means "not given")."""
    return click.option(flag, field_name, default=None, help=f"{help_text} {preset_default(field_name)}", **kwargs)


TRAIN_FLAGS = [
    preset_option("--data", "data",
                  "tinyshakespeare, a text file, a folder of .txt files or a quoted glob ('corpus/**/*.txt'); "
                  "folders and globs are tokenized once, in parallel, into shards that are streamed."),
    preset_option("--val-data", "val_data",
                  "Held-out validation corpus (file, folder or glob), left out of --data; replaces the val fraction."),
    preset_option("--data-workers", "data_workers",
                  "Processes that tokenize a folder/glob corpus into shards; 0 = one per CPU, at most 8.", type=int),
    preset_option("--tokenizer", "tokenizer", "char, bpe, or the path of a tokenizer.json."),
    preset_option("--vocab-size", "vocab_size", "BPE vocabulary size (char: the corpus' characters).", type=int),
    click.option("--quant", type=click.Choice(QUANT_KINDS), default=None,
                 help="Weights of every BitLinear: ternary, binary, or none (full precision). [default: ternary]"),
    preset_option("--max-steps", "max_steps", "Optimizer steps in all.", type=int),
    preset_option("--seed", "seed", "Seed of the weights, the batches and dropout.", type=int),
    preset_option("--device", "device", "Where to train (cuda has not been run in this project's tests).",
                  type=click.Choice(["cpu", "cuda"])),
    preset_option("--lr", "lr", "Peak learning rate.", type=float),
    preset_option("--min-lr-ratio", "min_lr_ratio", "Final learning rate as a fraction of --lr.", type=float),
    preset_option("--warmup-steps", "warmup_steps", "Linear warmup steps.", type=int),
    preset_option("--schedule", "schedule", "Learning-rate schedule after warmup.",
                  type=click.Choice(["cosine", "linear", "constant", "wsd"])),
    click.option("--two-stage/--no-two-stage", "two_stage", default=None,
                 help=f"BitNet b1.58 two-stage schedule: the LR peak drops and weight decay goes to 0 mid-run. "
                      f"{preset_default('two_stage')}"),
    preset_option("--weight-decay", "weight_decay", "AdamW weight decay of the matrices.", type=float),
    preset_option("--beta2", "beta2", "AdamW beta2.", type=float),
    preset_option("--batch-size", "batch_size",
                  "Sequences per micro-batch, across all processes (each of N torchrun processes takes 1/N).",
                  type=int),
    preset_option("--grad-accum", "grad_accum", "Micro-batches per optimizer step, each of --batch-size sequences.",
                  type=int),
    preset_option("--grad-clip", "grad_clip", "Clip the gradient norm to this; 0 = off.", type=float),
    preset_option("--label-smoothing", "label_smoothing", "Cross-entropy label smoothing.", type=float),
    click.option("--bf16/--no-bf16", "bf16", default=None,
                 help=f"bf16 autocast (tested on CPU; on CUDA not run in this project). {preset_default('bf16')}"),
    preset_option("--grad-scale", "grad_scale", "Multiplier on BitLinear's straight-through gradient.", type=float),
    preset_option("--anneal-frac", "anneal_frac",
                  "Anneal a soft quantizer into the hard one over this fraction of the run; 0 = hard throughout.",
                  type=float),
    preset_option("--latent-clamp", "latent_clamp", "Clamp latent weights to +-N*mean|W|; 0 = off.", type=float),
    preset_option("--eval-interval", "eval_interval", "Steps between validation evaluations.", type=int),
    preset_option("--eval-batches", "eval_batches", "Batches per validation evaluation.", type=int),
    preset_option("--ckpt-interval", "ckpt_interval", "Steps between checkpoints (one is also written at the end).",
                  type=int),
    click.option("--fsdp/--no-fsdp", "fsdp", default=None,
                 help="Under torchrun: shard parameters, gradients and optimizer state across the processes "
                      "(FSDP2) instead of replicating them (DDP); tested on CPU with gloo, not run on GPUs. "
                      f"{preset_default('fsdp')}"),
    click.option("--sharded-checkpoint/--full-checkpoint", "sharded_checkpoint", default=None,
                 help="With --fsdp: every process writes its shard (torch.distributed.checkpoint) instead of "
                      f"rank 0 gathering the full model; onebit export reads both. {preset_default('sharded_checkpoint')}"),
    preset_option("--dist-timeout", "dist_timeout",
                  "Seconds a process waits for the others before the run stops with an error.", type=float),
    click.option("--compile/--no-compile", "compile", default=None,
                 help="torch.compile every transformer block (not run in this project's tests). "
                      f"{preset_default('compile')}"),
    click.option("--activation-checkpointing/--no-activation-checkpointing", "activation_checkpointing",
                 default=None, help="Recompute each block's activations in the backward pass: less memory, "
                                    f"~1/3 more compute. {preset_default('activation_checkpointing')}"),
    preset_option("--peak-tflops", "peak_tflops",
                  "The device's bf16 peak in TFLOP/s for the logged MFU; 0 = look the CUDA GPU up (H100, A100, ...).",
                  type=float),
    preset_option("--teacher", "teacher",
                  "Distil from this onebit checkpoint (same tokenizer), e.g. a full-precision run."),
    preset_option("--kd-weight", "kd_weight", "Distillation: weight of the KL(teacher || student) term.", type=float),
    preset_option("--kd-temperature", "kd_temperature", "Distillation: softmax temperature of both models.",
                  type=float),
]


def train_flags(fn: Callable) -> Callable:
    for option in reversed(TRAIN_FLAGS):
        fn = option(fn)
    return fn


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=DEFAULT_PRESET, show_default=True,
              help="Named model shape and training recipe; every [default: the preset's] below comes from it. "
                   "base (~124M, BPE 32k, context 1024, bf16 on CUDA) is for GPUs and has not been run.")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Run directory (checkpoint, metrics.csv).  [default: --resume's directory; one of the two is required]")
@click.option("--resume", "resume", type=click.Path(path_type=Path), default=None,
              help="Continue the run checkpointed in this directory.  [default: a new run]")
@train_flags
@click.option("--precision", default=None, metavar="SPEC",
              help="Per-layer BitLinear precision: PATTERN=KIND pairs separated by commas (e.g. "
                   "'layers.0.*=int8,*.down_proj=binary'; the first match wins), a JSON object, or a JSON file "
                   "such as onebit search's precision.json; KIND is binary, ternary, int4 or int8 "
                   "(docs/SEARCH.md).  [default: none: every BitLinear is --quant]")
@click.option("--init-from", "init_from", type=click.Path(exists=True, file_okay=False), default=None,
              help="Start from this checkpoint's weights, shape and tokenizer with a fresh optimizer and "
                   "schedule (fine-tuning, e.g. with --precision).  [default: freshly initialised weights]")
@click.option("--set", "model_overrides", multiple=True, metavar="FIELD=VALUE",
              help="Model config override, e.g. --set ffn_dim=384 --set activation=silu (fields: docs/DESIGN.md).  [default: none]")
@click.option("--stop-after", type=int, default=None,
              help="Checkpoint and stop at this step; --resume continues exactly as if never stopped.  [default: off]")
@click.option("--print-config", is_flag=True, help="Print the resolved configuration as JSON and exit.")
@click.option("--plot", is_flag=True, help="Also write curves.png next to metrics.csv.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@cli_errors
def main(preset: str, resume: Path | None, out: Path | None, plot: bool, quiet: bool, stop_after: int | None,
         model_overrides: tuple[str, ...], print_config: bool, **flags) -> None:
    """Train a 1-bit / ternary transformer and checkpoint it into --out."""
    threads = os.environ.get("ONEBIT_THREADS", "")
    if threads:
        if not threads.isdigit() or int(threads) < 1:
            raise TrainConfigError(f"ONEBIT_THREADS must be a positive integer, got {threads!r}")
        torch.set_num_threads(int(threads))
    given = {k: v for k, v in flags.items() if v is not None}
    if print_config and resume is not None:
        raise TrainConfigError("--print-config shows a new run's configuration; a resumed run's is in its meta.json")
    if out is None and resume is None and not print_config:
        raise TrainConfigError("--out DIR is required (or --resume DIR)")
    out = out if out is not None else resume
    if resume is not None:
        fixed = sorted(set(given) - set(RESUMABLE) | ({"set"} if model_overrides else set()))
        if fixed:
            raise TrainConfigError(f"--{fixed[0].replace('_', '-')} cannot change on --resume "
                                   f"(only {', '.join('--' + k.replace('_', '-') for k in RESUMABLE)})")
        progress = train(TrainConfig(), out, resume=resume, resume_overrides=given, show_progress=not quiet,
                         stop_after=stop_after)
    else:
        cfg = resolve_config(preset, given, model_overrides)
        if print_config:
            click.echo(json.dumps(printable_config(cfg), indent=2))
            return
        # a vocabulary size next to a finished tokenizer is a claim about it: check it
        expect = given.get("vocab_size") if cfg.tokenizer not in ("char", "bpe") else None
        progress = train(cfg, out, show_progress=not quiet, expect_vocab=expect, stop_after=stop_after)
    log(f"done: step {progress.step}, val loss {progress.val_loss:.4f} -> {out}")
    if plot:
        from onebit.train.plot import plot_metrics
        log(f"wrote {plot_metrics(out)}")


def resolve_config(preset: str, given: dict, model_overrides: tuple[str, ...]) -> TrainConfig:
    """The preset's settings for the quant kind, then the flags given, then --set on the model."""
    cfg = preset_config(preset, given.pop("quant", "ternary"))
    precision = given.pop("precision", None)
    for key, value in given.items():
        setattr(cfg, key, value)
    cfg.model = {**cfg.model, **parse_overrides(model_overrides)}
    if precision is not None:
        cfg.model["precision"] = parse_precision(precision)
    cfg.validate()
    # the model settings too, before the corpus is read (the vocabulary size is known only then;
    # a stand-in here, the real one when the model is built)
    cfg.model_config(cfg.vocab_size)
    return cfg


def printable_config(cfg: TrainConfig) -> dict:
    """The training settings with the model's every field filled in (vocab_size: from the tokenizer)."""
    out = cfg.to_dict()
    model = {**ModelConfig().to_dict(), **cfg.model, "quant": cfg.quant}
    model["vocab_size"] = "from the tokenizer" if cfg.tokenizer == "char" else cfg.vocab_size
    out["model"] = model
    return out


def parse_overrides(items: tuple[str, ...]) -> dict:
    """FIELD=VALUE pairs with JSON-ish values (numbers, true/false, strings)."""
    result = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise TrainConfigError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            result[key] = json.loads(raw)
        except json.JSONDecodeError:
            result[key] = raw
    return result


if __name__ == "__main__":
    main()
