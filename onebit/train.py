"""onebit-train: train a ternary / binary / full-precision model and checkpoint it.

The loop is deterministic on CPU for a given seed: batches come from one torch.Generator, the
schedules are pure functions of the step (onebit/schedule.py) and every piece of state that
changes from step to step goes into train_state.pt, so `--resume` continues bit for bit.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import torch
from tqdm import tqdm

import onebit
from onebit.checkpoint import load_checkpoint, load_train_state, save_checkpoint
from onebit.data import TokenData, default_cache_dir, prepare_tokens, resolve_corpus
from onebit.errors import cli_errors
from onebit.metrics import MetricsLog, perplexity
from onebit.model import Transformer
from onebit.presets import PRESETS, TrainConfig, TrainConfigError, preset_config
from onebit.schedule import anneal_alpha, learning_rate, weight_decay
from onebit.tokenizer import Tokenizer, make_tokenizer

EVAL_SEED = 0x5EED  # the fixed validation batches: the same windows at every evaluation
TRAIN_CONFIG_KEY = "train_config"


def log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainConfigError("--device cuda: no CUDA device is available")
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
                 out_dir: Path, device: torch.device):
        self.cfg, self.model, self.tokenizer, self.data = cfg, model, tokenizer, data
        self.out_dir, self.device = out_dir, device
        self.seq_len = model.cfg.max_seq_len
        self.optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                           eps=1e-8)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.progress = Progress()
        self.autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
        if cfg.quant != "none":
            model.set_grad_scale(cfg.grad_scale)

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "step": self.progress.step,
            "progress": vars(self.progress).copy(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"kind": self.cfg.schedule, "step": self.progress.step},  # schedules are f(step)
            "data_generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            TRAIN_CONFIG_KEY: self.cfg.to_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.gen.set_state(state["data_generator"])
            torch.set_rng_state(state["torch_rng"])
            if state.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            self.progress = Progress(**state["progress"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise TrainConfigError(f"train_state.pt does not fit this run ({type(e).__name__}: {e})") from None

    def save(self) -> None:
        meta = {"step": self.progress.step, "val_loss": self.progress.val_loss,
                "onebit_version": onebit.__version__, "quant": self.cfg.quant,
                TRAIN_CONFIG_KEY: self.cfg.to_dict()}
        save_checkpoint(self.out_dir, self.model, self.tokenizer, meta, self.state_dict())

    # -- steps ---------------------------------------------------------------------------------

    def _batch(self, split: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data.batch(split, self.cfg.batch_size, self.seq_len, gen)
        return x.to(self.device), y.to(self.device)

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
        for _ in range(cfg.grad_accum):
            x, y = self._batch("train", self.gen)
            with torch.autocast(**self.autocast):
                loss = self.model.loss(x, y, label_smoothing=cfg.label_smoothing)
            (loss / cfg.grad_accum).backward()
            total += loss.item() / cfg.grad_accum
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
        return sum(losses) / len(losses)

    # -- the loop ------------------------------------------------------------------------------

    def run(self, metrics: MetricsLog, show_progress: bool = True, stop_after: int | None = None) -> Progress:
        """Train to max_steps, or checkpoint and stop at step stop_after (as if interrupted there)."""
        cfg, p = self.cfg, self.progress
        tokens_per_step = cfg.batch_size * cfg.grad_accum * self.seq_len
        bar = tqdm(total=cfg.max_steps, initial=p.step, desc="train", unit="step", file=sys.stderr,
                   disable=not show_progress, dynamic_ncols=True)
        window_start, window_steps = time.perf_counter(), 0
        while p.step < cfg.max_steps:
            t0 = time.perf_counter()
            loss = self.train_step()
            p.elapsed_s += time.perf_counter() - t0
            window_steps += 1
            tokens_per_s = tokens_per_step * window_steps / max(time.perf_counter() - window_start, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{learning_rate(cfg, p.step - 1):.2e}",
                            tok_s=f"{tokens_per_s:,.0f}")
            last = p.step == cfg.max_steps
            if p.step % cfg.eval_interval == 0 or last:
                p.val_loss = self.evaluate()
                metrics.append({"step": p.step, "train_loss": p.loss_sum / max(p.loss_count, 1),
                                "val_loss": p.val_loss, "val_ppl": perplexity(p.val_loss),
                                "lr": learning_rate(cfg, p.step - 1), "tokens_per_s": tokens_per_s,
                                "elapsed_s": p.elapsed_s})
                log(f"step {p.step}: train loss {p.loss_sum / max(p.loss_count, 1):.4f}, "
                    f"val loss {p.val_loss:.4f}, val ppl {perplexity(p.val_loss):.2f}")
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


def _load_data(cfg: TrainConfig, tokenizer: Tokenizer) -> TokenData:
    corpus = resolve_corpus(cfg.data)
    return prepare_tokens(corpus, tokenizer, default_cache_dir(), cfg.val_fraction)


def new_run(cfg: TrainConfig, out_dir: Path, expect_vocab: int | None = None) -> Trainer:
    device = resolve_device(cfg.device)
    corpus = resolve_corpus(cfg.data)
    tokenizer = make_tokenizer(cfg.tokenizer, corpus, cfg.vocab_size)
    if expect_vocab is not None and tokenizer.vocab_size != expect_vocab:
        raise TrainConfigError(f"--vocab-size {expect_vocab} does not match the tokenizer's "
                               f"{tokenizer.vocab_size} tokens ({cfg.tokenizer})")
    data = prepare_tokens(corpus, tokenizer, default_cache_dir(), cfg.val_fraction)
    torch.manual_seed(cfg.seed)
    model = Transformer(cfg.model_config(tokenizer.vocab_size)).to(device)
    return Trainer(cfg, model, tokenizer, data, out_dir, device)


def resume_run(resume_dir: Path, out_dir: Path, overrides: dict) -> Trainer:
    """Rebuild a run from a checkpoint; only settings that don't change the past may be overridden."""
    state = load_train_state(resume_dir)
    if state is None:
        raise TrainConfigError(f"{resume_dir}: no train_state.pt to resume from")
    if TRAIN_CONFIG_KEY not in state:
        raise TrainConfigError(f"{resume_dir}/train_state.pt: no training configuration inside")
    cfg = TrainConfig.from_dict({**state[TRAIN_CONFIG_KEY], **overrides})
    device = resolve_device(cfg.device)
    ckpt = load_checkpoint(resume_dir, device=str(device))
    data = _load_data(cfg, ckpt.tokenizer)
    trainer = Trainer(cfg, ckpt.model, ckpt.tokenizer, data, out_dir, device)
    trainer.load_state_dict(state)
    return trainer


def train(cfg: TrainConfig, out_dir: Path, resume: Path | None = None, resume_overrides: dict | None = None,
          show_progress: bool = True, expect_vocab: int | None = None, stop_after: int | None = None) -> Progress:
    """Train (or continue) a run into out_dir; returns the final progress (step, val loss)."""
    cfg.validate()
    out_dir.mkdir(parents=True, exist_ok=True)
    if resume is not None:
        trainer = resume_run(resume, out_dir, resume_overrides or {})
        log(f"resuming {resume} at step {trainer.progress.step} of {trainer.cfg.max_steps}")
    else:
        trainer = new_run(cfg, out_dir, expect_vocab)
    log(format_stats(trainer.model.param_stats()))
    log(f"tokenizer {trainer.tokenizer.kind}, vocab {trainer.tokenizer.vocab_size}; "
        f"{trainer.data.train.shape[0]:,} train / {trainer.data.val.shape[0]:,} val tokens")
    start = trainer.progress.step if resume is not None else None
    source = resume / "metrics.csv" if resume is not None else None
    metrics = MetricsLog(out_dir / "metrics.csv", resume_step=start, source=source)
    return trainer.run(metrics, show_progress, stop_after)


# ----------------------------------------------------------------------------------------------
# CLI

# flags that a resumed run may change: they don't alter what has been trained so far
RESUMABLE = ("max_steps", "device", "eval_interval", "ckpt_interval")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="tiny", show_default=True)
@click.option("--data", default=None, help="tinyshakespeare, a text file or a folder of .txt files")
@click.option("--tokenizer", default=None, help="char, bpe or a tokenizer.json")
@click.option("--vocab-size", type=int, default=None, help="bpe vocabulary size")
@click.option("--quant", type=click.Choice(["ternary", "binary", "none"]), default=None,
              help="[default: ternary]")
@click.option("--max-steps", type=int, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None)
@click.option("--resume", "resume", type=click.Path(path_type=Path), default=None,
              help="continue the run checkpointed in this directory")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="run directory (checkpoint, metrics.csv); defaults to --resume's")
@click.option("--lr", type=float, default=None, help="peak learning rate")
@click.option("--min-lr-ratio", type=float, default=None)
@click.option("--warmup-steps", type=int, default=None)
@click.option("--schedule", type=click.Choice(["cosine", "linear", "constant", "wsd"]), default=None)
@click.option("--two-stage/--no-two-stage", default=None, help="BitNet b1.58 two-stage LR and weight decay")
@click.option("--weight-decay", type=float, default=None)
@click.option("--beta2", type=float, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--grad-accum", type=int, default=None)
@click.option("--grad-clip", type=float, default=None, help="0 = off")
@click.option("--label-smoothing", type=float, default=None)
@click.option("--bf16/--no-bf16", default=None, help="bf16 autocast")
@click.option("--grad-scale", type=float, default=None, help="BitLinear STE gradient scale")
@click.option("--anneal-frac", type=float, default=None, help="soft-to-hard quantizer over this fraction")
@click.option("--latent-clamp", type=float, default=None, help="clamp latent weights to +-N*mean|W|")
@click.option("--eval-interval", type=int, default=None)
@click.option("--eval-batches", type=int, default=None)
@click.option("--ckpt-interval", type=int, default=None)
@click.option("--set", "model_overrides", multiple=True, metavar="FIELD=VALUE",
              help="model config override, e.g. --set ffn_dim=384 --set activation=silu")
@click.option("--stop-after", type=int, default=None,
              help="checkpoint and stop at this step; --resume continues exactly as if never stopped")
@click.option("--plot", is_flag=True, help="also write curves.png next to metrics.csv")
@click.option("--quiet", is_flag=True, help="no progress bar")
@cli_errors
def main(preset: str, resume: Path | None, out: Path | None, plot: bool, quiet: bool, stop_after: int | None,
         model_overrides: tuple[str, ...], **flags) -> None:
    """Train a 1-bit / ternary transformer and checkpoint it into --out."""
    threads = os.environ.get("ONEBIT_THREADS", "")
    if threads:
        if not threads.isdigit() or int(threads) < 1:
            raise TrainConfigError(f"ONEBIT_THREADS must be a positive integer, got {threads!r}")
        torch.set_num_threads(int(threads))
    given = {k: v for k, v in flags.items() if v is not None}
    if out is None and resume is None:
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
        cfg = preset_config(preset, given.pop("quant", "ternary"))
        for key, value in given.items():
            setattr(cfg, key, value)
        cfg.model = {**cfg.model, **parse_overrides(model_overrides)}
        # a vocabulary size next to a finished tokenizer is a claim about it: check it
        expect = given.get("vocab_size") if cfg.tokenizer not in ("char", "bpe") else None
        progress = train(cfg, out, show_progress=not quiet, expect_vocab=expect, stop_after=stop_after)
    log(f"done: step {progress.step}, val loss {progress.val_loss:.4f} -> {out}")
    if plot:
        from onebit.plot import plot_metrics
        log(f"wrote {plot_metrics(out)}")


def parse_overrides(items: tuple[str, ...]) -> dict:
    """FIELD=VALUE pairs with JSON-ish values (numbers, true/false, strings)."""
    import json

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
