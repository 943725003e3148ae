"""Group-robustness metrics: per-group accuracy and loss, worst-group accuracy, the
training-weighted average accuracy of the DFR / GroupDRO tables, plain accuracy and AUROC.

Pure functions: inputs may be torch tensors (any device), NumPy arrays or sequences; the
per-group functions return float64 CPU tensors with NaN for a group that has no samples, and
the scalar ones return plain Python floats. ``evaluate_logits`` bundles everything a run record
stores for one split.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = torch.Tensor | np.ndarray | Sequence[Any]


def _as_tensor(name: str, x: ArrayLike, dtype: torch.dtype, ndim: int = 1) -> torch.Tensor:
    """A detached CPU tensor of ``dtype`` with ``ndim`` dimensions, or a ValueError naming ``x``.

    ``None`` entries of a sequence become NaN, so lists read back from a run record work too.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
    else:
        if isinstance(x, Sequence) and not isinstance(x, str):
            x = [math.nan if v is None else v for v in x]
        t = torch.as_tensor(np.asarray(x))
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(t.shape)}")
    if dtype == torch.long and t.is_floating_point():
        if not torch.all(t == t.round()):
            raise ValueError(f"{name} must hold integers (class or group ids)")
    return t.to(dtype)


def _check_same_length(**tensors: torch.Tensor) -> int:
    """The common length of the tensors, or a ValueError listing every length."""
    lengths = {name: len(t) for name, t in tensors.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs must have the same length, got {lengths}")
    return next(iter(lengths.values()))


def _check_groups(g: torch.Tensor, n_groups: int) -> None:
    """Group ids must index ``n_groups`` groups: anything else is a dataset or caller bug."""
    if n_groups < 1:
        raise ValueError(f"n_groups must be a positive integer, got {n_groups}")
    if len(g) and (int(g.min()) < 0 or int(g.max()) >= n_groups):
        raise ValueError(
            f"group ids must lie in 0..{n_groups - 1}, got values in "
            f"{int(g.min())}..{int(g.max())}"
        )


def _group_mean(values: torch.Tensor, g: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Mean of ``values`` within each group (float64, NaN where a group has no samples)."""
    counts = torch.bincount(g, minlength=n_groups).double()
    sums = torch.bincount(g, weights=values.double(), minlength=n_groups)
    nan = torch.full_like(sums, math.nan)
    return torch.where(counts > 0, sums / counts.clamp(min=1), nan)


def per_group_accuracy(
    pred: ArrayLike, y: ArrayLike, g: ArrayLike, n_groups: int
) -> torch.Tensor:
    """Accuracy of each group, shape (K,); NaN for a group with no samples in this split."""
    pred_t = _as_tensor("pred", pred, torch.long)
    y_t = _as_tensor("y", y, torch.long)
    g_t = _as_tensor("g", g, torch.long)
    _check_same_length(pred=pred_t, y=y_t, g=g_t)
    _check_groups(g_t, n_groups)
    return _group_mean((pred_t == y_t).double(), g_t, n_groups)


def per_group_loss(per_sample_loss: ArrayLike, g: ArrayLike, n_groups: int) -> torch.Tensor:
    """Mean loss of each group, shape (K,); NaN for a group with no samples in this split."""
    loss_t = _as_tensor("per_sample_loss", per_sample_loss, torch.float64)
    g_t = _as_tensor("g", g, torch.long)
    _check_same_length(per_sample_loss=loss_t, g=g_t)
    _check_groups(g_t, n_groups)
    return _group_mean(loss_t, g_t, n_groups)


def worst_group_accuracy(per_group_acc: ArrayLike) -> float:
    """Lowest accuracy over the groups that have samples (NaN / None entries are ignored)."""
    acc = _as_tensor("per_group_acc", per_group_acc, torch.float64)
    present = acc[~torch.isnan(acc)]
    if len(present) == 0:
        raise ValueError("worst_group_accuracy: no group has samples (every entry is NaN)")
    return float(present.min())


def average_accuracy(per_group_acc: ArrayLike, train_group_counts: ArrayLike) -> float:
    """Per-group accuracy weighted by the *training* group proportions.

    This is the "average accuracy" of the DFR and GroupDRO tables: it estimates accuracy under
    the training distribution from a (often group-balanced) evaluation split. Groups absent from
    the evaluated split (NaN accuracy) are skipped and the remaining weights renormalised.
    When no evaluated group occurs in training (MetaShift's evaluation-only contexts) the
    quantity is undefined: NaN.
    """
    acc = _as_tensor("per_group_acc", per_group_acc, torch.float64)
    counts = _as_tensor("train_group_counts", train_group_counts, torch.float64)
    if len(acc) != len(counts):
        raise ValueError(
            f"{len(acc)} group accuracies but {len(counts)} training group counts"
        )
    if torch.any(counts < 0) or torch.any(torch.isnan(counts)):
        raise ValueError(f"training group counts must be non-negative, got {counts.tolist()}")
    present = ~torch.isnan(acc)
    weights = counts[present]
    if weights.sum() <= 0:
        return float("nan")
    return float((acc[present] * weights).sum() / weights.sum())


def mean_accuracy(pred: ArrayLike, y: ArrayLike) -> float:
    """Plain accuracy over samples (what a group-blind benchmark would report)."""
    pred_t = _as_tensor("pred", pred, torch.long)
    y_t = _as_tensor("y", y, torch.long)
    if _check_same_length(pred=pred_t, y=y_t) == 0:
        raise ValueError("mean_accuracy: no samples")
    return float((pred_t == y_t).double().mean())


def auroc(scores: ArrayLike, y: ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` (probability of class 1) for binary labels ``y``.

    NaN, with a RuntimeWarning saying why, when only one class is present: the AUROC is
    undefined then, and a tiny smoke split can legitimately be in that state.
    """
    from sklearn.metrics import roc_auc_score  # sklearn is slow to import; only load it here

    s = _as_tensor("scores", scores, torch.float64)
    y_t = _as_tensor("y", y, torch.long)
    _check_same_length(scores=s, y=y_t)
    labels = set(torch.unique(y_t).tolist())
    if not labels <= {0, 1}:
        raise ValueError(f"auroc needs binary labels 0/1, got {sorted(labels)}")
    if len(labels) < 2:
        warnings.warn(
            f"AUROC is undefined: only class {sorted(labels)} present in {len(y_t)} samples; "
            "returning NaN",
            RuntimeWarning,
            stacklevel=2,
        )
        return math.nan
    return float(roc_auc_score(y_t.numpy(), s.numpy()))


def _nan_to_none(values: torch.Tensor) -> list[float | None]:
    """A plain list for a run record, ``None`` for an empty group (JSON has no NaN)."""
    return [None if math.isnan(v) else float(v) for v in values.tolist()]


def evaluate_logits(
    logits: ArrayLike,
    y: ArrayLike,
    g: ArrayLike,
    n_groups: int,
    train_group_counts: ArrayLike,
) -> dict[str, Any]:
    """Every metric a run record keeps for one split, as plain Python values.

    Keys: ``worst_group_acc``, ``avg_acc`` (training-weighted), ``mean_acc``, ``per_group_acc``
    and ``per_group_loss`` (lists in group order, None for empty groups), ``per_group_n``
    (samples per group), ``loss`` (mean cross-entropy) and, for two classes, ``auroc``.
    """
    logits_t = _as_tensor("logits", logits, torch.float64, ndim=2)
    y_t = _as_tensor("y", y, torch.long)
    g_t = _as_tensor("g", g, torch.long)
    n = _check_same_length(logits=logits_t, y=y_t, g=g_t)
    if n == 0:
        raise ValueError("evaluate_logits: no samples to evaluate")
    n_classes = logits_t.shape[1]
    if int(y_t.min()) < 0 or int(y_t.max()) >= n_classes:
        raise ValueError(f"labels must lie in 0..{n_classes - 1} for {n_classes} logit columns")
    _check_groups(g_t, n_groups)

    pred = logits_t.argmax(dim=1)
    ce = F.cross_entropy(logits_t, y_t, reduction="none")
    group_acc = per_group_accuracy(pred, y_t, g_t, n_groups)
    out: dict[str, Any] = {
        "worst_group_acc": worst_group_accuracy(group_acc),
        "avg_acc": average_accuracy(group_acc, train_group_counts),
        "mean_acc": mean_accuracy(pred, y_t),
        "per_group_acc": _nan_to_none(group_acc),
        "per_group_loss": _nan_to_none(per_group_loss(ce, g_t, n_groups)),
        "per_group_n": torch.bincount(g_t, minlength=n_groups).tolist(),
        "loss": float(ce.mean()),
    }
    if n_classes == 2:
        out["auroc"] = auroc(torch.softmax(logits_t, dim=1)[:, 1], y_t)
    return out
