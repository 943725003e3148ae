"""Per-group losses, per-group gradients and their Gramian, and applying the weights β.

Only the trainable parameters are differentiated (``requires_grad=True``, or ``params=``).
Three ways give the same result when samples do not interact in the forward pass:

- ``"expand"``: one forward and one backward pass of the whole batch, as ERM does. Prompt
  tuning copies the prompts once per sample, so the gradient reaching each copy is that sample's
  own; per-group prompt gradients are sums of those copies' gradients, and the linear head's
  come from its inputs and output gradients (an outer product per sample, summed per group).
  Only for models whose trainable parameters are prompts with ``capture()`` and a linear
  ``head`` (the VPT models); see ``expand_supported``;
- ``"split"``: forward and backward each present group's sub-batch on its own, so the total
  work is about one forward and one backward pass of the batch, in K smaller pieces;
- ``"naive"``: one forward pass over the batch, then K backward passes over its graph
  (``retain_graph=True``), which is what the authors' code does (about K backward passes).

``"auto"`` picks ``"expand"`` where it applies and ``"split"`` elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "WAYS",
    "GroupGrads",
    "combined_direction",
    "conflict_fraction",
    "expand_supported",
    "group_losses",
    "per_group_grads",
    "resolve_way",
    "set_combined_grad",
    "trainable_params",
]

LossFn = Callable[..., Tensor]
WAYS = ("auto", "expand", "split", "naive")


@dataclass
class GroupGrads:
    """Per-group losses (K,) detached, counts (K,) long, flattened gradients (K, P) with a zero
    row for absent groups, and their Gramian (K, K) = grads @ grads.T."""

    losses: Tensor
    counts: Tensor
    grads: Tensor
    gramian: Tensor

    @property
    def present(self) -> Tensor:
        """Boolean mask of the groups present in the batch."""
        return self.counts > 0


def trainable_params(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that the balancer differentiates: those with ``requires_grad=True``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameter (requires_grad=True)")
    return params


def _check_groups(g: Tensor, n_groups: int, batch: int) -> None:
    if g.ndim != 1 or g.shape[0] != batch:
        raise ValueError(f"g must be a 1-D tensor of {batch} group ids, got {tuple(g.shape)}")
    if g.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"g must hold integer group ids, got dtype {g.dtype}")
    lo, hi = (int(g.min()), int(g.max())) if batch else (0, 0)
    if lo < 0 or hi >= n_groups:
        raise ValueError(f"group ids must lie in [0, {n_groups}), got {lo}..{hi}")


def group_losses(per_sample_loss: Tensor, g: Tensor, n_groups: int) -> tuple[Tensor, Tensor]:
    """Mean loss of each group in the batch (0 where absent, differentiable) and group counts.

    Uses ``index_add`` / ``bincount``: no Python loop over samples.
    """
    if per_sample_loss.ndim != 1:
        raise ValueError(f"per_sample_loss must be 1-D, got shape {tuple(per_sample_loss.shape)}")
    _check_groups(g, n_groups, per_sample_loss.shape[0])
    g = g.to(torch.int64)
    counts = torch.bincount(g, minlength=n_groups)
    sums = per_sample_loss.new_zeros(n_groups).index_add(0, g, per_sample_loss)
    return sums / counts.clamp(min=1).to(sums.dtype), counts


def _take(x: Any, idx: Tensor) -> Any:
    """The samples ``idx`` of a batch: a tensor, a mapping of tensors (tokenizer output) or a
    list/tuple of items (e.g. strings for text models)."""
    if isinstance(x, Tensor):
        return x[idx]
    if isinstance(x, Mapping):
        return {key: _take(value, idx) for key, value in x.items()}
    if isinstance(x, Sequence) and not isinstance(x, str):
        return [x[i] for i in idx.tolist()]
    raise TypeError(f"cannot index a batch of type {type(x).__name__}")


def _batch_size(x: Any) -> int:
    if isinstance(x, Mapping):
        return _batch_size(next(iter(x.values())))
    return int(x.shape[0]) if isinstance(x, Tensor) else len(x)


def _write_row(row: Tensor, grads: Sequence[Tensor | None]) -> None:
    """Copy one group's gradients into its preallocated flat row (None = unused parameter)."""
    offset = 0
    for grad in grads:
        n = grad.numel() if grad is not None else 0
        if grad is not None:
            row[offset:offset + n].copy_(grad.reshape(-1))
        offset += n


def _expand_parts(model: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
    """The (prompt module, linear head) of a model built for way "expand", else None."""
    prompt, head = getattr(model, "prompt", None), getattr(model, "head", None)
    if getattr(model, "batch_interacts", False) or not isinstance(head, nn.Linear):
        return None
    if not callable(getattr(prompt, "capture", None)) or not isinstance(
            getattr(prompt, "prompts", None), Tensor):
        return None
    return prompt, head


def expand_supported(model: nn.Module, params: Sequence[Tensor] | None = None) -> bool:
    """Whether way "expand" applies: every differentiated parameter is the prompts of a
    ``model.prompt`` with ``capture()`` (``cptlib.models.vit.PromptTokens``) or the weight or
    bias of a linear ``model.head``, and the model does not mix samples (``batch_interacts``)."""
    parts = _expand_parts(model)
    if parts is None:
        return False
    params = trainable_params(model) if params is None else params
    prompt, head = parts
    own = {id(prompt.prompts), id(head.weight)} | ({id(head.bias)} if head.bias is not None
                                                   else set())
    return all(id(p) in own for p in params)


def resolve_way(model: nn.Module, way: str = "auto",
                params: Sequence[Tensor] | None = None) -> str:
    """The concrete way for ``way``: "auto" is "expand" where ``expand_supported``, else
    "split"; an explicit "expand" the model does not support is an error."""
    if way not in WAYS:
        raise ValueError(f"way must be one of {', '.join(map(repr, WAYS))}, got {way!r}")
    if way == "auto":
        return "expand" if expand_supported(model, params) else "split"
    if way == "expand" and not expand_supported(model, params):
        raise ValueError(
            f"way 'expand' needs prompts with capture() and a linear head as the only trainable "
            f"parameters (the VPT models); {type(model).__name__} is not one: use 'split'")
    return way


def per_group_grads(
    model: nn.Module,
    x: Any,
    y: Tensor,
    g: Tensor,
    n_groups: int,
    *,
    params: Sequence[Tensor] | None = None,
    way: str = "auto",
    loss_fn: LossFn = F.cross_entropy,
) -> GroupGrads:
    """Per-group mean losses, flattened per-group gradients and their Gramian for one batch.

    ``way="expand"`` (VPT models, see the module docstring) costs one forward and one backward
    pass of the batch; ``"auto"`` uses it where it applies, else ``"split"``.
    ``way="split"`` forwards and backwards each present group's sub-batch separately (total work
    ≈ one forward + backward of the batch). It is exact only when samples do not interact in the
    forward pass: no train-mode batch norm (or any batch statistic) in the differentiated path;
    dropout then differs from ``"naive"`` only in its random draws. ``way="naive"`` runs one
    forward pass and K backward passes over the whole batch graph (the authors' approach).
    ``loss_fn(logits, y, reduction="none")`` must give per-sample losses. ``x`` may be a tensor,
    a list of items (e.g. strings) or a mapping of tensors; it is indexed like ``y``.
    """
    params = trainable_params(model) if params is None else list(params)
    way = resolve_way(model, way, params)
    batch = _batch_size(x)
    if y.shape[0] != batch:
        raise ValueError(f"x has {batch} samples but y has {y.shape[0]}")
    _check_groups(g, n_groups, batch)
    ref = params[0]
    grads = torch.zeros(n_groups, sum(p.numel() for p in params), dtype=ref.dtype,
                        device=ref.device)
    if way == "expand":
        losses, counts = _expand(model, x, y, g, n_groups, params, loss_fn, grads)
    elif way == "split":
        losses, counts = _split(model, x, y, g, n_groups, params, loss_fn, grads)
    else:
        losses, counts = _naive(model, x, y, g, n_groups, params, loss_fn, grads)
    return GroupGrads(losses=losses, counts=counts, grads=grads, gramian=grads @ grads.T)


def _split(model: nn.Module, x: Any, y: Tensor, g: Tensor, n_groups: int,
           params: list[Tensor], loss_fn: LossFn, out: Tensor) -> tuple[Tensor, Tensor]:
    counts = torch.bincount(g.to(torch.int64), minlength=n_groups)
    losses = torch.zeros(n_groups, dtype=out.dtype, device=out.device)
    for k in torch.nonzero(counts).flatten().tolist():
        idx = torch.nonzero(g == k).flatten()
        loss = loss_fn(model(_take(x, idx)), y[idx], reduction="none").mean()
        _write_row(out[k], torch.autograd.grad(loss, params, allow_unused=True))
        losses[k] = loss.detach()
    return losses, counts


def _expand(model: nn.Module, x: Any, y: Tensor, g: Tensor, n_groups: int,
            params: list[Tensor], loss_fn: LossFn, out: Tensor) -> tuple[Tensor, Tensor]:
    prompt, head = _expand_parts(model)  # type: ignore[misc]  # resolve_way checked it
    seen: list[tuple[Tensor, Tensor]] = []
    hook = head.register_forward_hook(lambda _m, args, output: seen.append((args[0], output)))
    try:
        with prompt.capture() as taps:
            logits = model(x)
    finally:
        hook.remove()
    if len(seen) != 1:
        raise RuntimeError(f"way 'expand': the head ran {len(seen)} times in one forward pass")
    feats, head_out = seen[0]
    losses, counts = group_losses(loss_fn(logits, y, reduction="none"), g, n_groups)
    wants_prompts = any(p is prompt.prompts for p in params)
    inputs = [head_out, *(tap for _, tap in taps)] if wants_prompts else [head_out]
    # Σ_k L_k: sample b's gradient is its own loss's, divided by its group's size.
    d_out, *d_taps = torch.autograd.grad(losses.sum(), inputs)
    onehot = F.one_hot(g.to(torch.int64), n_groups).to(out.dtype)  # (B, K)
    d_out = d_out.to(out.dtype)
    offset = 0
    for p in params:
        row = out[:, offset:offset + p.numel()]
        if p is head.weight:
            feats = feats.detach().to(out.dtype)
            row.copy_(torch.einsum("bk,bc,bd->kcd", onehot, d_out, feats).reshape(n_groups, -1))
        elif p is head.bias:
            row.copy_(onehot.T @ d_out)
        else:  # the prompts (L, T, D): each use adds its copies' gradients to its layer
            layers = row.view(n_groups, p.shape[0], -1)
            for (layer, _), grad in zip(taps, d_taps, strict=True):
                layers[:, layer] += onehot.T @ grad.reshape(grad.shape[0], -1).to(out.dtype)
        offset += p.numel()
    return losses.detach(), counts


def _naive(model: nn.Module, x: Any, y: Tensor, g: Tensor, n_groups: int,
           params: list[Tensor], loss_fn: LossFn, out: Tensor) -> tuple[Tensor, Tensor]:
    losses, counts = group_losses(loss_fn(model(x), y, reduction="none"), g, n_groups)
    present = torch.nonzero(counts).flatten().tolist()
    for i, k in enumerate(present):
        last = i == len(present) - 1
        grads = torch.autograd.grad(losses[k], params, retain_graph=not last, allow_unused=True)
        _write_row(out[k], grads)
    return losses.detach(), counts


def combined_direction(grads: Tensor, beta: Tensor) -> Tensor:
    """d = Σ_k β_k g_k (flat, shape (P,)), the update direction the weights define."""
    return beta.to(device=grads.device, dtype=grads.dtype) @ grads


def set_combined_grad(params: Sequence[Tensor], grads: Tensor, beta: Tensor) -> None:
    """Write p.grad = Σ_k β_k g_k (unflattened) so that an optimiser step can follow.

    Equivalent to back-propagating Σ_k β_k L_k with β detached; previous grads are replaced.
    """
    d = combined_direction(grads, beta.detach())
    if d.shape[0] != sum(p.numel() for p in params):
        raise ValueError(f"grads have {d.shape[0]} columns but params hold "
                         f"{sum(p.numel() for p in params)} values")
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = d[offset:offset + n].view_as(p)
        offset += n


def conflict_fraction(grads: Tensor, direction: Tensor, counts: Tensor | None = None) -> float:
    """Fraction of present groups whose gradient points against the update: cos(g_k, d) < 0.

    Present = ``counts > 0`` when given, else groups with a non-zero gradient. A diagnostic of
    how often the combined step raises some group's loss to first order.
    """
    present = (counts > 0).to(grads.device) if counts is not None else grads.norm(dim=1) > 0
    if not bool(present.any()):
        return 0.0
    dots = grads[present] @ direction.to(device=grads.device, dtype=grads.dtype)
    return float((dots < 0).to(torch.float64).mean())
