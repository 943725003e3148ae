"""ISIC skin lesions with the hair artefact, as DISC and the CPT authors split it.

Layout (DISC's release): ``trap-sets/isic_annotated_{train,val,test}5.csv`` (trap set 5, as in
DISC's scripts) with at least the columns ``image`` (a file name; its extension is replaced by
``.jpg``, as both codes do), ``label`` (1 = malignant) and ``hair`` (1 = hair visible), and the
images in ``ISIC2018_Task1-2_Training_Input/``. Training reads the train csv; validation and test
are 20 % / 80 % of the test csv (``train_test_split(..., test_size=0.8, random_state=0)``, the
authors' ``id_val`` protocol). group = 2·label + hair. The paper reports ROC-AUC on this dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cptlib.data.download import require_complete
from cptlib.data.groups import GroupDataset
from cptlib.data.sources import (
    SPLIT_CODES,
    holdout_split,
    int_column,
    make_dataset,
    read_table,
)
from cptlib.data.transforms import default_transform, load_rgb

NAME = "isic"
TRAP_SET = 5
IMAGES = "ISIC2018_Task1-2_Training_Input"
TEST_FRACTION = 0.8  # of the test csv; the rest is validation
COLUMNS = ("image", "label", "hair")
GROUP_NAMES = ("benign/no hair", "benign/hair", "malignant/no hair", "malignant/hair")


def csv_path(root: Path, part: str) -> Path:
    """One of DISC's trap-set tables: ``part`` is train, val or test."""
    return root / "trap-sets" / f"isic_annotated_{part}{TRAP_SET}.csv"


def image_path(root: Path, name: str) -> str:
    """Where the image of a csv row lives (the csv may name a .png; the files are .jpg)."""
    return str(root / IMAGES / f"{Path(name).stem}.jpg")


def read(root: Path, split: str, transform: Callable[[Any], Any] | None = None) -> GroupDataset:
    """Split ``split`` of the ISIC folder ``root`` (no completion check: prepare uses it)."""
    paths = csv_path(root, "train"), csv_path(root, "test")
    train, pool = (read_table(p, COLUMNS) for p in paths)
    val, test = holdout_split(len(pool), TEST_FRACTION)
    codes = np.full(len(train) + len(pool), SPLIT_CODES["train"])
    codes[len(train) + val], codes[len(train) + test] = SPLIT_CODES["val"], SPLIT_CODES["test"]
    names = [*train["image"], *pool["image"]]
    return make_dataset(
        NAME, split, [image_path(root, n) for n in names],
        *(np.concatenate([int_column(t, c, p, (0, 1)) for t, p in zip((train, pool), paths,
                                                                       strict=True)])
          for c in ("label", "hair")),
        codes == SPLIT_CODES[split], codes == SPLIT_CODES["train"],
        n_classes=2, n_attr=2, group_names=GROUP_NAMES,
        loader=load_rgb, transform=default_transform(split, transform),
    )


def load(root: Path, split: str, transform: Callable[[Any], Any] | None = None) -> GroupDataset:
    """Split ``split`` of a prepared ISIC folder (``cpt data isic``)."""
    require_complete(root, NAME)
    return read(root, split, transform)
