"""The tables that put the trade-off issue's statistics into the chapters: CPT paired against
every baseline, the precision of control, the dynamics in numbers (fake records)."""

from __future__ import annotations

import pytest
from fake_records import fake_runs

from cptlib import records
from cptlib.analysis.control import control_pairs, control_table
from cptlib.analysis.controllability import precision_table, precision_text
from cptlib.analysis.dynamics import dynamics_numbers
from cptlib.analysis.paired import best_minus_last, paired_difference
from cptlib.analysis.summaries import paired_main_table


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return fake_runs(tmp_path_factory.mktemp("results"))


def test_cpt_is_paired_with_every_baseline_on_both_metrics(runs):
    table = paired_main_table(runs)
    assert table["baseline"].tolist() == ["ERM", "ERM (group-balanced)", "GroupDRO",
                                          "Scalarized(c=1)", "MGDA"]
    assert (table["seeds"] == 3).all()
    main = runs[runs["uniform_c"]]
    d = paired_difference(main[main["label"] == "CPT(c=1)"], main[main["label"] == "GroupDRO"],
                          "test.avg_acc")
    row = table.set_index("baseline").loc["GroupDRO"]
    assert row["Δ average (points)"] == f"{100 * d.mean:+.1f} ± {100 * d.se:.1f}"
    assert row["verdict, average"] == d.verdict
    assert "No CPT(c=1) runs" in paired_main_table(runs[runs["label"] != "CPT(c=1)"]).text


def test_precision_compares_cpt_and_scalarized_on_the_same_c_and_seed(runs):
    pairs = control_pairs(runs)
    # c = 1 over 3 seeds, and the 4 raised c at the first seed, for both methods.
    assert len(pairs) == 3 + 4
    table = control_table(runs[runs["method"].isin(["cpt", "scalarized"])])
    first = pairs.iloc[0]
    one = table[(table["c_str"] == first["c_str"]) & (table["seed"] == first["seed"])]
    cpt, sc = one[one["method"] == "cpt"].iloc[0], one[one["method"] == "scalarized"].iloc[0]
    assert pairs["angle"].iloc[0] == pytest.approx(cpt["angle_last"] - sc["angle_last"])
    shown = precision_table(runs)
    assert set(shown["method"]) == {"CPT", "Scalarized"} and len(shown) == 10
    text = precision_text(runs).text
    assert "over 7 paired (c, seed)" in text and "least closely" in text
    assert "cannot be compared" in precision_text(runs[runs["method"] != "scalarized"]).text


def test_dynamics_numbers_per_method(runs):
    table = dynamics_numbers(runs, 0.7).set_index("method")
    assert "CPT(c=1)" in table.index and (table["runs"] == 3).all()
    cpt = runs[(runs["label"] == "CPT(c=1)")]
    lost = [100 * best_minus_last(records.read_record(p)) for p in cpt["path"]]
    mean = sum(lost) / len(lost)
    assert table.loc["CPT(c=1)", "best − last, worst group (points)"].startswith(f"{mean:.1f}")
    assert table.loc["CPT(c=1)", "reached 70%"].endswith("of 3")
