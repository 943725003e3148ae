"""Paired comparisons over seeds, and the dynamics of training put into numbers.

A seed fixes the data order and initialisation for every method, so the difference between two
methods run with the same seed removes that shared noise: ``paired_difference`` gives its mean,
standard error, a t interval and a verdict a sentence can quote. ``steps_to_reach`` (how early
the minority groups learn) and ``best_minus_last`` (how much is lost after the peak) are read
from a record's history; ``dynamics_table`` and ``records.aggregate`` give mean ± SE per method.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from cptlib import records


@dataclass(frozen=True)
class PairedDifference:
    """Treatment minus baseline of one metric over the seeds both have."""

    treatment: str
    baseline: str
    metric: str
    differences: pd.Series  # per seed, indexed by seed
    mean: float
    se: float  # std (ddof = 1) / √n; NaN for one seed
    ci_low: float
    ci_high: float
    level: float
    n: int
    n_unpaired: int  # runs of either side whose seed the other lacks (or whose metric is NaN)
    verdict: str


def _by_seed(runs: pd.DataFrame, metric: str, seed: str, name: str) -> pd.Series:
    for col in (metric, seed):
        if col not in runs.columns:
            raise ValueError(f"{name} runs have no column {col!r}")
    values = pd.to_numeric(runs[metric], errors="coerce")
    values.index = runs[seed]
    values = values.dropna()
    if values.index.duplicated().any():
        dup = values.index[values.index.duplicated()][0]
        raise ValueError(f"{name} has more than one run with {seed} = {dup}: cannot pair them")
    return values


def mean_se(values: pd.Series | Sequence[float]) -> tuple[float, float, int]:
    """(mean, standard error, n) of ``values`` with NaNs dropped; the SE (std ddof = 1 / √n)
    is NaN for fewer than two values."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    n = len(v)
    return (float(v.mean()) if n else math.nan,
            float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan, n)


def mean_interval(values: pd.Series | Sequence[float],
                  level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of ``values`` with a t interval at ``level`` (n − 1 degrees of
    freedom); NaNs are dropped, and the interval is NaN for fewer than two values."""
    mean, se, n = mean_se(values)
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * se if n > 1 else math.nan
    return mean, mean - half, mean + half, n


def verdict(treatment: str, ci_low: float, ci_high: float, n: int) -> str:
    """What the interval lets a sentence say: higher, lower, or not distinguishable."""
    if n < 2:
        return "cannot be told with one seed"
    if ci_low > 0:
        return f"{treatment} higher"
    if ci_high < 0:
        return f"{treatment} lower"
    return f"not distinguishable at {n} seeds"


def paired_difference(
    treatment: pd.DataFrame, baseline: pd.DataFrame, metric: str, *,
    treatment_name: str = "CPT", baseline_name: str = "baseline", seed: str = "seed",
    level: float = 0.95,
) -> PairedDifference:
    """Per-seed ``treatment − baseline`` of ``metric``, with mean, SE and a t interval at
    ``level`` (n − 1 degrees of freedom). Seeds only one side has are dropped and counted."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    t = _by_seed(treatment, metric, seed, treatment_name)
    b = _by_seed(baseline, metric, seed, baseline_name)
    common = t.index.intersection(b.index).sort_values()
    if common.empty:
        raise ValueError(f"{treatment_name} and {baseline_name} share no seed with a {metric}")
    diff = (t[common] - b[common]).rename(metric)
    mean, low, high, n = mean_interval(diff, level)
    se = float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    unpaired = len(t) + len(b) - 2 * n
    return PairedDifference(treatment_name, baseline_name, metric, diff, mean, se, low, high,
                            level, n, unpaired, verdict(treatment_name, low, high, n))


def paired_table(
    runs: pd.DataFrame, by: str, treatment: str, baselines: Sequence[str],
    metrics: Sequence[str], *, seed: str = "seed", level: float = 0.95,
) -> pd.DataFrame:
    """One row per (baseline, metric) of ``paired_difference``: the main table's "CPT minus
    each baseline" columns, with ``by`` the column naming the method (or label)."""
    if by not in runs.columns:
        raise ValueError(f"runs have no column {by!r}")
    rows = []
    for base in baselines:
        for metric in metrics:
            d = paired_difference(runs[runs[by] == treatment], runs[runs[by] == base], metric,
                                  treatment_name=treatment, baseline_name=base, seed=seed,
                                  level=level)
            rows.append({"treatment": treatment, "baseline": base, "metric": metric,
                         "mean": d.mean, "se": d.se, "ci_low": d.ci_low, "ci_high": d.ci_high,
                         "n": d.n, "n_unpaired": d.n_unpaired, "verdict": d.verdict})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- dynamics


def steps_to_reach(
    record: dict[str, Any], groups: Sequence[int], threshold: float, split: str = "val"
) -> int | None:
    """First evaluation step where every group in ``groups`` has ``split`` accuracy ≥
    ``threshold`` (the minority groups learnt); None if no evaluation gets there."""
    if not groups:
        raise ValueError("groups must name at least one group index")
    for entry in record.get("history") or []:
        acc = (entry.get(split) or {}).get("per_group_acc") or []
        if max(groups) >= len(acc) or min(groups) < 0:
            raise ValueError(f"groups {list(groups)} do not index {len(acc)} groups of {split!r}")
        values = [acc[k] for k in groups]
        if all(v is not None for v in values) and min(values) >= threshold:
            return int(entry["step"])
    return None


def best_minus_last(
    record: dict[str, Any], metric: str = "worst_group_acc", split: str = "test"
) -> float:
    """Highest ``split`` ``metric`` over the evaluations minus the last one's: ≥ 0, and 0 for a
    run that ends at its peak (how much late training loses)."""
    values = [(e.get(split) or {}).get(metric) for e in record.get("history") or []]
    values = [math.nan if v is None else float(v) for v in values]
    if not values or math.isnan(values[-1]):
        return math.nan
    return float(np.nanmax(values) - values[-1])


def dynamics_table(
    runs: pd.DataFrame, groups: Sequence[int], threshold: float, *,
    keys: Sequence[str] = ("run_id", "method", "c_str", "alpha", "seed"),
    read: Callable[[str], dict[str, Any]] = records.read_record,
) -> pd.DataFrame:
    """One row per run: ``steps_to_reach`` (NaN if never) and ``best_minus_last``; mean ± SE
    per method from ``records.aggregate`` (which averages over the runs that reached)."""
    rows = []
    for _, run in runs.iterrows():
        record = read(run["path"])
        reached = steps_to_reach(record, groups, threshold)
        rows.append({**{k: run[k] for k in keys if k in run.index},
                     "steps_to_reach": math.nan if reached is None else reached,
                     "reached": reached is not None,
                     "best_minus_last": best_minus_last(record)})
    return pd.DataFrame(rows)


def dynamics_summary(table: pd.DataFrame, by: Sequence[str] = ("method",)) -> pd.DataFrame:
    """Mean ± SE of ``dynamics_table``'s columns per ``by``, plus ``n_reached``: the runs the
    mean of ``steps_to_reach`` is over (a run that never reaches the level has no step)."""
    out = records.aggregate(table, list(by), ["steps_to_reach", "best_minus_last"])
    reached = table.groupby(list(by), dropna=False)["reached"].sum().rename("n_reached")
    return out.merge(reached.astype(int).reset_index(), on=list(by), how="left")
