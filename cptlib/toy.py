"""The analytic multi-objective toy problem of the first chapter.

The standard problem of Lin et al. (2019) and Mahapatra & Rajan (2020): for x ∈ R^n,
f_i(x) = 1 − exp(−‖x − a_i‖²) with a_1 = 1/√n, a_2 = −1/√n (and, for K = 3, a_3 with
alternating signs ±1/√n). Each f_i is an increasing function of the distance to its own centre,
so the Pareto set is the convex hull of the centres and the front is known in closed form: the
place to watch a balancer move (or not move) along the front when the control vector c changes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from cptlib.balancers import Balancer, get, non_uniformity, validate_c

__all__ = ["centres", "losses", "pareto_front", "run"]


def centres(dim: int, k: int = 2) -> Tensor:
    """The K objectives' minimisers a_i in R^dim (float64, shape (K, dim))."""
    if k not in (2, 3):
        raise ValueError(f"the toy problem has K = 2 or 3 objectives, got {k}")
    if dim < 2:
        raise ValueError(f"dim must be at least 2, got {dim}")
    ones = torch.ones(dim, dtype=torch.float64)
    alternating = torch.where(torch.arange(dim) % 2 == 0, 1.0, -1.0).to(torch.float64)
    return torch.stack([ones, -ones, alternating][:k]) / dim**0.5


def losses(theta: Tensor, k: int = 2) -> Tensor:
    """The K objectives f_i(θ) = 1 − exp(−‖θ − a_i‖²), differentiable in θ (shape (K,))."""
    if theta.ndim != 1:
        raise ValueError(f"theta must be a 1-D vector, got shape {tuple(theta.shape)}")
    a = centres(theta.shape[0], k).to(theta.dtype)
    return 1.0 - torch.exp(-((theta - a) ** 2).sum(dim=1))


def pareto_front(n_points: int, k: int = 2, dim: int = 2) -> np.ndarray:
    """Points of the analytic Pareto front in loss space.

    K = 2: ``n_points`` points with x evenly spaced on the segment between the two minima.
    K = 3: a triangular grid of the centres' convex hull with ``n_points`` points per edge
    (n_points·(n_points+1)/2 rows). The front does not depend on ``dim`` for K = 2.
    """
    if n_points < 2:
        raise ValueError(f"n_points must be at least 2, got {n_points}")
    t = np.linspace(0.0, 1.0, n_points)
    if k == 2:
        bary = np.stack([t, 1.0 - t], axis=1)
    else:
        bary = np.array([(u, v, 1.0 - u - v) for u in t for v in t if u + v <= 1.0 + 1e-12])
        bary = np.clip(bary, 0.0, None)
    x = torch.as_tensor(bary) @ centres(dim, k)
    return torch.stack([losses(row, k) for row in x]).numpy()


def run(
    balancer: Balancer,
    theta0: Tensor | np.ndarray | list[float],
    steps: int,
    lr: float,
    k: int = 2,
    c: list[float] | np.ndarray | None = None,
) -> pd.DataFrame:
    """Plain gradient descent θ ← θ − lr Σ_k β_k ∇f_k with β from ``balancer``.

    One row per step (before that step's update): ``step``, ``L_1..L_K``, ``beta_1..beta_K``,
    ``mu`` (non-uniformity of the c-weighted losses; c defaults to the balancer's own ``c``, else
    uniform) and ``mode`` (the balancer's ``info["mode"]``, "-" when it has none).
    """
    theta = torch.as_tensor(theta0, dtype=torch.float64).clone()
    c_arr = validate_c(c if c is not None else getattr(balancer, "c", np.ones(k)))
    if c_arr.shape[0] != k:
        raise ValueError(f"c has length {c_arr.shape[0]} but the toy problem has {k} objectives")
    r = c_arr / c_arr.sum()
    rows = []
    for step in range(steps):
        jac = torch.autograd.functional.jacobian(lambda th: losses(th, k), theta)
        values = losses(theta, k)
        # Elementwise products, not ``@``: for these tiny shapes a multi-threaded BLAS call can
        # stall for milliseconds when the CPU is shared, which made runs 5x slower here.
        gramian = (jac[:, None] * jac[None]).sum(-1) if balancer.needs_gramian else None
        beta = balancer.weights(values, gramian)
        mu, _ = non_uniformity(values.numpy(), r)
        rows.append({"step": step, **{f"L_{i + 1}": float(v) for i, v in enumerate(values)},
                     **{f"beta_{i + 1}": float(b) for i, b in enumerate(beta)},
                     "mu": mu, "mode": balancer.info.get("mode", "-")})
        theta = theta - lr * (beta[:, None] * jac).sum(0)
    return pd.DataFrame(rows)


def start_point(seed: int = 0, dim: int = 2) -> Tensor:
    """A seeded starting point off the Pareto front, shared by every (method, c) of a sweep so
    their trajectories can be compared."""
    gen = torch.Generator().manual_seed(seed)
    return 0.4 * torch.randn(dim, generator=gen, dtype=torch.float64) + torch.tensor(
        [0.9] + [-0.6] * (dim - 1), dtype=torch.float64
    )


def sweep(
    cs: list[list[float]], methods: list[str], steps: int, lr: float, seed: int = 0
) -> pd.DataFrame:
    """``run`` for every method × c from one start point, stacked with ``method``, ``c``,
    ``c_str`` columns (the toy chapter's data)."""
    frames = []
    for method in methods:
        for c in cs:
            k = len(c)
            balancer = get(method, c=c) if method in ("cpt", "scalarized") else get(method)
            df = run(balancer, start_point(seed), steps, lr, k=k, c=c)
            df.insert(0, "method", method)
            df.insert(1, "c_str", ",".join(f"{v:g}" for v in c))
            df.insert(2, "c", [list(map(float, c))] * len(df))
            frames.append(df)
    return pd.concat(frames, ignore_index=True)
