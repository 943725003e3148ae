"""The main results: mean ± SE over seeds per run setting, and the sentences comparing them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from cptlib import records
from cptlib.analysis.frames import column
from cptlib.analysis.labels import MAIN_LABELS, METRIC_TITLES, ordered
from cptlib.analysis.paired import mean_interval, paired_difference
from cptlib.analysis.text import DASH, Note, missing, no_runs_text, nothing, seeds_text


def status_text(runs: pd.DataFrame, profile: str, experiment: str) -> Note:
    """Which records a chapter reads: how many runs, which settings, how many seeds each."""
    if runs.empty:
        return no_runs_text(f"experiment `{experiment}`", profile,
                            [f"cpt sweep --profile {profile} --only {experiment}"])
    counts = runs.groupby("label").size()
    parts = ", ".join(f"{label} ({seeds_text(int(counts[label]))})"
                      for label in ordered(counts.index))
    return Note(
        f"This page reads **{len(runs)} run record{'s' if len(runs) != 1 else ''}** of "
        f"experiment `{experiment}` at profile "
        f"`{profile}`: {parts}. Runs are grouped by method, sampling exponent α and control "
        "vector c; tables show the mean ± standard error over seeds."
    )


def validation_of(checkpoint: str) -> str:
    """The validation metrics of the same checkpoint (``val`` for ``test``, ``last_val`` …)."""
    return {"test": "val", "last_test": "last_val"}.get(checkpoint, "val")


def method_summary(runs: pd.DataFrame, checkpoint: str = "test") -> pd.DataFrame:
    """Mean and SE over seeds of the main metrics per label (runs with a uniform c only)."""
    main = runs[runs["uniform_c"]] if not runs.empty else runs
    if main.empty:
        return pd.DataFrame()
    metrics = [f"{checkpoint}.{m}" for m in METRIC_TITLES if f"{checkpoint}.{m}" in main]
    metrics += [f"{validation_of(checkpoint)}.worst_group_acc", "trainable_params"]
    agg = records.aggregate(main, ["label"], metrics).set_index("label")
    return agg.loc[ordered(agg.index)]


def mean_se_texts(agg: pd.DataFrame, col: str) -> list[str]:
    """``"81.3 ± 1.2"`` per row of an ``aggregate`` table (fractions shown as %), kept on one
    line in HTML tables."""
    return [records.format_mean_se(m, se).replace(" ± ", "\u00a0±\u00a0")
            for m, se in zip(agg[col], agg[f"{col}_se"], strict=True)]


def _uses_auroc(runs: pd.DataFrame) -> bool:
    return bool((column(runs, "selection") == "auroc").any())


def main_table(runs: pd.DataFrame, checkpoint: str = "test") -> pd.DataFrame | Note:
    """The main results: per method, test worst-group, average (train-weighted) and mean
    accuracy, validation worst-group accuracy (same checkpoint) and trainable parameters, as
    mean ± SE (%) over seeds."""
    agg = method_summary(runs, checkpoint)
    if agg.empty:
        return nothing("runs with a uniform control vector")
    val = validation_of(checkpoint)
    test = "test (%)" if checkpoint == "test" else "test, last step (%)"
    shown = ["worst_group_acc", "avg_acc", "mean_acc"] + (["auroc"] if _uses_auroc(runs) else [])
    columns = {("", "seeds"): agg["n"].astype(int).tolist()}
    for m in shown:
        columns[(test, METRIC_TITLES[m])] = mean_se_texts(agg, f"{checkpoint}.{m}")
    columns[(test.replace("test", "validation"), METRIC_TITLES["worst_group_acc"])] = (
        mean_se_texts(agg, f"{val}.worst_group_acc"))
    columns[("", "trainable")] = [
        DASH if missing(v) else f"{v:,.0f}" for v in agg["trainable_params"]]
    return pd.DataFrame(columns, index=list(agg.index))


def difference_text(a: pd.Series, b: pd.Series, col: str) -> str:
    """``+3.1 ± 1.0 points (beyond 2 SE)`` and the like."""
    d = 100 * (a[col] - b[col])
    se = 100 * math.hypot(a[f"{col}_se"], b[f"{col}_se"])
    if not math.isfinite(se):
        return f"{d:+.1f} points (a single seed: no SE)"
    return f"{d:+.1f} ± {se:.1f} points ({'beyond' if abs(d) > 2 * se else 'within'} 2 SE)"


def comparison_text(
    runs: pd.DataFrame,
    focus: str | None = None,
    against: Sequence[str] | None = None,
    checkpoint: str = "test",
) -> Note:
    """Computed sentences: the focus method's mean test worst-group and average accuracy, the
    difference to each other method, and whether it exceeds two standard errors.

    ``focus`` defaults to CPT with c = 1 (at whatever α the runs used); ``against`` to every
    other setting present. Settings named in ``against`` without runs are listed as missing.
    """
    agg = method_summary(runs, checkpoint)
    if focus is None:
        focus = next((x for x in agg.index if x.startswith("CPT(c=1)")), "CPT(c=1)")
    if agg.empty or focus not in agg.index:
        return Note(f"*No {focus} runs in these records, so there is nothing to compare.*")
    expected = against is not None
    against = list(against) if expected else [x for x in agg.index if x != focus]
    wga, avg = f"{checkpoint}.worst_group_acc", f"{checkpoint}.avg_acc"

    def both(r: pd.Series) -> str:
        return (f"worst-group {records.format_mean_se(r[wga], r[wga + '_se'])} %, "
                f"average {records.format_mean_se(r[avg], r[avg + '_se'])} %")

    f = agg.loc[focus]
    lines = [f"- **{focus}** ({seeds_text(int(f['n']))}): mean test {both(f)}."]
    for other in (o for o in against if o in agg.index):
        o = agg.loc[other]
        lines.append(
            f"- **{other}** ({seeds_text(int(o['n']))}): {both(o)}. {focus} minus {other}: "
            f"worst-group {difference_text(f, o, wga)}, average {difference_text(f, o, avg)}."
        )
    best = agg.index[agg[wga] == agg[wga].max()].tolist()
    lines.append(f"- Highest mean test worst-group accuracy: **{' and '.join(best)}** "
                 f"({100 * agg[wga].max():.1f} %).")
    missing_runs = [m for m in against if m not in agg.index]
    if expected and missing_runs:
        lines.append(f"- No runs yet of: {', '.join(missing_runs)}.")
    return Note("\n".join(lines))


def paired_main_table(runs: pd.DataFrame, treatment: str = "CPT(c=1)",
                      baselines: Sequence[str] | None = None) -> pd.DataFrame | Note:
    """CPT(c = 1) minus every baseline of the main table, paired by seed (the same batches
    for both), in worst-group and average test accuracy: mean ± SE, 95 % t interval, verdict."""
    baselines = [b for b in (baselines or MAIN_LABELS) if b != treatment]
    main = runs[runs["uniform_c"]] if not runs.empty else runs
    if main.empty or not (main["label"] == treatment).any():
        return nothing(f"{treatment} runs")
    rows = []
    for base in baselines:
        if not (main["label"] == base).any():
            continue
        row: dict[str, object] = {"baseline": base}
        for metric, title in (("test.worst_group_acc", "worst group"), ("test.avg_acc", "average")):
            d = paired_difference(main[main["label"] == treatment], main[main["label"] == base],
                                  metric, treatment_name=treatment, baseline_name=base)
            se = "" if math.isnan(d.se) else f" ± {100 * d.se:.1f}"
            ci = (DASH if math.isnan(d.ci_low)
                  else f"{100 * d.ci_low:+.1f} to {100 * d.ci_high:+.1f}")
            row[f"Δ {title} (points)"] = f"{100 * d.mean:+.1f}{se}"
            row[f"95 % CI, {title}"] = ci
            row[f"verdict, {title}"] = d.verdict
        row["seeds"] = d.n
        rows.append(row)
    return pd.DataFrame(rows) if rows else nothing("baselines paired with " + treatment)


LEARNED_LEVEL = 0.80  # mean test accuracy over the groups a reference must reach to count


def learned_text(runs: pd.DataFrame, reference: str = "ERM (group-balanced)",
                 level: float = LEARNED_LEVEL) -> Note:
    """Whether the task was learned at all, by a stated criterion: the lower end of the 95 % t
    interval over seeds of ``reference``'s test mean accuracy over the groups (chance is 50 %
    on a binary task with group-balanced test data) at least ``level``. Why: comparisons of
    methods on a model that has not learned the task say nothing about the methods."""
    criterion = (f"The task counts as learned when **{reference}**'s test accuracy averaged "
                 f"over the groups (chance: 50 %) has the lower end of its 95 % interval over "
                 f"seeds at {100 * level:.0f} % or more.")
    chosen = runs[runs["label"] == reference] if not runs.empty else runs
    if chosen.empty:
        return Note(f"{criterion} *No {reference} runs in these records: not checked.*")
    mean, low, high, n = mean_interval(chosen["test.mean_acc"])
    got = f"{100 * mean:.1f} %" + ("" if n < 2 else f" (95 % CI {100 * low:.1f} to "
                                                     f"{100 * high:.1f} %, {seeds_text(n)})")
    if n < 2:
        return Note(f"{criterion} Here: {got} at {seeds_text(n)}, which cannot show it.")
    if low >= level:
        return Note(f"{criterion} Here: {got}: **learned**; the comparisons below are of "
                    "models that solve the task.")
    return Note(f"{criterion} Here: {got}: **not learned**. The task failed at these settings, "
                "and the comparisons below say little about the methods.")
