"""Precision of control: μ and the angle to CPT's ray, checked for their invariances on seeded
random losses, pinned on a 2-group example worked by hand, compared with the balancer's own μ,
and read from records at the last and the selected evaluation."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cptlib import records
from cptlib.analysis import control
from cptlib.balancers import non_uniformity as balancer_mu

sys.path.insert(0, str(Path(__file__).parent))
from fake_records import write_fake_results  # noqa: E402

SEEDS = range(8)


def _case(seed: int, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, 3.0, k), rng.uniform(0.5, 8.0, k)


# ----------------------------------------------------------------------------- pure maths


def test_pinned_two_groups() -> None:
    # c = (1, 1), L = (1, 3): l̂ = (1/4, 3/4), μ = ¼ log ½ + ¾ log 3/2; angle atan 3 − 45°.
    assert control.non_uniformity([1, 3], [1, 1]) == pytest.approx(
        0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    assert control.ray_angle([1, 3], [1, 1]) == pytest.approx(math.degrees(math.atan(3)) - 45)
    # c = (2, 1), L = (1, 1): l̂ = (2/3, 1/3); the ray is (½, 1), at atan 2 from the x axis.
    assert control.non_uniformity([1, 1], [2, 1]) == pytest.approx(
        2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3))
    assert control.ray_angle([1, 1], [2, 1]) == pytest.approx(math.degrees(math.atan(2)) - 45)
    assert control.ray_angle([1, 0], [1, 1]) == pytest.approx(45.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_zero_on_the_ray(seed: int) -> None:
    _, c = _case(seed)
    s = np.random.default_rng(seed).uniform(0.01, 10)
    on_ray = s / c
    assert control.non_uniformity(on_ray, c) == pytest.approx(0.0, abs=1e-12)
    assert control.ray_angle(on_ray, c) == pytest.approx(0.0, abs=1e-9)
    assert control.non_uniformity([0, 0, 0, 0], c) == 0.0 == control.ray_angle([0] * 4, c)


@pytest.mark.parametrize("seed", SEEDS)
def test_positive_off_the_ray_and_bounded(seed: int) -> None:
    L, c = _case(seed)
    mu, angle = control.non_uniformity(L, c), control.ray_angle(L, c)
    assert 0 < mu <= math.log(len(L))  # KL to uniform is at most log K
    assert 0 < angle <= 90  # both vectors are non-negative


@pytest.mark.parametrize("seed", SEEDS)
def test_scale_invariance(seed: int) -> None:
    L, c = _case(seed)
    s = np.random.default_rng(seed + 1).uniform(0.01, 100)
    assert control.non_uniformity(s * L, c) == pytest.approx(control.non_uniformity(L, c))
    assert control.ray_angle(s * L, c) == pytest.approx(control.ray_angle(L, c))
    assert control.ray_angle(L, s * c) == pytest.approx(control.ray_angle(L, c))
    assert control.non_uniformity(L, s * c) == pytest.approx(control.non_uniformity(L, c))


@pytest.mark.parametrize("seed", SEEDS)
def test_permutation_equivariance(seed: int) -> None:
    L, c = _case(seed)
    perm = np.random.default_rng(seed + 2).permutation(len(L))
    assert control.non_uniformity(L[perm], c[perm]) == pytest.approx(control.non_uniformity(L, c))
    assert control.ray_angle(L[perm], c[perm]) == pytest.approx(control.ray_angle(L, c))


def test_moving_towards_the_ray_lowers_both() -> None:
    c = np.array([4.0, 1.0, 1.0])
    ray, off = 1 / c, np.array([1.0, 1.0, 1.0])
    mus = [control.non_uniformity(t * ray + (1 - t) * off, c) for t in np.linspace(0, 1, 6)]
    angles = [control.ray_angle(t * ray + (1 - t) * off, c) for t in np.linspace(0, 1, 6)]
    assert np.all(np.diff(mus) < 0) and np.all(np.diff(angles) < 0)


@pytest.mark.parametrize("seed", SEEDS)
def test_mu_is_the_balancers(seed: int) -> None:
    L, c = _case(seed)
    if seed % 2:
        L[seed % 4] = 0.0  # below the floor: both must clip the same way
    mu, _ = balancer_mu(L, c / c.sum())
    assert control.non_uniformity(L, c) == pytest.approx(mu, rel=1e-12, abs=1e-15)


def test_absent_groups_are_left_out() -> None:
    assert control.non_uniformity([1, None, 3], [1, 5, 1]) == pytest.approx(
        control.non_uniformity([1, 3], [1, 1]))
    assert control.ray_angle([1, math.nan, 3], [1, 5, 1]) == pytest.approx(
        control.ray_angle([1, 3], [1, 1]))
    assert math.isnan(control.non_uniformity([None, None], [1, 1]))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="same length"):
        control.non_uniformity([1, 2, 3], [1, 1])
    with pytest.raises(ValueError, match="strictly positive"):
        control.ray_angle([1, 2], [1, 0])
    with pytest.raises(ValueError, match="non-negative"):
        control.ray_angle([1, -2], [1, 1])


# ----------------------------------------------------------------------------- from records


def _record(run: str, c: list[float] | None, losses: list[list[float]], selected: int) -> dict:
    history = [{"step": 10 * (i + 1), "val": {"per_group_loss": L},
                "test": {"per_group_loss": L[::-1]}, "train": {"mu": 0.1}}
               for i, L in enumerate(losses)]
    return {"experiment": "synthetic", "profile": "unit", "run_id": run,
            "params": {"method": "cpt", "c": c, "seed": 0},
            "metrics": {"selected_step": selected}, "history": history}


def test_last_and_selected(tmp_path: Path) -> None:
    rec = _record("a", [1, 1], [[1, 3], [2, 2.2], [1, 1]], selected=20)
    last = control.control_at(rec, "last")
    assert last == {"step": 30, "mu": 0.0, "angle": 0.0}
    sel = control.control_at(rec, "selected")
    assert sel["step"] == 20
    assert sel["angle"] == pytest.approx(control.ray_angle([2, 2.2], [1, 1]))
    hist = control.history_control(rec, split="test")
    assert hist["selected"].tolist() == [False, True, False]
    assert hist["mu"].iloc[0] == pytest.approx(control.non_uniformity([3, 1], [1, 1]))
    with pytest.raises(ValueError, match="no per_group_loss for split 'train'"):
        control.history_control(rec, split="train")
    with pytest.raises(ValueError, match="no control vector"):
        control.control_at(_record("b", None, [[1, 2]], 10))
    assert control.control_at(_record("b", None, [[1, 2]], 10), c=[2, 1])["mu"] == 0.0


def test_tables_from_a_runs_frame(tmp_path: Path) -> None:
    rows = []
    for seed, c in ((0, [1, 1]), (1, [1, 1]), (0, [4, 1])):
        rec = _record(f"r{seed}{c[0]}", c, [[1, 3], [1.0, 1.0 * c[0] / 1]], selected=10)
        path = records.write_record(rec, tmp_path / f"{rec['run_id']}.json")
        rows.append({"run_id": rec["run_id"], "method": "cpt", "c_str": records.vector_str(c),
                     "seed": seed, "path": str(path)})
    runs = pd.DataFrame(rows)
    long = control.control_over_training(runs)
    assert len(long) == 6 and set(long.columns) >= {"run_id", "c_str", "seed", "step", "mu"}
    table = control.control_table(runs).set_index("run_id")
    assert table.loc["r01", "mu_selected"] == pytest.approx(control.non_uniformity([1, 3], [1, 1]))
    assert table.loc["r01", "mu_last"] == 0.0
    assert table.loc["r04", "angle_last"] == pytest.approx(0.0, abs=1e-9)  # (1, 4) ∝ 1/c
    summary = records.aggregate(table.reset_index(), ["method", "c_str"], ["angle_last"])
    assert summary.set_index("c_str").loc["1,1", "n"] == 2
    assert control.control_over_training(runs.iloc[:0]).empty


def test_on_records_of_the_real_layout(tmp_path: Path) -> None:
    write_fake_results(tmp_path, text=False, conditioned=False)  # raw records: no c-less CPT
    runs = records.load_records(tmp_path, "smoke", "synthetic")
    runs = runs[runs["method"].isin(["cpt", "scalarized"])]
    table = control.control_table(runs, split="val")
    assert len(table) == len(runs) and (table["angle_last"] > 0).all()
    long = control.control_over_training(runs)
    assert len(long) == 4 * len(runs)  # four evaluations per fake run
    assert long.groupby("run_id")["selected"].sum().eq(1).all()


def test_a_cpt_run_without_c_is_measured_against_c_1_as_it_was_trained():
    """`cpt run synthetic -p method=cpt` leaves c unset; training aims at c = 1 then."""
    rec = {**_record("b", None, [[1, 2]], 10), "group_names": ["g0", "g1"]}
    assert control.control_at(rec) == control.control_at(rec, c=[1, 1])
    erm = {**rec, "params": {**rec["params"], "method": "erm"}}
    with pytest.raises(ValueError, match="no control vector"):
        control.control_at(erm)
