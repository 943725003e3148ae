"""What c does: every non-uniform-c run paired with its c = 1 run, and the changes between them.

A pair shares method, α, seed and every setting that changes a run's numbers
(``SETTING_COLUMNS`` and the model options), so a change is the effect of c alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cptlib.analysis.control import control_pairs, control_summary
from cptlib.analysis.frames import group_names, sweep_runs
from cptlib.analysis.labels import c_order, c_values, ordered
from cptlib.analysis.paired import mean_interval
from cptlib.analysis.text import Note, missing, no_runs_text, nothing
from cptlib.records import format_mean_se

#: Parameters that must agree for two runs to be compared as a pair (besides method, α, seed).
SETTING_COLUMNS = (
    "dataset", "data_size", "data_seed", "model", "img_size", "lr", "batch_size", "weight_decay",
    "momentum", "clip_norm", "steps", "epochs", "warmup_steps", "warmup_epochs", "schedule",
    "eval_every", "eps", "eta", "selection", "grad_way",
)
CONTROLLED_FAMILIES = ("CPT", "Scalarized")


def _same(a: Any, b: Any) -> bool:
    return (missing(a) and missing(b)) or a == b


def _pair_keys(runs: pd.DataFrame) -> list[str]:
    options = [c for c in runs.columns if c.startswith("model_options.")]
    return ["family", "seed", *[c for c in SETTING_COLUMNS if c in runs.columns], *options]


def pairs(runs: pd.DataFrame) -> list[tuple[pd.Series, pd.Series]]:
    """(run, reference) for every CPT / Scalarized run with a non-uniform c that has a c = 1
    run of the same method, α, seed and settings (its reference)."""
    sweep = sweep_runs(runs)
    if sweep.empty:
        return []
    keys = _pair_keys(sweep)
    base = sweep[sweep["uniform_c"]]
    out = []
    for _, run in sweep[~sweep["uniform_c"]].iterrows():
        match = base[[all(_same(b[k], run[k]) for k in keys) for _, b in base.iterrows()]]
        if not match.empty:
            out.append((run, match.iloc[0]))
    return out


def changes(run: pd.Series, ref: pd.Series, checkpoint: str, metric: str, k: int) -> list[float]:
    """Per-group change of ``metric`` (per_group_acc or per_group_loss) from ``ref`` to ``run``."""
    col = f"{checkpoint}.{metric}."
    return [float(run[f"{col}{j}"] - ref[f"{col}{j}"]) for j in range(k)]


def controllability_deltas(runs: pd.DataFrame) -> pd.DataFrame:
    """Paired effect of raising c: for every run whose c is not uniform, the change of its
    emphasised group(s) (the largest c_k) against the c = 1 run of the same method, α, seed and
    settings. Accuracy changes in points, loss changes in nats; "others" averages the rest."""
    found = pairs(runs)
    if not found:
        return pd.DataFrame()
    names = group_names(sweep_runs(runs))
    rows = []
    for run, ref in found:
        c = [float(v) for v in run["c"]]
        for k in (i for i, v in enumerate(c) if v == max(c)):
            row = {"method": run["family"], "c": run["c_label"], "seed": run.get("seed"),
                   "group": names[k], "run_id": run["run_id"]}
            for checkpoint, when in (("test", "selected"), ("last_test", "last")):
                acc = changes(run, ref, checkpoint, "per_group_acc", len(names))
                row[f"Δ acc. {when} (points)"] = 100 * acc[k]
                row[f"others' Δ acc. {when} (points)"] = 100 * float(
                    np.mean([a for j, a in enumerate(acc) if j != k]))
                row[f"Δ loss {when}"] = changes(run, ref, checkpoint, "per_group_loss",
                                                len(names))[k]
            rows.append(row)
    deltas = pd.DataFrame(rows)
    family = {f: i for i, f in enumerate(ordered(deltas["method"], CONTROLLED_FAMILIES))}
    c_rank = {c: i for i, c in enumerate(c_order(sweep_runs(runs)["c_label"]))}
    rank = [(family[f], c_rank[c], s) for f, c, s in zip(
        deltas["method"], deltas["c"], deltas["seed"], strict=True)]
    return deltas.iloc[sorted(range(len(rank)), key=rank.__getitem__)].reset_index(drop=True)


def c_effect_grids(runs: pd.DataFrame, checkpoint: str = "last_test") -> dict[str, pd.DataFrame]:
    """Per family, the paired change of every group's test accuracy (points) when c changes
    from 1, mean over the paired seeds: rows c (book order), columns groups."""
    found = pairs(runs)
    if not found:
        return {}
    names = group_names(sweep_runs(runs))
    data = pd.DataFrame([
        {"method": run["family"], "c": run["c_label"], "group": name, "change": 100 * change}
        for run, ref in found
        for name, change in zip(names, changes(run, ref, checkpoint, "per_group_acc",
                                               len(names)), strict=True)
    ])
    grids = {}
    for family in ordered(data["method"], CONTROLLED_FAMILIES):
        sub = data[data["method"] == family]
        grids[family] = (sub.pivot_table(index="c", columns="group", values="change",
                                         aggfunc="mean")
                         .reindex(index=c_order(sub["c"]), columns=names))
    return grids


def raised_entries(c: str) -> list[int]:
    """The indices of the largest entries of a ``c_text`` label (the emphasised groups)."""
    values = c_values(c)
    return [int(k) for k in np.flatnonzero(values == values.max())]


def controllability_table(runs: pd.DataFrame) -> pd.DataFrame | Note:
    """``controllability_deltas`` rounded for display (one row per raised entry of c)."""
    deltas = controllability_deltas(runs)
    if deltas.empty:
        return nothing("pairs of a non-uniform-c run and its c = 1 run (same method, α, seed "
                       "and settings)")
    table = pd.DataFrame({
        ("selected checkpoint", "Δ acc."): deltas["Δ acc. selected (points)"].round(1),
        ("last checkpoint", "Δ acc."): deltas["Δ acc. last (points)"].round(1),
        ("last checkpoint", "others' Δ acc."): deltas["others' Δ acc. last (points)"].round(1),
        ("last checkpoint", "Δ loss"): deltas["Δ loss last"].round(3) + 0.0,  # no "-0.000"
    })
    table.index = pd.MultiIndex.from_frame(deltas[["method", "c", "seed", "group"]])
    return table


def controllability_text(runs: pd.DataFrame, profile: str, experiment: str) -> Note:
    """Computed sentences: how often raising c_k raised group k's accuracy, per method."""
    deltas = controllability_deltas(runs)
    if deltas.empty:
        return no_runs_text(
            "CPT or Scalarized runs with a non-uniform c, paired with a c = 1 run of the same "
            "seed", profile,
            [f'cpt run {experiment} --profile {profile} -p method=cpt -p alpha=1.0 '
             f'-p "c=[1,1,4,1]" -p seed=0'],
        )
    lines = []
    for family, sub in deltas.groupby("method", sort=False):
        for when in ("last", "selected"):
            col = f"Δ acc. {when} (points)"
            others = sub[f"others' {col}"].mean()
            lower_loss = int((sub[f"Δ loss {when}"] < 0).sum())
            lines.append(
                f"- **{family}**, {when} checkpoint: raising c_k raised group k's test accuracy "
                f"in {int((sub[col] > 0).sum())} of {len(sub)} paired runs (mean change "
                f"{sub[col].mean():+.1f} points; the other groups changed by {others:+.1f} "
                f"points on average) and lowered its test loss in {lower_loss} of {len(sub)}."
            )
    return Note("\n".join(lines))


def tradeoff_data(runs: pd.DataFrame, checkpoint: str = "test") -> pd.DataFrame:
    """One row per run: average and worst-group test accuracy (%), family, c label."""
    if runs.empty:
        return pd.DataFrame()
    return pd.DataFrame({
        "avg": 100 * runs[f"{checkpoint}.avg_acc"],
        "wga": 100 * runs[f"{checkpoint}.worst_group_acc"],
        "method": runs["family"],
        "control vector": ["c = 1" if u else "c ≠ 1" for u in runs["uniform_c"]],
        "uniform_c": runs["uniform_c"], "c_label": runs["c_label"],
    }, index=runs.index)



# ----------------------------------------------------------------------------- precision


def precision_table(runs: pd.DataFrame, split: str = "val") -> pd.DataFrame | Note:
    """How close each (method, c) ends to its ray, on the per-group ``split`` losses: the
    angle between (L_k) and (1/c_k) in degrees and the non-uniformity μ, mean ± SE over seeds,
    at the selected and at the last checkpoint."""
    summary = control_summary(runs, split)
    if summary.empty:
        return nothing("CPT or Scalarized runs")

    def cell(row: pd.Series, name: str, digits: int) -> str:
        return format_mean_se(row[name], row[f"{name}_se"], scale=1, digits=digits)

    rows = []
    for _, r in summary.iterrows():
        rows.append({"method": {"cpt": "CPT", "scalarized": "Scalarized"}.get(r["method"]),
                     "c": r["c_str"], "seeds": int(r["n"]),
                     "angle, selected (°)": cell(r, "angle_selected", 1),
                     "angle, last (°)": cell(r, "angle_last", 1),
                     "μ, selected": cell(r, "mu_selected", 4), "μ, last": cell(r, "mu_last", 4)})
    return pd.DataFrame(rows)


def precision_text(runs: pd.DataFrame, split: str = "val") -> Note:
    """CPT against Scalarized on the same (c, seed): the paired difference of the angle at
    the last and at the selected checkpoint, with its interval, and where CPT misses most."""
    lines = []
    for at, name in (("last", "last"), ("selected", "selected")):
        pairs = control_pairs(runs, split, at)
        if pairs.empty:
            return Note("*No (c, seed) has both a CPT and a Scalarized run: the precision of "
                        "control cannot be compared.*")
        mean, low, high, n = mean_interval(pairs["angle"])
        if n < 2:
            tell = "cannot be told from one pair"
        elif high < 0:
            tell = "CPT ends nearer its ray"
        elif low > 0:
            tell = "Scalarized ends nearer the ray"
        else:
            tell = f"not distinguishable at {n} paired runs"
        ci = "" if n < 2 else f" (95 % CI {low:+.1f} to {high:+.1f})"
        lines.append(f"- At the {name} checkpoint, CPT's angle to the ray minus Scalarized's, "
                     f"over {n} paired (c, seed): **{mean:+.1f}°**{ci}: {tell}.")
    summary = control_summary(runs, split)
    cpt = summary[summary["method"] == "cpt"].sort_values("angle_last")
    if not cpt.empty:
        worst = cpt.iloc[-1]
        lines.append(f"- CPT's ray hit least closely: c = {worst['c_str']}, "
                     f"{worst['angle_last']:.1f}° at the last checkpoint "
                     f"(μ = {worst['mu_last']:.4f}); the closest: c = {cpt.iloc[0]['c_str']}, "
                     f"{cpt.iloc[0]['angle_last']:.1f}°.")
    where = {"val": "validation losses", "test": "test losses",
             "train": "training losses (each evaluation window's batches, averaged over its "
                      "steps)"}.get(split, f"{split} losses")
    return Note(f"Measured on the per-group {where}:\n\n" + "\n".join(lines))
