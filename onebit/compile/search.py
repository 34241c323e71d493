"""`onebit search`: the best bit-width per BitLinear under a size budget (docs/SEARCH.md).

It lives in compile/ because it needs both earlier stages: the trainer (sensitivities, the
fine-tune) and the exporter (every budget is checked by packing the model as `onebit export` does).

1. Sensitivity: an anchor, the checkpoint fine-tuned briefly with every layer at the most precise
   kind allowed (int8), so that its latent weights are no longer fitted to one quantizer; then for
   every BitLinear and kind, the measured change of the calibration loss when that one layer of
   the anchor switches kind. (Measured on the checkpoint itself, a ternary-trained layer looks
   worse in int4 than in ternary: its weights were fitted to ternary. --anchor-steps 0 does that.)
   Each evaluation is cached (by weights and map) in a JSON file.
2. Solve: a multiple-choice knapsack (exact dynamic programming over 64-byte units) picks one
   kind per layer minimising the summed loss change within the budget. Two other solvers run on
   the same budget for comparison: greedy upgrades by loss-per-byte over the same table, and the
   knapsack over a Fisher proxy (0.5 * sum F (W_k - W)^2, one backward pass, no per-layer evals).
   Each candidate map is then measured; the lowest measured loss wins.
3. The winner's file size is checked by packing it (the exporter's own code) and the budget
   tightened until it fits; then a short QAT fine-tune (`onebit train --init-from`) trains it,
   the result is exported and checked once more, and its validation loss is measured.

The calibration windows come from the training split; every reported loss is the trainer's
validation loss (the same fixed windows), so the search never selects on what it reports.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import click
import numpy as np
import torch

from onebit.atomic import atomic_write
from onebit.config import PRECISION_KINDS, ModelConfig
from onebit.errors import OnebitError, cli_errors
from onebit.format import ALIGN, RECORD_SIZE, align_up, write_stream
from onebit.progress import progress_bar
from onebit.train.checkpoint import Checkpoint, load_checkpoint
from onebit.train.data import TokenData, default_cache_dir, load_token_data
from onebit.train.model import Transformer
from onebit.train.presets import TrainConfig

UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
CALIBRATION_SEED = 0xCA1B
META_SLACK = 2 * ALIGN  # the finished checkpoint's provenance (step, val_loss) may lengthen the metadata
SOLVERS = ("knapsack", "greedy", "fisher")


class SearchError(OnebitError):
    """A search that cannot run as asked (budget below the smallest model, bad option)."""


def parse_size(text: str) -> int:
    """Bytes from '400KB', '1.5MB', '300KiB' or a plain number (kB = 1000 bytes, KiB = 1024)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in UNITS:
        raise SearchError(f"--max-size {text!r}: expected a number with an optional unit "
                          "(B, kB, MB, GB, KiB, MiB, GiB)")
    return int(float(m.group(1)) * UNITS[m.group(2).lower()])


# ----------------------------------------------------------------------------------------------
# Sizes: the exporter's own code, so the budget is checked rather than estimated


def export_size(ckpt: Checkpoint, pack: str, embed_dtype: str) -> int:
    """Bytes of the .1bit file that `onebit export` writes for this checkpoint."""
    from onebit.compile.export import ExportOptions, file_meta, model_tensors

    opts = ExportOptions(pack, embed_dtype)
    with torch.no_grad():
        tensors = model_tensors(ckpt, opts)
    return write_stream(io.BytesIO(), file_meta(ckpt, opts, source=str(ckpt_source(ckpt))), tensors)


def ckpt_source(ckpt: Checkpoint) -> str:
    """Where the finished checkpoint will be: the provenance that the final export writes."""
    return ckpt.meta.get("search_source", "")


def layer_bytes(rows: int, k: int, kind: str, pack: str) -> tuple[int, int]:
    """(bytes in the file, bytes of weight data) of one BitLinear stored as kind: each tensor is
    64-byte aligned and has a 128-byte directory record; int4/int8 add a per-row scale tensor."""
    from onebit import packing

    if kind == "ternary":
        data = rows * (packing.t16_row_stride(k) if pack == "t1.6" else packing.t2_row_stride(k))
    elif kind == "binary":
        data = rows * packing.b1_row_stride(k)
    elif kind == "int4":
        data = rows * packing.i4_row_stride(k)
    else:
        data = rows * k
    if kind in ("int4", "int8"):
        return align_up(data) + align_up(4 * rows) + 2 * RECORD_SIZE, data + 4 * rows
    return align_up(data) + RECORD_SIZE, data


def with_map(ckpt: Checkpoint, precision: dict[str, str]) -> Checkpoint:
    """The checkpoint's weights under another precision map (shared tensors, no copy): the
    exporter reads each layer's kind from the config."""
    cfg = replace(ckpt.config, precision=dict(precision)).validate()
    return Checkpoint(model=ckpt.model, config=cfg, tokenizer=ckpt.tokenizer, meta=ckpt.meta)


def set_map(model: Transformer, cfg: ModelConfig) -> None:
    model.cfg = cfg
    for name, m in model.named_modules():
        if hasattr(m, "anneal_alpha"):  # a BitLinear
            m.quant = cfg.layer_quant(name)


# ----------------------------------------------------------------------------------------------
# Losses, cached


@dataclass
class Evaluator:
    """Mean loss of the model under a map over fixed windows; every result is cached by map."""

    model: Transformer
    base: ModelConfig
    batches: list[tuple[torch.Tensor, torch.Tensor]]
    cache: dict[str, float]
    cache_key: str

    def key(self, assignment: dict[str, str]) -> str:
        return self.cache_key + ":" + ",".join(f"{n}={assignment[n]}" for n in sorted(assignment))

    @torch.no_grad()
    def loss(self, assignment: dict[str, str]) -> float:
        key = self.key(assignment)
        if key not in self.cache:
            set_map(self.model, replace(self.base, precision=dict(assignment)))
            self.model.eval()
            self.cache[key] = float(np.mean([self.model.loss(x, y).item() for x, y in self.batches]))
            set_map(self.model, self.base)
        return self.cache[key]

    @torch.no_grad()
    def one_layer_losses(self, base: dict[str, str], jobs: list[tuple[str, str]],
                         done=lambda: None) -> dict[tuple[str, str], float]:
        """loss({**base, layer: kind}) for every (layer, kind) of jobs, cached like loss().

        Switching one layer changes nothing before its block, so each block's output under `base`
        is computed once per batch and replayed; only the blocks from the switched layer's on run
        again (6 blocks: 3.5 of them per evaluation on average, plus the head; the same numbers).
        """
        todo = [(n, k) for n, k in jobs if self.key({**base, n: k}) not in self.cache]
        for _ in range(len(jobs) - len(todo)):
            done()
        if todo:
            outputs = self._block_outputs(base)
            layers = self.model.layers
            for n, k in todo:
                first = block_index(n)
                set_map(self.model, replace(self.base, precision={**base, n: k}))
                self.model.eval()
                losses = []
                try:
                    for (x, y), outs in zip(self.batches, outputs):
                        for i in range(first):
                            layers[i] = _Replay(outs[i])
                        losses.append(self.model.loss(x, y).item())
                finally:
                    for i in range(first):
                        layers[i] = outputs.blocks[i]
                    set_map(self.model, self.base)
                self.cache[self.key({**base, n: k})] = float(np.mean(losses))
                done()
        return {(n, k): self.cache[self.key({**base, n: k})] for n, k in jobs}

    def _block_outputs(self, assignment: dict[str, str]) -> "_Outputs":
        """Every block's output (hidden state and KV pair) on every batch under the assignment."""
        outputs = _Outputs(list(self.model.layers))
        current: list = []
        hooks = [b.register_forward_hook(lambda _m, _a, out: current.append(out)) for b in outputs.blocks]
        set_map(self.model, replace(self.base, precision=dict(assignment)))
        self.model.eval()
        try:
            for x, y in self.batches:
                current = []
                self.model.loss(x, y)
                outputs.append(current)
        finally:
            for h in hooks:
                h.remove()
            set_map(self.model, self.base)
        return outputs


class _Outputs(list):
    """Per batch, the list of block outputs; .blocks are the model's own blocks."""

    def __init__(self, blocks: list[torch.nn.Module]):
        super().__init__()
        self.blocks = blocks


class _Replay(torch.nn.Module):
    """Stands in for a block whose output is already known: returns it, computes nothing."""

    def __init__(self, output: tuple):
        super().__init__()
        self.output = output

    def forward(self, x, rope, past=None):
        return self.output


def block_index(name: str) -> int:
    """The block a BitLinear belongs to ('layers.3.attn.q_proj' -> 3); 0 (run everything) if none."""
    m = re.match(r"layers\.(\d+)\.", name)
    return int(m.group(1)) if m else 0


def fixed_batches(data: TokenData, split: str, n: int, batch_size: int, seq_len: int,
                  seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [data.batch(split, batch_size, seq_len, gen) for _ in range(n)]


def fisher_table(model: Transformer, names: list[str], kinds: tuple[str, ...],
                 batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, dict[str, float]]:
    """0.5 * sum_i F_i (W_k,i - W_base,i)^2 per layer and kind, F the empirical Fisher diagonal
    (squared per-batch gradients of the loss w.r.t. the latent weights, straight through)."""
    from onebit.train import quant

    modules = dict(model.named_modules())
    sq = {n: torch.zeros_like(modules[n].weight) for n in names}
    model.train()
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        model.loss(x, y).backward()
        for n in names:
            sq[n] += modules[n].weight.grad.float() ** 2
    model.zero_grad(set_to_none=True)
    model.eval()
    table: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for n in names:
            w = modules[n].weight.float()
            fisher = sq[n] / len(batches)

            def dequant(kind: str) -> torch.Tensor:
                codes, scale = quant.quantize_weight(w, kind)
                return codes * (scale[:, None] if scale.dim() else scale)

            base = dequant(modules[n].quant)
            table[n] = {k: float(0.5 * (fisher * (dequant(k) - base) ** 2).sum()) for k in kinds}
    return table


# ----------------------------------------------------------------------------------------------
# Solvers: one kind per layer, summed cost within the budget, summed loss change minimal


def knapsack(delta: dict[str, dict[str, float]], cost: dict[str, dict[str, int]], budget: int,
             unit: int = ALIGN) -> dict[str, str] | None:
    """Exact multiple-choice knapsack by dynamic programming over cost in `unit`s (rounded up)."""
    names = list(delta)
    cap = budget // unit
    if cap < 0:
        return None
    best = np.zeros(cap + 1)  # best[c]: least summed delta of the layers so far within c units
    choices = []
    for n in names:
        kinds = list(delta[n])
        new = np.full(cap + 1, np.inf)
        pick = np.full(cap + 1, -1, dtype=np.int64)
        for j, k in enumerate(kinds):
            c = -(-cost[n][k] // unit)
            if c > cap:
                continue
            cand = np.full(cap + 1, np.inf)
            cand[c:] = best[: cap + 1 - c] + delta[n][k]
            better = cand < new
            new[better], pick[better] = cand[better], j
        choices.append((kinds, pick))
        best = new
    if not np.isfinite(best[cap]):
        return None
    out, c = {}, cap
    for n, (kinds, pick) in zip(reversed(names), reversed(choices)):
        k = kinds[pick[c]]
        out[n] = k
        c -= -(-cost[n][k] // unit)
    return {n: out[n] for n in names}


def greedy(delta: dict[str, dict[str, float]], cost: dict[str, dict[str, int]], budget: int) -> dict[str, str] | None:
    """Start every layer at its cheapest kind, then take the upgrade with the largest loss drop per
    extra byte that still fits, until none does."""
    pick = {n: min(delta[n], key=lambda k: cost[n][k]) for n in delta}
    spent = sum(cost[n][pick[n]] for n in delta)
    if spent > budget:
        return None
    while True:
        best, best_ratio = None, 0.0
        for n in delta:
            for k in delta[n]:
                extra = cost[n][k] - cost[n][pick[n]]
                gain = delta[n][pick[n]] - delta[n][k]
                if extra > 0 and gain > 0 and spent + extra <= budget and gain / extra > best_ratio:
                    best, best_ratio = (n, k, extra), gain / extra
        if best is None:
            return pick
        n, k, extra = best
        pick[n], spent = k, spent + extra


# ----------------------------------------------------------------------------------------------
# The search


@dataclass
class SearchOptions:
    max_size: int | None = None
    max_bits_per_weight: float | None = None
    kinds: tuple[str, ...] = PRECISION_KINDS
    pack: str = "t1.6"
    embed_dtype: str = "f16"
    calib_batches: int = 8
    anchor_steps: int = 200
    finetune_steps: int = 200
    finetune_lr: float = 1e-3
    seed: int = 0
    sweep: int = 6  # extra budgets (no fine-tune) for the Pareto plot
    finetune_baselines: tuple[str, ...] = ()
    # distillation in the fine-tunes of the map and the baselines alike (not the anchor): a
    # checkpoint folder, or "anchor" for the search's own int8 anchor; None = plain QAT
    finetune_teacher: str | None = None
    kd_weight: float = 1.0
    kd_temperature: float = 1.0
    show_progress: bool = True


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _train_config(ckpt: Checkpoint) -> TrainConfig:
    """The checkpoint's own training settings (what its data and batch shape were)."""
    saved = ckpt.meta.get("train_config") or {}
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in saved.items() if k in known})


class Search:
    def __init__(self, ckpt_dir: Path, out: Path, opts: SearchOptions):
        self.ckpt_dir, self.out, self.opts = ckpt_dir, out, opts
        if opts.max_size is None and opts.max_bits_per_weight is None:
            raise SearchError("give --max-size or --max-bits-per-weight")
        bad = [k for k in opts.kinds if k not in PRECISION_KINDS]
        if bad or not opts.kinds:
            raise SearchError(f"--kinds: unknown kind(s) {', '.join(bad)} (choose {', '.join(PRECISION_KINDS)})")
        if opts.finetune_teacher not in (None, "anchor") and not Path(opts.finetune_teacher).is_dir():
            raise SearchError(f"--finetune-teacher {opts.finetune_teacher}: no such checkpoint folder")
        if opts.finetune_teacher == "anchor" and opts.anchor_steps == 0:
            raise SearchError("--finetune-teacher anchor needs --anchor-steps > 0")
        torch.manual_seed(opts.seed)
        self.ckpt = load_checkpoint(ckpt_dir)
        if self.ckpt.config.quant == "none":
            raise SearchError(f"{ckpt_dir}: a full-precision checkpoint; search starts from a quantized one")
        self.ckpt.meta = {**self.ckpt.meta, "search_source": str(out / "checkpoint")}
        self.base_cfg = self.ckpt.config
        self.names = self.base_cfg.bitlinear_names()
        self.base = {n: self.base_cfg.layer_quant(n) for n in self.names}
        self.train_cfg = _train_config(self.ckpt)
        self.data = load_token_data(self.train_cfg.data, self.ckpt.tokenizer, default_cache_dir(),
                                    self.train_cfg.val_fraction)
        seq = self.base_cfg.max_seq_len
        self.calib = fixed_batches(self.data, "train", opts.calib_batches, self.train_cfg.batch_size, seq,
                                   CALIBRATION_SEED + opts.seed)
        from onebit.train.trainer import EVAL_SEED

        self.val = fixed_batches(self.data, "val", self.train_cfg.eval_batches, self.train_cfg.batch_size, seq,
                                 EVAL_SEED)
        self.cache_path = out / "evaluations.json"
        cache = json.loads(self.cache_path.read_text()) if self.cache_path.is_file() else {}
        digest = _file_digest(load_checkpoint_dir(ckpt_dir) / "model.safetensors")
        self.cache = cache
        self.calib_eval = Evaluator(self.ckpt.model, self.base_cfg, self.calib, cache,
                                    f"calib/{digest}/{opts.seed}/{opts.calib_batches}")
        self.val_eval = Evaluator(self.ckpt.model, self.base_cfg, self.val, cache, f"val/{digest}")
        shapes = {n: tuple(dict(self.ckpt.model.named_modules())[n].weight.shape) for n in self.names}
        self.cost = {n: {k: layer_bytes(*shapes[n], k, opts.pack)[0] for k in opts.kinds} for n in self.names}
        self.data_bytes = {n: {k: layer_bytes(*shapes[n], k, opts.pack)[1] for k in opts.kinds} for n in self.names}
        self.n_weights = sum(r * k for r, k in shapes.values())
        self.record: dict = {"checkpoint": str(ckpt_dir), "options": {**vars(opts), "kinds": list(opts.kinds)}}

    def save_cache(self) -> None:
        atomic_write(self.cache_path, lambda f: f.write(json.dumps(self.cache, indent=0).encode()))

    def use_anchor(self) -> None:
        """Fine-tune (or reuse) the anchor: every layer at the most precise kind; measure on it."""
        o = self.opts
        top = max(o.kinds, key=PRECISION_KINDS.index)
        if o.anchor_steps == 0:
            return
        anchor_dir = self.out / "anchor"
        cfg = self._finetune_config({n: top for n in self.names}, o.anchor_steps)
        if not anchor_matches(anchor_dir, cfg):
            log(f"anchor: fine-tuning every layer as {top} for {o.anchor_steps} steps")
            from onebit.train.trainer import train

            if anchor_dir.exists():  # another anchor (other kinds, steps or lr): replaced, not reused
                shutil.rmtree(anchor_dir)
            train(cfg, anchor_dir, show_progress=o.show_progress)
        anchor = load_checkpoint(anchor_dir)
        digest = _file_digest(load_checkpoint_dir(anchor_dir) / "model.safetensors")
        self.sens_base = {n: top for n in self.names}
        self.calib_eval = Evaluator(anchor.model, anchor.config, self.calib, self.cache,
                                    f"calib/{digest}/{o.seed}/{o.calib_batches}")
        self.anchor_model = anchor.model

    # -- sizes ---------------------------------------------------------------------------------

    def size_of(self, assignment: dict[str, str]) -> int:
        return export_size(with_map(self.ckpt, assignment), self.opts.pack, self.opts.embed_dtype)

    def bits_per_weight(self, assignment: dict[str, str]) -> float:
        return 8 * sum(self.data_bytes[n][assignment[n]] for n in self.names) / self.n_weights

    def fixed_bytes(self) -> int:
        """File bytes outside the BitLinears (and their records): measured on the longest map."""
        longest = {n: max(self.opts.kinds, key=len) for n in self.names}
        return self.size_of(longest) - sum(self.cost[n][longest[n]] for n in self.names) + META_SLACK

    def budget_bytes(self) -> tuple[int, str]:
        """(bytes the BitLinears may take in the file, what limits them)."""
        o = self.opts
        if o.max_size is not None:
            return o.max_size - self.fixed_bytes(), f"file <= {o.max_size:,} bytes"
        return 0, f"<= {o.max_bits_per_weight} bits per BitLinear weight"

    # -- the steps -----------------------------------------------------------------------------

    def sensitivities(self) -> dict[str, dict[str, float]]:
        base = self.sens_base
        base_loss = self.calib_eval.loss(base)
        jobs = [(n, k) for n in self.names for k in self.opts.kinds if k != base[n]]
        bar = progress_bar(total=len(jobs), desc="sensitivity", unit="eval", disable=not self.opts.show_progress)
        table = {n: {base[n]: 0.0} for n in self.names}
        for (n, k), loss in self.calib_eval.one_layer_losses(base, jobs, lambda: bar.update(1)).items():
            table[n][k] = loss - base_loss
        bar.close()
        self.save_cache()
        return {n: {k: table[n][k] for k in self.opts.kinds} for n in self.names}

    def solve(self, solver: str, table: dict, budget: int) -> dict[str, str] | None:
        if self.opts.max_bits_per_weight is not None:  # costs rounded up to units: always within
            cost, limit = self.data_bytes, int(self.opts.max_bits_per_weight * self.n_weights / 8)
            unit = 16
        else:
            cost, limit, unit = self.cost, budget, ALIGN
        if solver == "greedy":
            return greedy(table, cost, limit)
        return knapsack(table, cost, limit, unit)

    def fits(self, assignment: dict[str, str]) -> bool:
        if self.opts.max_size is not None:
            return self.size_of(assignment) + META_SLACK <= self.opts.max_size
        return self.bits_per_weight(assignment) <= self.opts.max_bits_per_weight

    def solve_checked(self, solver: str, table: dict) -> dict[str, str] | None:
        """Solve, then pack the map; while the packed file is over the budget, tighten and re-solve."""
        budget, _ = self.budget_bytes()
        for _ in range(8):
            assignment = self.solve(solver, table, budget)
            if assignment is None or self.fits(assignment):
                return assignment
            over = self.size_of(assignment) + META_SLACK - (self.opts.max_size or 0)
            budget -= max(over, ALIGN)
        return None

    def run(self) -> dict:
        o, t0 = self.opts, time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        uniform = {k: {n: k for n in self.names} for k in o.kinds}
        log(f"search {self.ckpt_dir}: {len(self.names)} BitLinears, {self.n_weights:,} weights; "
            f"kinds {', '.join(o.kinds)}; {self.budget_bytes()[1]}")
        smallest = min(uniform.values(), key=self.size_of)
        if not self.fits(smallest):
            raise SearchError(f"even uniform {next(iter(smallest.values()))} ({self.size_of(smallest):,} bytes, "
                              f"{self.bits_per_weight(smallest):.3f} bits/weight) is over the budget")

        self.sens_base, self.anchor_model = dict(self.base), self.ckpt.model
        self.use_anchor()
        table = self.sensitivities()
        log("fisher proxy ...")
        fisher = fisher_table(self.anchor_model, self.names, o.kinds, self.calib)
        candidates = {"knapsack": self.solve_checked("knapsack", table),
                      "greedy": self.solve_checked("greedy", table),
                      "fisher": self.solve_checked("fisher", fisher)}
        base_loss = self.calib_eval.loss(self.sens_base)
        methods = {}
        for name, a in candidates.items():
            if a is None:
                continue
            methods[name] = {"predicted_calib_loss": base_loss + sum(table[n][a[n]] for n in self.names),
                             "measured_calib_loss": self.calib_eval.loss(a), "size": self.size_of(a),
                             "bits_per_weight": self.bits_per_weight(a), "map": a}
        self.save_cache()
        if not methods:
            raise SearchError("no precision map fits the budget")
        winner = min(methods, key=lambda m: methods[m]["measured_calib_loss"])
        chosen = methods[winner]["map"]
        for name, m in methods.items():
            log(f"  {name:<9} predicted {m['predicted_calib_loss']:.4f}  measured {m['measured_calib_loss']:.4f}  "
                f"{m['size']:,} bytes  {m['bits_per_weight']:.3f} bits/weight" + ("  <- best" if name == winner else ""))

        points = self.pareto_points(table, uniform)
        result = {"method": winner, "methods": methods, "map": chosen,
                  "calib_base_loss": base_loss, "sensitivity": table, "fisher": fisher, "points": points}
        result.update(self.finetune(chosen))
        result["baselines"] = {k: self.finetune_uniform(k) for k in o.finetune_baselines}
        result["seconds"] = time.perf_counter() - t0
        self.record.update(result)
        self.write_outputs()
        return self.record

    def pareto_points(self, table: dict, uniform: dict) -> list[dict]:
        """Val loss (no fine-tune) and size of the uniform models and of knapsack maps across budgets."""
        points = []
        for k, a in uniform.items():
            points.append({"label": f"uniform {k}", "size": self.size_of(a), "bits_per_weight": self.bits_per_weight(a),
                           "val_loss": self.val_eval.loss(a)})
        sizes = sorted(p["size"] for p in points)
        fixed = self.fixed_bytes()
        bar = progress_bar(total=self.opts.sweep, desc="pareto", unit="map", disable=not self.opts.show_progress)
        for target in np.linspace(sizes[0], sizes[-1], self.opts.sweep + 2)[1:-1]:
            a = knapsack(table, self.cost, int(target) - fixed)
            bar.update(1)
            if a is None:
                continue
            points.append({"label": "searched", "size": self.size_of(a), "bits_per_weight": self.bits_per_weight(a),
                           "val_loss": self.val_eval.loss(a)})
        bar.close()
        self.save_cache()
        return points

    def teacher_dir(self) -> str | None:
        """The fine-tunes' teacher: --finetune-teacher, with "anchor" meaning this search's anchor."""
        t = self.opts.finetune_teacher
        return str(self.out / "anchor") if t == "anchor" else t

    def _finetune_config(self, assignment: dict[str, str], steps: int | None = None) -> TrainConfig:
        """The fine-tune of a map; steps given = the anchor's (never distilled)."""
        o, base = self.opts, self.train_cfg
        teacher = self.teacher_dir() if steps is None else None
        steps = o.finetune_steps if steps is None else steps
        cfg = replace(base, init_from=str(self.ckpt_dir), max_steps=steps, lr=o.finetune_lr,
                      warmup_steps=min(steps // 10, base.warmup_steps), two_stage=False,
                      schedule="cosine", eval_interval=steps, ckpt_interval=steps,
                      seed=o.seed, teacher=teacher, kd_weight=o.kd_weight, kd_temperature=o.kd_temperature,
                      model={"precision": dict(assignment)})
        return cfg.validate()

    def _train(self, assignment: dict[str, str], out_dir: Path) -> tuple[float, int]:
        """Fine-tune with the map into out_dir, export it; (val loss, .1bit size)."""
        from onebit.compile.export import ExportOptions, export_1bit
        from onebit.train.trainer import train

        progress = train(self._finetune_config(assignment), out_dir, show_progress=self.opts.show_progress)
        result = export_1bit(out_dir, out_dir.parent / f"{out_dir.name}.1bit",
                             ExportOptions(self.opts.pack, self.opts.embed_dtype))
        return float(progress.val_loss), int(result.report["file_size"])

    def finetune(self, assignment: dict[str, str]) -> dict:
        o = self.opts
        before = self.val_eval.loss(assignment)
        log(f"fine-tuning the map for {o.finetune_steps} steps (val loss before: {before:.4f})")
        val_loss, size = self._train(assignment, self.out / "checkpoint")
        bpw = self.bits_per_weight(assignment)
        if o.max_size is not None and size > o.max_size:
            raise SearchError(f"the exported model is {size:,} bytes, over --max-size {o.max_size:,}")
        if o.max_bits_per_weight is not None and bpw > o.max_bits_per_weight:
            raise SearchError(f"the exported model has {bpw:.4f} bits per weight, over {o.max_bits_per_weight}")
        return {"val_loss_before_finetune": before, "val_loss": val_loss, "size": size, "bits_per_weight": bpw}

    def finetune_uniform(self, kind: str) -> dict:
        a = {n: kind for n in self.names}
        log(f"baseline: uniform {kind}, the same fine-tune")
        val_loss, size = self._train(a, self.out / "baselines" / kind)
        return {"val_loss": val_loss, "size": size, "bits_per_weight": self.bits_per_weight(a)}

    def write_outputs(self) -> None:
        r = self.record
        precision = {"precision": r["map"]}
        atomic_write(self.out / "precision.json", lambda f: f.write((json.dumps(precision, indent=2) + "\n").encode()))
        atomic_write(self.out / "search.json", lambda f: f.write((json.dumps(r, indent=2) + "\n").encode()))
        plot_pareto(r, self.out / "pareto.png")


def anchor_matches(anchor_dir: Path, cfg: TrainConfig) -> bool:
    """Whether anchor_dir holds the finished anchor that cfg would train (same source checkpoint,
    map, steps, learning rate, seed...), so it can be reused instead of trained again."""
    try:
        anchor = load_checkpoint(anchor_dir)
    except OnebitError:
        return False
    saved = anchor.meta.get("train_config") or {}
    want = {f.name: getattr(cfg, f.name) for f in fields(TrainConfig) if f.name not in ("model", "quant")}
    return (anchor.meta.get("step") == cfg.max_steps and anchor.config.precision == cfg.model["precision"]
            and all(saved.get(k) == v for k, v in want.items()))


def load_checkpoint_dir(path: Path) -> Path:
    from onebit.train.checkpoint import _checkpoint_dir

    return _checkpoint_dir(path)


def plot_pareto(r: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = r["points"]
    searched = sorted((p for p in pts if p["label"] == "searched"), key=lambda p: p["size"])
    if searched:
        ax.plot([p["size"] / 1e3 for p in searched], [p["val_loss"] for p in searched], "o-", color="tab:blue",
                label="searched maps on the checkpoint (no fine-tune)")
    for p in pts:
        if p["label"].startswith("uniform"):
            ax.plot(p["size"] / 1e3, p["val_loss"], "s", color="tab:gray")
            ax.annotate(p["label"] + " (no fine-tune)", (p["size"] / 1e3, p["val_loss"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    for kind, b in r.get("baselines", {}).items():
        ax.plot(b["size"] / 1e3, b["val_loss"], "D", color="tab:orange")
        ax.annotate(f"uniform {kind}, fine-tuned", (b["size"] / 1e3, b["val_loss"]), textcoords="offset points",
                    xytext=(4, -10), fontsize=8)
    ax.plot(r["size"] / 1e3, r["val_loss"], "*", color="tab:red", markersize=14, label="searched, fine-tuned")
    ax.set_xlabel(".1bit file size (kB)")
    ax.set_ylabel("val loss")
    ax.set_title("onebit search: size vs validation loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)


def format_summary(r: dict) -> str:
    counts: dict[str, int] = {}
    for k in r["map"].values():
        counts[k] = counts.get(k, 0) + 1
    lines = ["layer precision:"]
    lines += [f"  {n:<24} {k}" for n, k in r["map"].items()]
    lines += [f"kinds: " + ", ".join(f"{k} x{c}" for k, c in sorted(counts.items())),
              f"method: {r['method']}; calibration loss predicted {r['methods'][r['method']]['predicted_calib_loss']:.4f}, "
              f"measured {r['methods'][r['method']]['measured_calib_loss']:.4f}",
              f"val loss: {r['val_loss_before_finetune']:.4f} before fine-tune, {r['val_loss']:.4f} after",
              f"size: {r['size']:,} bytes ({r['bits_per_weight']:.3f} bits per BitLinear weight)"]
    for kind, b in r.get("baselines", {}).items():
        lines.append(f"baseline uniform {kind}: val loss {b['val_loss']:.4f}, {b['size']:,} bytes, "
                     f"{b['bits_per_weight']:.3f} bits/weight")
    lines.append(f"search took {r['seconds']:.0f} s")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--max-size", default=None, help="Budget for the whole .1bit file: bytes with a unit, e.g. 400KB, "
              "1.5MB, 300KiB (kB = 1000 bytes).  [default: none; give this or --max-bits-per-weight]")
@click.option("--max-bits-per-weight", type=float, default=None,
              help="Budget as bits per BitLinear weight (packed data and int scales, e.g. 1.2).  [default: none]")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output folder: precision.json, search.json, pareto.png, checkpoint/, checkpoint.1bit.")
@click.option("--kinds", default=",".join(PRECISION_KINDS), show_default=True,
              help="Kinds a layer may take, comma separated.")
@click.option("--pack", type=click.Choice(["t1.6", "t2"]), default="t1.6", show_default=True,
              help="Packing of ternary layers (the size counts it).")
@click.option("--embed-dtype", type=click.Choice(["f32", "f16", "i8"]), default="f16", show_default=True,
              help="Embedding storage in the exported file (the size counts it).")
@click.option("--calib-batches", type=int, default=8, show_default=True,
              help="Training-split batches on which each layer's sensitivity is measured.")
@click.option("--anchor-steps", type=int, default=200, show_default=True,
              help="Fine-tune steps of the anchor (every layer at the most precise kind) on which sensitivities "
                   "are measured; 0 = measure on the checkpoint as it is.")
@click.option("--finetune-steps", type=int, default=200, show_default=True,
              help="QAT steps that fine-tune the chosen map (onebit train --init-from).")
@click.option("--finetune-lr", type=float, default=1e-3, show_default=True, help="Peak learning rate of the fine-tune.")
@click.option("--finetune-baselines", default="",
              help="Also fine-tune these uniform kinds (comma separated) the same way, for a fair comparison.  "
                   "[default: none]")
@click.option("--finetune-teacher", default=None,
              help="Distil the fine-tunes (the map's and the baselines' alike, not the anchor's) from this "
                   "checkpoint folder, or 'anchor' for the search's own anchor.  [default: none]")
@click.option("--kd-weight", type=float, default=1.0, show_default=True,
              help="With --finetune-teacher: weight of the KL(teacher || student) term.")
@click.option("--kd-temperature", type=float, default=1.0, show_default=True,
              help="With --finetune-teacher: softmax temperature of both models.")
@click.option("--sweep", type=int, default=6, show_default=True,
              help="Budgets between the smallest and largest uniform model searched (without fine-tune) for the plot.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the calibration windows and the fine-tune.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@cli_errors
def main(checkpoint: Path, max_size: str | None, max_bits_per_weight: float | None, out: Path, kinds: str,
         pack: str, embed_dtype: str, calib_batches: int, anchor_steps: int, finetune_steps: int, finetune_lr: float,
         finetune_baselines: str, finetune_teacher: str | None, kd_weight: float, kd_temperature: float,
         sweep: int, seed: int, quiet: bool) -> None:
    """Find the precision of every BitLinear of CHECKPOINT that minimises loss within a size budget,
    fine-tune it and write the checkpoint (docs/SEARCH.md)."""
    threads = os.environ.get("ONEBIT_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
    if (max_size is None) == (max_bits_per_weight is None):
        raise SearchError("give exactly one of --max-size and --max-bits-per-weight")
    if calib_batches < 1 or finetune_steps < 1 or min(seed, sweep, anchor_steps) < 0:
        raise SearchError("--calib-batches and --finetune-steps must be positive; --seed, --sweep and "
                          "--anchor-steps >= 0")
    if not (kd_weight >= 0 and kd_temperature > 0):
        raise SearchError("--kd-weight must be >= 0 and --kd-temperature > 0")
    if max_bits_per_weight is not None and not max_bits_per_weight > 0:
        raise SearchError("--max-bits-per-weight must be positive")
    opts = SearchOptions(max_size=parse_size(max_size) if max_size is not None else None,
                         max_bits_per_weight=max_bits_per_weight,
                         kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()), pack=pack,
                         embed_dtype=embed_dtype, calib_batches=calib_batches, anchor_steps=anchor_steps,
                         finetune_steps=finetune_steps,
                         finetune_lr=finetune_lr, seed=seed, sweep=sweep,
                         finetune_baselines=tuple(k.strip() for k in finetune_baselines.split(",") if k.strip()),
                         finetune_teacher=finetune_teacher, kd_weight=kd_weight, kd_temperature=kd_temperature,
                         show_progress=not quiet)
    bad = [k for k in opts.finetune_baselines if k not in PRECISION_KINDS]
    if bad:
        raise SearchError(f"--finetune-baselines: unknown kind(s) {', '.join(bad)}")
    record = Search(checkpoint, out, opts).run()
    print(format_summary(record))
    log(f"wrote {out / 'precision.json'}, {out / 'search.json'}, {out / 'pareto.png'} and {out / 'checkpoint'}")


if __name__ == "__main__":
    main()
