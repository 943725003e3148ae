"""The one group-aware dataset type every loader returns, so training code never cares which
dataset it is reading: items are ``(x, y, g)`` with ``g = y * n_attr + attribute``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset


def group_ids(y: torch.Tensor, attr: torch.Tensor, n_attr: int) -> torch.Tensor:
    """Group of each item: ``y * n_attr + attr`` (Waterbirds: 2·y + place)."""
    return y.long() * n_attr + attr.long()


class GroupDataset(Dataset):
    """Items ``(x, y, g)``; ``x`` comes from ``loader(item)`` then ``transform``.

    ``items`` is whatever the loader needs per example (an image path, a sentence); labels,
    attributes and groups are tensors so samplers and counts never touch the inputs.
    """

    def __init__(
        self,
        name: str,
        split: str,
        items: Sequence[Any],
        y: Sequence[int] | torch.Tensor,
        attr: Sequence[int] | torch.Tensor,
        *,
        n_classes: int,
        n_attr: int,
        group_names: Sequence[str],
        train_group_counts: Sequence[int] | torch.Tensor,
        loader: Callable[[Any], Any] | None = None,
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.name, self.split = name, split
        self.items = list(items)
        self.y = torch.as_tensor(y, dtype=torch.long)
        self.attr = torch.as_tensor(attr, dtype=torch.long)
        if not (len(self.items) == len(self.y) == len(self.attr)):
            raise ValueError(
                f"{name}/{split}: {len(self.items)} items, {len(self.y)} labels, "
                f"{len(self.attr)} attributes; they must have the same length"
            )
        self.n_classes, self.n_attr = int(n_classes), int(n_attr)
        self.group_names = list(group_names)
        if len(self.group_names) != self.n_groups:
            raise ValueError(
                f"{name}: {len(self.group_names)} group names for {self.n_groups} groups"
            )
        self.groups = group_ids(self.y, self.attr, self.n_attr)
        if len(self.groups) and (self.groups.min() < 0 or self.groups.max() >= self.n_groups):
            raise ValueError(f"{name}/{split}: group id outside 0..{self.n_groups - 1}")
        self.group_counts = torch.bincount(self.groups, minlength=self.n_groups)
        self.train_group_counts = torch.as_tensor(train_group_counts, dtype=torch.long)
        self.loader = loader
        self.transform = transform

    @property
    def n_groups(self) -> int:
        return self.n_classes * self.n_attr

    @property
    def train_group_proportions(self) -> torch.Tensor:
        """Training proportions p_g, the weights of the "average accuracy" of Waterbirds tables."""
        counts = self.train_group_counts.double()
        return counts / counts.sum()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Any, int, int]:
        x = self.items[i]
        if self.loader is not None:
            x = self.loader(x)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.y[i]), int(self.groups[i])

    def __repr__(self) -> str:
        counts = ", ".join(
            f"{n}: {int(c)}" for n, c in zip(self.group_names, self.group_counts, strict=True)
        )
        return (
            f"GroupDataset({self.name!r}, split={self.split!r}, n={len(self)}, "
            f"groups={{{counts}}})"
        )
