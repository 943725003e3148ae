"""Balancers: turn per-group losses (and, where needed, their Gramian) into weights β.

Every balancer returns β on the simplex of the groups *present* in the batch (``counts > 0``),
with β_k = 0 for absent groups, so that back-propagating Σ_k β_k L_k (β detached) is the update.

- ``CPT(c)``: the exact-Pareto-optimal (EPO) linear programme of Mahapatra & Rajan (2020) as used
  by Controllable Prompt Tuning; see ``method.md`` ("One CPT step") for the maths implemented here.
- ``ERM()``: batch-mean loss; ``GroupDRO()``: Sagawa et al. (2020) online q update;
  ``Scalarized(c)``: fixed weights c / Σc; ``MGDA()``: min-norm point (Sener & Koltun 2018).

The pure functions (``non_uniformity``, ``epo_lp``, ``min_norm_weights``) hold the maths; the
classes only select the present groups, convert tensors and record ``info``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import highspy
import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from cptlib import _io

logger = logging.getLogger(__name__)

__all__ = [
    "Balancer",
    "CPT",
    "ERM",
    "GroupDRO",
    "MGDA",
    "Scalarized",
    "LPSolution",
    "epo_lp",
    "get",
    "min_norm_weights",
    "non_uniformity",
    "validate_c",
    "REGISTRY",
]

# Floor for the normalised c-weighted losses inside log(K l̂) (see ``non_uniformity``): a present
# group whose loss is exactly 0 (a float32 cross-entropy is 0 once every margin exceeds ~17)
# would otherwise give log 0 = -inf, an adjustment vector a with -inf and an LP that fails.
_LHAT_FLOOR = 1e-12


# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------


def validate_c(c: Sequence[float] | np.ndarray | Tensor) -> np.ndarray:
    """Return the control vector c as a float64 array, or raise ValueError saying what is wrong.

    c must be 1-D, finite and strictly positive (a zero c_k would ask for an infinite loss).
    """
    if isinstance(c, Tensor):
        c = c.detach().cpu().numpy()
    try:
        arr = np.asarray(c, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"c must be a 1-D sequence of positive numbers, got {c!r}") from err
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"c must be a non-empty 1-D vector, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"c must be finite (no NaN or inf), got {arr.tolist()}")
    if np.any(arr <= 0):
        raise ValueError(f"c must be strictly positive, got {arr.tolist()}")
    return arr


def non_uniformity(losses: np.ndarray, r: np.ndarray) -> tuple[float, np.ndarray]:
    """Non-uniformity μ of the r-weighted losses and the EPO adjustment vector a.

    l̂ = r⊙L / Σ r⊙L, μ = Σ l̂ log(K l̂) = KL(l̂ ‖ uniform), a = r ⊙ (log(K l̂) − μ), so that
    ∇μ = Gᵀa / (rᵀL). ``r`` is the normalised control (Σ r = 1). All losses zero counts as
    perfectly balanced (μ = 0, a = 0).

    The floor: inside the logarithm l̂_k is replaced by max(l̂_k, 1e-12). Where every l̂_k is at
    least 1e-12 nothing changes. A group below it (r_k L_k < 1e-12 Σ r L, e.g. a loss that is
    exactly 0) gets the finite a_k = r_k (log(K·1e-12) − μ) instead of one that tends to −∞ as
    l̂_k → 0 (or is −∞ at 0), so a, Ca and the LP built from them are no longer the exact
    gradient of μ's: the LP is that of the paper with a_k clipped from below. μ itself moves by
    at most 1e-12/e per such group (x·log(1e-12/x) ≤ 1e-12/e), far below ε, so the mode is the
    paper's. Below the floor β is the same (to 1e-12) however small that group's loss is.
    """
    k = losses.shape[0]
    rl = r * losses
    total = rl.sum()
    with np.errstate(invalid="ignore"):  # non-finite losses give NaN, which the LP reports
        l_hat = rl / total if total > 0 else np.full(k, 1.0 / k)
        log_kl = np.log(np.maximum(l_hat, _LHAT_FLOOR) * k)
        mu = float(l_hat @ log_kl)
    return mu, r * (log_kl - mu)


class LPSolution(NamedTuple):
    """Result of one EPO linear programme: β (None when the solver failed), mode and status."""

    beta: np.ndarray | None
    mode: str
    ok: bool
    message: str


def epo_lp(C: np.ndarray, a: np.ndarray, rl: np.ndarray, mu: float, eps: float) -> LPSolution:
    """Solve the EPO linear programme of one CPT step (method.md, step 3) with HiGHS.

    Balance mode (μ > eps): max βᵀCa s.t. Cβ ≥ b on the simplex, b as in method.md (free for
    J = {(Ca)_k > 0}, (Ca)_k elsewhere, 0 for the worst r-weighted groups J*; 0 everywhere when J
    is empty). Descent mode (μ ≤ eps): max 1ᵀCβ s.t. Cβ ≥ 0 and βᵀCa ≥ min(max_k (Ca)_k, 0).
    Balance mode is always feasible (the min-norm point of the gradients satisfies every row), so
    only descent mode can legitimately report "infeasible". ``_simplex_lp`` rescales the rows
    and the objective before HiGHS sees them (see there): group gradients whose norms differ by
    10^6 otherwise make HiGHS report this LP infeasible or stop short of its optimum.
    """
    k = C.shape[0]
    mode = "balance" if mu > eps else "descent"
    if not (np.all(np.isfinite(C)) and np.all(np.isfinite(a)) and math.isfinite(mu)):
        return LPSolution(None, mode, False, "non-finite losses or Gramian")
    scale = float(np.max(np.diag(C)))
    if scale <= 0.0:
        # Every gradient is zero: every β gives d = 0, so the LP carries no information.
        return LPSolution(None, mode, True, "zero Gramian: all weightings give d = 0")
    Cn = C / scale  # keeps Ca and the row sums far from overflow; the LP is invariant to it
    Ca = Cn @ a
    if mode == "balance":
        lower = np.zeros(k)
        free = Ca > 0
        if free.any():
            lower = Ca.copy()
            lower[free] = -np.inf
            lower[rl == rl.max()] = 0.0
        rows = np.isfinite(lower)
        beta, ok, message = _simplex_lp(Ca, Cn[rows], lower[rows])
    else:
        rows_a = np.vstack([Cn, Ca[None, :]])
        lower = np.append(np.zeros(k), min(float(Ca.max()), 0.0))
        beta, ok, message = _simplex_lp(Cn.sum(axis=0), rows_a, lower)
    return LPSolution(beta, mode, ok, message)


# One HiGHS instance per thread, reused by every call (a fresh model is passed each time, so
# no basis or other state carries over from one step to the next: β is a function of the step).
_HIGHS = threading.local()

# HiGHS's default feasibility tolerances are 1e-7; on the rescaled rows (largest coefficient 1)
# 1e-9 keeps every constraint within 1e-9 of the largest term of its row.
_LP_OPTIONS: dict[str, Any] = {
    "output_flag": False, "presolve": "off", "threads": 1,
    "primal_feasibility_tolerance": 1e-9, "dual_feasibility_tolerance": 1e-9,
    "simplex_scale_strategy": 2,
}
# Tried in turn when HiGHS does not return "Optimal" (seen: "Unknown" once in ~2000 random LPs
# with gradient norms spread over 10^12; a wrongly "Infeasible" balance-mode LP was the failure
# these replace).
_LP_RETRIES: tuple[dict[str, Any], ...] = ({"simplex_scale_strategy": 0}, {"presolve": "on"})
# Largest miss of a rescaled row accepted from an "Optimal" answer (100 × the tolerance above).
_LP_CHECK = 1e-7


def _highs() -> highspy.Highs:
    """This thread's HiGHS solver, created on first use with the banner it prints kept quiet."""
    solver = getattr(_HIGHS, "solver", None)
    if solver is None:
        with _io.silenced_fd(1):
            solver = highspy.Highs()
        for name, value in _LP_OPTIONS.items():
            solver.setOptionValue(name, value)
        _HIGHS.solver = solver
    return solver


def _simplex_lp(
    objective: np.ndarray, A: np.ndarray, lower: np.ndarray
) -> tuple[np.ndarray | None, bool, str]:
    """max objectiveᵀβ s.t. Aβ ≥ lower, β ≥ 0, Σβ = 1, by HiGHS's dual simplex.

    Each row of A (and its bound) is divided by its largest absolute coefficient and the
    objective by its own: positive scalings that change neither the feasible set nor the
    optimum, but put every coefficient in [-1, 1], so that HiGHS's absolute tolerances mean
    the same for a group whose gradient is 10^6 times smaller than another's. A status other
    than "Optimal", or a β that misses a scaled row by more than ``_LP_CHECK``, is retried from
    scratch with the settings of ``_LP_RETRIES``. Returns (β or None, solved, HiGHS's status).
    """
    m, k = A.shape
    row_scale = np.abs(A).max(axis=1)
    row_scale[row_scale == 0.0] = 1.0  # a zero row (zero gradient) stays 0 ≥ bound
    rows = A / row_scale[:, None]
    bounds = lower / row_scale
    obj_scale = float(np.abs(objective).max()) or 1.0
    h = _highs()
    status = h.passModel(
        k, m + 1, (m + 1) * k, int(highspy.MatrixFormat.kRowwise),
        int(highspy.ObjSense.kMaximize), 0.0, objective / obj_scale, np.zeros(k),
        np.full(k, highspy.kHighsInf), np.append(bounds, 1.0),
        np.append(np.full(m, highspy.kHighsInf), 1.0),
        np.arange(0, (m + 1) * k, k, dtype=np.int32), np.tile(np.arange(k, dtype=np.int32), m + 1),
        np.vstack([rows, np.ones((1, k))]).ravel(), np.zeros(k, dtype=np.int32),
    )
    if status == highspy.HighsStatus.kError:
        return None, False, "HiGHS refused the model"
    messages = []
    try:
        for attempt, settings in enumerate(({}, *_LP_RETRIES)):
            for name, value in settings.items():
                h.setOptionValue(name, value)
            if attempt:
                h.clearSolver()  # start again from scratch, not from the failed basis
            h.run()
            model_status = h.getModelStatus()
            messages.append(h.modelStatusToString(model_status))
            if model_status != highspy.HighsModelStatus.kOptimal:
                continue
            beta = np.clip(np.asarray(h.getSolution().col_value), 0.0, None)
            beta /= beta.sum()
            miss = float(np.max(bounds - rows @ beta, initial=0.0))
            if miss <= _LP_CHECK:
                return beta, True, " -> ".join(messages)
            messages[-1] += f" (but a constraint is missed by {miss:.1e})"
    finally:
        for name in {name for settings in _LP_RETRIES for name in settings}:
            h.setOptionValue(name, _LP_OPTIONS[name])
    return None, False, " -> ".join(messages)


def min_norm_weights(C: np.ndarray) -> tuple[np.ndarray, bool, str]:
    """β = argmin over the simplex of βᵀCβ (the min-norm point of the gradients' convex hull).

    Closed form for K = 2; SLSQP with the exact gradient otherwise (a convex QP, so the local
    optimum it converges to is global). Returns (β, solver_ok, message).
    """
    k = C.shape[0]
    if k == 1:
        return np.ones(1), True, "single group"
    if not np.all(np.isfinite(C)):
        return np.full(k, 1.0 / k), False, "non-finite Gramian"
    scale = float(np.max(np.diag(C)))
    if scale <= 0.0:
        return np.full(k, 1.0 / k), True, "zero Gramian: all weightings give d = 0"
    Cn = C / scale
    if k == 2:
        denom = Cn[0, 0] + Cn[1, 1] - 2.0 * Cn[0, 1]
        t = 0.5 if denom <= 0 else float(np.clip((Cn[1, 1] - Cn[0, 1]) / denom, 0.0, 1.0))
        return np.array([t, 1.0 - t]), True, "closed form"
    res = minimize(
        lambda b: b @ Cn @ b, np.full(k, 1.0 / k), jac=lambda b: 2.0 * Cn @ b, method="SLSQP",
        bounds=[(0.0, 1.0)] * k,
        constraints=({"type": "eq", "fun": lambda b: b.sum() - 1.0, "jac": lambda b: np.ones(k)},),
        options={"ftol": 1e-14, "maxiter": 500},
    )
    beta = np.clip(res.x, 0.0, None)
    return beta / beta.sum(), bool(res.success), str(res.message)


# ---------------------------------------------------------------------------------------------
# Helpers shared by the classes
# ---------------------------------------------------------------------------------------------


def _present(counts: Tensor | None, k: int) -> np.ndarray:
    """Boolean mask of the groups present in the batch (all when counts is None)."""
    if counts is None:
        return np.ones(k, dtype=bool)
    if tuple(counts.shape) != (k,):
        raise ValueError(f"counts must have shape ({k},) like losses, got {tuple(counts.shape)}")
    mask = counts.detach().cpu().numpy() > 0
    if not mask.any():
        raise ValueError("no group is present in the batch (all counts are 0)")
    return mask


def _as_numpy(x: Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).numpy()


def _check_losses(losses: Tensor) -> int:
    if not isinstance(losses, Tensor) or losses.ndim != 1 or losses.shape[0] == 0:
        raise ValueError("losses must be a non-empty 1-D tensor of per-group losses")
    return int(losses.shape[0])


def _check_gramian(gramian: Tensor | None, k: int, who: str) -> np.ndarray:
    if gramian is None:
        raise ValueError(f"{who} needs the Gramian of the per-group gradients (gramian=None)")
    if tuple(gramian.shape) != (k, k):
        raise ValueError(f"gramian must have shape ({k}, {k}), got {tuple(gramian.shape)}")
    return _as_numpy(gramian)


def _check_c_length(c: np.ndarray, k: int) -> None:
    if c.shape[0] != k:
        raise ValueError(f"c has length {c.shape[0]} but there are {k} groups")


def _scatter(values: np.ndarray, mask: np.ndarray, like: Tensor) -> Tensor:
    """Full (K,) weight tensor: ``values`` at the present groups, exactly 0 elsewhere."""
    full = np.zeros(mask.shape[0])
    full[mask] = values
    return torch.as_tensor(full, dtype=like.dtype, device=like.device)


def _fmt(c: np.ndarray) -> str:
    return "[" + ", ".join(repr(float(v)) for v in c) + "]"


# ---------------------------------------------------------------------------------------------
# Balancers
# ---------------------------------------------------------------------------------------------


class Balancer:
    """Base class: ``weights(losses, gramian=None, counts=None) -> Tensor (K,)`` plus ``info``."""

    name: str = "balancer"
    needs_gramian: bool = False

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}

    def weights(
        self, losses: Tensor, gramian: Tensor | None = None, counts: Tensor | None = None
    ) -> Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """State carried between steps (empty for stateless balancers), for checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ERM(Balancer):
    """Empirical risk: β_k = n_k / Σn, so Σ β_k L_k is the mean loss over the batch's samples."""

    name = "erm"

    def weights(
        self, losses: Tensor, gramian: Tensor | None = None, counts: Tensor | None = None
    ) -> Tensor:
        k = _check_losses(losses)
        mask = _present(counts, k)
        n = np.ones(k) if counts is None else _as_numpy(counts)
        self.info = {"n_present": int(mask.sum())}
        return _scatter(n[mask] / n[mask].sum(), mask, losses)


class Scalarized(Balancer):
    """Linear scalarisation with the control vector: β = c / Σc renormalised over present groups.

    The natural ablation of CPT's controllability claim: "just weight the groups by c".
    """

    name = "scalarized"

    def __init__(self, c: Sequence[float] | np.ndarray | Tensor) -> None:
        super().__init__()
        self.c = validate_c(c)

    def weights(
        self, losses: Tensor, gramian: Tensor | None = None, counts: Tensor | None = None
    ) -> Tensor:
        k = _check_losses(losses)
        _check_c_length(self.c, k)
        mask = _present(counts, k)
        self.info = {"n_present": int(mask.sum())}
        return _scatter(self.c[mask] / self.c[mask].sum(), mask, losses)

    def __repr__(self) -> str:
        return f"Scalarized(c={_fmt(self.c)})"


class GroupDRO(Balancer):
    """Online GroupDRO (Sagawa et al. 2020): q ← q ⊙ exp(η (L + C/√n_g)), normalised; β = q.

    q is state carried across steps. The returned β is q renormalised over the present groups
    (absent groups get β = 0), so Σ β_k L_k is Sagawa's qᵀL up to that normalisation.
    ``adjustment`` is the generalisation adjustment C (a scalar or one value per group); it
    needs ``group_counts``, the training-set group sizes. As in Sagawa et al.'s code
    (``LossComputer.compute_robust_loss``), an absent group's loss counts as 0 in the q update,
    so its q still grows by exp(η C_k/√n_k) each step, and the adjustment is applied only when
    every C_k > 0: one zero C_k switches it off for all groups (a warning says so).
    """

    name = "groupdro"

    def __init__(
        self,
        eta: float = 0.01,
        adjustment: float | Sequence[float] = 0.0,
        group_counts: Sequence[float] | np.ndarray | Tensor | None = None,
    ) -> None:
        super().__init__()
        if not (math.isfinite(eta) and eta > 0):
            raise ValueError(f"eta must be a positive finite step size, got {eta}")
        adj = np.atleast_1d(np.asarray(adjustment, dtype=np.float64))
        if adj.ndim != 1 or not np.all(np.isfinite(adj)) or np.any(adj < 0):
            raise ValueError(f"adjustment must be finite and non-negative, got {adjustment!r}")
        if np.any(adj > 0) and group_counts is None:
            raise ValueError("a non-zero adjustment C/sqrt(n_g) needs group_counts (n_g)")
        if np.any(adj > 0) and np.any(adj == 0):
            logger.warning("GroupDRO: adjustment %s has a zero entry, which switches the "
                           "adjustment off for every group (as in Sagawa et al.'s code)",
                           adj.tolist())
        self.eta = float(eta)
        self.adjustment = adj
        self.group_counts = None if group_counts is None else validate_c(group_counts)
        self.q: np.ndarray | None = None

    def _adjust(self, k: int) -> np.ndarray:
        if self.group_counts is None:
            return np.zeros(k)
        _check_c_length(self.group_counts, k)
        if self.adjustment.shape[0] not in (1, k):
            raise ValueError(f"adjustment has {self.adjustment.shape[0]} values for {k} groups")
        if not np.all(self.adjustment > 0):
            return np.zeros(k)
        return self.adjustment / np.sqrt(self.group_counts)

    def weights(
        self, losses: Tensor, gramian: Tensor | None = None, counts: Tensor | None = None
    ) -> Tensor:
        k = _check_losses(losses)
        mask = _present(counts, k)
        if self.q is None:
            self.q = np.full(k, 1.0 / k)
        elif self.q.shape[0] != k:
            raise ValueError(f"GroupDRO was used with {self.q.shape[0]} groups, now {k}")
        step = self.eta * (np.where(mask, _as_numpy(losses), 0.0) + self._adjust(k))
        q = self.q * np.exp(step)
        self.q = q / q.sum()
        self.info = {"n_present": int(mask.sum()), "q": self.q.tolist()}
        return _scatter(self.q[mask] / self.q[mask].sum(), mask, losses)

    def state_dict(self) -> dict[str, Any]:
        return {"q": None if self.q is None else self.q.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q = None if state.get("q") is None else np.asarray(state["q"], dtype=np.float64)

    def __repr__(self) -> str:
        adj = float(self.adjustment[0]) if self.adjustment.size == 1 else _fmt(self.adjustment)
        return f"GroupDRO(eta={self.eta}, adjustment={adj})"


class MGDA(Balancer):
    """MGDA (Sener & Koltun 2018): β = argmin_{β ∈ simplex} ‖Gᵀβ‖², over the present groups."""

    name = "mgda"
    needs_gramian = True

    def weights(
        self, losses: Tensor, gramian: Tensor | None = None, counts: Tensor | None = None
    ) -> Tensor:
        k = _check_losses(losses)
        C = _check_gramian(gramian, k, "MGDA")
        mask = _present(counts, k)
        sub = C[np.ix_(mask, mask)]
        beta, ok, message = min_norm_weights(sub)
        if not ok:
            logger.warning("MGDA: min-norm solver did not converge (%s)", message)
        self.info = {
            "n_present": int(mask.sum()), "solver_ok": ok, "solver_status": message,
            "min_norm_sq": float(beta @ sub @ beta) if ok else float("nan"),
        }
        return _scatter(beta, mask, losses)


class CPT(Balancer):
    """Controllable Prompt Tuning's balancer: EPO search towards c_1 L_1 = … = c_K L_K.

    A larger c_k asks for a lower loss on group k. Absent groups are excluded: the LP is solved
    over the present groups with r = c / Σc renormalised over them, and absent groups get β = 0.
    With a single present group β is one-hot (mode "single"). When HiGHS fails, β falls back to
    r over the present groups, ``info["solver_ok"]`` is False and a warning is logged. When every
    present gradient is zero, any β gives the same (null) step and β = r is returned as is.
    """

    name = "cpt"
    needs_gramian = True

    def __init__(self, c: Sequence[float] | np.ndarray | Tensor, eps: float = 1e-4) -> None:
        super().__init__()
        if not (math.isfinite(eps) and eps >= 0):
            raise ValueError(f"eps must be a non-negative finite number, got {eps}")
        self.c = validate_c(c)
        self.eps = float(eps)

    def weights(
        self, losses: Tensor, gramian: Tensor | None = None, counts: Tensor | None = None
    ) -> Tensor:
        k = _check_losses(losses)
        _check_c_length(self.c, k)
        C = _check_gramian(gramian, k, "CPT")
        mask = _present(counts, k)
        n_present = int(mask.sum())
        if n_present == 1:
            self.info = {"mode": "single", "mu": 0.0, "solver_ok": True,
                         "solver_status": "single group present", "n_present": 1}
            return _scatter(np.ones(1), mask, losses)
        L = _as_numpy(losses)[mask]
        if np.any(L < 0):
            raise ValueError(f"CPT needs non-negative losses, got {L.tolist()}")
        r = self.c[mask] / self.c[mask].sum()
        mu, a = non_uniformity(L, r)
        sol = epo_lp(C[np.ix_(mask, mask)], a, r * L, mu, self.eps)
        if not sol.ok:
            logger.warning("CPT: LP failed in %s mode (%s); falling back to beta = r",
                           sol.mode, sol.message)
        self.info = {"mode": sol.mode, "mu": mu, "solver_ok": sol.ok,
                     "solver_status": sol.message, "n_present": n_present}
        return _scatter(r if sol.beta is None else sol.beta, mask, losses)

    def __repr__(self) -> str:
        return f"CPT(c={_fmt(self.c)}, eps={self.eps})"


REGISTRY: dict[str, type[Balancer]] = {
    "erm": ERM, "groupdro": GroupDRO, "scalarized": Scalarized, "mgda": MGDA, "cpt": CPT,
}


def get(name: str, **kwargs: Any) -> Balancer:
    """Build a balancer from its registry name (``erm``, ``groupdro``, ``scalarized``, ``mgda``,
    ``cpt``), passing ``kwargs`` to its constructor (e.g. ``get("cpt", c=[1, 1, 4, 1])``)."""
    key = str(name).strip().lower()
    if key not in REGISTRY:
        raise ValueError(f"unknown balancer {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[key](**kwargs)
