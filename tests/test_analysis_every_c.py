"""One adapter for every c against the dedicated runs: the chapter's frames on fake records
(made-up numbers, never shown as results)."""

from __future__ import annotations

import math

import pytest
from fake_records import fake_conditioned_record, fake_record, write_fake_results

from cptlib import records
from cptlib.analysis import every_c, load_runs


@pytest.fixture()
def runs(tmp_path):
    write_fake_results(tmp_path, "smoke", text=False)
    cond = load_runs(tmp_path, "smoke", "synthetic", conditioned=True)
    ded = every_c.dedicated_for(load_runs(tmp_path, "smoke", "synthetic"), cond)
    return cond, ded


def test_conditioned_runs_and_their_dedicated_runs_are_found(runs):
    cond, ded = runs
    assert len(cond) == 3 and set(cond["seed"]) == {0, 1, 2}
    assert set(ded["method"]) == {"cpt"} and len(ded) == 3 + 4  # c = 1 × 3 seeds, 4 raised c


def test_match_pairs_by_seed_and_counts_cells(runs):
    cond, ded = runs
    frame = every_c.match_frame(cond, ded)
    assert len(frame) == 5 * 4  # the grid's 5 c × 4 groups
    ones = frame[frame["c"] == (1.0,) * 4]
    assert (ones["n_paired"] == 3).all()
    assert (frame[frame["c"] != (1.0,) * 4]["n_paired"] == 1).all()
    row = ones.iloc[0]
    assert row["difference"] == pytest.approx(row["conditioned"] - row["dedicated"])
    summary = every_c.match_summary(frame)
    assert summary["cells"] == 20 and summary["n_c"] == 5
    assert summary["mad"] == pytest.approx(
        (frame["conditioned"] - frame["dedicated"]).abs().mean())
    assert "points" in every_c.match_text(frame).text
    assert list(every_c.match_table(frame).columns)[:2] == ["c", "group"]


def test_an_adapter_equal_to_its_dedicated_runs_matches_exactly(tmp_path):
    """Grid entries copied from the dedicated records: no gap at all, and 'within'."""
    for seed in (0, 1):
        ded, rel = fake_record("synthetic", "smoke", "cpt", 1.0, [1, 1, 1, 1], seed)
        records.write_record(ded, tmp_path / rel)
        cond, rel = fake_conditioned_record("synthetic", "smoke", seed)
        cond["metrics"]["grid"] = [{"c": [1.0] * 4, "val": ded["metrics"]["val"],
                                    "test": ded["metrics"]["test"]}]
        records.write_record(cond, tmp_path / rel)
    c = load_runs(tmp_path, "smoke", "synthetic", conditioned=True)
    d = every_c.dedicated_for(load_runs(tmp_path, "smoke", "synthetic"), c)
    s = every_c.match_summary(every_c.match_frame(c, d))
    assert s["mad"] == 0 and s["max"] == 0 and s["within"] and s["seeds"] == 2


def test_no_conditioned_runs_give_sentences_not_errors(tmp_path):
    write_fake_results(tmp_path, "smoke", text=False, conditioned=False)
    cond = load_runs(tmp_path, "smoke", "synthetic", conditioned=True)
    ded = every_c.dedicated_for(load_runs(tmp_path, "smoke", "synthetic"), cond)
    assert cond.empty and ded.empty
    assert every_c.match_frame(cond, ded).empty
    assert "No c" in every_c.match_text(every_c.match_frame(cond, ded)).text
    assert "No conditioned" in every_c.cost_text(every_c.cost_frame(cond, ded)).text
    assert every_c.dial_frame(cond).empty and every_c.choice_frame(cond, ded).empty


def test_cost_compares_one_adapter_with_the_runs_it_replaces(runs):
    cond, ded = runs
    frame = every_c.cost_frame(cond, ded).set_index("what")
    one, single = frame.loc["one conditioned run"], frame.loc["one dedicated CPT(c) run"]
    assert one["train_s"] == pytest.approx(every_c._field(cond, "train_time_s").mean())
    assert one["train_s"] == pytest.approx(17.0)  # the fake records: 16 s + seed
    assert single["train_s"] == pytest.approx(every_c._field(ded, "train_time_s").mean())
    many = frame.loc["5 dedicated runs (the grid's c)"]
    assert many["files"] == 5 and many["train_s"] == pytest.approx(5 * single["train_s"])
    text = every_c.cost_text(every_c.cost_frame(cond, ded)).text
    assert f"{one['train_s'] / single['train_s']:.2f}×" in text


def test_conditioned_param_count_formula():
    # P = 10 trained entries, K = 4 groups, H = 3: θ⁰ 10 + embedding 4·3 + 3 + output 3·10.
    assert every_c.conditioned_param_count(10, 4, 3) == 10 + 12 + 3 + 30


def test_choices_per_seed_and_the_dedicated_choice_is_the_best_on_validation(runs):
    cond, ded = runs
    frame = every_c.choice_frame(cond, ded)
    ways = frame["way"].unique().tolist()
    assert ways[0] == "one adapter, c = 1" and len(ways) == 4
    assert (frame.groupby("way").size() == 3).all()
    dedicated = frame[frame["way"].str.startswith("dedicated")]
    seed0 = ded[ded["seed"] == 0]
    assert dedicated[dedicated["seed"] == 0]["val_worst"].iloc[0] == pytest.approx(
        100 * seed0["val.worst_group_acc"].max())
    diffs = every_c.choice_differences(frame)
    assert len(diffs) == 3 and (diffs["n"] == 3).all()
    base = frame[frame["way"] == ways[0]].set_index("seed")["test_worst"]
    other = frame[frame["way"] == ways[1]].set_index("seed")["test_worst"]
    assert diffs.iloc[0]["mean"] == pytest.approx((other - base).mean())
    assert "minus the adapter at c = 1" in every_c.choice_text(frame).text
    table = every_c.choice_table(frame)
    assert table["seeds"].tolist() == [3, 3, 3, 3]


def test_dial_frame_has_every_path_from_c_equal_one(runs):
    cond, _ = runs
    frame = every_c.dial_frame(cond)
    assert frame["path"].nunique() == 4
    per_path = frame[frame["split"] == "test"].groupby("path")["strength"].agg(
        lambda s: sorted(set(s)))
    assert all(v == [1.0, 2.0, 4.0, 8.0] for v in per_path)
    assert frame["acc"].between(0, 1).all()
    # c = 1 is the same point on every path (the mean over the seeds of the same records).
    start = frame[(frame["strength"] == 1.0) & (frame["split"] == "test")]
    assert start.groupby("group")["acc"].nunique().max() == 1
    curves = every_c.paths_frame(cond)
    assert (curves["count"] == 3).all() and not math.isnan(curves["se"].iloc[0])


def test_front_has_both_kinds_of_points(runs):
    cond, ded = runs
    front = every_c.front_frame(cond, ded)
    assert set(front["who"]) == {"one adapter", "dedicated CPT(c)"}
    assert len(front[front["who"] == "one adapter"]) == 13
    assert front["worst"].le(front["avg"] + 100).all()


def test_figures_draw_the_adapter_and_the_dedicated_runs(runs):
    from cptlib.report import every_c as figures
    from cptlib.report.dial import SCRIPT_SRC

    cond, ded = runs
    fig = figures.paths_figure(every_c.paths_frame(cond), ded)
    assert len(fig.axes) == 4 and "dedicated" in fig.get_label()
    # Every panel: 4 group curves, and diamonds where a dedicated run has that c (1 and 4).
    lines = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) == 4]
    assert len(lines) == 4
    legend = fig.legends[0]  # one legend for the figure: the groups and the diamonds' meaning
    assert [t.get_text() for t in legend.get_texts()][-1] == "dedicated CPT(c) run"
    front = figures.front_figure(every_c.front_frame(cond, ded))
    labels = front.axes[0].get_legend_handles_labels()[1]
    assert labels == ["one adapter (13 c)", "dedicated CPT(c) (5 c)"]
    html = figures.dial_output(every_c.dial_frame(cond), "dial")
    assert "<script" in html.data and not SCRIPT_SRC.search(html.data)  # plotly.js inline
    empty = cond.iloc[0:0]
    assert "No conditioned runs" in figures.paths_figure(every_c.paths_frame(empty), ded).text
    assert "No conditioned runs" in figures.dial_output(every_c.dial_frame(empty), "d").text


def test_every_c_verdicts_state_the_targets(runs):
    from cptlib.analysis import verdicts

    cond, ded = runs
    found = verdicts.every_c_verdicts(cond, ded)
    claims = [v.claim for v in found]
    assert claims[0].startswith("One adapter's per-group test accuracy is within 2 points")
    assert "1.5×" in claims[1] and len(found) == 4
    cost = every_c.cost_frame(cond, ded)
    ratio = cost.iloc[0]["train_s"] / cost.iloc[1]["train_s"]
    assert found[1].verdict == ("holds" if ratio <= 1.5 else "does not hold")
    assert "|" not in "".join(v.evidence for v in found)  # they go into a Markdown table
    assert verdicts.every_c_verdicts(cond.iloc[0:0], ded) == []


def test_conditioned_runs_without_dedicated_runs_still_render(runs):
    """A user's first conditioned run, before any dedicated one: no errors, plain notes."""
    from cptlib.analysis import verdicts
    from cptlib.report import every_c as figures

    cond, ded = runs
    none = ded.iloc[0:0]
    assert every_c.match_frame(cond, none).empty
    choices = every_c.choice_frame(cond, none)
    assert not choices.empty and not choices["way"].str.startswith("dedicated").any()
    assert len(every_c.choice_differences(choices)) == 2
    assert every_c.cost_frame(cond, none).empty
    assert [v.claim[:25] for v in verdicts.every_c_verdicts(cond, none)] == [
        "Choosing c on validation "] * 2
    assert figures.paths_figure(every_c.paths_frame(cond), none).axes
    assert "0 dedicated CPT runs" in every_c.status_text(cond, none, "smoke", "synthetic").text


def test_the_noise_floor_is_the_half_normal_mean_of_the_cells_standard_errors(runs):
    cond, ded = runs
    frame = every_c.match_frame(cond, ded)
    s = every_c.match_summary(frame)
    ses = frame["difference_se"].dropna()
    assert s["noise_gap"] == pytest.approx((ses * math.sqrt(2 / math.pi)).mean())
    assert "identical expected accuracies" in every_c.match_text(frame).text
    one_seed = frame.assign(difference_se=math.nan)
    assert "cannot be told" in every_c.match_text(one_seed).text


def test_paper_sizes_leave_out_the_full_fine_tune():
    import pandas as pd

    counts = pd.DataFrame([{"model": "vit", "method": "vpt-deep", "trainable": 1000},
                           {"model": "resnet50", "method": "full-finetune", "trainable": 10**7}])
    table = every_c.paper_adapter_table(counts, n_groups=4, hidden=16)
    assert table["model"].tolist() == ["vit"]
    assert table.iloc[0]["conditioned, K = 4, H = 16 (kB)"] == f"{4 * (17_000 + 80) / 1e3:,.0f}"
