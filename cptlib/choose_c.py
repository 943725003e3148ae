"""Choosing c on validation with a conditioned adapter: a derivative-free search over log c.

Validation accuracies are piecewise constant in c, so a gradient method sees zeros; SciPy's
differential evolution needs only function values, is seeded, and takes a fixed budget. The
search box is the one training drew c from (log c_k in [0, log c_max]), so the adapter is never
asked about a c it has not seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import differential_evolution

from cptlib.config import SEARCH_POPULATION as POPULATION

# What the search maximises, given validation metrics at a c (and τ for the constrained one).
OBJECTIVES = ("worst_group", "avg_at_worst_group")


@dataclass
class Choice:
    """The c a search chose, the validation metrics that chose it, and what it cost."""

    objective: str
    c: list[float]
    val: dict[str, Any]
    evals: int
    tau: float | None = None
    trace: list[tuple[list[float], float]] = field(default_factory=list, repr=False)

    def __repr__(self) -> str:
        c = "[" + ", ".join(f"{v:.2f}" for v in self.c) + "]"
        tau = f", tau={self.tau:.3f}" if self.tau is not None else ""
        return (f"Choice({self.objective}{tau}: c={c}, val worst group "
                f"{self.val['worst_group_acc']:.3f}, avg {self.val['avg_acc']:.3f}, "
                f"{self.evals} evaluations)")


def objective_value(objective: str, val: dict[str, Any], tau: float | None = None) -> float:
    """The value to maximise. ``avg_at_worst_group``: the average accuracy where the worst group
    reaches τ; elsewhere below every feasible value, and the closer to τ the better, so that the
    search is drawn towards the feasible set. Worst group ties are broken by the average."""
    wga, avg = float(val["worst_group_acc"]), float(val["avg_acc"])
    if objective == "worst_group":
        return wga + 1e-3 * avg
    if objective == "avg_at_worst_group":
        if tau is None:
            raise ValueError("avg_at_worst_group needs tau, the worst-group accuracy to keep")
        return avg if wga >= tau else -1.0 - (tau - wga)
    raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")


def budget_shape(evals: int, n_groups: int) -> int:
    """DE generations after the initial population that fit in ``evals`` evaluations."""
    size = POPULATION * n_groups
    if evals < size:
        raise ValueError(f"c_search_evals must be at least {size} (one population of "
                         f"{POPULATION} × {n_groups} groups), got {evals}")
    return evals // size - 1


def search_c(val_metrics: Callable[[list[float]], dict[str, Any]], n_groups: int,
             c_max: float, *, objective: str = "worst_group", tau: float | None = None,
             evals: int = 48, seed: int = 0) -> Choice:
    """Maximise ``objective`` of ``val_metrics(c)`` over log c in [0, log c_max]^K.

    c = 1 is a member of the initial population, so the chosen c is never worse on validation
    than c = 1. ``val_metrics`` is called at most ``evals`` times (callers may cache it)."""
    objective_value(objective, {"worst_group_acc": 0.0, "avg_acc": 0.0}, tau)  # checks
    generations = budget_shape(evals, n_groups)
    trace: list[tuple[list[float], float]] = []
    seen: dict[tuple[float, ...], dict[str, Any]] = {}

    def loss(x: np.ndarray) -> float:
        c = [round(math.exp(v), 6) for v in x]
        key = tuple(c)
        if key not in seen:
            seen[key] = val_metrics(c)
        value = objective_value(objective, seen[key], tau)
        trace.append((c, value))
        return -value

    size = POPULATION * n_groups
    rng = np.random.default_rng(seed)
    init = rng.uniform(0.0, math.log(c_max), size=(size, n_groups))
    init[0] = 0.0  # c = 1
    differential_evolution(loss, [(0.0, math.log(c_max))] * n_groups, init=init,
                           maxiter=generations, polish=False, tol=0.0, seed=seed,
                           updating="deferred")
    best_c, _ = max(trace, key=lambda t: t[1])  # first of the best: DE's own ties differ
    return Choice(objective=objective, c=best_c, val=seen[tuple(best_c)], evals=len(seen),
                  tau=tau, trace=trace)
