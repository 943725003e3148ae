"""Precision of control: how close a run's per-group losses end to the ray that c asks for.

CPT aims at the exact ray c_1 L_1 = … = c_K L_K (L_k ∝ 1/c_k); a weighted sum of the losses
aims at no ray in particular. Two distances from the ray, both 0 exactly on it and both blind to
the overall loss level (L → sL): the non-uniformity μ that CPT itself drives down
(method.md, step 2) and the angle between (L_k) and (1/c_k), which reads in degrees.
``history_control`` gives both at every evaluation of a record, ``control_at`` at the last or
the selected one, and ``control_over_training`` the long table step × run of a runs frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cptlib import records

#: The floor of l̂ inside log(K l̂) of method.md / ``cptlib.balancers`` (a zero loss is finite).
LHAT_FLOOR = 1e-12


def _vectors(losses: Any, c: Any) -> tuple[np.ndarray, np.ndarray]:
    """Losses and c over the groups that have a loss (None / NaN: absent from the split)."""
    L = np.asarray([math.nan if v is None else v for v in losses], dtype=np.float64)
    cv = np.asarray(c, dtype=np.float64)
    if L.ndim != 1 or cv.shape != L.shape:
        raise ValueError(f"losses and c must be 1-D of the same length, got {L.shape}, {cv.shape}")
    if not np.all(np.isfinite(cv)) or np.any(cv <= 0):
        raise ValueError(f"c must be finite and strictly positive, got {cv.tolist()}")
    present = ~np.isnan(L)
    if np.any(np.isinf(L[present])) or np.any(L[present] < 0):
        raise ValueError(f"losses must be finite and non-negative, got {L.tolist()}")
    return L[present], cv[present]


def non_uniformity(losses: Any, c: Any) -> float:
    """μ = KL(l̂ ‖ uniform) with l̂ = r⊙L / Σ r⊙L, r = c / Σc, as CPT computes it.

    Groups without a loss (None / NaN) are left out and r renormalised over the rest, as the
    balancer does for a batch that misses a group. Inside the logarithm l̂_k is floored at 1e-12
    (as in ``cptlib.balancers``), so a zero loss gives a finite μ. All losses 0 counts as on the
    ray (μ = 0); NaN when no group has a loss.
    """
    L, cv = _vectors(losses, c)
    if L.size == 0:
        return math.nan
    rl = cv / cv.sum() * L
    if rl.sum() <= 0:
        return 0.0
    l_hat = rl / rl.sum()
    return float(l_hat @ np.log(np.maximum(l_hat, LHAT_FLOOR) * L.size))


def ray_angle(losses: Any, c: Any) -> float:
    """Angle in degrees between (L_k) and (1/c_k): 0 on CPT's ray, up to 90 off it.

    Kahan's formula 2·atan2(‖u − v‖, ‖u + v‖) of the unit vectors, which stays accurate for the
    tiny angles of a run that sits on its ray (arccos of a dot product loses them). Groups
    without a loss are left out; all losses 0 is on the ray (0°); NaN when no group has a loss.
    """
    L, cv = _vectors(losses, c)
    if L.size == 0:
        return math.nan
    norm = np.linalg.norm(L)
    if norm == 0:
        return 0.0
    u, v = L / norm, (1 / cv) / np.linalg.norm(1 / cv)
    return float(np.degrees(2 * math.atan2(np.linalg.norm(u - v), np.linalg.norm(u + v))))


def _run_c(record: dict[str, Any], c: Sequence[float] | None) -> list[float]:
    params = record.get("params") or {}
    c = c if c is not None else params.get("c")
    if c is None and params.get("method") in ("cpt", "scalarized") and record.get("group_names"):
        c = [1.0] * len(record["group_names"])  # what training used (train.make_balancer)
    if c is None:
        raise ValueError(f"run {record.get('run_id')}: no control vector c (pass c= to measure "
                         "a run without one against a ray)")
    return list(c)


def history_control(
    record: dict[str, Any], split: str = "val", c: Sequence[float] | None = None
) -> pd.DataFrame:
    """μ and the angle at every evaluation of a record: columns step, selected, mu, angle.

    ``split`` names the history entry whose ``per_group_loss`` is measured ("val", "test", or a
    training-distribution evaluation where records hold one); ``c`` defaults to the run's own.
    """
    cv = _run_c(record, c)
    selected = (record.get("metrics") or {}).get("selected_step")
    rows = []
    for entry in record.get("history") or []:
        losses = (entry.get(split) or {}).get("per_group_loss")
        if losses is None:
            raise ValueError(f"run {record.get('run_id')}, step {entry.get('step')}: no "
                             f"per_group_loss for split {split!r}")
        rows.append({"step": entry["step"], "selected": entry["step"] == selected,
                     "mu": non_uniformity(losses, cv), "angle": ray_angle(losses, cv)})
    return pd.DataFrame(rows, columns=["step", "selected", "mu", "angle"])


def control_at(
    record: dict[str, Any], at: str = "last", split: str = "val",
    c: Sequence[float] | None = None,
) -> dict[str, float]:
    """μ and the angle at the last evaluation (``at="last"``) or the validation-selected one
    (``at="selected"``): the two checkpoints a run's result can come from."""
    if at not in ("last", "selected"):
        raise ValueError(f"at must be 'last' or 'selected', got {at!r}")
    hist = history_control(record, split, c)
    if hist.empty:
        raise ValueError(f"run {record.get('run_id')}: the record has no history")
    rows = hist[hist["selected"]] if at == "selected" else hist.tail(1)
    if rows.empty:
        raise ValueError(f"run {record.get('run_id')}: no evaluation at the selected step")
    row = rows.iloc[-1]
    return {"step": int(row["step"]), "mu": float(row["mu"]), "angle": float(row["angle"])}


#: Columns of a runs frame copied onto every row of the control tables (those present).
KEYS = ("run_id", "method", "c_str", "alpha", "seed")


def _with_keys(run: pd.Series, frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    return frame.assign(**{k: run[k] for k in keys if k in run.index})


def control_over_training(
    runs: pd.DataFrame, split: str = "val", keys: Sequence[str] = KEYS,
    read: Callable[[str], dict[str, Any]] = records.read_record,
) -> pd.DataFrame:
    """The long table step × run of μ and the angle, for the figure over training.

    ``runs`` is a ``load_records`` frame (its ``path`` column locates each record); every run
    needs a c, so select CPT / Scalarized runs first.
    """
    frames = [_with_keys(run, history_control(read(run["path"]), split), keys)
              for _, run in runs.iterrows()]
    if not frames:
        return pd.DataFrame(columns=[*[k for k in keys if k in runs.columns],
                                     "step", "selected", "mu", "angle"])
    return pd.concat(frames, ignore_index=True)


def control_table(
    runs: pd.DataFrame, split: str = "val", keys: Sequence[str] = KEYS,
    read: Callable[[str], dict[str, Any]] = records.read_record,
) -> pd.DataFrame:
    """One row per run: ``mu_last``, ``angle_last``, ``mu_selected``, ``angle_selected``; mean
    ± SE over seeds then comes from ``records.aggregate(table, ["method", "c_str"], …)``."""
    rows = []
    for _, run in runs.iterrows():
        record = read(run["path"])
        row = {k: run[k] for k in keys if k in run.index}
        for at in ("last", "selected"):
            got = control_at(record, at, split)
            row.update({f"mu_{at}": got["mu"], f"angle_{at}": got["angle"]})
        rows.append(row)
    return pd.DataFrame(rows)


def control_summary(runs: pd.DataFrame, split: str = "val",
                    read: Callable[[str], dict[str, Any]] = records.read_record) -> pd.DataFrame:
    """Mean ± SE over seeds of μ and the angle per (method, c), at the last and at the
    selected checkpoint (``control_table`` aggregated); CPT and Scalarized runs only."""
    keep = runs[runs["method"].isin(("cpt", "scalarized"))] if not runs.empty else runs
    if keep.empty:
        return pd.DataFrame()
    table = control_table(keep, split, read=read)
    values = ["mu_last", "angle_last", "mu_selected", "angle_selected"]
    return records.aggregate(table, ["method", "c_str"], values)


def control_pairs(runs: pd.DataFrame, split: str = "val", at: str = "last",
                  read: Callable[[str], dict[str, Any]] = records.read_record) -> pd.DataFrame:
    """CPT minus Scalarized in the angle and in μ, for every (c, seed) both have: does the
    balancer end nearer its ray than weighting the losses by the same c?"""
    keep = runs[runs["method"].isin(("cpt", "scalarized"))] if not runs.empty else runs
    if keep.empty:
        return pd.DataFrame()
    table = control_table(keep, split, read=read)
    cpt, sc = table[table["method"] == "cpt"], table[table["method"] == "scalarized"]
    both = cpt.merge(sc, on=["c_str", "seed"], suffixes=("_cpt", "_sc"))
    return pd.DataFrame({"c_str": both["c_str"], "seed": both["seed"],
                         "angle": both[f"angle_{at}_cpt"] - both[f"angle_{at}_sc"],
                         "mu": both[f"mu_{at}_cpt"] - both[f"mu_{at}_sc"]})
