"""Trade-off fronts: each method is a family swept over its own knob, compared by its front.

A single run is one point in the plane (worst-group accuracy, average accuracy); a method that
can be tuned is a set of such points, and what matters is the best trade-offs it can reach.
``pareto_front`` finds them (both coordinates maximised), ``hypervolume_2d`` summarises a front
by the area it dominates above a stated reference point, and ``family_hypervolumes`` /
``best_subject_to`` compute these per family and seed from a ``load_records`` table, so that
``summarise_over_seeds`` can give mean ± SE over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cptlib import records

#: Default plane: validation-selected test worst-group and (train-weighted) average accuracy.
X_METRIC = "test.worst_group_acc"
Y_METRIC = "test.avg_acc"

Family = str | Callable[[pd.Series], Any]


def _as_points(points: Any) -> np.ndarray:
    """An (n, 2) float array of finite points, or a ValueError naming the problem."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("points must be finite (a NaN accuracy is a broken run, not a trade-off)")
    return arr


def pareto_mask(points: Any) -> np.ndarray:
    """Which points are on the front (maximising both coordinates), as a boolean mask.

    A point is kept unless another is at least as good in both coordinates and better in one;
    of exact duplicates only the first is kept, so the front lists each trade-off once.
    """
    arr = _as_points(points)
    order = np.lexsort((np.arange(len(arr)), -arr[:, 1], -arr[:, 0]))  # x desc, y desc, index
    keep = np.zeros(len(arr), dtype=bool)
    best_y = -math.inf
    for i in order:  # a point survives iff it beats every point with a larger (or equal) x on y
        if arr[i, 1] > best_y:
            keep[i] = True
            best_y = arr[i, 1]
    return keep


def pareto_front(points: Any) -> np.ndarray:
    """The non-dominated points, sorted by the first coordinate ascending (y then descends)."""
    arr = _as_points(points)
    front = arr[pareto_mask(arr)]
    return front[np.argsort(front[:, 0], kind="stable")]


def _check_reference(reference: Sequence[float]) -> tuple[float, float]:
    ref = tuple(float(v) for v in reference)
    if len(ref) != 2 or not all(math.isfinite(v) for v in ref):
        raise ValueError(f"reference must be two finite numbers, got {reference!r}")
    return ref  # type: ignore[return-value]


def hypervolume_2d(points: Any, reference: Sequence[float]) -> float:
    """Area of the region dominated by the points and dominating ``reference`` (exact).

    The reference point states the worst trade-off still worth counting; a point that does not
    strictly beat it in both coordinates contributes nothing. Computed by sorting the front by
    x descending and adding the rectangles each point adds above the previous one's y.
    """
    rx, ry = _check_reference(reference)
    arr = _as_points(points)
    arr = arr[(arr[:, 0] > rx) & (arr[:, 1] > ry)]
    area, prev_y = 0.0, ry
    for x, y in pareto_front(arr)[::-1]:  # x descending, y ascending
        area += (x - rx) * (y - prev_y)
        prev_y = y
    return float(area)


def _family_series(runs: pd.DataFrame, family: Family) -> pd.Series:
    if callable(family):
        return runs.apply(family, axis=1) if len(runs) else pd.Series([], dtype=object)
    if family not in runs.columns:
        raise ValueError(f"family: no column {family!r}; available: {sorted(runs.columns)}")
    return runs[family]


def _knob_values(runs: pd.DataFrame, fam: Any, knob: str | Mapping[Any, str]) -> pd.Series:
    col = knob.get(fam) if isinstance(knob, Mapping) else knob
    if col is None or col not in runs.columns:
        raise ValueError(f"knob of family {fam!r}: no column {col!r} in the runs")
    return runs[col].map(lambda v: tuple(v) if isinstance(v, list) else v)


def _family_seed_groups(
    runs: pd.DataFrame, family: Family, knob: str | Mapping[Any, str], x: str, y: str,
    seed: str, common_knobs: bool = False,
):
    """(family, seed, runs, knob values) per group, checked: one run per knob value, finite
    metrics. Runs whose family is None or whose seed is missing are left out; with
    ``common_knobs`` so are knob values that some seed of the family lacks."""
    for col in (x, y, seed):
        if col not in runs.columns:
            raise ValueError(f"runs have no column {col!r}")
    runs = runs.reset_index(drop=True)  # a concatenated frame may repeat index labels
    fams = _family_series(runs, family)
    runs = runs[fams.notna() & runs[seed].notna()].assign(_family=fams[fams.notna()])
    for fam, fam_runs in runs.groupby("_family", sort=True):
        knobs = _knob_values(fam_runs, fam, knob)
        if common_knobs:
            seeds_of = fam_runs[seed].groupby(knobs).nunique().to_dict()
            keep = knobs.map(seeds_of).eq(fam_runs[seed].nunique())
            fam_runs, knobs = fam_runs[keep], knobs[keep]
        for s, group in fam_runs.groupby(seed, sort=True):
            k = knobs[group.index]
            if k.duplicated().any():
                dup = k[k.duplicated()].iloc[0]
                raise ValueError(f"family {fam!r}, seed {s}: more than one run with knob {dup!r}")
            if not np.all(np.isfinite(group[[x, y]].to_numpy(dtype=float))):
                raise ValueError(f"family {fam!r}, seed {s}: NaN in {x!r} or {y!r}")
            yield fam, s, group.reset_index(drop=True), k.reset_index(drop=True)


def family_hypervolumes(
    runs: pd.DataFrame,
    family: Family,
    knob: str | Mapping[Any, str],
    reference: Sequence[float],
    x: str = X_METRIC,
    y: str = Y_METRIC,
    seed: str = "seed",
    common_knobs: bool = False,
) -> pd.DataFrame:
    """Hypervolume of each family's front per seed: columns family, seed, n_points, n_front,
    hypervolume.

    ``family`` is a column or a function of a run's row (None leaves the run out); ``knob`` is
    the column swept within a family (or a mapping family -> column: c for CPT, α for ERM).
    Per seed, because a seed is one paired draw of every knob value of a family. A front of
    more points can only have more hypervolume, so seeds with unequal sweeps are not
    comparable: ``n_points`` shows it, and ``common_knobs=True`` keeps only the knob values
    every seed of the family has.
    """
    ref = _check_reference(reference)
    rows = []
    for fam, s, group, _ in _family_seed_groups(runs, family, knob, x, y, seed, common_knobs):
        pts = group[[x, y]].to_numpy(dtype=float)
        rows.append({"family": fam, "seed": s, "n_points": len(pts),
                     "n_front": int(pareto_mask(pts).sum()),
                     "hypervolume": hypervolume_2d(pts, ref)})
    return pd.DataFrame(rows, columns=["family", "seed", "n_points", "n_front", "hypervolume"])


def best_subject_to(
    runs: pd.DataFrame,
    family: Family,
    knob: str | Mapping[Any, str],
    min_y: float,
    x: str = X_METRIC,
    y: str = Y_METRIC,
    seed: str = "seed",
    common_knobs: bool = False,
) -> pd.DataFrame:
    """Each family's best ``x`` among its runs with ``y >= min_y``, per seed.

    The question "how high a worst group can it reach while keeping the average at least
    this high?" Columns family, seed, best, knob (of the best run), reason (missing where
    ``best`` is defined, else why it is NaN: no run reaches the level, and the highest ``y``).
    """
    if not math.isfinite(float(min_y)):
        raise ValueError(f"min_y must be a finite number, got {min_y!r}")
    rows = []
    for fam, s, group, knobs in _family_seed_groups(runs, family, knob, x, y, seed,
                                                    common_knobs):
        ok = group[group[y] >= min_y]
        if ok.empty:
            rows.append({"family": fam, "seed": s, "best": math.nan, "knob": None,
                         "reason": f"no run has {y} >= {min_y:g} (highest {group[y].max():g})"})
            continue
        top = ok[x].idxmax()
        rows.append({"family": fam, "seed": s, "best": float(ok.at[top, x]),
                     "knob": knobs.iloc[top], "reason": None})
    return pd.DataFrame(rows, columns=["family", "seed", "best", "knob", "reason"])


def summarise_over_seeds(per_seed: pd.DataFrame, value: str, by: str = "family") -> pd.DataFrame:
    """Mean ± SE over seeds of ``value`` per ``by`` (``records.aggregate``: SE = std/√n, ddof 1),
    plus ``n_defined``, the seeds where ``value`` is not NaN (the mean is over those)."""
    out = records.aggregate(per_seed, [by], [value])
    defined = per_seed.groupby(by, sort=True)[value].count()
    return out.assign(n_defined=out[by].map(defined).astype(int))
