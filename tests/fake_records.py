"""Fake run records in the layout of ``cptlib.runs.worker.run_training``, for testing the book.

The numbers are made up (seeded, deterministic) so that every figure and table has something
to draw: they must never be shown as results. Records go to a temporary results folder, never
to the project's ``results/``.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cptlib import records
from cptlib.analysis import load_runs

GROUPS = ["landbird/land", "landbird/water", "waterbird/land", "waterbird/water"]
TRAIN_COUNTS = [3498, 184, 56, 1057]
TEXT_GROUPS = ["negative/no token", "negative/token", "positive/no token", "positive/token"]

# TrainConfig's fields and defaults (cptlib.train), as a record's params hold them.
TRAIN_DEFAULTS: dict[str, Any] = {
    "method": "erm", "c": None, "alpha": 0.0, "lr": 0.1, "batch_size": 64,
    "weight_decay": 1e-3, "momentum": 0.9, "clip_norm": 1.0, "steps": 40, "epochs": 0.0,
    "warmup_epochs": 0.0, "warmup_steps": 0, "schedule": "cosine", "eval_every": 10,
    "grad_way": "split", "eta": 0.01, "gdro_adjustment": 0.0, "eps": 1e-4,
    "selection": "worst_group_acc", "diag_every": 10, "eval_batch_size": 256, "seed": 0,
}
# The main table's settings: (method, alpha, c).
MAIN = [
    ("erm", 0.0, None), ("erm", 1.0, None), ("groupdro", 1.0, None),
    ("scalarized", 1.0, [1, 1, 1, 1]), ("mgda", 1.0, None), ("cpt", 1.0, [1, 1, 1, 1]),
]
EVAL_N = 100  # validation and test samples per group
SWEEP_CS = [[4, 1, 1, 1], [1, 4, 1, 1], [1, 1, 4, 1], [1, 1, 1, 4]]


def _rng(*key: Any) -> np.random.Generator:
    """A generator seeded by the run's identity (stable across processes, unlike hash())."""
    return np.random.default_rng(zlib.crc32(json.dumps(key, default=str).encode()))


def _final_acc(method: str, alpha: float, c: list[float] | None, rng) -> np.ndarray:
    """Made-up final per-group accuracies with a recognisable shape per method."""
    if method == "erm" and alpha == 0:
        acc = np.array([0.99, 0.62, 0.41, 0.92])
    else:
        acc = np.array([0.86, 0.82, 0.85, 0.80])
    if c is not None and method in ("cpt", "scalarized"):
        gain = 0.03 if method == "cpt" else 0.01
        logc = np.log(np.asarray(c, dtype=float) / np.mean(c))
        acc = acc + gain * logc / math.log(4) * 3
    return np.clip(acc + rng.normal(0, 0.015, 4), 0.0, 1.0)


def _metrics(
    acc: np.ndarray, train_counts: list[int], rng, n_eval: int = EVAL_N
) -> dict[str, Any]:
    """A metrics dict M as ``cptlib.metrics.evaluate_logits`` returns it."""
    acc = np.round(acc * n_eval) / n_eval  # what n_eval samples per group can give
    loss = -np.log(np.clip(acc, 0.05, 0.999)) + rng.uniform(0.0, 0.05, len(acc))
    w = np.asarray(train_counts, dtype=float)
    return {
        "worst_group_acc": float(acc.min()),
        "avg_acc": float((acc * w).sum() / w.sum()),
        "mean_acc": float(acc.mean()),
        "per_group_acc": acc.tolist(),
        "per_group_loss": loss.tolist(),
        "per_group_n": [n_eval] * len(acc),
        "loss": float(loss.mean()),
        "auroc": float(np.clip(acc.mean() + 0.05, 0, 1)),
    }


#: Mean update norm before clipping per method (clip_norm = 1): MGDA's min-norm step is small.
GRAD_NORMS = {"erm": 2.0, "groupdro": 1.5, "scalarized": 1.8, "mgda": 0.05, "cpt": 1.2}


def _train_window(method: str, steps: int, rng, acc: np.ndarray) -> dict[str, Any]:
    """One evaluation window's training diagnostics; the per-group training losses, β and
    update norm follow from the method and the accuracies, without new draws from ``rng``
    (the other fake values stay what they were before the records held them)."""
    balance = int(rng.integers(steps // 2, steps + 1)) if method == "cpt" else 0
    # MGDA's min-norm step leans on the best-fit group (the smallest gradient), as measured
    beta = np.full(len(acc), 1 / len(acc)) if method != "mgda" else np.eye(len(acc))[
        int(np.argmax(acc))]
    return {
        "steps": steps,
        "train_loss": float(rng.uniform(0.2, 0.7)),
        "per_group_loss": (-np.log(np.clip(acc, 0.05, 0.999)) * 0.8).tolist(),
        "beta": beta.tolist(),
        "grad_norm": GRAD_NORMS.get(method, 1.0),
        "clipped_steps": steps if GRAD_NORMS.get(method, 1.0) > 1 else 0,
        "mode_counts": {"balance": balance, "descent": steps - balance} if method == "cpt" else {},
        "mu": float(rng.uniform(1e-3, 1e-1)) if method == "cpt" else None,
        "conflict_frac": float(rng.uniform(0.0, 0.5)),
        "absent_steps": int(rng.integers(0, 3)),
        "solver_failures": 0,
    }


def fake_record(
    experiment: str, profile: str, method: str, alpha: float, c: list[float] | None, seed: int,
    *, dataset: str = "synthetic", group_names: list[str] = GROUPS,
    train_counts: list[int] = TRAIN_COUNTS, model: str = "quick", steps: int = 40,
    eval_every: int = 10, model_options: dict[str, Any] | None = None, trainable: int = 2114,
    eta: float = 0.01,
) -> tuple[dict[str, Any], Path]:
    """One record (and its relative path ``profile/experiment/<run_id>.json``)."""
    params: dict[str, Any] = {
        "experiment": experiment, "dataset": dataset, "data_root": None, "data_size": "smoke",
        "data_seed": 0, "model": model,
        "model_options": {"prompt_tokens": 2} if model_options is None else model_options,
        "class_names": None, "img_size": 32,
        **TRAIN_DEFAULTS,
        "method": method, "alpha": alpha, "c": c, "seed": seed, "steps": steps,
        "eval_every": eval_every, "eta": eta,
    }
    # The default η is left out of the key: records written before η varied stay the same.
    key = (experiment, profile, method, alpha, c, seed) + (() if eta == 0.01 else (eta,))
    rng = _rng(*key)
    final = _final_acc(method, alpha, c, rng)
    history = []
    for step in range(eval_every, steps + 1, eval_every):
        frac = 1 - math.exp(-3 * step / steps)
        acc = np.clip(0.5 + (final - 0.5) * frac + rng.normal(0, 0.02, 4), 0, 1)
        history.append({
            "step": step, "lr": 0.1 * 0.5 * (1 + math.cos(math.pi * step / steps)),
            "val": _metrics(acc, train_counts, rng), "test": _metrics(acc, train_counts, rng),
            "train": _train_window(method, eval_every, rng, acc),
        })
    best = max(history, key=lambda h: h["val"]["worst_group_acc"])
    path = records.record_path(Path("."), profile, experiment, params)
    record = {
        "schema": "cptlib-run/1",
        "experiment": experiment, "profile": profile, "run_id": path.stem, "params": params,
        "metrics": {"val": best["val"], "test": best["test"], "last_val": history[-1]["val"],
                    "last_test": history[-1]["test"], "selected_step": best["step"]},
        "history": history,
        "group_names": group_names,
        "train_group_counts": train_counts,
        "split_group_counts": {"train": train_counts, "val": [EVAL_N] * len(train_counts),
                               "test": [EVAL_N] * len(train_counts)},
        "trainable_params": trainable,
        "adapter": f"{path.stem}.safetensors",
        "adapter_bytes": 9_000 + int(rng.integers(0, 100)),
        "wall_time_s": 12.0 + float(rng.uniform(0, 2)),
        "train_time_s": (10.0 if method in ("erm", "groupdro") else 13.0) + rng.uniform(0, 1),
        "resolved": {"steps": steps, "warmup_steps": 0, "eval_every": eval_every,
                     "grad_way": "split"},
        "code_version": "fake00000000",
        "provenance": {"fake": True, "hardware": {"cpu_count": 2, "torch_threads": 1}},
        "notebook": None,
    }
    return record, path


def _raised(k: int | None, strength: float, n: int = 4) -> list[float]:
    return [strength if j == k else 1.0 for j in range(n)]


def fake_conditioned_record(experiment: str, profile: str, seed: int,
                            **kwargs: Any) -> tuple[dict[str, Any], Path]:
    """A conditioned CPT record: ``metrics`` gains ``grid``, ``paths``, ``search`` (as
    ``cptlib.runs.worker.conditioned_metrics`` writes them), made up like the others."""
    record, _ = fake_record(experiment, profile, "cpt", 1.0, None, seed, **kwargs)
    params = {**record["params"], "conditioned": True, "c_max": 8.0, "c_hidden": 16,
              "c_grid": None, "c_search_evals": 32}
    path = records.record_path(Path("."), profile, experiment, params)
    rng = _rng(experiment, profile, "conditioned", seed)
    counts = record["train_group_counts"]

    def at(c: list[float]) -> dict[str, Any]:
        acc = _final_acc("cpt", 1.0, c, rng)
        return {"c": c, "val": _metrics(acc, counts, rng), "test": _metrics(acc, counts, rng)}

    grid = [at(_raised(None, 1.0))] + [at(_raised(k, 4.0)) for k in range(4)]
    paths = [{"raised": None, "strength": 1.0, **grid[0]}]
    paths += [{"raised": k, "strength": s, **(grid[1 + k] if s == 4.0 else at(_raised(k, s)))}
              for k in range(4) for s in (2.0, 4.0, 8.0)]
    search = [{"objective": "worst_group", "tau": None, "evals": 32,
               **at([2.0, 3.5, 1.2, 1.0])},
              {"objective": "avg_at_worst_group", "tau": grid[0]["val"]["worst_group_acc"],
               "evals": 30, **grid[0]}]
    record.update(run_id=path.stem, params=params, adapter=f"{path.stem}.safetensors",
                  adapter_bytes=145_000, trainable_params=36_018)
    record["metrics"].update(val=grid[0]["val"], test=grid[0]["test"], grid=grid, paths=paths,
                             search=search, dial_time_s=40.0 + seed)
    record["train_time_s"] = 16.0 + seed
    return record, path


def write_fake_results(
    results: Path, profile: str = "smoke", seeds: tuple[int, ...] = (0, 1, 2), *,
    text: bool = True, paper: bool = False, bench: bool = False, conditioned: bool = True,
    fronts: bool = False,
) -> list[Path]:
    """Write a profile's worth of fake records under ``results`` and return their paths.

    synthetic: the six main settings over ``seeds`` and a c sweep of CPT and Scalarized at the
    first seed (``fronts``: at every seed, with ERM at α = 0.5 and 2 and GroupDRO at η = 0.001
    and 0.1: every family swept over its knob), and (``conditioned``) one adapter for every c
    over ``seeds``; text: ERM and
    CPT over ``seeds``; paper (optional): waterbirds ERM and CPT at
    one seed; bench (optional): a CPU and a GPU ``cpt bench`` file.
    """
    eta = 0.01  # GroupDRO's default step size
    runs = [("synthetic", m, a, c, s, eta) for m, a, c in MAIN for s in seeds]
    sweep_seeds = seeds if fronts else seeds[:1]
    runs += [("synthetic", m, 1.0, c, s, eta) for m in ("cpt", "scalarized") for c in SWEEP_CS
             for s in sweep_seeds]
    if fronts:
        runs += [("synthetic", "erm", a, None, s, eta) for a in (0.5, 2.0) for s in seeds]
        runs += [("synthetic", "groupdro", 1.0, None, s, e) for e in (0.001, 0.1) for s in seeds]
    if text:
        runs += [("text", "erm", 0.0, None, s, eta) for s in seeds]
        runs += [("text", "cpt", 1.0, [1, 1, 1, 1], s, eta) for s in seeds]
    written = []
    for experiment, method, alpha, c, seed, run_eta in runs:
        # The text runs train MiniLM with 8 prompt tokens: 8 × 384 + 770 = 3,842 parameters.
        text_run = {"dataset": "synthetic-text", "group_names": TEXT_GROUPS, "model": "minilm",
                    "model_options": {"prompt_tokens": 8}, "trainable": 3842}
        record, rel = fake_record(experiment, profile, method, alpha, c, seed,
                                  eta=run_eta,
                                  **(text_run if experiment == "text" else {}))
        written.append(records.write_record(record, results / rel))
    for seed in seeds if conditioned else ():
        record, rel = fake_conditioned_record("synthetic", profile, seed)
        written.append(records.write_record(record, results / rel))
    if paper:
        for method, alpha, c in (("erm", 0.0, None), ("cpt", 2.0, [1, 1, 1, 1])):
            record, rel = fake_record("waterbirds", "paper", method, alpha, c, 0,
                                      dataset="waterbirds", model="vit_base_patch16_224")
            written.append(records.write_record(record, results / rel))
    if bench:
        written += write_fake_bench(results / "bench")
        written.append(write_fake_run_profile(results / "profile" / "quick.json"))
    written.append(write_fake_trainable(results, profile))
    return written


#: Rows of ``trainable_params.json`` as ``cpt book`` writes them (``trainable_table()``):
#: MiniLM at its default 20 prompt tokens (20 × 384 + the 2-class head's 770 = 8,450).
FAKE_TRAINABLE = [
    {"model": "quick", "method": "VPT-deep", "trainable": 2114, "backbone_params": 215_000,
     "percent": 0.98},
    {"model": "minilm", "method": "prompt tuning", "trainable": 8450,
     "backbone_params": 22_713_216, "percent": 0.0372},
]


def write_fake_trainable(results: Path, profile: str) -> Path:
    """``<results>/<profile>/trainable_params.json`` (the parameter counts of the models)."""
    path = results / profile / "trainable_params.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(FAKE_TRAINABLE))
    return path


def fake_runs(results: Path, experiment: str = "synthetic", fronts: bool = False
              ) -> pd.DataFrame:
    """A profile's worth of fake records (with bench files) written under ``results`` and
    loaded as a chapter loads them; ``attrs["results"]`` keeps the folder."""
    write_fake_results(results, "smoke", bench=True, fronts=fronts)
    runs = load_runs(results, "smoke", experiment)
    runs.attrs["results"] = results
    return runs


def write_fake_run_profile(path: Path) -> Path:
    """A ``python -m cptlib.run_profile`` file: one run, both precisions."""
    def entry(step: float, val: float, test: float, **extra: float) -> dict:
        train, evals = 296 * step, 4 * (val + test)
        return {"step_s": step, "eval_val_s": val, "eval_test_s": test, "train_s": train,
                "eval_s": evals, "run_s": 2.0 + train + evals, **extra}

    run = {"experiment": "synthetic", "profile": "quick", "method": "cpt", "run_steps": 296,
           "run_evals": 4, "threads": 1, "data_s": 1.5, "model_s": 0.5,
           "precisions": {"fp32": entry(0.2, 1.0, 1.0),
                          "bf16": entry(0.1, 0.5, 0.5, max_logit_diff=0.02,
                                        same_prediction=0.99)}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": {"cpu": "fake"}, "imports_s": 3.0, "runs": [run]}))
    return path


def write_fake_bench(folder: Path) -> list[Path]:
    """A CPU and a GPU bench file: ``{"machine": {...}, "rows": [...]}``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, device in (("cpu.json", "fake CPU, 2 threads"), ("gpu-h200.json", "fake GPU")):
        rows = [
            {"model": "quick", "method": m, "groups": k, "batch": 64, "median_s": 0.09 * r,
             "ratio_to_erm": r, "peak_mem_mb": 300.0 * r}
            for k in (4, 8)
            for m, r in (("erm", 1.0), ("groupdro", 1.01), ("cpt-split", 1.1 + k / 100),
                         ("cpt-naive", 2.5 + k / 10))
        ]
        # As cpt bench writes the LP timed alone: no model, no batch, no ratio, no memory.
        rows += [{"model": "none", "method": "balancer-only", "groups": k, "batch": None,
                  "median_s": 0.0012, "ratio_to_erm": None, "peak_mem_mb": None}
                 for k in (4, 8)]
        path = folder / name
        path.write_text(json.dumps({"machine": {"device": device}, "rows": rows}))
        out.append(path)
    return out
