"""MetaShift cat/dog as the CPT authors used it (DISC's release, ``MetaDatasetCatDog``).

Layout: ``train/<animal>/<animal>(<context>)/*.jpg`` and ``test/<animal>/<animal>(shelf)/``.
Training uses cats on sofas and beds and dogs on benches and bikes (4 groups); validation and
test are cats and dogs on shelves, 15 % / 85 % of the shelf images by the authors' fixed-seed
split (``train_test_split(..., test_size=0.85, random_state=0)``; the files are sorted first,
where the authors used the unordered ``os.listdir``).

Groups: y = animal (cat 0, dog 1), attribute = the context's slot for that animal (0, 1 = the
two training contexts, 2 = shelf), g = 3·y + slot: 6 groups, of which training holds 0, 1, 3, 4
and validation / test hold 2 and 5. Groups absent from a split have count 0.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cptlib.data.download import DataError, require_complete
from cptlib.data.groups import GroupDataset
from cptlib.data.sources import SPLIT_CODES, holdout_split, make_dataset
from cptlib.data.transforms import default_transform, load_rgb

NAME = "metashift"
CLASSES = ("cat", "dog")
TRAIN_CONTEXTS = {"cat": ("sofa", "bed"), "dog": ("bench", "bike")}
EVAL_CONTEXT = "shelf"
TEST_FRACTION = 0.85  # of the shelf images; the rest is validation
GROUP_NAMES = tuple(f"{animal}/{ctx}" for animal in CLASSES
                    for ctx in (*TRAIN_CONTEXTS[animal], EVAL_CONTEXT))
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def context_dir(root: Path, stage: str, animal: str, context: str) -> Path:
    """Folder of one (animal, context) pair, e.g. ``train/cat/cat(sofa)``."""
    return root / stage / animal / f"{animal}({context})"


def _images(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise DataError(f"missing MetaShift folder {folder}")
    return sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def folders() -> list[tuple[str, int, str, int, str]]:
    """(stage, y, animal, slot, context) of every folder read, training ones first, cats first."""
    train = [("train", y, a, slot, ctx) for y, a in enumerate(CLASSES)
             for slot, ctx in enumerate(TRAIN_CONTEXTS[a])]
    return train + [("test", y, a, 2, EVAL_CONTEXT) for y, a in enumerate(CLASSES)]


def read(root: Path, split: str, transform: Callable[[Any], Any] | None = None) -> GroupDataset:
    """Split ``split`` of the MetaShift folder ``root`` (no completion check: prepare uses it)."""
    items: list[str] = []
    ys: list[int] = []
    slots: list[int] = []
    codes: list[int] = []  # -1: the shelf pool, split into val / test below
    for stage, y, animal, slot, ctx in folders():
        files = _images(context_dir(root, stage, animal, ctx))
        items += files
        ys += [y] * len(files)
        slots += [slot] * len(files)
        codes += [SPLIT_CODES["train"] if stage == "train" else -1] * len(files)
    code = np.array(codes)
    pool = np.flatnonzero(code == -1)
    val, test = holdout_split(len(pool), TEST_FRACTION)
    code[pool[val]], code[pool[test]] = SPLIT_CODES["val"], SPLIT_CODES["test"]
    return make_dataset(
        NAME, split, items, ys, slots, code == SPLIT_CODES[split], code == SPLIT_CODES["train"],
        n_classes=2, n_attr=3, group_names=GROUP_NAMES,
        loader=load_rgb, transform=default_transform(split, transform),
    )


def load(root: Path, split: str, transform: Callable[[Any], Any] | None = None) -> GroupDataset:
    """Split ``split`` of a prepared MetaShift folder (``cpt data metashift``)."""
    require_complete(root, NAME)
    return read(root, split, transform)
