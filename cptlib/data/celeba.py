"""CelebA with the group_DRO task: y = Blond_Hair, attribute = Male, group = 2·y + male.

Two published variants of the metadata are read, whichever is present:
- the official text files: ``list_attr_celeba.txt`` (line 1: the image count, line 2: the 40
  attribute names, then ``<file> v1 ... v40`` with v = -1/1; Blond_Hair and Male are the 10th
  and 21st values, 0-based 9 and 20) and ``list_eval_partition.txt`` (``<file> 0|1|2``);
- the Kaggle / WILDS csv files: ``list_attr_celeba.csv`` (``image_id`` + the 40 names, -1/1)
  and ``list_eval_partition.csv`` (``image_id,partition``).
Attributes are taken by name, never by position. Images: ``img_align_celeba/<file>``.
Training counts 71629 / 66874 / 22880 / 1387.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from cptlib.data.download import DataError, require_complete
from cptlib.data.groups import GroupDataset
from cptlib.data.sources import (
    int_column,
    make_dataset,
    read_csv,
    read_table,
    split_column,
    split_mask,
)
from cptlib.data.transforms import default_transform, load_rgb

NAME = "celeba"
TARGET, ATTRIBUTE = "Blond_Hair", "Male"
IMAGES = "img_align_celeba"
GROUP_NAMES = ("not blond/female", "not blond/male", "blond/female", "blond/male")


def _find(root: Path, stem: str) -> Path:
    for suffix in (".csv", ".txt"):
        if (root / f"{stem}{suffix}").is_file():
            return root / f"{stem}{suffix}"
    raise DataError(f"{root} has neither {stem}.csv (Kaggle / WILDS) nor {stem}.txt (official)")


def _read_attributes(path: Path) -> pd.DataFrame:
    """Attribute table with ``image_id`` and the attribute names as columns, from either variant."""
    if path.suffix == ".csv":
        return read_table(path, ("image_id", TARGET, ATTRIBUTE))
    try:
        with open(path) as f:
            count, names = int(f.readline().split()[0]), f.readline().split()
    except (ValueError, IndexError, OSError):
        raise DataError(f"{path} does not start with the official header (a row count, then the "
                        "attribute names)") from None
    table = read_csv(path, sep=r"\s+", skiprows=2, header=None, names=["image_id", *names])
    if len(table) != count or {TARGET, ATTRIBUTE} - set(names):
        raise DataError(f"{path}: {len(table)} rows for a declared {count}, attributes {names[:3]}"
                        f"...; expected the official list_attr_celeba.txt format")
    return table


def _read_partition(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return read_table(path, ("image_id", "partition"))
    return read_csv(path, sep=r"\s+", header=None, names=["image_id", "partition"])


def read(root: Path, split: str, transform: Callable[[Any], Any] | None = None) -> GroupDataset:
    """Split ``split`` of the CelebA folder ``root`` (no completion check: prepare uses it)."""
    attrs = _read_attributes(_find(root, "list_attr_celeba"))
    table = attrs.merge(_read_partition(_find(root, "list_eval_partition")), on="image_id")
    if len(table) != len(attrs):
        raise DataError(f"{root}: {len(attrs) - len(table)} image(s) have no partition entry")
    attr_path = _find(root, "list_attr_celeba")
    flags = [int_column(table, c, attr_path, (-1, 0, 1)) == 1 for c in (TARGET, ATTRIBUTE)]
    return make_dataset(
        NAME, split, [str(root / IMAGES / f) for f in table["image_id"]], *flags,
        split_mask(codes := split_column(table, "partition", _find(root, "list_eval_partition")),
                   split), split_mask(codes, "train"),
        n_classes=2, n_attr=2, group_names=GROUP_NAMES,
        loader=load_rgb, transform=default_transform(split, transform),
    )


def load(root: Path, split: str, transform: Callable[[Any], Any] | None = None) -> GroupDataset:
    """Split ``split`` of a prepared CelebA folder (``cpt data celeba``)."""
    require_complete(root, NAME)
    return read(root, split, transform)


def finish(root: Path) -> None:
    """After extraction: flatten Kaggle's doubled ``img_align_celeba/img_align_celeba/``."""
    outer = root / IMAGES
    inner = outer / IMAGES
    if not inner.is_dir():
        return
    flat = root / f".{IMAGES}.flat"
    inner.rename(flat)
    if any(outer.iterdir()):
        flat.rename(inner)
        raise DataError(f"{outer} holds both images and a nested {IMAGES}/ folder; "
                        "expected one of the two published layouts")
    outer.rmdir()
    flat.rename(outer)
