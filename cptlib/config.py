"""The training configuration and the checks of its values, without importing torch.

``TrainConfig`` is what the training loop needs besides a model and data. It lives here, apart
from ``cptlib.train``, so that the ``cpt`` command can validate a run's parameters in a fraction
of a second, before a kernel starts or torch is imported. The names of balancers and
per-group-gradient ways are repeated here for the same reason; a test checks they match
``cptlib.balancers.REGISTRY`` and ``cptlib.grads.WAYS``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

METHODS = ("erm", "groupdro", "scalarized", "mgda", "cpt")
GRAD_WAYS = ("auto", "expand", "split", "naive")
SELECTION_METRICS = ("worst_group_acc", "auroc", "avg_acc", "mean_acc")
SCHEDULES = ("cosine", "constant")
#: Precisions of the forward pass (``cptlib.models.precision``); losses and balancers stay fp32.
PRECISIONS = ("fp32", "bf16")
#: What a run's spec may ask for: a precision, or "auto", resolved on the machine that builds
#: the spec (``resolve_precision``) before the run id is computed.
SPEC_PRECISIONS = (*PRECISIONS, "auto")
#: Methods whose balancer takes a control vector c.
C_METHODS = ("cpt", "scalarized")


def resolve_precision(value: str, native_bf16: bool) -> str:
    """``"auto"`` → bf16 where the CPU computes it natively, else fp32; others unchanged.

    Resolved before a run's id is computed, so a bf16 run and an fp32 run are two runs with
    two records: the numbers a record holds never depend on an unrecorded machine property.
    """
    check_choice("precision", value, SPEC_PRECISIONS)
    if value != "auto":
        return value
    return "bf16" if native_bf16 else "fp32"


# ----------------------------------------------------------------------------- value checks


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """An integer parameter (a bool or a float is refused: ``steps=2.5`` is a typo)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {_show(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_number(name: str, value: Any, minimum: float | None = None,
                 positive: bool = False) -> float:
    """A finite real parameter; ``nan``, ``inf`` and strings are named, not coerced."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {_show(value)}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value}")
    return float(value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {_show(value)}")
    return value


def check_c(value: Any, n_groups: int | None = None, name: str = "c") -> list[float]:
    """A control vector: a non-empty list of finite positive numbers, one per group.

    A string is never split into digits (``c="1141"`` is an error, not ``[1, 1, 4, 1]``).
    """
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{name} must be a non-empty list of positive numbers such as "
                         f"[1, 1, 4, 1], got {_show(value)}")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{name}[{i}] must be a number, got {_show(v)}")
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name}[{i}] must be a finite number > 0, got {v}")
        out.append(float(v))
    if n_groups is not None and len(out) != n_groups:
        raise ValueError(f"{name} has {len(out)} entries but the dataset has {n_groups} groups")
    return out


# ----------------------------------------------------------------------------- the config


# Members per group of the differential-evolution population that chooses c
# (``cptlib.choose_c``); a conditioned run's c_search_evals must cover one population.
SEARCH_POPULATION = 4
_INT_MIN = {"batch_size": 1, "steps": 1, "eval_every": 1, "eval_batch_size": 1,
            "warmup_steps": 0, "diag_every": 0, "seed": 0, "c_hidden": 1, "c_search_evals": 1}
_POSITIVE = ("lr", "eps", "clip_norm")
_NON_NEGATIVE = ("alpha", "weight_decay", "momentum", "epochs", "warmup_epochs", "eta",
                 "gdro_adjustment")


@dataclass
class TrainConfig:
    """Everything that determines a training run besides the model and the data.

    These defaults serve library users who call ``cptlib.train.train`` directly; a run of the
    study takes its values from the experiment registry and the profile (``cptlib.runs``).
    """

    method: str = "erm"
    c: list[float] | None = None
    alpha: float = 0.0
    lr: float = 0.1
    batch_size: int = 64
    weight_decay: float = 1e-3
    momentum: float = 0.9
    clip_norm: float = 1.0
    steps: int = 100
    epochs: float = 0.0  # > 0: steps = ceil(epochs · N / batch_size) (see ``resolve_epochs``)
    warmup_epochs: float = 0.0
    warmup_steps: int = 0
    schedule: str = "cosine"  # "cosine" (per optimiser step, after warm-up) or "constant"
    eval_every: int = 50
    grad_way: str = "auto"  # per-group gradients: "auto", "expand", "split", "naive" (cptlib.grads)
    eta: float = 0.01  # GroupDRO step size
    gdro_adjustment: float = 0.0  # GroupDRO generalisation adjustment C
    eps: float = 1e-4  # CPT's balance threshold on μ
    selection: str = "worst_group_acc"
    diag_every: int = 10  # per-group gradient diagnostics for balancers that do not need them
    eval_batch_size: int = 256
    # The forward pass's precision: "bf16" autocasts it (cptlib.models.precision); measured
    # faster on CPUs with bf16 instructions, and the efficiency chapter says by how much.
    precision: str = "fp32"
    seed: int = 0
    # One adapter for every c (``cptlib.models.conditioned``): prompts and head are θ(c); each
    # step draws c with log c_k uniform on [0, log c_max]; selection averages the validation
    # metric over ``c_grid`` (None: c = 1 and each group's c_k = 4 in turn).
    conditioned: bool = False
    c_max: float = 8.0
    c_hidden: int = 16
    c_grid: list[list[float]] | None = None
    c_search_evals: int = 48  # validation passes per objective when choosing c after training

    def validate(self, n_groups: int | None = None) -> None:
        """Fail before any work, naming the bad parameter (types as well as ranges)."""
        for name, minimum in _INT_MIN.items():
            check_int(name, getattr(self, name), minimum)
        for name in _POSITIVE:
            check_number(name, getattr(self, name), positive=True)
        for name in _NON_NEGATIVE:
            check_number(name, getattr(self, name), minimum=0)
        check_choice("method", self.method, METHODS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("grad_way", self.grad_way, GRAD_WAYS)
        check_choice("selection", self.selection, SELECTION_METRICS)
        check_choice("precision", self.precision, PRECISIONS)
        if self.warmup_steps >= self.steps and self.warmup_steps > 0:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be < steps ({self.steps})")
        if self.c is not None:
            self.c = check_c(self.c, n_groups)
        self._validate_conditioning(n_groups)

    def _validate_conditioning(self, n_groups: int | None) -> None:
        if not isinstance(self.conditioned, bool):
            raise ValueError(f"conditioned must be true or false, got {_show(self.conditioned)}")
        if check_number("c_max", self.c_max, positive=True) <= 1:
            raise ValueError(f"c_max must be > 1 (the largest ratio c_j / c_k drawn), "
                             f"got {self.c_max}")
        if self.conditioned and self.method not in C_METHODS:
            raise ValueError(f"conditioned runs need a method that takes c ({', '.join(C_METHODS)})"
                             f", got {self.method}")
        if self.conditioned and n_groups is not None \
                and self.c_search_evals < SEARCH_POPULATION * n_groups:
            raise ValueError(f"c_search_evals must be at least {SEARCH_POPULATION * n_groups} "
                             f"(one search population: {SEARCH_POPULATION} per group), "
                             f"got {self.c_search_evals}")
        if self.c_grid is None:
            return
        if not self.conditioned:
            raise ValueError("c_grid is the validation grid of conditioned runs; set "
                             "conditioned=true or drop c_grid")
        if not isinstance(self.c_grid, (list, tuple)) or not self.c_grid:
            raise ValueError(f"c_grid must be a non-empty list of control vectors, "
                             f"got {_show(self.c_grid)}")
        self.c_grid = [check_c(c, n_groups, name=f"c_grid[{i}]") for i, c in enumerate(self.c_grid)]

    def resolve_epochs(self, n_train: int) -> None:
        """Turn epoch counts (the authors' unit) into optimiser steps for a training set size."""
        if self.epochs and self.epochs > 0:
            per_epoch = math.ceil(n_train / self.batch_size)
            self.steps = math.ceil(self.epochs * per_epoch)
            self.warmup_steps = math.ceil(self.warmup_epochs * per_epoch)
            self.eval_every = min(self.eval_every, self.steps)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]
