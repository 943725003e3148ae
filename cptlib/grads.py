"""Per-group losses, per-group gradients and their Gramian, and applying the weights β.

Only the trainable parameters are differentiated (``requires_grad=True``, or ``params=``).
Three ways give the same result when samples do not interact in the forward pass:

- ``"expand"``: one forward and one backward pass of the whole batch, as ERM does. Prompt
  tuning copies the prompts once per sample (VPT's ``PromptTokens``, peft's prompt tuning), so
  the gradient reaching each copy is that sample's own; per-group prompt gradients are sums of
  those copies' gradients. A linear layer's (the head, LoRA's A and B) come from its inputs and
  output gradients: per sample a sum over tokens of outer products, summed per group. CoOp's
  text context is used by every sample through the per-class text features: its per-group
  gradients are K vector-Jacobian products of the logits (each with one group's logit
  gradients), batched into one extra backward pass through the text tower only. Only for
  models without batch statistics whose trainable parameters are of these kinds; see
  ``expand_supported``;
- ``"split"``: forward and backward each present group's sub-batch on its own, so the total
  work is about one forward and one backward pass of the batch, in K smaller pieces;
- ``"naive"``: one forward pass over the batch, then K backward passes over its graph
  (``retain_graph=True``), which is what the authors' code does (about K backward passes).

``"auto"`` picks ``"expand"`` where it applies and ``"split"`` elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
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


# A trainable parameter is one of three kinds for way "expand" (see ``_expand_plan``).
_LINEAR, _PROMPT, _SHARED = "linear", "prompt", "shared"


@dataclass
class _ExpandPlan:
    """Which module each differentiated parameter belongs to, and how its per-group gradient
    comes out of one backward pass: ``kinds[id(p)] = (kind, module)``."""

    kinds: dict[int, tuple[str, nn.Module | None]]

    def modules(self, kind: str) -> list[nn.Module]:
        """The distinct modules of one kind, in parameter order."""
        found = {id(m): m for k, m in self.kinds.values() if k == kind and m is not None}
        return list(found.values())


def _shared_params(model: nn.Module) -> list[Tensor]:
    shared = getattr(model, "shared_params", None)
    return list(shared()) if callable(shared) else []


def _expand_plan(model: nn.Module, params: Sequence[Tensor]) -> _ExpandPlan | None:
    """How way "expand" gets each parameter's per-group gradient, or None where it cannot.

    Per sample, from one backward pass: the weight and bias of an ``nn.Linear`` (a sum over
    tokens of outer products of the layer's input and output gradient: the head, peft's
    classifier copy, LoRA's A and B) and the ``prompts`` of a module with ``capture()``, which
    copies them once per sample (``PromptTokens`` of VPT, ``PromptTunedText``). Per group,
    from K batched vector-Jacobian products of the logits: what ``model.shared_params()``
    lists (CoOp's text context, which every sample uses through the per-class text features).
    Only for models that declare ``batch_interacts = False`` (the study's ``CPTModel``
    families without batch statistics).
    """
    if getattr(model, "batch_interacts", None) is not False:
        return None
    wanted = {id(p) for p in params}
    kinds: dict[int, tuple[str, nn.Module | None]] = {}
    for module in model.modules():
        prompt = getattr(module, "prompts", None)
        if callable(getattr(module, "capture", None)) and isinstance(prompt, Tensor):
            kinds[id(prompt)] = (_PROMPT, module)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            for p in module.parameters(recurse=False):
                kinds.setdefault(id(p), (_LINEAR, module))
    kinds.update((id(p), (_SHARED, None)) for p in _shared_params(model))
    kinds = {key: value for key, value in kinds.items() if key in wanted}
    return _ExpandPlan(kinds) if len(kinds) == len(wanted) else None


def expand_supported(model: nn.Module, params: Sequence[Tensor] | None = None) -> bool:
    """Whether way "expand" applies: the model does not mix samples (``batch_interacts`` is
    False) and every differentiated parameter is of a kind ``_expand_plan`` knows (linear
    layers, prompts with ``capture()``, or the model's ``shared_params()``)."""
    params = trainable_params(model) if params is None else params
    return _expand_plan(model, params) is not None


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
            f"way 'expand' needs a model with batch_interacts = False whose trainable parameters "
            f"are linear layers, prompts with capture() or shared_params(); "
            f"{type(model).__name__} is not one: use 'split'")
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

    ``way="expand"`` (VPT, CoOp, prompt tuning, LoRA; see the module docstring) costs one
    forward and one backward pass of the batch (CoOp: plus a batched one of its text tower);
    ``"auto"`` uses it where it applies, else ``"split"``.
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


def _record_calls(modules: Sequence[nn.Module], stack: ExitStack
                  ) -> dict[int, list[tuple[Tensor, Tensor]]]:
    """Forward hooks that keep (input, output) of every call of ``modules`` until ``stack``
    closes."""
    calls: dict[int, list[tuple[Tensor, Tensor]]] = {id(m): [] for m in modules}
    for m in modules:
        hook = m.register_forward_hook(
            lambda mod, args, output: calls[id(mod)].append((args[0], output)))
        stack.callback(hook.remove)
    return calls


def _check_rows(t: Tensor, batch: int, module: nn.Module) -> None:
    if t.ndim < 2 or t.shape[0] != batch:
        raise RuntimeError(f"way 'expand': {type(module).__name__} ran on a tensor of shape "
                           f"{tuple(t.shape)}, not one row per sample of the batch of {batch}")


def _expand(model: nn.Module, x: Any, y: Tensor, g: Tensor, n_groups: int,
            params: list[Tensor], loss_fn: LossFn, out: Tensor) -> tuple[Tensor, Tensor]:
    plan = _expand_plan(model, params)
    assert plan is not None  # resolve_way checked it
    hooked = plan.modules(_LINEAR)
    prompts = plan.modules(_PROMPT)
    shared = [p for p in params if plan.kinds[id(p)][0] == _SHARED]
    with ExitStack() as stack:
        calls = _record_calls(hooked, stack)
        taps = {id(m): stack.enter_context(m.capture()) for m in prompts}  # type: ignore[operator]
        logits = model(x)
    batch = int(y.shape[0])
    losses, counts = group_losses(loss_fn(logits, y, reduction="none"), g, n_groups)
    outputs = [o for m in hooked for _, o in calls[id(m)]]
    copies = [t for m in prompts for _, t in taps[id(m)]]
    inputs = outputs + copies + ([logits] if shared else [])
    # Σ_k L_k: sample b's gradient is its own loss's, divided by its group's size.
    grads = torch.autograd.grad(losses.sum(), inputs, retain_graph=bool(shared),
                                allow_unused=True) if inputs else []
    d = {id(t): (torch.zeros_like(t) if gr is None else gr).to(out.dtype)
         for t, gr in zip(inputs, grads, strict=True)}
    onehot_t = F.one_hot(g.to(torch.int64), n_groups).to(out.dtype).T  # (K, B)

    def per_group(per_sample: Tensor) -> Tensor:  # (B, ...) -> (K, numel)
        return onehot_t @ per_sample.reshape(batch, -1)

    shared_rows = iter(_shared_rows(logits, d[id(logits)], shared, onehot_t) if shared else ())
    offset = 0
    for p in params:
        kind, module = plan.kinds[id(p)]
        row = out[:, offset:offset + p.numel()]
        offset += p.numel()
        if kind == _SHARED:
            row.copy_(next(shared_rows).reshape(n_groups, -1))
            continue
        if kind == _PROMPT:  # the copies' gradients, summed per group, to their slot of p
            whole = row.view(n_groups, *p.shape)
            for index, copy in taps[id(module)]:
                target = whole if index is None else whole[:, index]
                target += per_group(d[id(copy)]).view_as(target)
            continue
        for inp, output in calls[id(module)]:
            _check_rows(output, batch, module)
            d_out = d[id(output)].reshape(batch, -1, output.shape[-1])  # (B, tokens, out)
            if p is module.weight:
                feats = inp.detach().to(out.dtype).reshape(batch, -1, inp.shape[-1])
                row += per_group(torch.bmm(d_out.transpose(1, 2), feats))
            else:
                row += per_group(d_out.sum(dim=1))
    return losses.detach(), counts


def _shared_rows(logits: Tensor, d_logits: Tensor, shared: list[Tensor], onehot_t: Tensor
                 ) -> tuple[Tensor, ...]:
    """Per-group gradients (K, *p.shape) of parameters every sample uses (CoOp's context):
    K vector-Jacobian products of the logits, each with the logit gradients of one group's
    samples only, batched through one backward pass (``is_grads_batched``). Where an operator
    of the backward pass has no batching rule, the K products run one after the other."""
    masked = (onehot_t[:, :, None] * d_logits[None]).to(logits.dtype)  # (K, B, C)
    try:
        return torch.autograd.grad(logits, shared, grad_outputs=masked, is_grads_batched=True,
                                   retain_graph=True)
    except RuntimeError:
        rows = [torch.autograd.grad(logits, shared, grad_outputs=m, retain_graph=True)
                for m in masked]
        return tuple(torch.stack(per_param) for per_param in zip(*rows, strict=True))


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
