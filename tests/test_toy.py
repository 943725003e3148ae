"""The analytic toy problem: its front, and CPT reaching c_1 L_1 = … = c_K L_K on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cptlib import toy
from cptlib.balancers import CPT, ERM, MGDA, Scalarized

STEPS, LR = 150, 0.5


def theta0(seed: int, dim: int = 20, near: int = 0, k: int = 2) -> torch.Tensor:
    """A start near objective ``near``'s minimum, i.e. far from balance for most c."""
    gen = torch.Generator().manual_seed(seed)
    noise = 0.1 * torch.randn(dim, generator=gen, dtype=torch.float64)
    return 0.8 * toy.centres(dim, k)[near] + noise


def distance_to_front(point: np.ndarray, front: np.ndarray) -> float:
    return float(np.min(np.linalg.norm(front - point, axis=1)))


@pytest.mark.parametrize("k", [2, 3])
def test_pareto_front_is_not_dominated(k: int):
    front = toy.pareto_front(40, k=k, dim=4)
    assert front.shape[1] == k
    assert np.all((front >= 0) & (front <= 1))
    gen = torch.Generator().manual_seed(0)
    samples = torch.stack([toy.losses(th, k) for th in torch.randn(3000, 4, generator=gen,
                                                                   dtype=torch.float64)])
    dominated = (samples[:, None, :] < torch.as_tensor(front)[None] - 1e-9).all(dim=2)
    assert not bool(dominated.any())


def test_pareto_front_endpoints_are_the_single_objective_minima():
    front = toy.pareto_front(5)
    assert front.shape == (5, 2)
    np.testing.assert_allclose(front[0], [1 - np.exp(-4.0), 0.0], atol=1e-12)
    np.testing.assert_allclose(front[-1], [0.0, 1 - np.exp(-4.0)], atol=1e-12)


@pytest.mark.parametrize("c", [[1.0, 1.0], [1.0, 3.0], [4.0, 1.0], [1.0, 1.0, 1.0],
                               [1.0, 3.0, 2.0]])
def test_cpt_balances_c_weighted_losses_and_scalarisation_does_not(c):
    k = len(c)
    start = theta0(0, near=int(np.argmin(c)), k=k)  # low loss where c asks for a high one
    cpt = toy.run(CPT(c), start, STEPS, LR, k=k)
    scal = toy.run(Scalarized(c), start, STEPS, LR, k=k)
    end = cpt.iloc[-1]
    assert cpt["mu"].iloc[0] > 0.05
    assert end["mu"] < 1e-3
    cl = np.array(c) * end[[f"L_{i + 1}" for i in range(k)]].to_numpy(dtype=float)
    assert cl.max() / cl.min() < 1.05  # c_1 L_1 ≈ … ≈ c_K L_K
    assert distance_to_front(end[[f"L_{i + 1}" for i in range(k)]].to_numpy(dtype=float),
                             toy.pareto_front(200 if k == 2 else 60, k=k)) < 0.02
    assert scal["mu"].iloc[-50:].min() > 0.1
    assert set(cpt["mode"]) <= {"balance", "descent"} and set(scal["mode"]) == {"-"}


def test_cpt_end_point_moves_with_c():
    """A larger c_1 asks for a lower L_1: CPT's end points follow c along the front."""
    ends = [toy.run(CPT([c1, 1.0]), theta0(1), STEPS, LR).iloc[-1]["L_1"] for c1 in (0.5, 1, 2)]
    assert ends[0] > ends[1] > ends[2]


def test_run_is_deterministic_and_has_one_row_per_step():
    a = toy.run(CPT([1.0, 2.0]), theta0(2), 20, LR)
    b = toy.run(CPT([1.0, 2.0]), theta0(2), 20, LR)
    assert list(a.columns) == ["step", "L_1", "L_2", "beta_1", "beta_2", "mu", "mode"]
    assert a["step"].tolist() == list(range(20))
    assert a.equals(b)
    np.testing.assert_allclose(a[["beta_1", "beta_2"]].sum(axis=1), 1.0)


@pytest.mark.parametrize("balancer", [ERM(), MGDA()])
def test_run_accepts_balancers_without_c(balancer):
    df = toy.run(balancer, theta0(3), 10, LR)
    assert len(df) == 10 and np.isfinite(df["mu"]).all()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="K = 2 or 3"):
        toy.losses(torch.zeros(3), k=4)
    with pytest.raises(ValueError, match="length 3"):
        toy.run(Scalarized([1.0, 1.0, 1.0]), theta0(0), 5, LR, k=2)
