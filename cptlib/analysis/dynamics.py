"""Training dynamics: the minority group over training, and what the balancer did.

Every statistic of one run is taken on that run's own curve and then averaged over seeds, so
the numbers of a row are consistent with each other: a seed's selected-step accuracy is one
point of its curve, hence never above its peak.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from cptlib import records
from cptlib.analysis.labels import DYNAMICS_LABELS, MAIN_LABELS, ordered
from cptlib.analysis.paired import best_minus_last, mean_se, steps_to_reach
from cptlib.analysis.text import Note, nothing, pct, seeds_text


def _steps_text(steps: Sequence[int]) -> str:
    """``step 30`` or ``steps 20–40`` (the range over seeds)."""
    low, high = min(steps), max(steps)
    return f"step {low}" if low == high else f"steps {low}–{high}"


def _seed_curve(g: pd.DataFrame) -> dict[str, float]:
    """One seed's minority-group test curve reduced to first, peak, selected and last."""
    curve = g.groupby("step")["acc"].mean().sort_index()
    at_selected = g.loc[g["step"] == g["selected_step"], "acc"]
    return {"first_step": int(curve.index[0]), "first": curve.iloc[0],
            "peak": curve.max(), "peak_step": int(curve.idxmax()),
            "selected": at_selected.mean() if not at_selected.empty else float("nan"),
            "last": curve.iloc[-1]}


def minority_summary(hist: pd.DataFrame, labels: Sequence[str] = DYNAMICS_LABELS) -> pd.DataFrame:
    """For the group with the fewest training samples, per label: test accuracy at the first
    evaluation, at each seed's peak, at each seed's selected step and at the last step, each
    taken per seed and then averaged; the steps of the peaks; the drop from peak to last."""
    rows = []
    data = hist[hist["split"] == "test"] if not hist.empty else hist
    for label in labels:
        sub = data[data["label"] == label] if not data.empty else data
        if sub.empty:
            continue
        minority = sub.loc[sub["train_count"].idxmin(), "group_index"]
        g = sub[sub["group_index"] == minority]
        seeds = pd.DataFrame([_seed_curve(run) for _, run in g.groupby("run_id")])
        rows.append({
            "method": label, "minority group": g["group"].iloc[0],
            "train count": int(g["train_count"].iloc[0]),
            "seeds": len(seeds),
            "first evaluation step": int(seeds["first_step"].min()),
            "acc. at first evaluation (%)": seeds["first"].mean(),
            "peak acc. (%)": seeds["peak"].mean(),
            "peak steps": _steps_text(seeds["peak_step"].tolist()),
            "acc. at selected steps (%)": seeds["selected"].mean(),
            "acc. at last step (%)": seeds["last"].mean(),
            "peak − last (points)": (seeds["peak"] - seeds["last"]).mean(),
        })
    return pd.DataFrame(rows).set_index("method").round(1) if rows else pd.DataFrame()


def minority_table(
    hist: pd.DataFrame, labels: Sequence[str] = DYNAMICS_LABELS
) -> pd.DataFrame | Note:
    """``minority_summary`` for display: test accuracy (%) of the minority group, with steps."""
    table = minority_summary(hist, labels)
    if table.empty:
        return nothing(f"histories of {', '.join(labels)}")
    return pd.DataFrame({
        "minority group": table["minority group"],
        "first evaluation": [f"{a:.1f} (step {s})" for a, s in zip(
            table["acc. at first evaluation (%)"], table["first evaluation step"], strict=True)],
        "peak (per seed)": [f"{a:.1f} ({s})" for a, s in zip(
            table["peak acc. (%)"], table["peak steps"], strict=True)],
        "selected steps": table["acc. at selected steps (%)"].map(pct),
        "last step": table["acc. at last step (%)"].map(pct),
        "peak − last": table["peak − last (points)"].map(pct),
    }, index=table.index)


def minority_text(hist: pd.DataFrame, labels: Sequence[str] = DYNAMICS_LABELS) -> Note:
    """Computed sentences: does the minority group improve early, and does it overfit late?"""
    table = minority_summary(hist, labels)
    if table.empty:
        return nothing(f"histories of {', '.join(labels)}")
    lines = []
    for label, r in table.iterrows():
        lines.append(
            f"- **{label}** ({seeds_text(int(r['seeds']))}): the minority group "
            f"*{r['minority group']}* ({int(r['train count'])} training samples) was at "
            f"{r['acc. at first evaluation (%)']:.1f} % after {int(r['first evaluation step'])} "
            f"steps, peaked at {r['peak acc. (%)']:.1f} % ({r['peak steps']}), was at "
            f"{pct(r['acc. at selected steps (%)'])} % at the selected checkpoint and ended at "
            f"{r['acc. at last step (%)']:.1f} % ({r['peak − last (points)']:.1f} points below "
            "its peak)."
        )
    if any(n > 1 for n in table["seeds"]):
        lines.append("- With several seeds, every number is taken on each seed's own curve and "
                     "then averaged (a peak is each seed's best evaluation), so the selected "
                     "checkpoint is never above the peak.")
    return Note("\n".join(lines))


def mode_columns(diag: pd.DataFrame) -> list[str]:
    return sorted(c for c in diag.columns if c.startswith("mode:"))


def mode_rows(diag: pd.DataFrame, labels: Sequence[str] = DYNAMICS_LABELS) -> pd.DataFrame:
    """The windows of ``labels`` whose balancer reported modes (CPT's balance / descent)."""
    modes = mode_columns(diag)
    if diag.empty or not modes:
        return pd.DataFrame()
    return diag[diag["label"].isin(labels) & (diag[modes].fillna(0).sum(axis=1) > 0)].copy()


def mode_shares(diag: pd.DataFrame, labels: Sequence[str] = DYNAMICS_LABELS) -> pd.DataFrame:
    """Long frame (label, seed, step, mode, share, series): each mode's share of a window."""
    data = mode_rows(diag, labels)
    if data.empty:
        return pd.DataFrame()
    modes = mode_columns(data)
    shares = data[modes].fillna(0).div(data["steps"].where(data["steps"] > 0), axis=0)
    long = pd.concat([data[["label", "seed", "step"]], shares], axis=1).melt(
        id_vars=["label", "seed", "step"], var_name="mode", value_name="share")
    long["mode"] = long["mode"].str.removeprefix("mode:")
    long["series"] = long["label"] + ": " + long["mode"]
    return long


def conflict_rows(diag: pd.DataFrame, labels: Sequence[str] = DYNAMICS_LABELS) -> pd.DataFrame:
    """The windows of ``labels`` with a conflict measurement."""
    if diag.empty or "conflict_frac" not in diag:
        return pd.DataFrame()
    return diag[diag["label"].isin(labels)].dropna(subset=["conflict_frac"])


def balancer_table(diag: pd.DataFrame) -> pd.DataFrame | Note:
    """Per label, summed over seeds and windows: steps, steps per mode, steps with an absent
    group, solver failures (the study counts these instead of hiding them)."""
    if diag.empty:
        return nothing("training diagnostics")
    modes = mode_columns(diag)
    cols = ["steps", *modes, "absent_steps", "solver_failures"]
    table = diag.groupby("label")[cols].sum().fillna(0).astype(int)
    table = table.loc[ordered(table.index)]
    table.columns = ["steps", *[f"{m.removeprefix('mode:')} mode" for m in modes],
                     "steps with an absent group", "solver failures"]
    table.index.name = "method"
    return table


def dynamics_numbers(runs: pd.DataFrame, level: float,
                     read: Callable[[str], dict[str, Any]] = records.read_record,
                     labels: Sequence[str] = MAIN_LABELS) -> pd.DataFrame | Note:
    """Per method (c = 1): the steps until the minority group first reaches ``level``
    validation accuracy, and the test worst-group accuracy lost between its best evaluation
    and the last, mean ± SE over seeds. A run that never reaches the level is counted, not
    averaged in (its column says how many reached)."""
    main = runs[runs["uniform_c"] & runs["label"].isin(labels)] if not runs.empty else runs
    if main.empty:
        return nothing("runs of the main table")
    rows = []
    for label in ordered(main["label"].unique()):
        steps, lost = [], []
        group = main[main["label"] == label]
        for path in group["path"]:
            record = read(path)
            counts = record.get("train_group_counts") or [0]
            minority = min(range(len(counts)), key=counts.__getitem__)
            reached = steps_to_reach(record, [minority], level)
            if reached is not None:
                steps.append(reached)
            lost.append(100 * best_minus_last(record))
        rows.append({"method": label, "runs": len(group),
                     f"reached {level:.0%}": f"{len(steps)} of {len(group)}",
                     "steps to reach": _mean_se_text(steps, 0),
                     "best − last, worst group (points)": _mean_se_text(lost, 1)})
    return pd.DataFrame(rows)


def _mean_se_text(values: Sequence[float], digits: int) -> str:
    mean, se, _ = mean_se(values)
    return records.format_mean_se(mean, se, scale=1, digits=digits)
