"""Group-aware datasets: ``load(name, root, split)`` for every dataset of the study.

Each name maps to the function of a dataset module that reads that dataset's own layout; the
modules are imported lazily so that loading the embedded benchmark never imports text libraries.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cptlib.data.groups import GroupDataset, group_ids
from cptlib.data.partials import remove_stale_partials
from cptlib.paths import data_root

# name -> "module:function"; the function takes (root: Path, split: str, transform) and returns
# a GroupDataset. ``root`` is the dataset's own folder.
_LOADERS: dict[str, str] = {
    "waterbirds": "cptlib.data.waterbirds:load",
    "celeba": "cptlib.data.celeba:load",
    "metashift": "cptlib.data.metashift:load",
    "isic": "cptlib.data.isic:load",
    "multinli": "cptlib.data.multinli:load",
    "civilcomments": "cptlib.data.civilcomments:load",
    "synthetic": "cptlib.data.synthetic:load",
    "synthetic-text": "cptlib.data.synthetic_text:load",
}
SPLITS = ("train", "val", "test")


def names() -> list[str]:
    """Every dataset name ``load`` accepts."""
    return list(_LOADERS)


def load(
    name: str,
    root: str | Path | None = None,
    split: str = "train",
    transform: Callable[[Any], Any] | None = None,
) -> GroupDataset:
    """Load split ``split`` of dataset ``name`` from ``root`` (default ``data_root()/name``).

    ``transform=None`` applies the dataset's default transform for that split (train
    augmentation or evaluation preprocessing, as in method.md); pass a callable to override.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(_LOADERS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if root is None:
        root = data_root() / name
    module, func = _LOADERS[name].split(":")
    return getattr(importlib.import_module(module), func)(Path(root), split, transform)


__all__ = ["GroupDataset", "group_ids", "load", "names", "remove_stale_partials", "SPLITS"]
