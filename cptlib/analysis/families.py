"""Every method as a family swept over its own knob: the trade-offs chapter's tables and sentences.

ERM is swept over its sampling exponent α, GroupDRO over its step size η, CPT and Scalarized
over the control vector c (at α = 1, the sampling both are run with), MGDA has no knob. A
family's runs of one seed are one paired draw of its front (the same batches for every knob
value), so ``cptlib.analysis.fronts`` computes the hypervolume and the best worst group at a
given average per seed, and this module turns them into mean ± SE over seeds, CPT's paired
differences, and the sentences that quote them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from cptlib.analysis.control import non_uniformity
from cptlib.analysis.controllability import SETTING_COLUMNS
from cptlib.analysis.frames import column, group_names, read_run
from cptlib.analysis.fronts import (
    X_METRIC,
    Y_METRIC,
    best_subject_to,
    family_hypervolumes,
    pareto_mask,
    summarise_over_seeds,
)
from cptlib.analysis.labels import (
    DEFAULT_ETA,
    MAIN_LABELS,
    METHOD_NAMES,
    alpha_of,
    c_order,
    c_text,
)
from cptlib.analysis.paired import paired_difference
from cptlib.analysis.text import Note, missing, nothing, seeds_text
from cptlib.records import format_mean_se

#: The families of the fronts, in the book's order, and the column each is swept over.
FRONT_FAMILIES = ("ERM", "GroupDRO", "Scalarized", "MGDA", "CPT")
KNOB_NAMES = {"ERM": "α", "GroupDRO": "η", "Scalarized": "c", "MGDA": "—", "CPT": "c"}
#: The hypervolume's reference point (worst-group, average accuracy): a binary task's chance
#: level in both coordinates, so a front is credited for what it achieves above guessing.
REFERENCE = (0.5, 0.5)
Reader = Callable[[str], dict[str, Any]]
#: Average accuracies at which each family's best worst group is reported.
LEVELS = (0.80, 0.85, 0.90)


def front_family(method: str, alpha: object = None) -> str | None:
    """The front a run belongs to: ERM at any α; the others only at α = 1 (group-balanced
    sampling: CPT's and Scalarized's c and GroupDRO's η are swept there), else None."""
    if method == "erm":
        return "ERM"
    if method not in METHOD_NAMES or alpha_of(method, alpha) != 1.0:
        return None
    return METHOD_NAMES[method]


def knob_label(method: str, alpha: object, eta: object, c: object) -> str:
    """The knob value of a run within its family: ``α=0.5``, ``η=0.1``, ``c=1,1,4,1``."""
    if method == "erm":
        return f"α={alpha_of(method, alpha):g}"
    if method == "groupdro":
        return f"η={DEFAULT_ETA if missing(eta) else float(eta):g}"
    if method in ("cpt", "scalarized"):
        return f"c={c_text(c)}"
    return "—"


def _settings_key(run: pd.Series, columns: Sequence[str]) -> tuple:
    return tuple(None if missing(run[c]) else str(run[c]) for c in columns)


def front_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of the fronts, with columns ``front`` (family) and ``knob``.

    A front compares knob values at otherwise equal settings, so only the runs at the most
    common settings (learning rate, steps, model options, …) are kept: a user's run at another
    learning rate would otherwise be a second point of the same knob and seed.
    """
    if runs.empty:
        return runs.assign(front=[], knob=[])
    out = runs.assign(
        front=[front_family(m, a) for m, a in zip(runs["method"], column(runs, "alpha"),
                                                   strict=True)],
        knob=[knob_label(m, a, e, c) for m, a, e, c in zip(
            runs["method"], column(runs, "alpha"), column(runs, "eta"), column(runs, "c"),
            strict=True)],
    )
    out = out[out["front"].notna()]
    columns = [c for c in SETTING_COLUMNS if c in out.columns and c != "eta"]
    columns += [c for c in out.columns if c.startswith("model_options.")]
    if out.empty or not columns:
        return out
    keys = out.apply(lambda r: _settings_key(r, columns), axis=1)
    return out[keys == keys.value_counts().index[0]]


def _knob_number(knob: str) -> float:
    try:
        return float(knob[2:])
    except ValueError:  # MGDA's "—"
        return 0.0


def _knob_order(knobs: Sequence[str]) -> list[str]:
    """α and η ascending, c in the book's order (c = 1 first, then by the entry raised)."""
    cs = [k[2:] for k in knobs if k.startswith("c=")]
    others = sorted((k for k in dict.fromkeys(knobs) if not k.startswith("c=")),
                    key=lambda k: (k[:2], _knob_number(k)))
    return others + [f"c={c}" for c in c_order(cs)]


def front_points(runs: pd.DataFrame, x: str = X_METRIC, y: str = Y_METRIC) -> pd.DataFrame:
    """Mean over seeds of every (family, knob) in the plane, in %: columns front, knob, wga,
    avg, wga_se, avg_se, seeds, on_front (the family's front of the means)."""
    fr = front_runs(runs)
    if fr.empty:
        return pd.DataFrame(columns=["front", "knob", "wga", "avg", "wga_se", "avg_se",
                                     "seeds", "on_front"])
    grouped = fr.groupby(["front", "knob"], sort=False)
    out = pd.DataFrame({
        "wga": 100 * grouped[x].mean(), "avg": 100 * grouped[y].mean(),
        "wga_se": 100 * grouped[x].sem(), "avg_se": 100 * grouped[y].sem(),
        "seeds": grouped[x].count(),
    }).reset_index()
    out["on_front"] = False
    for _, idx in out.groupby("front").groups.items():
        out.loc[idx, "on_front"] = pareto_mask(out.loc[idx, ["wga", "avg"]].to_numpy())
    rank = {f: i for i, f in enumerate(FRONT_FAMILIES)}
    order = {k: i for i, k in enumerate(_knob_order(out["knob"].tolist()))}
    return out.sort_values(["front", "knob"], key=lambda s: s.map(
        rank if s.name == "front" else order)).reset_index(drop=True)


def front_table(runs: pd.DataFrame) -> pd.DataFrame | Note:
    """The front figure's points as a table: family, knob value, seeds, test worst-group and
    average accuracy (mean ± SE, %), and whether the point is on its family's front."""
    pts = front_points(runs)
    if pts.empty:
        return nothing("runs of the families (ERM, GroupDRO, Scalarized, MGDA, CPT)")
    return pd.DataFrame({
        "family": pts["front"], "knob": pts["knob"], "seeds": pts["seeds"].astype(int),
        "worst-group (%)": [format_mean_se(m, s, scale=1, digits=1) for m, s in zip(
            pts["wga"], pts["wga_se"], strict=True)],
        "average (%)": [format_mean_se(m, s, scale=1, digits=1) for m, s in zip(
            pts["avg"], pts["avg_se"], strict=True)],
        "on the front": ["yes" if f else "" for f in pts["on_front"]],
    })


def paired_grid(runs: pd.DataFrame) -> pd.DataFrame:
    """The front runs that form complete paired sweeps: per family, the knob values and seeds
    such that every kept seed has every kept knob value, chosen to keep the most runs.

    A family's seed is compared by its front, and a front of fewer points has less area, so
    seeds must sweep the same knob values. A user's extra run (a new c at one seed, or a new
    seed at one c) then shows in the figure but does not shrink every seed's front: among the
    grids "knob values run at ≥ t seeds × the seeds that have all of them", the largest wins.
    """
    fr = front_runs(runs)
    kept = []
    for _, fam in fr.groupby("front", sort=False):
        seeds_of = fam.groupby("knob")["seed"].apply(set)
        best: tuple[int, int, set, set] = (-1, -1, set(), set())
        for t in sorted({len(v) for v in seeds_of}, reverse=True):
            knobs = {k for k, v in seeds_of.items() if len(v) >= t}
            seeds = set.intersection(*(seeds_of[k] for k in knobs))
            score = (len(knobs) * len(seeds), len(knobs))
            if score > best[:2]:
                best = (*score, knobs, seeds)
        kept.append(fam[fam["knob"].isin(best[2]) & fam["seed"].isin(best[3])])
    return pd.concat(kept) if kept else fr


def loss_points(runs: pd.DataFrame, checkpoint: str = "test") -> pd.DataFrame:
    """Per (family, knob) and group: the test loss of that group and the mean test loss of
    the other groups, each a mean over seeds (the plane of per-group losses, both minimised)."""
    fr = front_runs(runs)
    prefix = f"{checkpoint}.per_group_loss."
    cols = sorted((c for c in fr.columns if c.startswith(prefix)), key=lambda c: int(
        c[len(prefix):]))
    if fr.empty or not cols:
        return pd.DataFrame(columns=["front", "knob", "group_index", "loss", "others"])
    means = fr.groupby(["front", "knob"], sort=False)[cols].mean()
    rows = []
    for (front, knob), values in means.iterrows():
        for k, col in enumerate(cols):
            rest = [values[c] for c in cols if c != col]
            rows.append({"front": front, "knob": knob, "group_index": k, "loss": values[col],
                         "others": sum(rest) / len(rest) if rest else math.nan})
    return pd.DataFrame(rows)


def hypervolumes(runs: pd.DataFrame, reference: Sequence[float] = REFERENCE) -> pd.DataFrame:
    """Per family and seed: the hypervolume of the front (points², reference ``reference``),
    over the family's complete paired sweep (``paired_grid``)."""
    fr = paired_grid(runs)
    if fr.empty:
        return pd.DataFrame(columns=["family", "seed", "n_points", "n_front", "hypervolume"])
    table = family_hypervolumes(fr, "front", "knob", reference)
    return table.assign(hypervolume=1e4 * table["hypervolume"])


def _rank(family: str) -> tuple[int, str]:
    """The book's order of the families; a family it does not know goes last."""
    known = family in FRONT_FAMILIES
    return (FRONT_FAMILIES.index(family) if known else len(FRONT_FAMILIES), family)


def _family_rank(families: pd.Series) -> pd.Series:
    return families.map(_rank)


def hypervolume_table(runs: pd.DataFrame, reference: Sequence[float] = REFERENCE
                      ) -> pd.DataFrame | Note:
    """Each family's hypervolume, mean ± SE over seeds, with its knob and the runs behind it."""
    per_seed = hypervolumes(runs, reference)
    if per_seed.empty:
        return nothing("runs of the families (ERM, GroupDRO, Scalarized, MGDA, CPT)")
    summary = summarise_over_seeds(per_seed, "hypervolume")
    summary = summary.sort_values("family", key=_family_rank)
    knobs = per_seed.groupby("family")["n_points"].max()
    return pd.DataFrame({
        "family": summary["family"],
        "swept over": summary["family"].map(KNOB_NAMES),
        "knob values": summary["family"].map(knobs).astype(int),
        "seeds": summary["n"].astype(int),
        "hypervolume (points²)": [format_mean_se(m, s, scale=1, digits=0) for m, s in zip(
            summary["hypervolume"], summary["hypervolume_se"], strict=True)],
    }).reset_index(drop=True)


def hypervolume_pairs(runs: pd.DataFrame, treatment: str = "CPT",
                      reference: Sequence[float] = REFERENCE) -> pd.DataFrame:
    """CPT's hypervolume minus each other family's, paired by seed: mean, SE, 95 % t interval,
    verdict (a seed is one draw of the batches shared by every method)."""
    per_seed = hypervolumes(runs, reference)
    if treatment not in set(per_seed["family"]):
        return pd.DataFrame()
    mine = per_seed[per_seed["family"] == treatment]
    rows = []
    for family in sorted(set(per_seed["family"]) - {treatment}, key=_rank):
        d = paired_difference(mine, per_seed[per_seed["family"] == family], "hypervolume",
                              treatment_name=treatment, baseline_name=family)
        rows.append({"baseline": family, "mean": d.mean, "se": d.se, "ci_low": d.ci_low,
                     "ci_high": d.ci_high, "n": d.n, "verdict": d.verdict})
    return pd.DataFrame(rows)


def best_at_levels(runs: pd.DataFrame, levels: Sequence[float] = LEVELS) -> pd.DataFrame | Note:
    """Each family's best test worst-group accuracy among its runs whose test average is at
    least each level, mean ± SE over seeds (and in how many seeds any run reaches it)."""
    fr = paired_grid(runs)
    if fr.empty:
        return nothing("runs of the families (ERM, GroupDRO, Scalarized, MGDA, CPT)")
    table = None
    for level in levels:
        best = best_subject_to(fr, "front", "knob", level)
        summary = summarise_over_seeds(best, "best")
        col = f"average ≥ {100 * level:g} %"
        cells = []
        for _, r in summary.iterrows():
            if r["n_defined"] == 0:
                cells.append(f"none of {int(r['n'])} seeds")
            else:
                cell = format_mean_se(r["best"], r["best_se"], digits=1)
                n, defined = int(r["n"]), int(r["n_defined"])
                cells.append(cell + ("" if defined == n else f" ({defined}/{n} seeds)"))
        part = pd.DataFrame({"family": summary["family"], col: cells})
        table = part if table is None else table.merge(part, on="family", how="outer")
    table = table.sort_values("family", key=_family_rank).reset_index(drop=True)
    return table


def _verdict_sentence(row: pd.Series) -> str:
    if row["n"] < 2:
        return f"against {row['baseline']}: {row['mean']:+.0f} points² (one seed: cannot be told)"
    return (f"against {row['baseline']}: {row['mean']:+.0f} ± {row['se']:.0f} points² "
            f"(95 % CI {row['ci_low']:+.0f} to {row['ci_high']:+.0f}; {row['verdict']})")


def fronts_text(runs: pd.DataFrame, reference: Sequence[float] = REFERENCE) -> Note:
    """Computed sentences: the largest hypervolume, and CPT's paired difference to each family."""
    per_seed = hypervolumes(runs, reference)
    if per_seed.empty:
        return nothing("runs of the families (ERM, GroupDRO, Scalarized, MGDA, CPT)")
    summary = summarise_over_seeds(per_seed, "hypervolume").sort_values(
        "hypervolume", ascending=False)
    top = summary.iloc[0]
    n_seeds = int(summary["n"].max())
    lines = [f"- Largest mean hypervolume: **{top['family']}** "
             f"({top['hypervolume']:.0f} points² over {seeds_text(int(top['n']))}; reference "
             f"point {100 * reference[0]:g} % worst group, {100 * reference[1]:g} % average)."]
    pairs = hypervolume_pairs(runs, reference=reference)
    if pairs.empty:
        lines.append("- No CPT front: CPT's hypervolume cannot be compared.")
    else:
        lines.append("- CPT's hypervolume minus each family's, paired by seed: "
                     + "; ".join(_verdict_sentence(r) for _, r in pairs.iterrows()) + ".")
        lines.append(f"- Over {seeds_text(n_seeds)}, CPT's front is distinguishable from "
                     + _distinguishable(pairs) + ".")
    return Note("\n".join(lines))


def _distinguishable(pairs: pd.DataFrame) -> str:
    told = pairs[pairs["verdict"].str.startswith("CPT ")]
    if told.empty:
        return "no other family's"
    return ", ".join(f"{r['baseline']}'s ({r['verdict']})" for _, r in told.iterrows())


# ----------------------------------------------------------------------------- the update


def update_frame(runs: pd.DataFrame, read: Reader = read_run) -> pd.DataFrame:
    """One row per (run, evaluation window): the update's norm before clipping, the share of
    steps clipped, the weights β and the per-group training losses of the window, the
    balancer's batch μ and the μ of the window's mean training losses (for c, the run's)."""
    rows = []
    for _, run in runs.iterrows():
        record = read(run["path"])
        k = len(record.get("group_names") or [])
        c = (record.get("params") or {}).get("c") or [1.0] * k
        for entry in record.get("history") or []:
            train = entry.get("train") or {}
            if train.get("grad_norm") is None:
                continue
            losses = train.get("per_group_loss") or [math.nan] * k
            rows.append({
                "label": run["label"], "method": run["method"], "seed": run.get("seed"),
                "step": entry["step"], "grad_norm": float(train["grad_norm"]),
                "clipped": (train.get("clipped_steps") or 0) / max(train.get("steps") or 1, 1),
                "batch_mu": math.nan if train.get("mu") is None else float(train["mu"]),
                "mean_loss_mu": non_uniformity(losses, c),
                "descent": (train.get("mode_counts") or {}).get("descent", 0),
                "eps": (record.get("params") or {}).get("eps", math.nan),
                "steps": train.get("steps") or 0,
                **{f"beta.{j}": (train.get("beta") or [math.nan] * k)[j] for j in range(k)},
                **{f"loss.{j}": math.nan if losses[j] is None else losses[j]
                   for j in range(k)},
            })
    return pd.DataFrame(rows)


def update_table(runs: pd.DataFrame, labels: Sequence[str] = MAIN_LABELS,
                 read: Reader = read_run) -> pd.DataFrame | Note:
    """Per method: the update's norm before clipping (first and last window), the share of
    steps clipped, and β of every group averaged over training; mean over seeds."""
    frame = update_frame(runs[runs["label"].isin(labels)], read)
    names = group_names(runs)
    if frame.empty:
        return nothing("records with the update's diagnostics (training windows with "
                       "grad_norm: records written before they were added lack them)")
    rows = []
    for label in [x for x in labels if x in set(frame["label"])]:
        sub = frame[frame["label"] == label]
        first, last = sub["step"].min(), sub["step"].max()
        row = {"method": label, "seeds": sub["seed"].nunique(),
               "norm, first window": sub.loc[sub["step"] == first, "grad_norm"].mean(),
               "norm, last window": sub.loc[sub["step"] == last, "grad_norm"].mean(),
               "steps clipped (%)": 100 * (sub["clipped"] * sub["steps"]).sum()
               / max(sub["steps"].sum(), 1)}
        for j, name in enumerate(names):
            row[f"β: {name}"] = sub[f"beta.{j}"].mean()
        rows.append(row)
    return pd.DataFrame(rows).round(3)


def update_text(runs: pd.DataFrame, reference: str = "ERM (group-balanced)",
                read: Reader = read_run) -> Note:
    """Computed sentences on MGDA's step against group-balanced ERM's and on why CPT stays in
    balance mode: its batch μ against eps and against μ of the mean training losses."""
    frame = update_frame(runs, read)
    if frame.empty:
        return nothing("records with the update's diagnostics")
    lines = []
    by = frame.groupby("label")
    norms = by["grad_norm"].mean()
    if "MGDA" in norms and reference in norms:
        last = frame[frame["step"] == frame["step"].max()].groupby("label")["grad_norm"].mean()
        clipped = by["clipped"].mean()
        lines.append(
            f"- MGDA's update before clipping is {norms['MGDA']:.3g} on average over training "
            f"({last.get('MGDA', math.nan):.3g} in the last window) against "
            f"{norms[reference]:.3g} for {reference}, whose steps are clipped to the norm "
            f"limit in {100 * clipped[reference]:.0f} % of steps (MGDA's in "
            f"{100 * clipped['MGDA']:.0f} %): MGDA moves "
            f"{norms[reference] / norms['MGDA']:.1f}× less far per step at the same learning "
            "rate." if norms["MGDA"] > 0 else "- MGDA's update is zero.")
        mg = frame[frame["label"] == "MGDA"]
        mg_last = mg[mg["step"] == mg["step"].max()]
        top, low = _beta_of_extremes(mg_last)
        lines.append(
            f"- Where MGDA's weights go, in the last window (mean over {len(mg_last)} seeds): "
            f"the group with the largest training loss gets β = {top:.3f}, the group with "
            f"the smallest β = {low:.3f}. The min-norm combination of the groups' gradients "
            "leans on the smallest gradients, which belong to the groups already fit, so the "
            "step shrinks with them and the groups that most need it are left behind."
            if top < low else
            f"- Where MGDA's weights go, in the last window (mean over {len(mg_last)} seeds): "
            f"the group with the largest training loss gets β = {top:.3f}, the group with the "
            f"smallest β = {low:.3f}.")
    cpt = frame[frame["label"] == "CPT(c=1)"]
    if not cpt.empty:
        lines += _descent_lines(cpt)
    return Note("\n".join(lines) if lines else "*No MGDA or CPT(c=1) runs with diagnostics.*")


def _descent_lines(cpt: pd.DataFrame) -> list[str]:
    """Why CPT(c=1) stays in balance mode: the μ its balancer tests on each batch and the μ of
    the window's mean training losses, first and last window, against eps."""
    first, last = cpt[cpt["step"] == cpt["step"].min()], cpt[cpt["step"] == cpt["step"].max()]
    eps = float(cpt["eps"].iloc[0])
    b1, b2 = first["batch_mu"].mean(), last["batch_mu"].mean()
    m1, m2 = first["mean_loss_mu"].mean(), last["mean_loss_mu"].mean()
    lines = [
        f"- CPT(c=1) took {int(cpt['descent'].sum())} of {int(cpt['steps'].sum())} steps in "
        f"descent mode, which it enters when μ < eps = {eps:g}. The μ it tests is a batch's: "
        f"{b1:.3g} in the first evaluation window and {b2:.3g} in the last (mean over seeds). "
        f"μ of the same windows' mean training losses is {m1:.3g} and {m2:.3g}: the batch μ "
        f"is mostly sampling noise ({b2 / m2:.0f}× the mean losses' μ in the last window), "
        f"and the mean losses' μ {'fell' if m2 < m1 / 2 else 'did not fall'} over training, "
        f"{math.log10(m2 / eps):.1f} orders of magnitude above eps."]
    if m2 >= m1 / 2 and b2 > 10 * eps:
        lines.append(f"- So it is not the schedule's length that keeps CPT in balance mode: the "
                     f"mean losses' μ is not falling, and the batch μ, which fell "
                     f"{b1 / b2:.1f}× over the whole schedule, would have to fall another "
                     f"{math.log10(b2 / eps):.1f} orders of magnitude; eps is far below what a "
                     "batch estimate of μ reaches at this batch size.")
    else:
        lines.append("- Whether a longer schedule would bring μ below eps cannot be told "
                     "from these runs.")
    return lines


def _beta_of_extremes(windows: pd.DataFrame) -> tuple[float, float]:
    """Mean over windows of β on the group with the largest and on the one with the smallest
    training loss of that window."""
    betas = sorted(c for c in windows.columns if c.startswith("beta."))
    top, low = [], []
    for _, w in windows.iterrows():
        losses = [w[f"loss.{c[5:]}"] for c in betas]
        if any(math.isnan(v) for v in losses):
            continue
        top.append(w[betas[losses.index(max(losses))]])
        low.append(w[betas[losses.index(min(losses))]])
    mean = lambda v: sum(v) / len(v) if v else math.nan  # noqa: E731
    return mean(top), mean(low)

