"""Choosing c on validation: the search's guarantees (never worse than c = 1, the budget, the
box training drew c from, determinism) on functions whose optimum is known."""

from __future__ import annotations

import math

import pytest

from cptlib.choose_c import budget_shape, objective_value, search_c


def staircase(target: list[float]):
    """Accuracies that are piecewise constant in c (as on a finite validation set), best when
    log c is nearest ``target`` up to the ray (c and 2c are the same model)."""
    calls: list[list[float]] = []

    def metrics(c: list[float]) -> dict:
        calls.append(list(c))
        x = [math.log(v) for v in c]
        t = [math.log(v) for v in target]
        mx, mt = sum(x) / len(x), sum(t) / len(t)
        dist = math.sqrt(sum((a - mx - b + mt) ** 2 for a, b in zip(x, t, strict=True)))
        wga = round(max(0.0, 0.9 - 0.2 * dist), 2)
        return {"worst_group_acc": wga, "avg_acc": round(0.95 - 0.1 * x[0] / 2.1, 2)}

    return metrics, calls


def test_worst_group_search_finds_a_c_near_the_optimum_within_its_budget():
    metrics, calls = staircase([4.0, 1.0, 1.0, 2.0])
    choice = search_c(metrics, 4, 8.0, objective="worst_group", evals=48, seed=0)
    assert len(calls) <= 48 and choice.evals == len({tuple(c) for c in calls})
    at_one = metrics([1.0] * 4)["worst_group_acc"]
    assert choice.val["worst_group_acc"] >= at_one + 0.1  # a real improvement on c = 1
    assert all(1.0 <= v <= 8.0 for v in choice.c)
    assert "worst_group" in repr(choice) and "evaluations" in repr(choice)


def test_search_never_does_worse_than_c_equal_one_and_is_deterministic():
    metrics, _ = staircase([1.0, 1.0, 1.0, 1.0])  # c = 1 is the optimum
    a = search_c(metrics, 4, 8.0, evals=32, seed=3)
    b = search_c(metrics, 4, 8.0, evals=32, seed=3)
    assert a.c == b.c and a.val == b.val
    assert a.val["worst_group_acc"] == metrics([1.0] * 4)["worst_group_acc"]


def test_constrained_search_keeps_tau_and_maximises_the_average():
    metrics, _ = staircase([2.0, 1.0, 1.0, 1.0])
    tau = metrics([1.0] * 4)["worst_group_acc"]
    choice = search_c(metrics, 4, 8.0, objective="avg_at_worst_group", tau=tau, evals=48)
    assert choice.val["worst_group_acc"] >= tau
    assert choice.val["avg_acc"] >= metrics([1.0] * 4)["avg_acc"]
    # An unreachable τ: nothing is feasible, and the search returns the c nearest to it.
    unreachable = search_c(metrics, 4, 8.0, objective="avg_at_worst_group", tau=2.0, evals=16)
    assert unreachable.val["worst_group_acc"] < 2.0


def test_objective_values_order_feasible_above_infeasible():
    feasible = objective_value("avg_at_worst_group", {"worst_group_acc": .7, "avg_acc": .0}, .7)
    near = objective_value("avg_at_worst_group", {"worst_group_acc": .69, "avg_acc": .99}, .7)
    far = objective_value("avg_at_worst_group", {"worst_group_acc": .1, "avg_acc": .99}, .7)
    assert feasible > near > far
    # The worst group decides; the average only breaks ties.
    assert objective_value("worst_group", {"worst_group_acc": .6, "avg_acc": 0}) > \
        objective_value("worst_group", {"worst_group_acc": .59, "avg_acc": 1})


@pytest.mark.parametrize("call, match", [
    (lambda: objective_value("best", {"worst_group_acc": 0, "avg_acc": 0}), "objective must"),
    (lambda: objective_value("avg_at_worst_group", {"worst_group_acc": 0, "avg_acc": 0}),
     "needs tau"),
    (lambda: budget_shape(15, 4), "at least 16"),
])
def test_bad_search_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_budget_counts_generations_after_the_first_population():
    assert budget_shape(16, 4) == 0 and budget_shape(48, 4) == 2 and budget_shape(63, 4) == 2
