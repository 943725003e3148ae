"""The paper's claims and what the records say about them: holds, does not hold, or cannot be
told at this number of seeds.

Every verdict is a paired comparison over seeds (``paired.paired_difference``: a seed means the
same data order for every method) or a one-sample interval of paired changes, with a 95 % t
interval. A claim *holds* when the interval lies on the claimed side of zero, *does not hold*
when it lies on the other side, and *cannot be told* when it contains zero. The landing page
and each results chapter open with these tables.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cptlib import records
from cptlib.analysis import every_c, families
from cptlib.analysis.control import control_pairs
from cptlib.analysis.controllability import controllability_deltas
from cptlib.analysis.paired import best_minus_last, mean_interval, paired_difference, steps_to_reach
from cptlib.analysis.text import Note

TREATMENT = "CPT(c=1)"
WGA, AVG = "test.worst_group_acc", "test.avg_acc"
#: The minority group has "learnt" once its validation accuracy reaches this (dynamics).
MINORITY_LEVEL = 0.7


@dataclass(frozen=True)
class Verdict:
    """One claim, the evidence for it (a mean difference with its interval) and the verdict."""

    claim: str
    evidence: str
    verdict: str
    chapter: str

    def row(self) -> dict[str, str]:
        return {"claim": self.claim, "evidence": self.evidence, "verdict": self.verdict,
                "where": f"{{doc}}`/runs/{self.chapter}`"}


def _judge(low: float, high: float, n: int, claimed_sign: int, unit: str = "seeds") -> str:
    """Holds / does not hold / cannot be told, for a claim that the difference is > 0 (sign 1)
    or < 0 (sign −1); ``unit`` names what ``n`` counts (seeds, or paired runs)."""
    if n < 2 or math.isnan(low) or math.isnan(high):
        return f"cannot be told ({'one ' + unit.rstrip('s') if n == 1 else 'no paired runs'})"
    if low > 0 or high < 0:
        return "holds" if (low > 0) == (claimed_sign > 0) else "does not hold"
    return f"cannot be told at {n} {unit}"


def _points(mean: float, low: float, high: float, n: int, unit: str = "points") -> str:
    if math.isnan(low) or math.isnan(high):  # one pair: no interval to give
        return f"{100 * mean:+.1f} {unit} ({n} paired)"
    return (f"{100 * mean:+.1f} {unit} (95 % CI {100 * low:+.1f} to {100 * high:+.1f}; "
            f"{n} paired)")


def _paired(runs: pd.DataFrame, treatment: str, baseline: str, metric: str,
            claim: str, chapter: str, sign: int = 1) -> Verdict | None:
    t, b = runs[runs["label"] == treatment], runs[runs["label"] == baseline]
    if t.empty or b.empty or "seed" not in runs:
        return None
    try:
        d = paired_difference(t, b, metric, treatment_name=treatment, baseline_name=baseline)
    except ValueError:
        return None
    return Verdict(claim, f"{treatment} − {baseline}: " + _points(d.mean, d.ci_low, d.ci_high, d.n),
                   _judge(d.ci_low, d.ci_high, d.n, sign), chapter)


def benchmark_verdicts(runs: pd.DataFrame, chapter: str = "benchmark") -> list[Verdict]:
    """CPT(c = 1) against every baseline, on the worst group; against GroupDRO on the average
    (the paper: a high worst group without GroupDRO's loss of average accuracy)."""
    found = [
        _paired(runs, TREATMENT, "ERM", WGA, "CPT raises the worst group over ERM", chapter),
        _paired(runs, TREATMENT, "ERM (group-balanced)", WGA,
                "CPT's worst group beats group-balanced ERM's", chapter),
        _paired(runs, TREATMENT, "GroupDRO", WGA, "CPT's worst group beats GroupDRO's", chapter),
        _paired(runs, TREATMENT, "GroupDRO", AVG,
                "CPT keeps a higher average accuracy than GroupDRO", chapter),
        _paired(runs, TREATMENT, "Scalarized(c=1)", WGA,
                "The balancer beats weighting the losses (Scalarized, same c)", chapter),
        _paired(runs, TREATMENT, "MGDA", WGA, "CPT's worst group beats MGDA's", chapter),
    ]
    return [v for v in found if v is not None]


def controllability_verdicts(runs: pd.DataFrame) -> list[Verdict]:
    """Raising c_k raises group k (CPT), and does so more than weighting the losses by c."""
    deltas = controllability_deltas(runs)
    if deltas.empty:
        return []
    col = "Δ acc. last (points)"
    out = []
    cpt = deltas[deltas["method"] == "CPT"]
    if not cpt.empty:
        m = mean_interval(cpt[col] / 100)
        out.append(Verdict("Raising c_k raises group k's test accuracy (CPT, last checkpoint)",
                           "mean change of the raised group: " + _points(*m),
                           _judge(m[1], m[2], m[3], 1, "paired runs"), "controllability"))
    keys = ["c", "seed", "group"]
    both = cpt.merge(deltas[deltas["method"] == "Scalarized"], on=keys, suffixes=("", "_s"))
    if not both.empty:
        m = mean_interval((both[col] - both[col + "_s"]) / 100)
        out.append(Verdict("c steers CPT more than it steers Scalarized (the same c)",
                           "CPT's gain − Scalarized's gain on the raised group: " + _points(*m),
                           _judge(m[1], m[2], m[3], 1, "paired runs"), "controllability"))
    return out


def fronts_verdicts(runs: pd.DataFrame,
                    read: Callable[[str], dict] = records.read_record) -> list[Verdict]:
    """The trade-off claim as fronts (CPT's hypervolume against each family's, paired by seed)
    and the control claim (CPT ends nearer its ray than Scalarized on the training losses)."""
    out = []
    pairs = families.hypervolume_pairs(runs)
    for _, r in pairs.iterrows():
        interval = ("" if r["n"] < 2 else
                    f" (95 % CI {r['ci_low']:+.0f} to {r['ci_high']:+.0f}; {int(r['n'])} paired)")
        knob = families.KNOB_NAMES.get(r["baseline"], "—")
        over = f"swept over {knob}" if knob != "—" else "one point per seed"
        out.append(Verdict(f"CPT's front (swept over c) has a larger hypervolume than "
                           f"{r['baseline']}'s ({over})",
                           f"hypervolume, CPT − {r['baseline']}: {r['mean']:+.0f} points²"
                           + interval, _judge(r["ci_low"], r["ci_high"], int(r["n"]), 1),
                           "fronts"))
    sweep = runs[runs["method"].isin(("cpt", "scalarized"))] if not runs.empty else runs
    try:
        angle = control_pairs(sweep, "train", "last", read=read)["angle"]
    except (ValueError, KeyError):  # records without training losses, or no pairs
        angle = pd.Series(dtype=float)
    if len(angle):
        m, low, high, n = mean_interval(angle)
        evidence = (f"angle to the ray, CPT − Scalarized: {m:+.1f}°"
                    + ("" if n < 2 else f" (95 % CI {low:+.1f} to {high:+.1f}; {n} paired)"))
        out.append(Verdict("CPT ends nearer its ray than Scalarized with the same c (training "
                           "losses, last checkpoint)", evidence,
                           _judge(low, high, n, -1, "paired runs"), "fronts"))
    return out


def _minority(record: dict[str, Any]) -> int:
    counts = record.get("train_group_counts") or []
    return int(np.argmin(counts)) if counts else 0


def dynamics_verdicts(runs: pd.DataFrame, read: Callable[[str], dict] = records.read_record,
                      baselines: Sequence[str] = ("ERM", "GroupDRO")) -> list[Verdict]:
    """The minority group learns earlier with CPT; CPT loses less after its peak (against
    ERM and against GroupDRO, the reweighting method the paper contrasts it with)."""
    return [v for b in baselines for v in _dynamics_against(runs, read, b)]


def _dynamics_against(runs: pd.DataFrame, read: Callable[[str], dict],
                      baseline: str) -> list[Verdict]:
    rows = []
    for _, run in runs[runs["label"].isin([TREATMENT, baseline])].iterrows():
        record = read(run["path"])
        reached = steps_to_reach(record, [_minority(record)], MINORITY_LEVEL)
        history = record.get("history") or [{"step": math.nan}]
        # A run that never gets there counts at its last step: its difference is then a bound.
        rows.append({"label": run["label"], "seed": run["seed"], "censored": reached is None,
                     "steps": float(history[-1]["step"] if reached is None else reached),
                     "loss_after_peak": best_minus_last(record)})
    table = pd.DataFrame(rows)
    if table.empty:
        return []
    out = []
    for metric, claim, unit, scale in (
        ("steps", f"The minority group reaches {MINORITY_LEVEL:.0%} validation accuracy in "
                  f"fewer steps with CPT than with {baseline}", "steps", 1),
        ("loss_after_peak", f"CPT loses less worst-group accuracy after its peak than {baseline}",
         "points", 100),
    ):
        try:
            d = paired_difference(table[table["label"] == TREATMENT],
                                  table[table["label"] == baseline], metric)
        except ValueError:
            continue
        never = table[table["censored"]].groupby("label").size().to_dict()
        censored = ", ".join(f"{k} never reached it in {v} run(s), counted at its last step"
                             for k, v in sorted(never.items()))
        evidence = (f"CPT − {baseline}: {scale * d.mean:+.1f} {unit} (95 % CI "
                    f"{scale * d.ci_low:+.1f} to {scale * d.ci_high:+.1f}; {d.n} paired"
                    + (f"; {censored}" if metric == "steps" and censored else "") + ")")
        out.append(Verdict(claim, evidence, _judge(d.ci_low, d.ci_high, d.n, -1), "dynamics"))
    return out


def every_c_verdicts(cond: pd.DataFrame, ded: pd.DataFrame,
                     chapter: str = "every_c") -> list[Verdict]:
    """One adapter for every c: does it match the dedicated runs, at what training cost, and
    does choosing c on validation help (paired over seeds)? The first two are the targets of
    the study's every-c issue, judged on the measured value (no interval: a mean absolute
    difference over cells, and a ratio of mean times)."""
    if cond.empty:
        return []
    out = []
    m = every_c.match_summary(every_c.match_frame(cond, ded))
    if m["cells"]:
        out.append(Verdict(
            f"One adapter's per-group test accuracy is within {every_c.MATCH_POINTS:g} points of "
            "the dedicated CPT(c) runs",
            f"mean absolute difference {m['mad']:.1f} points over {m['cells']} (c, group) "
            f"cells of {every_c.seeds_range(m)} (identical runs would differ by about "
            f"{m['noise_gap']:.1f} at these seeds)",
            "holds" if m["within"] else "does not hold", chapter))
    cost = every_c.cost_frame(cond, ded)
    if not cost.empty:
        ratio = every_c.cost_ratio(cost)
        out.append(Verdict(
            f"Training it costs at most {every_c.COST_RATIO:g}× one dedicated run",
            f"{ratio:.2f}× ({cost.iloc[0]['train_s']:.0f} s against "
            f"{cost.iloc[1]['train_s']:.0f} s, means over the sweep's runs)",
            "holds" if ratio <= every_c.COST_RATIO else "does not hold", chapter))
    choices = every_c.choice_frame(cond, ded)
    if not choices.empty:
        for _, d in every_c.choice_differences(choices).iterrows():
            if "searched" not in d["way"]:
                continue
            out.append(Verdict(
                f"Choosing c on validation ({d['way'].split(': ')[-1]}) raises the test worst "
                "group over c = 1",
                "searched − c = 1: " + _points(d["mean"] / 100, d["ci_low"] / 100,
                                              d["ci_high"] / 100, int(d["n"])),
                _judge(d["ci_low"], d["ci_high"], int(d["n"]), 1), chapter))
    return out


def verdict_table(verdicts: Sequence[Verdict], *, with_where: bool = False) -> Note:
    """The verdicts as a Markdown table (a chapter's first output)."""
    if not verdicts:
        return Note("*No paired runs yet: no claim can be judged from these records.*")
    head = "| claim | evidence (paired over seeds) | verdict |" + (" where |" if with_where else "")
    rule = "|---|---|---|" + ("---|" if with_where else "")
    lines = [head, rule]
    for v in verdicts:
        row = v.row()
        cells = [row["claim"], row["evidence"], f"**{row['verdict']}**"]
        lines.append("| " + " | ".join(cells + ([row["where"]] if with_where else [])) + " |")
    return Note("\n".join(lines))


def all_verdicts(load: Callable[[str], pd.DataFrame],
                 load_conditioned: Callable[[str], pd.DataFrame] | None = None) -> list[Verdict]:
    """Every chapter's verdicts; ``load(experiment)`` gives that experiment's labelled runs,
    ``load_conditioned(experiment)`` its conditioned runs (one adapter for every c)."""
    image, text = load("synthetic"), load("text")
    found = benchmark_verdicts(image) + controllability_verdicts(image) + fronts_verdicts(image)
    if load_conditioned is not None:
        cond = load_conditioned("synthetic")
        found += every_c_verdicts(cond, every_c.dedicated_for(image, cond))
    found += dynamics_verdicts(image) if not image.empty else []
    found += [Verdict(f"Text task: {v.claim}", v.evidence, v.verdict, "text")
              for v in benchmark_verdicts(text, chapter="text") + fronts_verdicts(text)]
    return found


def landing_text(load: Callable[[str], pd.DataFrame], profile: str,
                 load_conditioned: Callable[[str], pd.DataFrame] | None = None) -> str:
    """The landing page's verdicts: every claim at this profile, linked to its chapter."""
    table = verdict_table(all_verdicts(load, load_conditioned), with_where=True).text
    return (f"At the **{profile}** profile, the records say this about the paper's claims "
            "(each verdict is a paired comparison over seeds with a 95 % t interval: *holds* "
            "when the interval lies on the claimed side of zero, *does not hold* when it lies "
            "on the other, *cannot be told* when it contains zero):\n\n" + table + "\n")
