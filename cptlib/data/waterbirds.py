"""Waterbirds (Sagawa et al. 2020): birds on land or water backgrounds, group = 2·y + place.

Layout (group_DRO's tarball and the WILDS bundle alike): ``metadata.csv`` with ``img_filename``
(relative to the dataset folder), ``y`` (1 = waterbird), ``place`` (1 = water background) and
``split`` (0/1/2 = train/val/test). Training counts 3498 / 184 / 56 / 1057.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cptlib.data.download import require_complete
from cptlib.data.groups import GroupDataset
from cptlib.data.sources import int_column, make_dataset, read_table, split_column, split_mask
from cptlib.data.transforms import default_transform, load_rgb

NAME = "waterbirds"
GROUP_NAMES = ("landbird/land", "landbird/water", "waterbird/land", "waterbird/water")


def read(root: Path, split: str, transform: Callable[[Any], Any] | None = None) -> GroupDataset:
    """Split ``split`` of the Waterbirds folder ``root`` (no completion check: prepare uses it)."""
    path = root / "metadata.csv"
    meta = read_table(path, ("img_filename", "y", "place", "split"))
    return make_dataset(
        NAME, split, [str(root / f) for f in meta["img_filename"]],
        int_column(meta, "y", path, (0, 1)), int_column(meta, "place", path, (0, 1)),
        split_mask(codes := split_column(meta, "split", path), split), split_mask(codes, "train"),
        n_classes=2, n_attr=2, group_names=GROUP_NAMES,
        loader=load_rgb, transform=default_transform(split, transform),
    )


def load(root: Path, split: str, transform: Callable[[Any], Any] | None = None) -> GroupDataset:
    """Split ``split`` of a prepared Waterbirds folder (``cpt data waterbirds``)."""
    require_complete(root, NAME)
    return read(root, split, transform)
