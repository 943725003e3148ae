"""Tables about the groups: samples per group and split, one run's per-group accuracies.

The counts come from a dataset object (experiment notebooks) or from the record
(``split_group_counts``, schema ``cptlib-run/1``), so a summary chapter never loads data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from cptlib.analysis.frames import read_run
from cptlib.analysis.text import Note, pct

SPLITS = ("train", "val", "test")


def _counts_table(names: Sequence[str], counts: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """Groups as rows, splits as columns, and a ``total`` row."""
    table = pd.DataFrame({s: [int(v) for v in c] for s, c in counts.items()},
                         index=pd.Index(list(names), name="group"))
    table.loc["total"] = table.sum()
    return table


def group_counts(data: Any) -> pd.DataFrame:
    """Samples per group in each split of ``data`` (attributes train / val / test)."""
    splits = {s: getattr(data, s, None) for s in SPLITS}
    missing = [s for s, d in splits.items() if d is None]
    if missing:
        raise ValueError(f"group_counts needs data.train, .val and .test; missing {missing}")
    return _counts_table(splits["train"].group_names,
                         {s: d.group_counts for s, d in splits.items()})


def record_group_counts(record: dict[str, Any]) -> pd.DataFrame | Note:
    """``group_counts`` from what a run recorded: ``split_group_counts`` (every split), or
    only the training counts for a record written before that field existed."""
    names = [str(n) for n in record.get("group_names") or []]
    splits = record.get("split_group_counts") or {}
    if names and all(len(splits.get(s) or []) == len(names) for s in SPLITS):
        return _counts_table(names, {s: splits[s] for s in SPLITS})
    train = record.get("train_group_counts") or []
    if names and len(train) == len(names):
        return _counts_table(names, {"train": train})
    return Note("*This run's record holds no group counts.*")


def runs_group_counts(runs: pd.DataFrame) -> pd.DataFrame | Note:
    """``record_group_counts`` of the first of ``runs`` (every run of an experiment at one
    profile trains on the same data), with a sentence when only training counts exist."""
    if runs.empty:
        return Note("*No group counts to show: no runs yet.*")
    return record_group_counts(read_run(runs["path"].iloc[0]))


def counts_caveat(table: pd.DataFrame | Note) -> Note | None:
    """What a counts table without validation and test columns means (old records)."""
    if isinstance(table, pd.DataFrame) and list(table.columns) == ["train"]:
        return Note("*These records predate the per-split group counts (record schema "
                    "`cptlib-run/1`), so only the training counts are shown; `cpt sweep` "
                    "rewrites them with the current code.*")
    return None


def per_group_table(record: dict[str, Any]) -> pd.DataFrame:
    """Group, training count, validation and test accuracy (%) at the selected and last step."""
    metrics = record.get("metrics") or {}
    names = record.get("group_names") or []
    counts = record.get("train_group_counts") or [None] * len(names)

    def accs(key: str) -> list[str]:
        values = (metrics.get(key) or {}).get("per_group_acc") or [None] * len(names)
        return [pct(math.nan if v is None else 100 * v) for v in values]

    return pd.DataFrame({
        "train count": counts,
        "val acc. (%), selected": accs("val"),
        "test acc. (%), selected": accs("test"),
        "val acc. (%), last": accs("last_val"),
        "test acc. (%), last": accs("last_test"),
    }, index=pd.Index(names, name="group"))
