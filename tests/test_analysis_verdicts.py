"""Verdicts: each claim's evidence is a paired difference recomputed here from the records,
and the verdict follows the interval's side of zero."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from cptlib.analysis import verdicts as V
from cptlib.analysis.paired import paired_difference

sys.path.insert(0, str(Path(__file__).parent))
from fake_records import fake_runs  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> pd.DataFrame:
    return fake_runs(tmp_path_factory.mktemp("results"))


@pytest.mark.parametrize(("low", "high", "n", "sign", "expected"), [
    (0.01, 0.05, 3, 1, "holds"),
    (-0.05, -0.01, 3, 1, "does not hold"),
    (-0.05, -0.01, 3, -1, "holds"),
    (-0.01, 0.05, 3, 1, "cannot be told at 3 seeds"),
    (float("nan"), float("nan"), 1, 1, "cannot be told (one seed)"),
    (-0.01, 0.05, 4, 1, "cannot be told at 4 paired runs"),
])
def test_judge_follows_the_interval(low, high, n, sign, expected):
    unit = "paired runs" if "paired runs" in expected else "seeds"
    assert V._judge(low, high, n, sign, unit) == expected


def test_benchmark_verdicts_are_the_paired_differences_of_the_records(runs):
    found = V.benchmark_verdicts(runs)
    assert {v.claim for v in found} >= {"CPT raises the worst group over ERM",
                                        "CPT keeps a higher average accuracy than GroupDRO"}
    erm = next(v for v in found if v.claim == "CPT raises the worst group over ERM")
    d = paired_difference(runs[runs["label"] == "CPT(c=1)"], runs[runs["label"] == "ERM"],
                          V.WGA)
    assert f"{100 * d.mean:+.1f} points" in erm.evidence and f"{d.n} paired" in erm.evidence
    assert erm.verdict == V._judge(d.ci_low, d.ci_high, d.n, 1)


def test_controllability_verdicts_come_from_the_paired_c_changes(runs):
    found = V.controllability_verdicts(runs)
    assert [v.chapter for v in found] == ["controllability"] * len(found) and found
    assert found[0].claim.startswith("Raising c_k raises group k")


def test_dynamics_verdicts_claim_fewer_steps_and_smaller_losses(runs):
    for v in V.dynamics_verdicts(runs):
        assert v.chapter == "dynamics" and v.evidence.startswith(("CPT − ERM", "CPT − GroupDRO"))


def test_the_table_links_each_claim_to_its_chapter(runs):
    table = V.verdict_table(V.benchmark_verdicts(runs), with_where=True).text
    assert table.startswith("| claim |") and "{doc}`/runs/benchmark`" in table
    assert "No paired runs yet" in V.verdict_table([]).text


def test_one_pair_gives_no_interval_rather_than_nan():
    from cptlib.analysis.verdicts import _points

    assert _points(0.012, math.nan, math.nan, 1) == "+1.2 points (1 paired)"
    assert "95 % CI -0.5 to +2.0" in _points(0.01, -0.005, 0.02, 3)
