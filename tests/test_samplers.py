"""Samplers: weights (N / n_g)^α, draw frequencies, every-group batches, determinism."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from cptlib.data.samplers import (
    AllGroupsBatchSampler,
    GroupSampler,
    expected_group_frequencies,
    sample_weights,
)

COUNTS = (700, 40, 12, 210)  # Waterbirds-like imbalance, small enough for fast tests


def _groups(counts=COUNTS) -> torch.Tensor:
    g = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return g[torch.randperm(len(g), generator=torch.Generator().manual_seed(0))]


def _within_5_sigma(observed: torch.Tensor, n: int, p: torch.Tensor) -> None:
    sigma = torch.sqrt(n * p * (1 - p))
    assert torch.all((observed - n * p).abs() <= 5 * sigma + 1e-9), (observed, n * p)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0])
def test_sample_weights_formula(alpha):
    g = _groups()
    w = sample_weights(g, alpha)
    n = len(g)
    for k, n_k in enumerate(COUNTS):
        assert torch.allclose(w[g == k], torch.tensor((n / n_k) ** alpha, dtype=torch.float64))


def test_expected_frequencies_by_alpha():
    g = _groups()
    counts = torch.tensor(COUNTS, dtype=torch.float64)
    assert torch.allclose(expected_group_frequencies(g, 0), counts / counts.sum())
    uniform = torch.full((4,), 0.25, dtype=torch.float64)
    assert torch.allclose(expected_group_frequencies(g, 1), uniform)
    inv = 1 / counts
    assert torch.allclose(expected_group_frequencies(g, 2), inv / inv.sum())


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0])
def test_group_sampler_frequencies(alpha):
    g = _groups()
    n = 20_000
    idx = torch.tensor(list(GroupSampler(g, alpha, num_samples=n, seed=1)))
    observed = torch.bincount(g[idx], minlength=4).double()
    _within_5_sigma(observed, n, expected_group_frequencies(g, alpha))


def test_group_sampler_determinism_and_epochs():
    g = _groups()
    a, b = GroupSampler(g, 1.0, seed=3), GroupSampler(g, 1.0, seed=3)
    assert list(a) == list(b)
    a.set_epoch(1)
    first_epoch1 = list(a)
    assert first_epoch1 != list(b)  # another epoch, other draws
    b.set_epoch(1)
    assert list(b) == first_epoch1  # a resumed run reproduces that epoch
    assert torch.equal(a.indices(epoch=1), torch.tensor(first_epoch1))
    assert list(GroupSampler(g, 1.0, seed=4)) != list(GroupSampler(g, 1.0, seed=3))
    assert len(GroupSampler(g, 1.0, num_samples=17)) == 17


def test_group_sampler_in_dataloader():
    g = _groups()
    data = TensorDataset(torch.arange(len(g)), g)
    loader = DataLoader(data, batch_size=64, sampler=GroupSampler(g, 1.0, num_samples=640, seed=0))
    batches = [b for b in loader]
    assert len(batches) == 10
    assert all(len(i) == 64 and torch.equal(gb, g[i]) for i, gb in batches)


@pytest.mark.parametrize("alpha", [0.0, 2.0])
def test_all_groups_batches_contain_every_group(alpha):
    g = _groups()
    sampler = AllGroupsBatchSampler(g, batch_size=8, alpha=alpha, n_batches=500, seed=0)
    batches = sampler.batches()
    assert batches.shape == (500, 8)
    for batch in batches:
        assert set(g[batch].tolist()) == {0, 1, 2, 3}
    # Without the guarantee, batches of 8 at these rates often miss a group.
    plain = torch.tensor(list(GroupSampler(g, alpha, num_samples=4000, seed=0))).view(500, 8)
    assert sum(len(set(g[b].tolist())) < 4 for b in plain) > 50


def test_all_groups_frequencies():
    g = _groups()
    n_batches, bsz = 2500, 8
    sampler = AllGroupsBatchSampler(g, batch_size=bsz, alpha=1.0, n_batches=n_batches, seed=2)
    observed = torch.bincount(g[sampler.batches().flatten()], minlength=4).double()
    rest = n_batches * (bsz - 4)
    p = expected_group_frequencies(g, 1.0)
    _within_5_sigma(observed - n_batches, rest, p)  # one guaranteed per group per batch


def test_all_groups_determinism_and_dataloader():
    g = _groups()
    s1 = AllGroupsBatchSampler(g, 16, 1.0, n_batches=20, seed=5)
    s2 = AllGroupsBatchSampler(g, 16, 1.0, n_batches=20, seed=5)
    assert list(s1) == list(s2)
    s2.set_epoch(1)
    assert list(s1) != list(s2)
    assert list(s1) != list(AllGroupsBatchSampler(g, 16, 1.0, n_batches=20, seed=6))
    loader = DataLoader(TensorDataset(torch.arange(len(g))), batch_sampler=s1)
    assert len(list(loader)) == 20 == len(s1)


def test_errors():
    g = _groups()
    with pytest.raises(ValueError, match="alpha"):
        sample_weights(g, -1)
    with pytest.raises(ValueError, match="alpha"):
        sample_weights(g, math.nan)
    with pytest.raises(ValueError, match=r"groups \[4\] have no samples"):
        sample_weights(g, 1.0, n_groups=5)
    with pytest.raises(ValueError, match=r"groups \[1\] have no samples"):
        sample_weights(torch.tensor([0, 2, 2]), 0.5)
    assert torch.all(sample_weights(g, 0.0, n_groups=5) == 1)  # α = 0 needs no group sizes
    with pytest.raises(ValueError, match="1-D integer"):
        sample_weights(torch.rand(5), 1.0)
    with pytest.raises(ValueError, match="empty"):
        sample_weights(torch.tensor([], dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match="smaller than the number of groups"):
        AllGroupsBatchSampler(g, batch_size=3, alpha=1.0, n_batches=2)
    with pytest.raises(ValueError, match="cannot be in every batch"):
        AllGroupsBatchSampler(g, batch_size=8, alpha=0.0, n_batches=2, n_groups=5)
    with pytest.raises(ValueError, match="num_samples"):
        GroupSampler(g, 1.0, num_samples=0)
    with pytest.raises(ValueError, match="seed"):
        GroupSampler(g, 1.0, seed=-1)
