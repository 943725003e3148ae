"""Group-aware training samplers: draws with replacement, weight (N / n_g)^α per sample.

Why: method.md's sampling rule. α = 0 is the natural distribution (ERM), α = 1 group-balanced,
α = 2 over-samples minorities beyond balance (the authors' Waterbirds setting, where about half
of the 64-sample batches miss a group; ``AllGroupsBatchSampler`` removes that case).

Determinism: the draws of epoch e come from a generator seeded by (seed, e) alone, so a run
resumed at any step reproduces the same future batches (call ``set_epoch`` and skip the batches
already consumed in that epoch).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def _as_groups(groups: Sequence[int] | torch.Tensor) -> torch.Tensor:
    g = torch.as_tensor(groups)
    if g.ndim != 1 or g.is_floating_point() or g.dtype == torch.bool:
        raise ValueError(
            f"groups must be a 1-D integer tensor, got {g.dtype} of shape {tuple(g.shape)}"
        )
    if len(g) == 0:
        raise ValueError("groups is empty: there is nothing to sample")
    if g.min() < 0:
        raise ValueError(f"group ids must be non-negative, got {int(g.min())}")
    return g.long()


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    return alpha


def group_counts(groups: Sequence[int] | torch.Tensor, n_groups: int | None = None) -> torch.Tensor:
    """n_g for every group id 0..K-1 (K = ``n_groups``, else the largest id + 1)."""
    g = _as_groups(groups)
    k = int(g.max()) + 1 if n_groups is None else int(n_groups)
    if k <= int(g.max()):
        raise ValueError(f"group id {int(g.max())} is outside 0..{k - 1} (n_groups={k})")
    return torch.bincount(g, minlength=k)


def sample_weights(
    groups: Sequence[int] | torch.Tensor, alpha: float, n_groups: int | None = None
) -> torch.Tensor:
    """Per-sample weights (N / n_{g(i)})^α, float64, shape (N,).

    A group id in 0..K-1 with no samples is an error when α > 0: reweighting towards a group
    that does not exist would silently balance over fewer groups than intended.
    """
    alpha = _check_alpha(alpha)
    g = _as_groups(groups)
    counts = group_counts(g, n_groups)
    empty = [k for k, c in enumerate(counts.tolist()) if c == 0]
    if alpha > 0 and empty:
        raise ValueError(f"groups {empty} have no samples; alpha={alpha} cannot reweight them")
    n = float(len(g))
    return (n / counts[g].double()) ** alpha


def expected_group_frequencies(
    groups: Sequence[int] | torch.Tensor, alpha: float, n_groups: int | None = None
) -> torch.Tensor:
    """Probability that one draw falls in each group: ∝ n_g^(1-α)."""
    counts = group_counts(groups, n_groups).double()
    mass = torch.where(counts > 0, counts ** (1.0 - _check_alpha(alpha)), torch.zeros_like(counts))
    return mass / mass.sum()


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A torch generator that depends on (seed, epoch) only."""
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be non-negative, got {seed}, {epoch}")
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class GroupSampler(Sampler[int]):
    """``num_samples`` indices per epoch, drawn with replacement ∝ (N / n_g)^α."""

    def __init__(
        self,
        groups: Sequence[int] | torch.Tensor,
        alpha: float,
        num_samples: int | None = None,
        seed: int = 0,
        n_groups: int | None = None,
    ) -> None:
        self.weights = sample_weights(groups, alpha, n_groups)
        self.alpha = float(alpha)
        self.num_samples = len(self.weights) if num_samples is None else int(num_samples)
        if self.num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {self.num_samples}")
        self.seed, self.epoch = int(seed), 0
        epoch_generator(self.seed, 0)  # validates the seed now rather than at the first epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the draws of ``epoch`` (the same epoch always gives the same indices)."""
        self.epoch = int(epoch)

    def indices(self, epoch: int | None = None) -> torch.Tensor:
        """All indices of an epoch at once (the current one by default)."""
        gen = epoch_generator(self.seed, self.epoch if epoch is None else int(epoch))
        return torch.multinomial(self.weights, self.num_samples, replacement=True, generator=gen)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples


class AllGroupsBatchSampler(Sampler[list[int]]):
    """Batches that contain every group: one sample of each group, the rest drawn ∝ weights.

    Why: with α = 0 or 2 a batch of 64 often misses a group, which leaves that group's loss
    undefined for a balancer. Within a group all weights are equal, so the guaranteed sample is
    uniform within its group. Positions in the batch are shuffled.
    """

    def __init__(
        self,
        groups: Sequence[int] | torch.Tensor,
        batch_size: int,
        alpha: float,
        n_batches: int,
        seed: int = 0,
        n_groups: int | None = None,
    ) -> None:
        g = _as_groups(groups)
        counts = group_counts(g, n_groups)
        missing = [k for k, c in enumerate(counts.tolist()) if c == 0]
        if missing:
            raise ValueError(f"groups {missing} have no samples: they cannot be in every batch")
        if batch_size < len(counts):
            raise ValueError(
                f"batch_size {batch_size} is smaller than the number of groups "
                f"({len(counts)}): a batch cannot hold one sample of each"
            )
        if n_batches <= 0:
            raise ValueError(f"n_batches must be positive, got {n_batches}")
        self.weights = sample_weights(g, alpha, n_groups)
        self.members = [torch.nonzero(g == k).flatten() for k in range(len(counts))]
        self.batch_size, self.n_batches = int(batch_size), int(n_batches)
        self.seed, self.epoch = int(seed), 0
        epoch_generator(self.seed, 0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches(self, epoch: int | None = None) -> torch.Tensor:
        """All batches of an epoch, shape (n_batches, batch_size)."""
        gen = epoch_generator(self.seed, self.epoch if epoch is None else int(epoch))
        k, rest = len(self.members), self.batch_size - len(self.members)
        sizes = torch.tensor([len(m) for m in self.members])
        pick = (torch.rand(self.n_batches, k, generator=gen) * sizes).long().clamp_max(sizes - 1)
        guaranteed = torch.stack([m[pick[:, j]] for j, m in enumerate(self.members)], dim=1)
        drawn = torch.multinomial(self.weights, self.n_batches * rest, replacement=True,
                                  generator=gen).view(self.n_batches, rest)
        batch = torch.cat([guaranteed, drawn], dim=1)
        order = torch.argsort(torch.rand(batch.shape, generator=gen), dim=1)
        return torch.gather(batch, 1, order)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches().tolist())

    def __len__(self) -> int:
        return self.n_batches
