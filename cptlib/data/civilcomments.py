"""CivilComments (WILDS) with the coarse identity grouping used by the CPT authors' code.

Layout: WILDS's ``all_data_with_identities.csv`` with ``comment_text``, ``split``
(train/val/test), ``toxicity`` in [0, 1] and the eight WILDS identity columns. y = toxicity >= 0.5;
attribute = any of the identity columns >= 0.5 (a missing value counts as no mention);
group = 2·y + attribute (4 groups). x is the comment text.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cptlib.data.download import require_complete
from cptlib.data.groups import GroupDataset
from cptlib.data.sources import (
    float_column,
    make_dataset,
    read_table,
    split_column,
    split_mask,
)

NAME = "civilcomments"
CSV = "all_data_with_identities.csv"
IDENTITIES = ("male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black",
              "white")
THRESHOLD = 0.5
GROUP_NAMES = ("non-toxic/no identity", "non-toxic/identity", "toxic/no identity",
               "toxic/identity")


def read(root: Path, split: str, transform: Callable[[Any], Any] | None = None) -> GroupDataset:
    """Split ``split`` of the CivilComments folder ``root`` (no completion check)."""
    columns = ("comment_text", "split", "toxicity", *IDENTITIES)
    table = read_table(root / CSV, columns, usecols=lambda c: c in columns,
                       dtype={"comment_text": str}, keep_default_na=False, na_values={
                           c: ["", "NaN", "nan"] for c in ("toxicity", *IDENTITIES)})
    path = root / CSV
    scores = np.stack([float_column(table, c, path, blank=0.0) for c in IDENTITIES], axis=1)
    return make_dataset(
        NAME, split, table["comment_text"].tolist(),
        float_column(table, "toxicity", path) >= THRESHOLD, (scores >= THRESHOLD).any(axis=1),
        split_mask(codes := split_column(table, "split", path), split), split_mask(codes, "train"),
        n_classes=2, n_attr=2, group_names=GROUP_NAMES, transform=transform,
    )


def load(root: Path, split: str, transform: Callable[[Any], Any] | None = None) -> GroupDataset:
    """Split ``split`` of a prepared CivilComments folder (``cpt data civilcomments``)."""
    require_complete(root, NAME)
    return read(root, split, transform)
