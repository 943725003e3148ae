"""MultiNLI with group_DRO's negation groups: y = gold label, attribute = negation in sentence 2.

Layout: group_DRO's ``metadata_random.csv`` (columns: its unnamed first column, the row's index
in the MultiNLI 1.0 train + dev-matched + dev-mismatched files concatenated in that order;
``gold_label`` 0/1/2 = contradiction/entailment/neutral; ``sentence2_has_negation``; ``split``
0/1/2 in group_DRO's 50/20/30 re-split) and the sentence text, which group_DRO publishes only as
BERT features. cptlib reads raw text: from ``sentence1`` / ``sentence2`` columns of the metadata
when present, else from ``sentences.csv`` (same rows, same order), which ``cpt data multinli``
builds from the MultiNLI 1.0 corpus, checking every row's label and negation flag against the
metadata. An item's ``x`` is one string, ``premise + PAIR_SEP + hypothesis``; BERT tokenizers
read the ``[SEP]`` in it as their separator token. group = 2·label + negation (6 groups).
"""

from __future__ import annotations

import json
import shutil
import string
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cptlib.data.download import DataError, require_complete
from cptlib.data.groups import GroupDataset
from cptlib.data.sources import int_column, make_dataset, read_table, split_mask

NAME = "multinli"
METADATA = "metadata_random.csv"
SENTENCES = "sentences.csv"
LABELS = ("contradiction", "entailment", "neutral")
NEGATION_WORDS = ("nobody", "no", "never", "nothing")  # group_DRO's list
CORPUS_FILES = ("multinli_1.0_train.jsonl", "multinli_1.0_dev_matched.jsonl",
                "multinli_1.0_dev_mismatched.jsonl")
PAIR_SEP = " [SEP] "
GROUP_NAMES = tuple(f"{label}/{neg}" for label in LABELS for neg in ("no negation", "negation"))
_TEXT = {"keep_default_na": False, "na_filter": False}  # "NA" or "null" are words here


def pair_text(premise: str, hypothesis: str) -> str:
    """The one-string input of a sentence pair."""
    return f"{premise}{PAIR_SEP}{hypothesis}"


def has_negation(sentence: str) -> bool:
    """group_DRO's rule: a negation word among the punctuation-free, lower-cased tokens."""
    tokens = sentence.translate(str.maketrans("", "", string.punctuation)).lower().split(" ")
    return any(word in tokens for word in NEGATION_WORDS)


def _metadata(root: Path) -> pd.DataFrame:
    return read_table(root / METADATA, ("gold_label", "sentence2_has_negation", "split"), **_TEXT)


def _sentences(root: Path, meta: pd.DataFrame) -> pd.DataFrame:
    if {"sentence1", "sentence2"} <= set(meta.columns):
        return meta
    path = root / SENTENCES
    if not path.is_file():
        raise DataError(f"{root} has no sentence text: neither sentence1/sentence2 columns in "
                        f"{METADATA} nor {SENTENCES}; `cpt data multinli` builds it")
    text = read_table(path, ("sentence1", "sentence2"), **_TEXT)
    if len(text) != len(meta):
        raise DataError(f"{path} has {len(text)} rows, {METADATA} has {len(meta)}")
    return text


def read(root: Path, split: str, transform: Callable[[Any], Any] | None = None) -> GroupDataset:
    """Split ``split`` of the MultiNLI folder ``root`` (no completion check: prepare uses it)."""
    meta = _metadata(root)
    text = _sentences(root, meta)
    codes = pd.Series(int_column(meta, "split", root / METADATA, (0, 1, 2)))
    items = [pair_text(a, b) for a, b in zip(text["sentence1"], text["sentence2"], strict=True)]
    return make_dataset(
        NAME, split, items, int_column(meta, "gold_label", root / METADATA, (0, 1, 2)),
        int_column(meta, "sentence2_has_negation", root / METADATA, (0, 1)),
        split_mask(codes, split), split_mask(codes, "train"),
        n_classes=3, n_attr=2, group_names=GROUP_NAMES, transform=transform,
    )


def load(root: Path, split: str, transform: Callable[[Any], Any] | None = None) -> GroupDataset:
    """Split ``split`` of a prepared MultiNLI folder (``cpt data multinli``)."""
    require_complete(root, NAME)
    return read(root, split, transform)


# --------------------------------------------------------------------------- preparation


def _jsonl(path: Path) -> Iterable[tuple[str, str, str]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                yield rec["gold_label"], rec["sentence1"], rec["sentence2"]


def _corpus(root: Path) -> tuple[pd.DataFrame, list[Path]]:
    """The three corpus files concatenated (every row, unlabelled '-' ones included)."""
    paths = []
    for name in CORPUS_FILES:
        found = sorted(p for p in root.rglob(name) if "__MACOSX" not in p.parts)
        if not found:
            raise DataError(f"cannot build {SENTENCES}: {name} (MultiNLI 1.0 corpus) not found "
                            f"under {root}")
        paths.append(found[0])
    rows = [r for p in paths for r in _jsonl(p)]
    return pd.DataFrame(rows, columns=["gold_label", "sentence1", "sentence2"]), paths


def _aligned(meta: pd.DataFrame, corpus: pd.DataFrame) -> pd.DataFrame:
    """Corpus rows in metadata order: by group_DRO's saved index, else by position among the
    labelled rows (group_DRO dropped the '-' rows after concatenating)."""
    first = str(meta.columns[0])
    if first.startswith("Unnamed") or first == "":
        index = meta[meta.columns[0]].astype(int).to_numpy()
    else:
        index = np.flatnonzero((corpus["gold_label"] != "-").to_numpy())
    if len(index) != len(meta) or (len(index) and index.max() >= len(corpus)):
        raise DataError(f"{METADATA} ({len(meta)} rows) does not index the corpus "
                        f"({len(corpus)} rows)")
    return corpus.iloc[index].reset_index(drop=True)


def _check(meta: pd.DataFrame, pairs: pd.DataFrame) -> None:
    """Refuse a misaligned text: every label must match, and the negation flags nearly all."""
    labels = pairs["gold_label"].map({k: i for i, k in enumerate(LABELS)})
    bad = int((labels.to_numpy() != meta["gold_label"].astype(int).to_numpy()).sum())
    if bad:
        raise DataError(f"{bad} of {len(meta)} corpus rows disagree with {METADATA}'s labels: "
                        "the corpus is not the one group_DRO indexed")
    neg = np.array([has_negation(s) for s in pairs["sentence2"]])
    off = int((neg != meta["sentence2_has_negation"].astype(int).to_numpy().astype(bool)).sum())
    if off > max(1, len(meta) // 1000):
        raise DataError(f"{off} of {len(meta)} negation flags disagree with the corpus text")


def finish(root: Path) -> None:
    """After extraction: write ``sentences.csv`` from the corpus, then delete the corpus."""
    meta = _metadata(root)
    if (root / SENTENCES).is_file() or {"sentence1", "sentence2"} <= set(meta.columns):
        return
    corpus, paths = _corpus(root)
    pairs = _aligned(meta, corpus)
    _check(meta, pairs)
    pairs[["sentence1", "sentence2"]].to_csv(root / SENTENCES, index=False)
    for folder in {p.parent for p in paths} | {root / "__MACOSX"}:
        if folder != root and folder.is_dir():
            shutil.rmtree(folder)
