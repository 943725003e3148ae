"""Paired differences over seeds (pinned on a hand-made frame, with its t interval and verdict),
and the two dynamics numbers read from a record's history."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cptlib import records
from cptlib.analysis import paired

M = "test.worst_group_acc"


def _runs(method: str, values: dict[int, float]) -> pd.DataFrame:
    return pd.DataFrame({"method": method, "seed": list(values), M: list(values.values())})


CPT = _runs("cpt", {0: 0.80, 1: 0.82, 2: 0.84, 3: 0.90})
ERM = _runs("erm", {0: 0.70, 1: 0.74, 2: 0.72, 4: 0.10})


def test_pinned_difference() -> None:
    d = paired.paired_difference(CPT, ERM, M, baseline_name="ERM")
    # seeds 0-2: differences 0.10, 0.08, 0.12 -> mean 0.10, std 0.02, SE 0.02/√3;
    # t(0.975, 2 dof) = 4.3027 (tables), so the interval is 0.10 ± 0.0497.
    assert d.differences.to_dict() == pytest.approx({0: 0.10, 1: 0.08, 2: 0.12})
    assert d.mean == pytest.approx(0.10)
    assert d.se == pytest.approx(0.02 / math.sqrt(3))
    assert d.ci_low == pytest.approx(0.10 - 4.302653 * 0.02 / math.sqrt(3), abs=1e-6)
    assert d.ci_high == pytest.approx(0.10 + 4.302653 * 0.02 / math.sqrt(3), abs=1e-6)
    assert (d.n, d.n_unpaired, d.level) == (3, 2, 0.95)
    assert d.verdict == "CPT higher"
    assert d.ci_low < d.mean < d.ci_high


def test_verdict_follows_the_interval() -> None:
    lower = paired.paired_difference(ERM, CPT, M, treatment_name="ERM", baseline_name="CPT")
    assert lower.verdict == "ERM lower" and lower.mean == pytest.approx(-0.10)
    noisy = _runs("scalarized", {0: 0.75, 1: 0.85, 2: 0.83})  # differences 0.05, −0.03, 0.01
    d = paired.paired_difference(CPT, noisy, M)
    assert d.ci_low < 0 < d.ci_high
    assert d.verdict == "not distinguishable at 3 seeds"


def test_level_widens_the_interval() -> None:
    widths = [paired.paired_difference(CPT, ERM, M, level=lv) for lv in (0.5, 0.9, 0.95, 0.99)]
    spans = [d.ci_high - d.ci_low for d in widths]
    assert np.all(np.diff(spans) > 0)
    # t(0.995, 2 dof) = 9.925: the 99 % interval 0.10 ± 0.115 contains 0
    strict = paired.paired_difference(CPT, ERM, M, level=0.99)
    assert strict.verdict == "not distinguishable at 3 seeds"


def test_shift_invariance() -> None:
    """Adding the same amount to both sides of every seed leaves the difference unchanged."""
    shifted = paired.paired_difference(CPT.assign(**{M: CPT[M] + 0.05}),
                                       ERM.assign(**{M: ERM[M] + 0.05}), M)
    base = paired.paired_difference(CPT, ERM, M)
    assert (shifted.mean, shifted.se) == pytest.approx((base.mean, base.se))


def test_one_seed_and_no_seed() -> None:
    d = paired.paired_difference(CPT.iloc[:1], ERM, M)
    assert d.n == 1 and math.isnan(d.se) and math.isnan(d.ci_low)
    assert d.mean == pytest.approx(0.10)
    assert d.verdict == "cannot be told with one seed"
    with pytest.raises(ValueError, match="share no seed"):
        paired.paired_difference(CPT.iloc[3:], ERM, M)
    with pytest.raises(ValueError, match="more than one run with seed = 0"):
        paired.paired_difference(pd.concat([CPT, CPT.iloc[:1]]), ERM, M)
    with pytest.raises(ValueError, match="level"):
        paired.paired_difference(CPT, ERM, M, level=95)


def test_nan_metric_counts_as_unpaired() -> None:
    holey = ERM.assign(**{M: [0.70, math.nan, 0.72, 0.10]})
    d = paired.paired_difference(CPT, holey, M)
    assert d.n == 2 and d.n_unpaired == 3


def test_paired_table() -> None:
    runs = pd.concat([CPT, ERM, _runs("scalarized", {0: 0.75, 1: 0.85, 2: 0.83})])
    table = paired.paired_table(runs, "method", "cpt", ["erm", "scalarized"], [M])
    assert table["baseline"].tolist() == ["erm", "scalarized"]
    assert table["verdict"].tolist() == ["cpt higher", "not distinguishable at 3 seeds"]
    assert table.loc[0, "mean"] == pytest.approx(0.10)


# ----------------------------------------------------------------------------- dynamics


def _record(run: str, accs: list[list[float | None]], wga: list[float]) -> dict:
    history = [{"step": 5 * (i + 1), "val": {"per_group_acc": a},
                "test": {"worst_group_acc": w}} for i, (a, w) in enumerate(zip(accs, wga,
                                                                                strict=True))]
    return {"experiment": "synthetic", "profile": "unit", "run_id": run,
            "params": {"method": "cpt"}, "metrics": {}, "history": history}


def test_steps_to_reach() -> None:
    rec = _record("a", [[0.9, 0.2, 0.5], [0.9, 0.6, None], [0.9, 0.7, 0.65], [0.9, 0.8, 0.8]],
                  [0.2, 0.5, 0.6, 0.55])
    assert paired.steps_to_reach(rec, [1, 2], 0.6) == 15  # step 10 has no group-2 value
    assert paired.steps_to_reach(rec, [1], 0.6) == 10
    assert paired.steps_to_reach(rec, [1, 2], 0.95) is None
    assert paired.steps_to_reach(rec, [0], 0.0) == 5
    # a higher level is never reached earlier
    steps = [paired.steps_to_reach(rec, [1, 2], t) for t in (0.1, 0.5, 0.6, 0.7, 0.8)]
    assert steps == sorted(steps)
    with pytest.raises(ValueError, match="do not index"):
        paired.steps_to_reach(rec, [3], 0.5)


def test_best_minus_last() -> None:
    rec = _record("a", [[0.5]] * 4, [0.2, 0.5, 0.6, 0.55])
    assert paired.best_minus_last(rec) == pytest.approx(0.05)
    assert paired.best_minus_last(_record("b", [[0.5]] * 2, [0.2, 0.6])) == 0.0
    assert math.isnan(paired.best_minus_last(_record("c", [], [])))


def test_dynamics_table_and_summary(tmp_path: Path) -> None:
    rows = []
    specs = {("cpt", 0): [0.3, 0.7], ("cpt", 1): [0.6, 0.65], ("erm", 0): [0.1, 0.2]}
    for (method, seed), minority in specs.items():
        rec = _record(f"{method}{seed}", [[0.9, m] for m in minority], [minority[0], 0.1])
        path = records.write_record(rec, tmp_path / f"{rec['run_id']}.json")
        rows.append({"run_id": rec["run_id"], "method": method, "seed": seed, "path": str(path)})
    table = paired.dynamics_table(pd.DataFrame(rows), groups=[1], threshold=0.6)
    assert table["steps_to_reach"].tolist()[:2] == [10, 5]
    assert math.isnan(table["steps_to_reach"].iloc[2]) and not table["reached"].iloc[2]
    assert table["best_minus_last"].tolist() == pytest.approx([0.2, 0.5, 0.0])
    summary = paired.dynamics_summary(table).set_index("method")
    assert summary.loc["cpt", "steps_to_reach"] == pytest.approx(7.5)
    assert summary.loc["cpt", "steps_to_reach_se"] == pytest.approx(2.5)
    assert summary.loc["cpt", "n_reached"] == 2 and summary.loc["erm", "n_reached"] == 0
    assert summary.loc["erm", "n"] == 1 and math.isnan(summary.loc["erm", "best_minus_last_se"])
