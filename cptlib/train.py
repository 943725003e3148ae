"""The training loop shared by every method and model.

One loop, balancer-agnostic: per-group gradients are computed only when the balancer needs a
Gramian (CPT, MGDA); otherwise one backward pass of the β-weighted group losses. Batches are
drawn per step from a generator seeded by (seed, step), and the checkpoint holds every random
state, so a run killed part-way and restarted ends with the same result as an uninterrupted one.

Several processes (``torchrun``, see ``cptlib.distributed``) share a run: each takes its slice of
the same global batch, and per-group losses, counts and gradients are summed over the ranks
before the balancer, so the run follows the single-process one (rounding aside).
"""

from __future__ import annotations

import copy
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import default_collate
from tqdm import tqdm

from cptlib import _io
from cptlib import balancers as B
from cptlib import distributed as D
from cptlib._env import show_progress
from cptlib.config import TrainConfig
from cptlib.data.samplers import sample_weights
from cptlib.grads import (
    conflict_fraction,
    group_losses,
    per_group_grads,
    resolve_way,
    set_combined_grad,
)
from cptlib.metrics import evaluate_logits
from cptlib.models.conditioned import Conditioned, raise_grid, sample_c
from cptlib.models.precision import precision


def make_balancer(cfg: TrainConfig, n_groups: int, group_counts: torch.Tensor | None,
                  c: list[float] | None = None) -> B.Balancer:
    """The balancer named by ``cfg.method`` with the parameters it takes (``c``: instead of
    ``cfg.c``, the c a conditioned run drew for this step)."""
    if cfg.method in ("cpt", "scalarized"):
        c = c if c is not None else cfg.c if cfg.c is not None else [1.0] * n_groups
        return B.get(cfg.method, c=c, **({"eps": cfg.eps} if cfg.method == "cpt" else {}))
    if cfg.method == "groupdro":
        return B.get(
            "groupdro", eta=cfg.eta, adjustment=cfg.gdro_adjustment, group_counts=group_counts
        )
    return B.get(cfg.method)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine decay to 0, per optimiser step (not per epoch)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def batch_indices(weights: torch.Tensor, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """The sample indices of step ``step``: a function of (seed, step) only, so resuming works."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.multinomial(weights, batch_size, replacement=True, generator=gen)


def collate(dataset: Sequence, idx: Sequence[int]) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Stack items into (x, y, g); text inputs stay a list of strings."""
    items = [dataset[int(i)] for i in idx]
    xs, ys, gs = zip(*items, strict=True)
    x = list(xs) if isinstance(xs[0], str) else default_collate(list(xs))
    return x, torch.as_tensor(ys), torch.as_tensor(gs)


@torch.no_grad()
def predict(model: nn.Module, dataset: Sequence, batch_size: int = 256) -> tuple[torch.Tensor, ...]:
    """Logits, labels and groups of a whole split, in eval mode."""
    was_training = model.training
    model.eval()
    order = _eval_order(dataset)
    logits, ys, gs = [], [], []
    for start in range(0, len(dataset), batch_size):
        x, y, g = collate(dataset, order[start:start + batch_size])
        logits.append(model(x).float())
        ys.append(y)
        gs.append(g)
    model.train(was_training)
    out = torch.cat(logits), torch.cat(ys), torch.cat(gs)
    if isinstance(order, range):
        return out
    back = torch.empty(len(order), dtype=torch.int64)
    back[torch.as_tensor(order)] = torch.arange(len(order))
    return tuple(t[back] for t in out)


def _eval_order(dataset: Sequence) -> Sequence[int]:
    """The order in which ``predict`` batches a split: texts by length, so that a batch pads to
    lengths close to its own (a fifth fewer tokens on the embedded text task; the logits are
    returned in the split's order), anything else as it is."""
    if len(dataset) == 0 or not isinstance(dataset[0][0], str):
        return range(len(dataset))
    return sorted(range(len(dataset)), key=lambda i: (len(dataset[i][0]), i))


def evaluate(model: nn.Module, dataset, train_group_counts, batch_size: int = 256) -> dict:
    logits, y, g = predict(model, dataset, batch_size)
    return evaluate_logits(logits, y, g, dataset.n_groups, train_group_counts)


@dataclass
class Window:
    """Balancer diagnostics accumulated between two evaluations."""

    modes: Counter = field(default_factory=Counter)
    mu: list[float] = field(default_factory=list)
    conflict: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    # Per step: each group's batch loss (NaN where the batch lacks it) and the weights β of the
    # update; with the update's norm before clipping, they show where a balancer sends training
    # (a vanishing min-norm step, a group never weighted) and how near its ray it runs on the
    # training distribution, at no extra cost.
    group_loss: list[list[float]] = field(default_factory=list)
    beta: list[list[float]] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    clipped_steps: int = 0  # steps whose update was scaled down to clip_norm
    absent_steps: int = 0
    solver_failures: int = 0
    steps: int = 0

    def summary(self) -> dict:
        mean = lambda v: (sum(v) / len(v)) if v else None  # noqa: E731

        def per_group(rows: list[list[float]]) -> list[float | None] | None:
            if not rows:
                return None
            cols = zip(*rows, strict=True)
            return [mean([v for v in col if not math.isnan(v)]) for col in cols]

        return {
            "steps": self.steps,
            "train_loss": mean(self.loss),
            "per_group_loss": per_group(self.group_loss),
            "beta": per_group(self.beta),
            "grad_norm": mean(self.grad_norm),
            "clipped_steps": self.clipped_steps,
            "mode_counts": dict(self.modes),
            "mu": mean(self.mu),
            "conflict_frac": mean(self.conflict),
            "absent_steps": self.absent_steps,
            "solver_failures": self.solver_failures,
        }


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    return params


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the trained parameters (and buffers of fully fine-tuned models)."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    full = getattr(model, "batch_interacts", False)
    return {
        k: v.detach().clone()
        for k, v in model.state_dict().items()
        if k in names or (full and torch.is_tensor(v))
    }


def _atomic_save(obj: Any, path: Path) -> None:
    _io.atomic_write(path, lambda tmp: torch.save(obj, tmp))


_CKPT_KEYS = ("fingerprint", "model", "opt", "sched", "balancer", "rng", "state")


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """A resume checkpoint read with ``weights_only=True``: a crafted file cannot run code.

    Anything that is not a checkpoint this loop wrote (a pickle of other objects, a truncated or
    foreign file) is a ValueError naming the file to delete, so the run can start afresh.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every way a file can fail to load is the same fault
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"checkpoint {path} cannot be loaded safely ({reason[:200]}); delete "
                         f"{path} to start this run afresh") from None
    if not isinstance(saved, dict) or any(k not in saved for k in _CKPT_KEYS):
        raise ValueError(f"checkpoint {path} is not a training checkpoint of cptlib; delete "
                         f"{path} to start this run afresh")
    return saved



def train(
    model: nn.Module,
    train_set,
    val_set,
    test_set,
    cfg: TrainConfig,
    *,
    checkpoint: str | Path | None = None,
    progress: bool | None = None,
    on_eval: Callable[[dict], None] | None = None,
    stop_after: int | None = None,
    on_beta: Callable[[int, torch.Tensor], None] | None = None,
) -> dict:
    """Train ``model``'s trainable parameters with ``cfg``; return metrics and history.

    ``checkpoint``: a file written at every evaluation; if it exists (same config), training
    resumes from it. ``stop_after`` stops after that many steps (to test resuming).
    Model selection uses the validation ``cfg.selection`` metric, never test.
    ``on_beta(step, β)`` sees the weights this process's balancer computed at every step.
    In a process group (``cptlib.distributed``) every rank returns the same result; only rank 0
    writes the checkpoint.
    """
    K = train_set.n_groups
    cfg.validate(K)
    train_counts = train_set.train_group_counts
    balancer = make_balancer(cfg, K, train_counts)
    params = _trainable(model)  # what the optimiser steps (a conditioned model's θ⁰, W_1, b_1, U)
    cond = _conditioned(model, cfg)
    net = cond.model if cond else model  # what computes the logits and per-group gradients
    with cond.slots_trainable() if cond else nullcontext():
        grad_params = cond.slots if cond else params
        # Models whose forward pass mixes samples get the authors' way, the only exact one there.
        way = ("naive" if getattr(net, "batch_interacts", False)
               else resolve_way(net, cfg.grad_way, grad_params))
    # Groups with no training samples (MetaShift's evaluation-only contexts) take no part.
    present_ids = torch.unique(train_set.groups, return_inverse=True)[1]
    weights = sample_weights(present_ids, cfg.alpha).double()
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))

    torch.manual_seed(cfg.seed)
    state = {"step": 0, "history": [], "best": None, "best_score": -math.inf, "wall": 0.0}
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.exists():
        saved = _load_checkpoint(ckpt)
        if saved["fingerprint"] != cfg.fingerprint():
            raise ValueError(f"checkpoint {ckpt} was written by a different configuration")
        model.load_state_dict(saved["model"], strict=False)
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        if hasattr(balancer, "load_state_dict"):
            balancer.load_state_dict(saved["balancer"])
        torch.set_rng_state(saved["rng"])
        state = saved["state"]

    window = Window()
    model.train()
    bar = tqdm(
        total=cfg.steps,
        initial=state["step"],
        desc=f"{cfg.method}",
        disable=not show_progress(progress) or not D.is_main(),
        leave=False,
    )
    t0 = time.perf_counter()
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    # The forward pass at cfg.precision; losses, per-group gradients and balancer stay fp32.
    with precision(net, cfg.precision):
        while state["step"] < end:
            step = state["step"]
            batch = collate(train_set, batch_indices(weights, cfg.batch_size, cfg.seed, step))
            x, y, g = (D.shard(part) for part in batch)
            if cond is None:
                train_step(model, balancer, params, x, y, g, K, cfg, way, window, step, on_beta)
            else:
                c = sample_c(K, cfg.c_max, cfg.seed, step)
                balancer = make_balancer(cfg, K, train_counts, c)
                conditioned_step(cond, c, balancer, x, y, g, K, cfg, way, window, step, on_beta)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if cond is not None:
                cond.refresh()  # the slots follow the updated θ⁰, W_1, b_1, U
            state["step"] = step + 1
            bar.update(1)
            if state["step"] % cfg.eval_every == 0 or state["step"] == cfg.steps:
                entry = _evaluate_step(model, val_set, test_set, train_counts, cfg, state,
                                       window, opt, cond)
                window = Window()
                if on_eval is not None:
                    on_eval(entry)
                bar.set_postfix(val_wga=f"{entry['val']['worst_group_acc']:.3f}")
                if ckpt is not None:
                    state["wall"] += time.perf_counter() - t0
                    t0 = time.perf_counter()
                if ckpt is not None and D.is_main():
                    _atomic_save(
                        {
                            "fingerprint": cfg.fingerprint(),
                            "model": _state(model),
                            "opt": opt.state_dict(),
                            "sched": sched.state_dict(),
                            "balancer": getattr(balancer, "state_dict", dict)(),
                            "rng": torch.get_rng_state(),
                            "state": state,
                        },
                        ckpt,
                    )
    bar.close()
    state["wall"] += time.perf_counter() - t0
    if state["step"] < cfg.steps:
        return {"finished": False, "step": state["step"]}
    best = state["best"]
    return {
        "finished": True,
        "selected_step": best["step"],
        "val": best["val"],
        "test": best["test"],
        "last_val": state["history"][-1]["val"],
        "last_test": state["history"][-1]["test"],
        "history": state["history"],
        "best_state": best["model"],
        "train_time_s": state["wall"],
        "grad_way": way,
    }


def train_step(
    model: nn.Module,
    balancer: B.Balancer,
    params: list[nn.Parameter],
    x: Any,
    y: torch.Tensor,
    g: torch.Tensor,
    K: int,
    cfg: TrainConfig,
    way: str,
    window: Window,
    step: int,
    on_beta: Callable[[int, torch.Tensor], None] | None = None,
) -> None:
    """One step's gradient in ``p.grad`` (clipped), and its diagnostics in ``window``.

    The optimiser step is the caller's; ``cpt bench`` times exactly this function plus it.
    ``x, y, g`` are this process's slice of the batch; the balancer sees the global batch.
    """

    def agreed(beta: torch.Tensor) -> torch.Tensor:
        if on_beta is not None:
            on_beta(step, beta.detach().clone())
        return D.broadcast(beta)  # rank 0's β: the same update on every rank, to the bit

    window.steps += 1
    diagnose = bool(cfg.diag_every) and step % cfg.diag_every == 0
    # With "expand" the per-group gradients come from the plain forward and backward pass (same
    # dropout draws), so a diagnostic step of ERM-like balancers takes its update from them too.
    if balancer.needs_gramian or (diagnose and way == "expand"):
        gg = D.global_group_grads(per_group_grads(model, x, y, g, K, params=params, way=way))
        if balancer.needs_gramian:
            beta = agreed(balancer.weights(gg.losses, gg.gramian, gg.counts))
        else:
            beta = agreed(balancer.weights(gg.losses, counts=gg.counts))
        set_combined_grad(params, gg.grads, beta.to(gg.grads.dtype))
        window.conflict.append(conflict_fraction(gg.grads, beta.to(gg.grads.dtype) @ gg.grads,
                                                 gg.counts))
        counts, losses = gg.counts, gg.losses
    else:
        per_sample = F.cross_entropy(model(x), y, reduction="none")
        local, local_counts = group_losses(per_sample, g, K)
        losses, counts, _ = D.global_group_stats(local.detach(), local_counts)
        beta = agreed(balancer.weights(losses, counts=counts))
        # Σ_k β_k L_k of the global batch: this slice's share of each group's mean loss (all of
        # it with one process), its gradient summed over the ranks.
        share = (local_counts / counts.clamp(min=1)).to(local.dtype)
        (beta.to(local.dtype) * share * local).sum().backward()
        D.all_reduce_grads(params)
        if diagnose:
            # Diagnostics only: computed under a forked RNG so they never change training.
            with torch.random.fork_rng():
                grads = D.global_group_grads(
                    per_group_grads(model, x, y, g, K, params=params, way=way)).grads
            window.conflict.append(conflict_fraction(grads, beta.to(grads.dtype) @ grads, counts))
    norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm))
    window.grad_norm.append(norm)
    window.clipped_steps += norm > cfg.clip_norm
    window.beta.append(beta.detach().double().tolist())
    window.group_loss.append(torch.where(counts > 0, losses.detach().double(),
                                         math.nan).tolist())
    info = getattr(balancer, "info", {}) or {}
    if "mode" in info:
        window.modes[info["mode"]] += 1
    if info.get("mu") is not None:
        window.mu.append(float(info["mu"]))
    if info.get("solver_ok") is False:
        window.solver_failures += 1
    window.absent_steps += int((counts == 0).any())
    window.loss.append(float((counts.to(losses.dtype) * losses).sum() / counts.sum()))


def _conditioned(model: nn.Module, cfg: TrainConfig) -> Conditioned | None:
    """The conditioned wrapper if the run is conditioned; refuses a mismatch either way."""
    is_cond = isinstance(model, Conditioned)
    if is_cond != cfg.conditioned:
        raise ValueError("cfg.conditioned is true but the model is not wrapped in Conditioned"
                         if cfg.conditioned else
                         "a Conditioned model needs cfg.conditioned=true")
    return model if is_cond else None


def conditioned_step(cond: Conditioned, c: list[float], balancer: B.Balancer, x: Any,
                     y: torch.Tensor, g: torch.Tensor, K: int, cfg: TrainConfig, way: str,
                     window: Window, step: int,
                     on_beta: Callable[[int, torch.Tensor], None] | None = None) -> None:
    """One step of a conditioned run at ``c`` (``balancer`` aims at it): the ordinary step on
    θ(c), whose (clipped) gradient is carried back to the wrapper's parameters by one VJP."""
    theta = cond.set_c(c)
    with cond.slots_trainable() as slots:
        train_step(cond.model, balancer, slots, x, y, g, K, cfg, way, window, step, on_beta)
        grads = [s.grad if s.grad is not None else torch.zeros_like(s) for s in slots]
        torch.autograd.backward(theta, grads)


def grid_of(cfg: TrainConfig, n_groups: int) -> list[list[float]]:
    """The validation grid of c a conditioned run is selected on."""
    return [list(c) for c in cfg.c_grid] if cfg.c_grid else raise_grid(n_groups)


def reference_c(cfg: TrainConfig, n_groups: int) -> list[float]:
    """The c whose validation and test metrics a conditioned run's history reports."""
    return list(cfg.c) if cfg.c is not None else [1.0] * n_groups


def _score(metrics: dict, selection: str) -> float:
    score = metrics.get(selection)
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return -math.inf  # e.g. AUROC on a split with one class: never an improvement
    return float(score)


def _evaluate_step(model, val_set, test_set, train_counts, cfg, state, window, opt,
                   cond: Conditioned | None = None) -> dict:
    grid_val = None
    if cond is None:
        val = evaluate(model, val_set, train_counts, cfg.eval_batch_size)
        score = _score(val, cfg.selection)
    else:
        # Selection rule of a conditioned run: the validation metric averaged over the grid.
        K = val_set.n_groups
        grid = grid_of(cfg, K)
        grid_val = []
        for c in grid:
            cond.set_c(c)
            grid_val.append(evaluate(model, val_set, train_counts, cfg.eval_batch_size))
        ref = reference_c(cfg, K)
        cond.set_c(ref)
        val = grid_val[grid.index(ref)] if ref in grid else \
            evaluate(model, val_set, train_counts, cfg.eval_batch_size)
        score = sum(_score(v, cfg.selection) for v in grid_val) / len(grid_val)
    test = evaluate(model, test_set, train_counts, cfg.eval_batch_size)
    entry = {
        "step": state["step"],
        "lr": opt.param_groups[0]["lr"],
        "val": val,
        "test": test,
        "train": window.summary(),
    }
    if grid_val is not None:
        entry["grid_val"] = grid_val
        entry["selection_score"] = score
    state["history"].append(entry)
    if state["best"] is None or score > state["best_score"]:
        state["best_score"] = score
        state["best"] = {
            "step": state["step"],
            "val": val,
            "test": test,
            "model": copy.deepcopy(_state(model)),
        }
    return entry
