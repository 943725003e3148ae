"""Run records as labelled DataFrames: one row per run, per (run, group), per evaluation.

``load_runs`` is the entry point of every chapter; the other frames re-read a run's full
record (history, group names) through ``read_run``, which caches by modification time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from cptlib import records
from cptlib.analysis.labels import (
    CONTROLLED,
    METHOD_NAMES,
    c_text,
    is_uniform,
    method_family,
    run_label,
)
from cptlib.paths import results_root


def column(df: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    """``df[name]``, or a column of ``default`` when the records have no such field."""
    return df[name] if name in df.columns else pd.Series([default] * len(df), index=df.index)


def label_runs(df: pd.DataFrame) -> pd.DataFrame:
    """``load_records`` rows, plus the columns ``label``, ``family``, ``method_name``,
    ``uniform_c`` and ``c_label``."""
    out = df.copy()
    method, alpha, c = column(out, "method", "?"), column(out, "alpha"), column(out, "c")
    eta = column(out, "eta")
    out["label"] = [run_label(m, a, v, e) for m, a, v, e in zip(method, alpha, c, eta,
                                                                 strict=True)]
    out["family"] = [method_family(m, a, e) for m, a, e in zip(method, alpha, eta, strict=True)]
    out["method_name"] = [METHOD_NAMES.get(m, str(m)) for m in method]
    out["uniform_c"] = [is_uniform(v) for v in c]
    out["c_label"] = [c_text(v) for v in c]
    return out


def results_path(value: Path | str) -> Path:
    """A results folder, resolved as the runs resolve theirs (``paths.results_root``)."""
    return results_root(value)


def load_runs(results_dir: Path | str, profile: str, experiment: str | None = None, *,
              conditioned: bool = False) -> pd.DataFrame:
    """The records of one experiment (or all) at one profile, labelled (``label_runs``).

    ``conditioned``: the runs of one adapter for every c instead of the ordinary runs, which
    every table and figure of the book compares (a conditioned CPT run is not a CPT(c) run).
    """
    runs = records.load_records(results_path(results_dir), profile, experiment)
    flag = column(runs, "conditioned", False).fillna(False).astype(bool)
    return label_runs(runs[flag == conditioned])


@lru_cache(maxsize=256)
def _read(path: str, mtime: float) -> dict[str, Any]:
    """A record file, cached by path and modification time (figures re-read histories)."""
    return records.read_record(path)


def read_run(path: str | Path) -> dict[str, Any]:
    """The full record behind a ``load_records`` row (history, group names, adapter size)."""
    return _read(str(path), Path(path).stat().st_mtime)


def sweep_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of methods that take a control vector (CPT, Scalarized), any c."""
    return runs if runs.empty else runs[column(runs, "method").isin(CONTROLLED)]


def n_groups(runs: pd.DataFrame, checkpoint: str = "test") -> int:
    prefix = f"{checkpoint}.per_group_acc."
    return sum(1 for col in runs.columns if col.startswith(prefix))


def group_names(runs: pd.DataFrame) -> list[str]:
    """Names of the groups of these runs (from the first record; ``group k`` if it has none)."""
    if runs.empty:
        return []
    k = n_groups(runs)
    names = read_run(runs["path"].iloc[0]).get("group_names") or []
    return [str(n) for n in names] if len(names) == k else [f"group {i}" for i in range(k)]


def per_group_long(runs: pd.DataFrame, checkpoint: str = "test") -> pd.DataFrame:
    """One row per (run, group): accuracy (%) and loss at ``checkpoint`` (test or last_test)."""
    names = group_names(runs)
    rows = []
    for _, run in runs.iterrows():
        for k, name in enumerate(names):
            rows.append({
                "label": run["label"], "family": run["family"], "c_label": run["c_label"],
                "seed": run.get("seed"), "group": name, "group_index": k,
                "acc": 100 * float(run[f"{checkpoint}.per_group_acc.{k}"]),
                "loss": float(run.get(f"{checkpoint}.per_group_loss.{k}", math.nan)),
            })
    return pd.DataFrame(rows)


def history_rows(run: pd.Series, record: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """One row per (evaluation, split, group) of one record's history."""
    names = record.get("group_names") or []
    counts = record.get("train_group_counts") or []
    selected = (record.get("metrics") or {}).get("selected_step")
    for entry in record.get("history") or []:
        for split in ("val", "test"):
            metrics = entry.get(split) or {}
            accs = metrics.get("per_group_acc") or []
            losses = metrics.get("per_group_loss") or [None] * len(accs)
            for k, (acc, loss) in enumerate(zip(accs, losses, strict=True)):
                yield {
                    "run_id": run["run_id"], "label": run["label"], "seed": run.get("seed"),
                    "step": entry["step"], "split": split,
                    "group": names[k] if k < len(names) else f"group {k}", "group_index": k,
                    "train_count": counts[k] if k < len(counts) else math.nan,
                    "acc": math.nan if acc is None else 100 * acc,
                    "loss": math.nan if loss is None else loss,
                    "selected_step": selected,
                }


def record_history(record: dict[str, Any]) -> pd.DataFrame:
    """``history_frame`` of a single record (a featured run page has the record, not a row)."""
    run = pd.Series({"run_id": record.get("run_id"), "label": "run",
                     "seed": (record.get("params") or {}).get("seed")})
    return pd.DataFrame(list(history_rows(run, record)))


def history_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Every evaluation of every run: one row per (run, step, split, group), accuracy in %."""
    rows = [row for _, run in runs.iterrows() for row in history_rows(run, read_run(run["path"]))]
    return pd.DataFrame(rows)


def diagnostics_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """The balancer diagnostics of every evaluation window: one row per (run, window).

    Columns: label, seed, step, steps (in the window), conflict_frac, mu, absent_steps,
    solver_failures, and ``mode:<name>`` counts (CPT's ``balance`` / ``descent``).
    """
    rows = []
    for _, run in runs.iterrows():
        for entry in read_run(run["path"]).get("history") or []:
            train = entry.get("train") or {}
            row = {
                "label": run["label"], "seed": run.get("seed"), "step": entry["step"],
                "steps": train.get("steps") or 0,
                "conflict_frac": train.get("conflict_frac"),
                "mu": train.get("mu"),
                "absent_steps": train.get("absent_steps") or 0,
                "solver_failures": train.get("solver_failures") or 0,
            }
            row.update({f"mode:{m}": n for m, n in (train.get("mode_counts") or {}).items()})
            rows.append(row)
    frame = pd.DataFrame(rows)
    for col in ("conflict_frac", "mu"):
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame
