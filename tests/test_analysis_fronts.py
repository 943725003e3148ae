"""Pareto fronts and 2-D hypervolumes: properties on seeded random point sets, pinned values
computed by hand, and the per-family, per-seed tables built from a runs frame."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cptlib import records
from cptlib.analysis import fronts

sys.path.insert(0, str(Path(__file__).parent))
from fake_records import write_fake_results  # noqa: E402

REF = (0.2, 0.3)
SEEDS = range(8)


def _points(seed: int, n: int = 12) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=(n, 2))


def _dominated_by_none(front: np.ndarray, points: np.ndarray) -> bool:
    for p in front:
        better = np.all(points >= p, axis=1) & np.any(points > p, axis=1)
        if better.any():
            return False
    return True


# ----------------------------------------------------------------------------- the front


def test_front_pinned() -> None:
    pts = [[0.5, 0.5], [0.9, 0.1], [0.4, 0.4], [0.1, 0.9], [0.5, 0.5], [0.5, 0.45]]
    np.testing.assert_array_equal(fronts.pareto_front(pts), [[0.1, 0.9], [0.5, 0.5], [0.9, 0.1]])
    # the first of two duplicates is the one kept
    assert fronts.pareto_mask(pts).tolist() == [True, True, False, True, False, False]


@pytest.mark.parametrize("seed", SEEDS)
def test_front_is_exactly_the_non_dominated_points(seed: int) -> None:
    pts = _points(seed)
    mask = fronts.pareto_mask(pts)
    assert _dominated_by_none(pts[mask], pts)
    for p in pts[~mask]:  # every point left out is dominated by one kept
        assert np.any(np.all(pts[mask] >= p, axis=1) & np.any(pts[mask] > p, axis=1))
    front = fronts.pareto_front(pts)
    assert np.all(np.diff(front[:, 0]) > 0) and np.all(np.diff(front[:, 1]) < 0)


def test_empty_and_bad_points() -> None:
    assert fronts.pareto_front([]).shape == (0, 2)
    assert fronts.hypervolume_2d([], REF) == 0.0
    with pytest.raises(ValueError, match="shape"):
        fronts.pareto_front([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="finite"):
        fronts.hypervolume_2d([[0.5, math.nan]], REF)
    with pytest.raises(ValueError, match="reference"):
        fronts.hypervolume_2d([[0.5, 0.5]], (0.0,))


# ----------------------------------------------------------------------------- hypervolume


def test_hypervolume_pinned() -> None:
    # Two points over (0, 0): 0.8·0.2 + 0.4·(0.6 − 0.2) = 0.32 (drawn by hand as two strips).
    assert fronts.hypervolume_2d([[0.8, 0.2], [0.4, 0.6]], (0, 0)) == pytest.approx(0.32)
    # A point tying the reference on one coordinate encloses nothing.
    assert fronts.hypervolume_2d([[0.2, 0.9], [0.9, 0.3]], REF) == 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_one_point_is_the_product_of_its_margins(seed: int) -> None:
    x, y = np.random.default_rng(seed).uniform(0.3, 1.0, 2)
    assert fronts.hypervolume_2d([[x, y]], REF) == pytest.approx((x - REF[0]) * (y - REF[1]))
    assert fronts.hypervolume_2d([[x, 0.1]], REF) == 0.0  # does not dominate the reference


@pytest.mark.parametrize("seed", SEEDS)
def test_order_invariance(seed: int) -> None:
    pts = _points(seed)
    perm = np.random.default_rng(seed + 100).permutation(len(pts))
    assert fronts.hypervolume_2d(pts[perm], REF) == pytest.approx(fronts.hypervolume_2d(pts, REF))


@pytest.mark.parametrize("seed", SEEDS)
def test_dominated_point_changes_nothing(seed: int) -> None:
    pts = _points(seed)
    base = fronts.hypervolume_2d(pts, REF)
    rng = np.random.default_rng(seed + 200)
    anchor = pts[rng.integers(len(pts))]
    worse = anchor - rng.uniform(0.0, 0.1, 2)  # dominated by an existing point
    assert fronts.hypervolume_2d(np.vstack([pts, worse]), REF) == pytest.approx(base)


@pytest.mark.parametrize("seed", SEEDS)
def test_non_dominated_point_strictly_increases(seed: int) -> None:
    pts = _points(seed)
    base = fronts.hypervolume_2d(pts, REF)
    front = fronts.pareto_front(pts[(pts[:, 0] > REF[0]) & (pts[:, 1] > REF[1])])
    better = front[len(front) // 2] + np.random.default_rng(seed).uniform(0.001, 0.05, 2)
    assert fronts.hypervolume_2d(np.vstack([pts, better]), REF) > base + 1e-9


@pytest.mark.parametrize("seed", SEEDS)
def test_monotone_in_the_reference(seed: int) -> None:
    """A lower (more permissive) reference point never gives a smaller hypervolume."""
    pts = _points(seed)
    refs = [(0.3, 0.3), (0.2, 0.3), (0.2, 0.1), (0.0, 0.0)]
    volumes = [fronts.hypervolume_2d(pts, r) for r in refs]
    assert all(a <= b + 1e-12 for a, b in zip(volumes, volumes[1:], strict=False))


def test_scale_behaviour() -> None:
    """Scaling both coordinates and the reference by s scales the area by s²."""
    pts = _points(3)
    s = 2.5
    scaled = fronts.hypervolume_2d(pts * s, (REF[0] * s, REF[1] * s))
    assert scaled == pytest.approx(s * s * fronts.hypervolume_2d(pts, REF))


# ----------------------------------------------------------------------------- per family


def _runs() -> pd.DataFrame:
    rows = []
    for seed in (0, 1):
        shift = 0.01 * seed
        for c, (w, a) in {"1,1": (0.6, 0.8), "4,1": (0.7, 0.7), "8,1": (0.75, 0.55)}.items():
            rows.append({"method": "cpt", "c_str": c, "alpha": 1.0, "seed": seed,
                         "test.worst_group_acc": w + shift, "test.avg_acc": a})
        for alpha, (w, a) in {0.0: (0.3, 0.9), 1.0: (0.6, 0.75)}.items():
            rows.append({"method": "erm", "c_str": "none", "alpha": alpha, "seed": seed,
                         "test.worst_group_acc": w, "test.avg_acc": a + shift})
    return pd.DataFrame(rows)


def test_family_hypervolumes_pinned() -> None:
    runs = _runs()
    per_seed = fronts.family_hypervolumes(runs, "method", {"cpt": "c_str", "erm": "alpha"},
                                          reference=(0.0, 0.0))
    got = per_seed.set_index(["family", "seed"])["hypervolume"]
    # CPT seed 0: 0.75·0.55 + 0.7·0.15 + 0.6·0.1 = 0.5775; seed 1 adds 0.01 to every x:
    # 0.76·0.55 + 0.71·0.15 + 0.61·0.1 = 0.5855.  ERM seed 0: 0.6·0.75 + 0.3·0.15 = 0.495.
    assert got[("cpt", 0)] == pytest.approx(0.5775)
    assert got[("cpt", 1)] == pytest.approx(0.5855)
    assert got[("erm", 0)] == pytest.approx(0.495)
    assert per_seed.set_index(["family", "seed"]).loc[("cpt", 0), "n_front"] == 3
    summary = fronts.summarise_over_seeds(per_seed, "hypervolume").set_index("family")
    assert summary.loc["cpt", "hypervolume"] == pytest.approx((0.5775 + 0.5855) / 2)
    assert summary.loc["cpt", "hypervolume_se"] == pytest.approx(0.004)  # |a − b| / 2
    assert summary.loc["cpt", "n"] == 2


def test_family_as_callable_leaves_runs_out() -> None:
    runs = _runs()
    label = lambda r: "balanced ERM" if r["method"] == "erm" and r["alpha"] > 0 else None  # noqa: E731
    per_seed = fronts.family_hypervolumes(runs, label, "alpha", reference=(0.0, 0.0))
    assert per_seed["family"].unique().tolist() == ["balanced ERM"]
    assert per_seed["hypervolume"].tolist() == pytest.approx([0.45, 0.6 * 0.76])


def test_family_checks_its_input() -> None:
    runs = _runs()
    with pytest.raises(ValueError, match="more than one run with knob"):
        fronts.family_hypervolumes(runs, "method", "c_str", reference=(0, 0))  # ERM: c none ×2
    with pytest.raises(ValueError, match="no column 'eta'"):
        fronts.family_hypervolumes(runs, "method", "eta", reference=(0, 0))
    bad = runs.assign(**{"test.avg_acc": runs["test.avg_acc"].where(runs.index != 0)})
    with pytest.raises(ValueError, match="NaN"):
        fronts.family_hypervolumes(bad, "method", {"cpt": "c_str", "erm": "alpha"}, (0, 0))


def test_best_subject_to() -> None:
    runs = _runs()
    knob = {"cpt": "c_str", "erm": "alpha"}
    best = fronts.best_subject_to(runs, "method", knob, min_y=0.7).set_index(["family", "seed"])
    assert best.loc[("cpt", 0), "best"] == pytest.approx(0.7)
    assert best.loc[("cpt", 0), "knob"] == "4,1"
    assert best.loc[("erm", 1), "best"] == pytest.approx(0.6)
    none = fronts.best_subject_to(runs, "method", knob, min_y=0.95)
    assert none["best"].isna().all()
    assert none["reason"].str.contains(r"no run has test.avg_acc >= 0.95").all()
    summary = fronts.summarise_over_seeds(none, "best")
    assert (summary["n_defined"] == 0).all() and summary["best"].isna().all()


def test_best_is_monotone_in_the_level() -> None:
    """Asking for a higher average can only lower (or keep) the best worst group."""
    runs = _runs()
    knob = {"cpt": "c_str", "erm": "alpha"}
    levels = [0.5, 0.6, 0.7, 0.8]
    bests = [fronts.best_subject_to(runs, "method", knob, m)["best"].fillna(-1).to_numpy()
             for m in levels]
    assert all(np.all(a >= b) for a, b in zip(bests, bests[1:], strict=False))


def test_on_records_of_the_real_layout(tmp_path: Path) -> None:
    """The columns ``load_records`` gives are the ones the defaults name."""
    write_fake_results(tmp_path, text=False, conditioned=False)  # raw records, no filter
    runs = records.load_records(tmp_path, "smoke", "synthetic")
    family = {"cpt": "CPT", "scalarized": "Scalarized", "groupdro": "GroupDRO"}.get
    per_seed = fronts.family_hypervolumes(runs, lambda r: family(r["method"]),
                                          {"CPT": "c_str", "Scalarized": "c_str",
                                           "GroupDRO": "eta"}, reference=(0.0, 0.0))
    assert sorted(per_seed["family"].unique()) == ["CPT", "GroupDRO", "Scalarized"]
    assert per_seed.set_index(["family", "seed"]).loc[("CPT", 0), "n_points"] == 5
    assert (per_seed["hypervolume"] > 0).all()
    paired_sweep = fronts.family_hypervolumes(runs, lambda r: family(r["method"]), "c_str",
                                              reference=(0.0, 0.0), common_knobs=True)
    assert (paired_sweep["n_points"] == 1).all()  # the fake c sweep has one seed only


def test_common_knobs_compares_equal_sweeps() -> None:
    """A knob value only one seed has makes that seed's front larger; common_knobs drops it."""
    runs = _runs()
    extra = pd.DataFrame([{"method": "cpt", "c_str": "2,1", "alpha": 1.0, "seed": 0,
                           "test.worst_group_acc": 0.65, "test.avg_acc": 0.78}])
    runs = pd.concat([runs, extra])  # repeats index label 0 on purpose
    knob = {"cpt": "c_str", "erm": "alpha"}
    loose = fronts.family_hypervolumes(runs, "method", knob, (0.0, 0.0)).set_index(
        ["family", "seed"])
    strict = fronts.family_hypervolumes(runs, "method", knob, (0.0, 0.0),
                                        common_knobs=True).set_index(["family", "seed"])
    assert loose.loc[("cpt", 0), "n_points"] == 4 and strict.loc[("cpt", 0), "n_points"] == 3
    assert loose.loc[("cpt", 0), "hypervolume"] > strict.loc[("cpt", 0), "hypervolume"]
    assert strict.loc[("cpt", 0), "hypervolume"] == pytest.approx(0.5775)
    assert strict.loc[("erm", 1), "hypervolume"] == loose.loc[("erm", 1), "hypervolume"]


def test_list_knobs_are_hashed() -> None:
    """``c`` is a list column in ``load_records``: it works as a knob like ``c_str``."""
    runs = _runs()
    runs["c"] = runs["c_str"].map(lambda s: [float(v) for v in s.split(",")] if s != "none"
                                  else None)
    cpt = runs[runs["method"] == "cpt"]
    by_list = fronts.family_hypervolumes(cpt, "method", "c", (0, 0), common_knobs=True)
    by_str = fronts.family_hypervolumes(cpt, "method", "c_str", (0, 0))
    assert by_list["hypervolume"].tolist() == pytest.approx(by_str["hypervolume"].tolist())
