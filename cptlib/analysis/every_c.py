"""One adapter for every c, measured against the dedicated CPT(c) runs.

A conditioned record holds its validation and test metrics at every c of its selection grid
(``metrics.grid``), along the dial's paths (``metrics.paths``) and at the c chosen on validation
(``metrics.search``); see ``cptlib.runs.worker.conditioned_metrics``. This module turns those
into the chapter's frames and sentences: how close the one adapter comes to the dedicated runs
(per group, paired over seeds), what it costs, and what choosing c on validation buys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cptlib.analysis.frames import column, read_run
from cptlib.analysis.labels import c_text
from cptlib.analysis.paired import mean_interval
from cptlib.analysis.paired import mean_se as _mean_se
from cptlib.analysis.text import DASH, Note, no_runs_text, seeds_text
from cptlib.records import format_mean_se

#: The issue's target: the adapter's per-group test accuracy within this many points of the
#: dedicated runs (mean absolute difference over groups and c), at most this training cost.
MATCH_POINTS = 2.0
COST_RATIO = 1.5
OBJECTIVE_TITLES = {
    "worst_group": "searched c: best validation worst group",
    "avg_at_worst_group": "searched c: best validation average keeping c = 1's worst group",
}
DEDICATED_CHOICE = "dedicated CPT(c) run with the best validation worst group"
FLOAT_BYTES = 4  # the adapters are float32 safetensors


def c_key(c: Sequence[float]) -> tuple[float, ...]:
    """A control vector as a hashable key, equal for the same c written as ints or floats."""
    return tuple(round(float(v), 6) for v in c)


def _group_names(record: dict[str, Any], k: int) -> list[str]:
    names = record.get("group_names") or []
    return [str(n) for n in names] if len(names) == k else [f"group {i}" for i in range(k)]


def _metric_rows(base: dict[str, Any], split: str, metrics: dict[str, Any],
                 names: list[str]) -> list[dict[str, Any]]:
    accs = metrics.get("per_group_acc") or []
    return [{**base, "split": split, "group": names[k], "group_index": k, "acc": float(a),
             "worst_group_acc": float(metrics["worst_group_acc"]),
             "avg_acc": float(metrics["avg_acc"])} for k, a in enumerate(accs)]


def conditioned_long(cond: pd.DataFrame, source: str = "grid") -> pd.DataFrame:
    """One row per (run, c, split, group) of the conditioned records' ``source`` list
    (``grid``, ``paths`` or ``search``); accuracies as fractions."""
    rows: list[dict[str, Any]] = []
    for _, run in cond.iterrows():
        record = read_run(run["path"])
        for entry in (record.get("metrics") or {}).get(source) or []:
            c = [float(v) for v in entry["c"]]
            names = _group_names(record, len(c))
            base = {"run_id": run["run_id"], "seed": run.get("seed"), "c": c_key(c),
                    "c_label": c_text(c), "raised": entry.get("raised"),
                    "strength": entry.get("strength"), "objective": entry.get("objective"),
                    "tau": entry.get("tau")}
            for split in ("val", "test"):
                rows += _metric_rows(base, split, entry[split], names)
    return pd.DataFrame(rows)


def dedicated_long(ded: pd.DataFrame) -> pd.DataFrame:
    """The same rows for dedicated CPT(c) runs, at their selected checkpoint."""
    rows: list[dict[str, Any]] = []
    for _, run in ded.iterrows():
        record = read_run(run["path"])
        metrics = record.get("metrics") or {}
        k = len((metrics.get("test") or {}).get("per_group_acc") or [])
        c = [float(v) for v in (run.get("c") or [1.0] * k)]
        base = {"run_id": run["run_id"], "seed": run.get("seed"), "c": c_key(c),
                "c_label": c_text(c)}
        for split in ("val", "test"):
            rows += _metric_rows(base, split, metrics.get(split) or {},
                                 _group_names(record, k))
    return pd.DataFrame(rows)


def dedicated_for(ordinary: pd.DataFrame, cond: pd.DataFrame) -> pd.DataFrame:
    """The dedicated CPT runs a set of conditioned runs is compared with: method CPT at the
    conditioned runs' sampling exponent α, any c."""
    if ordinary.empty or cond.empty:
        return ordinary.iloc[0:0]
    alphas = set(pd.to_numeric(column(cond, "alpha"), errors="coerce"))
    keep = (column(ordinary, "method") == "cpt") & pd.to_numeric(
        column(ordinary, "alpha"), errors="coerce").isin(alphas)
    return ordinary[keep]


def status_text(cond: pd.DataFrame, ded: pd.DataFrame, profile: str, experiment: str) -> Note:
    """Which records the chapter reads, or the command that makes the first one."""
    if cond.empty:
        return no_runs_text(f"conditioned runs of `{experiment}`", profile, [
            f"cpt run {experiment} --profile {profile} -p method=cpt -p conditioned=true"])
    cs = ded["c"].map(lambda c: c_text(c)).nunique() if not ded.empty else 0
    return Note(
        f"This page reads **{len(cond)} conditioned run{'s' if len(cond) != 1 else ''}** of "
        f"experiment `{experiment}` at profile `{profile}` ({seeds_text(len(cond))}) and "
        f"{len(ded)} dedicated CPT run{'s' if len(ded) != 1 else ''} at {cs} control "
        f"vector{'s' if cs != 1 else ''}. Accuracies are in percent; ± is one standard "
        "error over seeds.")


def match_frame(cond: pd.DataFrame, ded: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Per (c, group) where both exist: the conditioned adapter's and the dedicated runs'
    accuracy (points, mean and SE over seeds) and their difference paired by seed."""
    a = conditioned_long(cond, "grid")
    b = dedicated_long(ded)
    if a.empty or b.empty:
        return pd.DataFrame()
    a, b = a[a["split"] == split], b[b["split"] == split]
    rows = []
    for (c, k), ga in a.groupby(["c", "group_index"], sort=True):
        gb = b[(b["c"] == c) & (b["group_index"] == k)]
        if gb.empty:
            continue
        paired = ga.merge(gb, on="seed", suffixes=("_a", "_b"))
        cm, cs, cn = _mean_se(100 * ga["acc"])
        dm, ds, dn = _mean_se(100 * gb["acc"])
        diff, diff_se, n = _mean_se(100 * (paired["acc_a"] - paired["acc_b"]))
        rows.append({"c": c, "c_label": ga["c_label"].iloc[0], "group": ga["group"].iloc[0],
                     "group_index": k, "conditioned": cm, "conditioned_se": cs, "n_cond": cn,
                     "dedicated": dm, "dedicated_se": ds, "n_dedicated": dn,
                     "difference": diff, "difference_se": diff_se, "n_paired": n})
    return pd.DataFrame(rows)


def match_summary(frame: pd.DataFrame) -> dict[str, Any]:
    """The issue's statistic: mean over (c, group) of |conditioned − dedicated| of the seed
    means, with the mean of the same gap per seed and the noise floor (mean SE of a cell's
    paired difference); an unbiased picture needs both, since |·| of noise is positive."""
    if frame.empty:
        return {"cells": 0}
    gap = (frame["conditioned"] - frame["dedicated"]).abs()
    return {"cells": len(frame), "n_c": frame["c_label"].nunique(),
            "mad": float(gap.mean()), "max": float(gap.max()),
            "mean_difference": float(frame["difference"].mean()),
            "noise": float(frame["difference_se"].mean()),
            # E|X| of X ~ N(0, SE²) is SE·√(2/π): the gap identical runs would show.
            "noise_gap": float((frame["difference_se"] * math.sqrt(2 / math.pi)).mean()),
            "seeds": int(frame["n_paired"].min()), "max_seeds": int(frame["n_paired"].max()),
            "within": bool(gap.mean() <= MATCH_POINTS)}


def seeds_range(summary: dict[str, Any]) -> str:
    """"3 seeds" or "1 to 3 seeds": how many paired seeds the cells of a summary have."""
    lo, hi = summary["seeds"], summary["max_seeds"]
    return seeds_text(lo) if lo == hi else f"{lo} to {hi} seeds"


def _cell(mean: float, se: float) -> str:
    """Mean ± SE of values already in points."""
    return format_mean_se(mean, se, scale=1)


def match_table(frame: pd.DataFrame) -> pd.DataFrame | Note:
    """``match_frame`` for the page: one row per (c, group)."""
    if frame.empty:
        return Note("*No c has both a conditioned and a dedicated CPT run yet.*")
    return pd.DataFrame({
        "c": frame["c_label"], "group": frame["group"],
        "one adapter (%)": [_cell(m, s) for m, s in
                            zip(frame["conditioned"], frame["conditioned_se"], strict=True)],
        "dedicated CPT(c) (%)": [_cell(m, s) for m, s in
                                 zip(frame["dedicated"], frame["dedicated_se"], strict=True)],
        "paired difference (points)": [_cell(m, s) for m, s in
                                       zip(frame["difference"], frame["difference_se"],
                                           strict=True)],
        "seeds": frame["n_paired"],
    })


def match_text(frame: pd.DataFrame) -> Note:
    """The chapter's sentence on the match, with the target and the noise floor."""
    s = match_summary(frame)
    if not s["cells"]:
        return Note("*No c has both a conditioned and a dedicated CPT run yet: run the quick "
                    "profile (`make book`).*")
    verdict = ("within" if s["within"] else "**not** within")
    return Note(
        f"Over {s['n_c']} control vectors × {s['cells'] // s['n_c']} groups, the one adapter's "
        f"test accuracy differs from the dedicated CPT(c) runs' by **{s['mad']:.1f} points** "
        f"on average (mean absolute difference of the means; cells of {seeds_range(s)}; at "
        f"most {s['max']:.1f}), {verdict} the target of {MATCH_POINTS:g} points. The signed "
        f"mean difference is {s['mean_difference']:+.1f} points (one adapter minus dedicated). "
        + noise_text(s))


def noise_text(s: dict[str, Any]) -> str:
    """What the seeds alone would give: with SE σ per cell, two runs with the same expected
    accuracy differ by σ√(2/π) on average, so a mean absolute gap near that is noise."""
    if math.isnan(s["noise"]):
        return ("With one seed per cell there is no standard error: how much of the gap is "
                "the seeds' noise cannot be told.")
    floor = (f"above the {MATCH_POINTS:g}-point target, so at {seeds_range(s)} the target "
             "cannot be met even by runs that match exactly"
             if s["noise_gap"] > MATCH_POINTS else f"below the {MATCH_POINTS:g}-point target")
    return (f"A cell's paired difference has a standard error of {s['noise']:.1f} points on "
            f"average, so two methods with identical expected accuracies would show a mean "
            f"absolute difference of about {s['noise_gap']:.1f} points at these seeds "
            f"(σ√(2/π)), against the {s['mad']:.1f} measured. That floor is {floor}.")


# ----------------------------------------------------------------------------- cost


def conditioned_param_count(trainable: int, n_groups: int, hidden: int) -> int:
    """Parameters of ``Conditioned`` over a model with ``trainable`` trained entries:
    θ⁰ (P), the embedding of c (K·H + H) and the output map (H·P)."""
    return trainable * (1 + hidden) + hidden * (n_groups + 1)


def _field(runs: pd.DataFrame, name: str) -> pd.Series:
    """A top-level record field the run table does not carry (times, adapter bytes)."""
    return pd.to_numeric(pd.Series([read_run(p).get(name) for p in runs["path"]], dtype=float),
                         errors="coerce")


def cost_frame(cond: pd.DataFrame, ded: pd.DataFrame) -> pd.DataFrame:
    """Training time, time after training (dial and search) and adapter size: one conditioned
    run against the dedicated runs it replaces (one per c of its grid), means over runs."""
    if cond.empty or ded.empty:
        return pd.DataFrame()
    n_c = len(read_run(cond["path"].iloc[0])["metrics"].get("grid") or [])
    dial = [float((read_run(p)["metrics"]).get("dial_time_s", math.nan)) for p in cond["path"]]
    train_c = _mean_se(_field(cond, "train_time_s"))
    train_d = _mean_se(_field(ded, "train_time_s"))
    bytes_c = float(_field(cond, "adapter_bytes").mean())
    bytes_d = float(_field(ded, "adapter_bytes").mean())
    return pd.DataFrame([
        {"what": "one conditioned run", "runs": len(cond), "train_s": train_c[0],
         "train_s_se": train_c[1], "after_s": float(np.nanmean(dial)) if dial else math.nan,
         "adapter_bytes": bytes_c, "files": 1},
        {"what": "one dedicated CPT(c) run", "runs": len(ded), "train_s": train_d[0],
         "train_s_se": train_d[1], "after_s": 0.0, "adapter_bytes": bytes_d, "files": 1},
        {"what": f"{n_c} dedicated runs (the grid's c)", "runs": n_c, "train_s": n_c * train_d[0],
         "train_s_se": n_c * train_d[1], "after_s": 0.0, "adapter_bytes": n_c * bytes_d,
         "files": n_c},
    ])


def cost_ratio(frame: pd.DataFrame) -> float:
    """Training time of one conditioned run over one dedicated run (``cost_frame``)."""
    return float(frame.iloc[0]["train_s"] / frame.iloc[1]["train_s"])


def cost_text(frame: pd.DataFrame) -> Note:
    if frame.empty:
        return Note("*No conditioned and dedicated runs to compare yet.*")
    one, ded, many = frame.iloc[0], frame.iloc[1], frame.iloc[2]
    ratio = cost_ratio(frame)
    verdict = "within" if ratio <= COST_RATIO else "**above**"
    return Note(
        f"Training one conditioned adapter took {one['train_s']:.0f} s (mean of "
        f"{int(one['runs'])}), {ratio:.2f}× a dedicated CPT(c) run ({ded['train_s']:.0f} s, "
        f"mean of {int(ded['runs'])}, the same sweep on the same machine), {verdict} the "
        f"target of {COST_RATIO:g}×; the {int(many['runs'])} dedicated runs it replaces take "
        f"{many['train_s'] / one['train_s']:.1f}× as long. After training, the dial's "
        f"evaluations and the c search took {one['after_s']:.0f} s more (inference only). "
        f"Its adapter is one file of {one['adapter_bytes'] / 1e3:.0f} kB against "
        f"{int(many['files'])} files of {ded['adapter_bytes'] / 1e3:.0f} kB.")


def paper_adapter_table(counts: pd.DataFrame, n_groups: int = 4,
                        hidden: int = 16) -> pd.DataFrame | Note:
    """Adapter sizes at the paper's shapes (trainable counts of ``build_model`` with random
    weights, from the efficiency chapter's table): dedicated against conditioned."""
    if counts.empty or "trainable" not in counts:
        return Note("*No trainable-parameter table yet (`make book` writes it).*")
    # A full fine-tune has no adapter, and its BatchNorm model cannot be conditioned.
    keep = (counts[~counts["method"].astype(str).str.startswith("full")]
            if "method" in counts else counts)
    rows = []
    for _, r in keep.iterrows():
        p = int(r["trainable"])
        q = conditioned_param_count(p, n_groups, hidden)
        rows.append({"model": r["model"], "method": r.get("method", DASH),
                     "dedicated adapter (kB)": f"{FLOAT_BYTES * p / 1e3:,.0f}",
                     f"conditioned, K = {n_groups}, H = {hidden} (kB)":
                         f"{FLOAT_BYTES * q / 1e3:,.0f}",
                     "ratio": f"{q / p:.1f}×"})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- choosing c


def choice_frame(cond: pd.DataFrame, ded: pd.DataFrame) -> pd.DataFrame:
    """Per seed and way of choosing c: the chosen c, its validation worst group and its test
    worst-group and average accuracy. Ways: the adapter at c = 1, at each searched c, and the
    dedicated CPT(c) run of that seed with the best validation worst group."""
    rows: list[dict[str, Any]] = []
    grid = conditioned_long(cond, "grid")
    if grid.empty:
        return pd.DataFrame(rows)
    search = conditioned_long(cond, "search")
    ones = c_key([1.0] * int(grid["group_index"].max() + 1))

    def add(way: str, seed: Any, g: pd.DataFrame) -> None:
        val, test = g[g["split"] == "val"].iloc[0], g[g["split"] == "test"].iloc[0]
        rows.append({"way": way, "seed": seed,
                     "c": "[" + ", ".join(f"{v:.2g}" for v in val["c"]) + "]",
                     "val_worst": 100 * val["worst_group_acc"],
                     "test_worst": 100 * test["worst_group_acc"],
                     "test_avg": 100 * test["avg_acc"]})

    for seed, g in grid.groupby("seed"):
        at_one = g[g["c"] == ones]
        if not at_one.empty:
            add("one adapter, c = 1", seed, at_one)
        for objective, s in search[search["seed"] == seed].groupby("objective", sort=False):
            add(OBJECTIVE_TITLES.get(objective, objective), seed, s)
    dedicated = dedicated_long(ded)
    for seed, g in dedicated.groupby("seed") if not dedicated.empty else ():
        val = g[g["split"] == "val"].drop_duplicates("run_id")
        best = val.loc[val["worst_group_acc"].idxmax(), "run_id"]
        add(DEDICATED_CHOICE, seed, g[g["run_id"] == best])
        rows[-1]["candidates"] = val["run_id"].nunique()
    return pd.DataFrame(rows)


def choice_table(frame: pd.DataFrame) -> pd.DataFrame | Note:
    """``choice_frame`` as mean ± SE over seeds per way, with the c each seed chose."""
    if frame.empty:
        return Note("*No conditioned runs yet.*")
    rows = []
    for way, g in frame.groupby("way", sort=False):
        cells = {m: _cell(*_mean_se(g[m])[:2]) for m in ("val_worst", "test_worst", "test_avg")}
        rows.append({"way of choosing c": way, "c chosen (per seed)": "; ".join(g["c"]),
                     "validation worst group (%)": cells["val_worst"],
                     "test worst group (%)": cells["test_worst"],
                     "test average (%)": cells["test_avg"], "seeds": len(g)})
    return pd.DataFrame(rows)


def choice_differences(frame: pd.DataFrame, baseline: str = "one adapter, c = 1",
                       metric: str = "test_worst") -> pd.DataFrame:
    """Each way minus ``baseline`` in ``metric`` (points), paired by seed, with a 95 % t
    interval."""
    rows: list[dict[str, Any]] = []
    if frame.empty or not (frame["way"] == baseline).any():
        return pd.DataFrame(rows)
    base = frame[frame["way"] == baseline].set_index("seed")[metric]
    for way, g in frame.groupby("way", sort=False):
        if way == baseline:
            continue
        diff = (g.set_index("seed")[metric] - base).dropna()
        mean, low, high, n = mean_interval(diff)
        rows.append({"way": way, "baseline": baseline, "metric": metric, "mean": mean,
                     "ci_low": low, "ci_high": high, "n": n})
    return pd.DataFrame(rows)


def choice_text(frame: pd.DataFrame) -> Note:
    if frame.empty:
        return Note("*No conditioned runs yet.*")
    lines = []
    for _, d in choice_differences(frame).iterrows():
        if d["n"] < 2:
            tell = "cannot be told with one seed"
        elif d["ci_low"] > 0 or d["ci_high"] < 0:
            tell = "higher" if d["ci_low"] > 0 else "lower"
        else:
            tell = f"not distinguishable at {int(d['n'])} seeds"
        ci = (f" (95 % CI {d['ci_low']:+.1f} to {d['ci_high']:+.1f})"
              if d["n"] > 1 else "")
        lines.append(f"- *{d['way']}* minus the adapter at c = 1, test worst group: "
                     f"{d['mean']:+.1f} points{ci}: {tell}.")
    return Note("\n".join(lines))


# ----------------------------------------------------------------------------- the dial


def _along_paths(cond: pd.DataFrame) -> pd.DataFrame:
    """The ``paths`` rows with ``path`` (the group whose c_k is raised), c = 1 repeated as the
    first position of every path."""
    paths = conditioned_long(cond, "paths")
    if paths.empty:
        return paths
    names = paths.drop_duplicates("group_index").sort_values("group_index")["group"].tolist()
    start = paths[paths["raised"].isna()]
    return pd.concat([pd.concat([start, paths[paths["raised"] == k]]).assign(path=name)
                      for k, name in enumerate(names)], ignore_index=True)


def dial_frame(cond: pd.DataFrame) -> pd.DataFrame:
    """The dial's input (``cptlib.report.dial``): per path, strength and group, the accuracy
    (fraction) averaged over the seeds, for both splits."""
    rows = _along_paths(cond)
    if rows.empty:
        return pd.DataFrame(columns=["path", "strength", "c", "group", "split", "acc"])
    rows["path"] = "raise c of " + rows["path"]
    out = (rows.groupby(["path", "strength", "c_label", "group", "group_index", "split"],
                        sort=False)["acc"].mean().reset_index().rename(columns={"c_label": "c"}))
    return out.sort_values(["path", "strength", "group_index"]).reset_index(drop=True)


def paths_frame(cond: pd.DataFrame) -> pd.DataFrame:
    """Per (path, strength, group, split): accuracy in points, mean and SE over seeds (the
    chapter's curves)."""
    rows = _along_paths(cond)
    if rows.empty:
        return pd.DataFrame()
    rows["acc"] = 100 * rows["acc"]
    g = rows.groupby(["path", "strength", "group", "group_index", "split"], sort=False)
    out = g["acc"].agg(["mean", "std", "count"]).reset_index()
    out["se"] = out["std"] / np.sqrt(out["count"])
    return out.drop(columns="std")


def front_frame(cond: pd.DataFrame, ded: pd.DataFrame) -> pd.DataFrame:
    """Test worst-group against average accuracy (points, means over seeds) for the adapter
    along its paths and for the dedicated runs at their c."""
    rows = []
    paths = conditioned_long(cond, "paths")
    dedicated = dedicated_long(ded)
    for who, frame in (("one adapter", paths), ("dedicated CPT(c)", dedicated)):
        if frame.empty:
            continue
        test = frame[frame["split"] == "test"].drop_duplicates(["run_id", "c"])
        for c, g in test.groupby("c_label", sort=False):
            wm, ws, n = _mean_se(100 * g["worst_group_acc"])
            am, as_, _ = _mean_se(100 * g["avg_acc"])
            rows.append({"who": who, "c": c, "worst": wm, "worst_se": ws, "avg": am,
                         "avg_se": as_, "seeds": n})
    return pd.DataFrame(rows)
