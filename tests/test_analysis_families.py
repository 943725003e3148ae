"""Every method as a family swept over its knob: fronts, hypervolumes, the update (fake records)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from fake_records import GRAD_NORMS, fake_runs

from cptlib.analysis import families, labels
from cptlib.analysis.frames import read_run
from cptlib.analysis.fronts import hypervolume_2d
from cptlib.analysis.text import Note


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return fake_runs(tmp_path_factory.mktemp("results"), fronts=True)


def test_groupdro_step_sizes_are_told_apart_in_labels():
    assert labels.run_label("groupdro", 1.0, eta=0.01) == "GroupDRO"  # the default is unnamed
    assert labels.run_label("groupdro", 1.0, eta=0.1) == "GroupDRO (η=0.1)"
    assert labels.run_label("groupdro", 2.0, eta=0.001) == "GroupDRO (α=2, η=0.001)"
    assert labels.run_label("erm", 0.0, eta=0.1) == "ERM"  # η means nothing to ERM


def test_every_family_is_swept_over_its_own_knob(runs):
    fr = families.front_runs(runs)
    knobs = fr.groupby("front")["knob"].unique().map(sorted).to_dict()
    assert knobs["ERM"] == ["α=0", "α=0.5", "α=1", "α=2"]
    assert knobs["GroupDRO"] == ["η=0.001", "η=0.01", "η=0.1"]
    assert len(knobs["CPT"]) == len(knobs["Scalarized"]) == 5  # c = 1 and four raised c
    assert knobs["MGDA"] == ["—"]
    # one run per (family, knob, seed): the fronts are paired by seed
    assert not fr.duplicated(["front", "knob", "seed"]).any()


def test_a_run_at_other_settings_does_not_join_the_front(runs):
    other = runs.iloc[[0]].assign(lr=0.5, run_id="other")
    fr = families.front_runs(pd.concat([runs, other], ignore_index=True))
    assert "other" not in set(fr["run_id"])


def test_hypervolume_per_seed_is_the_area_of_that_seeds_points(runs):
    per_seed = families.hypervolumes(runs)
    fr = families.front_runs(runs)
    row = per_seed[(per_seed["family"] == "CPT") & (per_seed["seed"] == 1)].iloc[0]
    pts = fr[(fr["front"] == "CPT") & (fr["seed"] == 1)][["test.worst_group_acc",
                                                           "test.avg_acc"]].to_numpy()
    assert row["hypervolume"] == pytest.approx(1e4 * hypervolume_2d(pts, families.REFERENCE))
    assert row["n_points"] == 5
    # a family of one point per seed has the rectangle of that point
    mg = fr[(fr["front"] == "MGDA") & (fr["seed"] == 0)].iloc[0]
    got = per_seed[(per_seed["family"] == "MGDA") & (per_seed["seed"] == 0)]["hypervolume"]
    assert got.iloc[0] == pytest.approx(1e4 * (mg["test.worst_group_acc"] - 0.5)
                                        * (mg["test.avg_acc"] - 0.5))


def test_cpt_is_paired_by_seed_against_every_family(runs):
    pairs = families.hypervolume_pairs(runs)
    assert pairs["baseline"].tolist() == ["ERM", "GroupDRO", "Scalarized", "MGDA"]
    assert (pairs["n"] == 3).all()
    per_seed = families.hypervolumes(runs).set_index(["family", "seed"])["hypervolume"]
    diff = [per_seed["CPT", s] - per_seed["ERM", s] for s in (0, 1, 2)]
    assert pairs.iloc[0]["mean"] == pytest.approx(sum(diff) / 3)
    text = families.fronts_text(runs).text
    assert "reference point 50 % worst group, 50 % average" in text
    assert "against ERM" in text


def test_hypervolume_table_states_knob_and_seeds(runs):
    table = families.hypervolume_table(runs)
    assert table["family"].tolist() == list(families.FRONT_FAMILIES)
    assert table.set_index("family").loc["ERM", "knob values"] == 4
    assert (table["seeds"] == 3).all()
    assert isinstance(families.hypervolume_table(runs.iloc[:0]), Note)


def test_best_at_a_level_is_the_best_worst_group_among_runs_that_reach_it(runs):
    table = families.best_at_levels(runs, levels=(0.0, 0.999)).set_index("family")
    fr = families.front_runs(runs)
    cpt = fr[fr["front"] == "CPT"]
    best = cpt.groupby("seed")["test.worst_group_acc"].max()
    assert table.loc["CPT", "average ≥ 0 %"].startswith(f"{100 * best.mean():.1f} ±")
    assert table.loc["CPT", "average ≥ 99.9 %"] == "none of 3 seeds"


def test_front_points_mark_the_front_of_the_means(runs):
    pts = families.front_points(runs)
    assert set(pts["front"]) == set(families.FRONT_FAMILIES)
    erm = pts[pts["front"] == "ERM"]
    assert erm["knob"].tolist() == ["α=0", "α=0.5", "α=1", "α=2"]
    for _, p in erm[~erm["on_front"]].iterrows():  # a point off the front is dominated
        assert ((erm["wga"] >= p["wga"]) & (erm["avg"] >= p["avg"])
                & ((erm["wga"] > p["wga"]) | (erm["avg"] > p["avg"]))).any()


def test_update_diagnostics_come_from_the_training_windows(runs):
    table = families.update_table(runs, ["ERM (group-balanced)", "MGDA"])
    row = table.set_index("method").loc["MGDA"]
    assert row["norm, last window"] == pytest.approx(GRAD_NORMS["mgda"])
    assert row["steps clipped (%)"] == 0
    assert table.set_index("method").loc["ERM (group-balanced)", "steps clipped (%)"] == 100
    assert sum(row[f"β: {g}"] for g in ("landbird/land", "landbird/water", "waterbird/land",
                                        "waterbird/water")) == pytest.approx(1.0)
    text = families.update_text(runs).text
    ratio = GRAD_NORMS["erm"] / GRAD_NORMS["mgda"]
    assert f"{ratio:.1f}× less far" in text
    # the fakes put all of MGDA's weight on the best-fit group
    assert "largest training loss gets β = 0.000" in text and "smallest β = 1.000" in text
    assert "CPT(c=1) took" in text and "eps = 0.0001" in text
    cpt = families.update_frame(runs[runs["label"] == "CPT(c=1)"])
    last = cpt[cpt["step"] == cpt["step"].max()]
    assert f"{last['batch_mu'].mean():.3g} in the last" in text


def test_update_frame_mu_of_mean_losses_is_the_balancers_measure(runs):
    from cptlib.analysis.control import non_uniformity

    frame = families.update_frame(runs[runs["label"] == "CPT(c=1)"].iloc[:1])
    record = read_run(runs[runs["label"] == "CPT(c=1)"].iloc[0]["path"])
    losses = record["history"][0]["train"]["per_group_loss"]
    assert frame.iloc[0]["mean_loss_mu"] == pytest.approx(non_uniformity(losses, [1] * 4))
    assert not math.isnan(frame.iloc[0]["batch_mu"])


def test_loss_points_pair_each_group_with_the_mean_of_the_others(runs):
    pts = families.loss_points(runs)
    fr = families.front_runs(runs)
    cpt = fr[(fr["front"] == "CPT") & (fr["knob"] == "c=1")]
    row = pts[(pts["front"] == "CPT") & (pts["knob"] == "c=1") & (pts["group_index"] == 2)]
    assert row["loss"].iloc[0] == pytest.approx(cpt["test.per_group_loss.2"].mean())
    others = cpt[[f"test.per_group_loss.{k}" for k in (0, 1, 3)]].mean().mean()
    assert row["others"].iloc[0] == pytest.approx(others)


def test_a_users_extra_run_does_not_shrink_the_paired_grid(runs):
    """A new c at one seed, or a new seed at one c, leaves the hypervolumes as they were."""
    before = families.hypervolumes(runs)
    cpt = runs[runs["label"] == "CPT(c=1)"]
    new_c = cpt[cpt["seed"] == 0].assign(c=[[1, 1, 16, 1]], c_label="1,1,16,1", run_id="new-c")
    new_seed = cpt[cpt["seed"] == 0].assign(seed=7, run_id="new-seed")
    more = pd.concat([runs, new_c, new_seed], ignore_index=True)
    pd.testing.assert_frame_equal(families.hypervolumes(more), before)
    grid = families.paired_grid(more)
    assert not {"new-c", "new-seed"} & set(grid["run_id"])
    pts = families.front_points(more)  # the figure shows the new c
    assert "c=1,1,16,1" in set(pts["knob"])


def test_front_table_lists_the_figures_points(runs):
    table = families.front_table(runs)
    pts = families.front_points(runs)
    assert len(table) == len(pts)
    row = table[(table["family"] == "ERM") & (table["knob"] == "α=0")].iloc[0]
    p = pts[(pts["front"] == "ERM") & (pts["knob"] == "α=0")].iloc[0]
    assert row["worst-group (%)"] == f"{p['wga']:.1f} ± {p['wga_se']:.1f}"
    assert set(table["on the front"]) == {"yes", ""}


def test_fronts_verdicts_judge_the_paired_hypervolumes_and_the_rays(runs):
    from cptlib.analysis import verdicts

    found = verdicts.fronts_verdicts(runs)
    pairs = families.hypervolume_pairs(runs)
    assert len(found) == len(pairs) + 1
    first = found[0]
    assert "ERM's (swept over α)" in first.claim and first.chapter == "fronts"
    assert f"{pairs.iloc[0]['mean']:+.0f} points²" in first.evidence
    ray = found[-1]
    assert "nearer its ray" in ray.claim
    # The verdict is the sign of the paired angle's 95 % interval (claimed: CPT − Scalarized < 0)
    from scipy import stats

    from cptlib.analysis.controllability import control_pairs

    angle = control_pairs(runs[runs["method"].isin(("cpt", "scalarized"))], "train",
                          "last")["angle"].dropna()
    half = stats.t.ppf(0.975, len(angle) - 1) * angle.std(ddof=1) / len(angle) ** 0.5
    low, high = angle.mean() - half, angle.mean() + half
    expected = ("holds" if high < 0 else "does not hold" if low > 0
                else f"cannot be told at {len(angle)} paired runs")
    assert ray.verdict == expected, (ray.verdict, low, high)
    assert f"{angle.mean():+.1f}°" in ray.evidence and f"{len(angle)} paired" in ray.evidence
    # the fronts verdicts join the landing page
    every = verdicts.all_verdicts(lambda e: runs if e == "synthetic" else runs.iloc[:0])
    assert {v.claim for v in found} <= {v.claim for v in every}
    # and so do the text task's, named as the text task's and linked to its chapter
    every = verdicts.all_verdicts(lambda e: runs if e == "text" else runs.iloc[:0])
    text = [v for v in every if v.claim.startswith("Text task: ")]
    assert {v.claim.removeprefix("Text task: ") for v in text} >= {v.claim for v in found}
    assert {v.chapter for v in text} == {"text"}
