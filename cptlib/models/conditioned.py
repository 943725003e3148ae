"""One adapter for every c: a model whose trained tensors are a function of the control vector.

Why: every c of a dedicated CPT run is a new training run and a new adapter. Following Pareto
HyperNetworks (Navon et al., ICLR 2021), ``Conditioned`` wraps any model of the study whose
samples do not interact (every prompt-tuned family: VPT on timm ViTs and the quick backbone, CoOp
on CLIP, peft prompt tuning, LoRA) and makes each of its trained tensors θ_i a function of c:

    z(c) = (log c − mean(log c)) / log(c_max)        (scale-free: c and 2c are the same ray)
    h(c) = tanh(W_1 z(c) + b_1)                      (H hidden units)
    θ(c) = θ⁰ + U h(c) / √H                          (U: H → all trained scalars, zero at start)

θ⁰ starts at the wrapped model's own initial values and U at zero, so a conditioned run starts
exactly where a dedicated run starts, for every c. The 1/√H keeps the step that U's gradient
makes in θ about as large as a step of θ⁰ itself, whatever H. The wrapped model's trained
tensors become *slots*: ``set_c(c)`` writes θ(c) into them, so the model's own forward, its
per-group-gradient ways (``cptlib.grads``, "expand" included) and its balancer see exactly what a
dedicated run at c would see; ``cptlib.train`` then carries the slots' combined gradient back to
θ⁰, W_1, b_1 and U with one vector-Jacobian product.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from cptlib.config import check_c, check_int, check_number


def c_features(c: Tensor, c_max: float) -> Tensor:
    """z(c) = (log c − mean log c) / log c_max: zero at c ∝ 1, ±1 at the edge of the range."""
    logc = torch.log(c)
    return (logc - logc.mean(dim=-1, keepdim=True)) / math.log(c_max)


class Conditioned(nn.Module):
    """A model of the study whose trained tensors are θ(c) (see the module docstring).

    ``model.set_c(c)`` dials c; ``model(x)`` is then the wrapped model's forward at that c.
    Only θ⁰, W_1, b_1 and U are trainable parameters of the wrapper (what the optimiser, the
    checkpoint and the adapter file hold); the slots train only inside ``slots_trainable()``.
    """

    def __init__(self, model: nn.Module, n_groups: int, hidden: int = 16,
                 c_max: float = 8.0) -> None:
        super().__init__()
        if getattr(model, "batch_interacts", False) or getattr(model, "adapter_buffers", False):
            raise ValueError(f"{type(model).__name__}: a c-conditioned adapter needs a model "
                             "whose samples do not interact (a prompt-tuned or LoRA family)")
        spec = getattr(model, "spec", None)
        if not isinstance(spec, dict):
            raise ValueError(f"{type(model).__name__} has no spec: build it with build_model")
        self.n_groups = check_int("groups", n_groups, 2)
        self.hidden = check_int("c_hidden", hidden, 1)
        self.c_max = check_number("c_max", c_max, positive=True)
        if not self.c_max > 1:
            raise ValueError(f"c_max must be > 1, got {c_max}")
        self.model = model
        slots = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not slots:
            raise ValueError(f"{type(model).__name__} has no trained tensors to condition on c")
        self.slot_names = [n for n, _ in slots]
        self._slots = [p for _, p in slots]
        for p in self._slots:
            p.requires_grad_(False)
        self.base = nn.ParameterList(nn.Parameter(p.detach().clone()) for p in self._slots)
        self.embed = nn.Linear(self.n_groups, self.hidden)
        self.out = nn.Linear(self.hidden, sum(p.numel() for p in self._slots), bias=False)
        nn.init.zeros_(self.out.weight)
        like = self._slots[0]  # the new layers take θ's device and dtype
        self.embed.to(like.device, like.dtype)
        self.out.to(like.device, like.dtype)
        self.spec = {**spec, "conditioned": {"groups": self.n_groups, "hidden": self.hidden,
                                             "c_max": self.c_max}}
        self.c: tuple[float, ...] = (1.0,) * self.n_groups
        self.set_c(self.c)

    # ------------------------------------------------------------------ c → θ(c)

    def check(self, c: Sequence[float] | Tensor) -> list[float]:
        """``c`` as a list of K finite positive floats; ValueError naming the problem."""
        values = c.tolist() if isinstance(c, Tensor) else list(c)
        return check_c(values, self.n_groups)

    def tensors(self, c: Sequence[float] | Tensor) -> list[Tensor]:
        """θ(c), one tensor per slot, differentiable in the wrapper's parameters."""
        ref = self.base[0]
        ct = torch.as_tensor(self.check(c), dtype=ref.dtype, device=ref.device)
        h = torch.tanh(self.embed(c_features(ct, self.c_max)))
        delta = self.out(h) / math.sqrt(self.hidden)
        parts = torch.split(delta, [p.numel() for p in self._slots])
        return [b + d.view_as(b) for b, d in zip(self.base, parts, strict=True)]

    def set_c(self, c: Sequence[float] | Tensor) -> list[Tensor]:
        """Write θ(c) into the wrapped model; return θ(c) with its graph (for training)."""
        values = self.tensors(c)
        with torch.no_grad():
            for slot, value in zip(self._slots, values, strict=True):
                slot.copy_(value)
        self.c = tuple(self.check(c))
        return values

    def refresh(self) -> None:
        """Rewrite the slots at the current c (after the wrapper's parameters changed)."""
        self.set_c(self.c)

    def load_state_dict(self, state: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load the wrapper's parameters, then rewrite the slots at the current c."""
        result = super().load_state_dict(state, strict=strict, assign=assign)
        self.refresh()
        return result

    # ------------------------------------------------------------------ the wrapped model

    @property
    def slots(self) -> list[nn.Parameter]:
        """The wrapped model's trained tensors (what the per-group gradients differentiate)."""
        return list(self._slots)

    @contextmanager
    def slots_trainable(self) -> Iterator[list[nn.Parameter]]:
        """Let the slots take gradients (one training step), and stop afterwards."""
        for p in self._slots:
            p.requires_grad_(True)
        try:
            yield self.slots
        finally:
            for p in self._slots:
                p.requires_grad_(False)
                p.grad = None

    @property
    def num_classes(self) -> int:
        return int(self.spec["num_classes"])

    @property
    def method(self) -> str:
        return f"{getattr(self.model, 'method', '')}, conditioned on c"

    def backbone_param_count(self) -> int:
        return self.model.backbone_param_count()

    @property
    def data_config(self) -> dict[str, Any]:
        return self.model.data_config

    def train(self, mode: bool = True) -> Conditioned:
        """Train mode for the wrapped model (its frozen backbone stays in eval mode)."""
        self.training = mode
        self.model.train(mode)
        return self

    def forward(self, x: Any, c: Sequence[float] | Tensor | None = None) -> Tensor:
        """Logits of the wrapped model at ``c`` (default: the c last set)."""
        if c is not None:
            self.set_c(c)
        return self.model(x)

    def __repr__(self) -> str:
        c = ", ".join(f"{v:g}" for v in self.c)
        n = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return (f"Conditioned({self.spec.get('name')}, groups={self.n_groups}, "
                f"hidden={self.hidden}, c_max={self.c_max:g}, c=[{c}], trained={n:,})")


def sample_c(n_groups: int, c_max: float, seed: int, step: int) -> list[float]:
    """The c of training step ``step``: log c_k i.i.d. uniform on [0, log c_max].

    Every ratio c_j / c_k between 1/c_max and c_max is drawn; a function of (seed, step) only,
    so a resumed run draws the same c's as an uninterrupted one.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step + 7_919)
    u = torch.rand(n_groups, generator=gen, dtype=torch.float64)
    return torch.exp(u * math.log(c_max)).tolist()


def raise_grid(n_groups: int, strengths: Sequence[float] = (4.0,)) -> list[list[float]]:
    """c = 1, then each group's entry raised to each strength in turn (others at 1)."""
    grid = [[1.0] * n_groups]
    for k in range(n_groups):
        for s in strengths:
            if s != 1:
                grid.append([float(s) if j == k else 1.0 for j in range(n_groups)])
    return grid
