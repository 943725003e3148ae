"""The embedded text task ``synthetic-text``: generated reviews with a spurious topic cue.

Why: a CPU experiment on a genuinely pretrained encoder (MiniLM) needs a text task with a known
shortcut, like MultiNLI's negation words or CivilComments' identity mentions. Here y is the
review's sentiment (negative / positive) and the spurious attribute is its topic (food / film,
carried by topic words that carry no sentiment). In train, topic agrees with sentiment 95 % of
the time with Waterbirds' group counts; val and test are group-balanced.

Every review states both sentiments (an aside, then the verdict), so the label needs the
sentence's structure, not a count of sentiment words: the harder, genuine cue. The topic
dominates a sentence embedding and is the easy one. Measured with logistic regression on frozen
mean-pooled MiniLM embeddings (test, seed 0): topic alone 100 % accurate, sentiment alone 75 %;
ERM worst-group accuracy 0.48, group-balanced 0.69 (C = 1). How much better prompt tuning
(which changes the encoder's attention) reads the verdict is for the text experiment to measure.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cptlib._env import show_progress
from cptlib.data.groups import GroupDataset
from cptlib.data.synthetic import (
    MARKER,
    SPLIT_CODES,
    TRAIN_COUNTS,
    publish,
    read_marker,
    rng_for,
    write_marker,
)
from cptlib.paths import data_root

CLASS_NAMES = ("negative", "positive")
ATTR_NAMES = ("food", "film")  # the spurious attribute: the review's topic
GROUP_NAMES = tuple(f"{c}/{a}" for c in CLASS_NAMES for a in ATTR_NAMES)
N_EVAL_PER_GROUP = 300
SMOKE = {"counts": (50, 3, 2, 15), "n_eval_per_group": 5}
METADATA = "metadata.csv"
_COMMAND = "cpt data synthetic-text"
TEMPLATE_VERSION = 1  # bump when the templates or vocabularies change (recorded in the marker)

# Topic words: what is reviewed and where; no sentiment in them.
_SUBJECTS = (
    ("the pasta", "the soup", "the dessert", "the steak", "the curry", "the brunch menu",
     "the pizza", "the seafood platter", "the tasting menu", "the house wine", "the noodles",
     "the burger", "the salad", "the chef's special", "the breakfast", "the tacos"),
    ("the plot", "the acting", "the soundtrack", "the lead actor", "the screenplay",
     "the ending", "the cinematography", "the dialogue", "the sequel", "the documentary",
     "the director's new film", "the supporting cast", "the special effects", "the trailer",
     "the opening scene", "the animated feature"),
)
_CONTEXTS = (
    ("at this restaurant", "at the new bistro", "for dinner", "at the cafe downtown",
     "on the lunch menu", "at the diner", "from the kitchen", "at our table"),
    ("at the cinema", "in this movie", "on the big screen", "at the film festival",
     "in the new release", "at the premiere", "in the theatre", "on the streaming service"),
)
# Sentiment words: fit either topic.
_ADJECTIVES = (
    ("awful", "terrible", "dull", "disappointing", "mediocre", "dreadful", "poor", "tedious",
     "forgettable", "underwhelming", "bland", "unpleasant", "sloppy", "lifeless"),
    ("wonderful", "excellent", "delightful", "superb", "great", "lovely", "fantastic",
     "impressive", "charming", "outstanding", "memorable", "brilliant", "enjoyable", "stunning"),
)
_CLAUSES = (
    ("I would not recommend it", "it was a waste of money", "I regretted going",
     "it fell short of my expectations", "I will not be back for more", "nobody enjoyed it",
     "I want my evening back", "it left me annoyed"),
    ("I would recommend it to anyone", "it was worth every penny", "I enjoyed every minute",
     "it exceeded my expectations", "I will gladly come back for more", "everyone loved it",
     "it made my evening", "it left me smiling"),
)
_OPENERS = ("", "Honestly, ", "Overall, ", "To be fair, ", "In short, ", "Frankly, ",
            "Last night, ", "I must say ")
_MODIFIERS = ("", "really ", "quite ", "truly ", "rather ", "pretty ", "absolutely ")
# Every template states both polarities and only its structure says which one is the verdict
# ({rating}, {verdict}: the label's; {rating_x}: the opposite). Counting sentiment words does not
# solve the task; reading the sentence does. That makes sentiment the harder cue, as the core
# feature is in Waterbirds, while the topic words stay an easy shortcut.
_TEMPLATES = (
    "{opener}{subject} {context} was {rating_x}, but {verdict}.",
    "Although {subject} {context} was {rating_x}, {verdict}.",
    "{opener}{subject} {context} seemed {rating_x} at first, yet it turned out {rating}.",
    "{opener}the reviews called {subject} {context} {rating_x}, but I found it {rating}.",
    "{opener}I expected {subject} {context} to be {rating_x}; in fact, {verdict}.",
    "{opener}my friends said {subject} {context} was {rating_x}. I disagree: it was {rating}.",
)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _sentence(rng: np.random.Generator, y: int, topic: int) -> str:
    """One review: topic words from ``topic``; the verdict's sentiment is ``y``, with an aside
    of the opposite sentiment."""
    pick = lambda options: options[rng.integers(len(options))]  # noqa: E731
    template, subject, context = pick(_TEMPLATES), pick(_SUBJECTS[topic]), pick(_CONTEXTS[topic])
    rating = pick(_MODIFIERS) + pick(_ADJECTIVES[y])
    rating_x = pick(_MODIFIERS) + pick(_ADJECTIVES[1 - y])
    text = template.format(opener=pick(_OPENERS), subject=subject, context=context,
                           rating=rating, rating_x=rating_x, verdict=pick(_CLAUSES[y]))
    return _capital(text)


def _params(seed: int, counts: Sequence[int] | None, n_eval: int) -> dict[str, Any]:
    counts = TRAIN_COUNTS if counts is None else counts
    return {"seed": int(seed), "counts": [int(c) for c in counts], "n_eval_per_group": int(n_eval),
            "template_version": TEMPLATE_VERSION}


def generate_rows(
    seed: int = 0, counts: Sequence[int] | None = None, n_eval_per_group: int = N_EVAL_PER_GROUP
) -> list[tuple[str, int, int, int]]:
    """(text, y, attribute, split) rows, by split and shuffled within a split; deterministic."""
    params = _params(seed, counts, n_eval_per_group)
    counts = params["counts"]
    if len(counts) != 4 or min(counts) < 0 or sum(counts) == 0 or n_eval_per_group < 0:
        raise ValueError(f"counts needs 4 non-negative group sizes (not all zero), got {counts}")
    rng = rng_for(seed, "synthetic-text")
    rows = []
    for code, sizes in enumerate([counts, [n_eval_per_group] * 4, [n_eval_per_group] * 4]):
        groups = np.repeat(np.arange(4), sizes)
        for g in groups[rng.permutation(len(groups))].tolist():
            y, a = divmod(g, 2)
            rows.append((_sentence(rng, y, a), y, a, code))
    return rows


def generate(
    root: str | Path,
    seed: int = 0,
    counts: Sequence[int] | None = None,
    n_eval_per_group: int = N_EVAL_PER_GROUP,
    progress: bool = True,
) -> Path:
    """Write ``metadata.csv`` (text, y, attribute, split 0/1/2) and the marker to ``root``."""
    params = _params(seed, counts, n_eval_per_group)
    rows = generate_rows(seed, counts, n_eval_per_group)
    if show_progress(progress):
        print(f"synthetic-text: writing {len(rows)} sentences to {root}")

    def fill(tmp: Path) -> None:
        with open(tmp / METADATA, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(("text", "y", "attribute", "split"))
            writer.writerows(rows)
        write_marker(tmp, "synthetic-text", params, [METADATA], METADATA)

    return publish(Path(root), fill)


def ensure_synthetic_text(
    root: str | Path | None = None,
    seed: int = 0,
    counts: Sequence[int] | None = None,
    n_eval_per_group: int = N_EVAL_PER_GROUP,
    progress: bool = True,
) -> Path:
    """The task's folder (default ``data_root()/"synthetic-text"``), generated if missing; a
    completed folder with other parameters is an error, never silently reused or replaced."""
    if root is None:
        root = data_root() / "synthetic-text"
    root = Path(root)
    if not (root / MARKER).is_file():
        return generate(root, seed, counts, n_eval_per_group, progress)
    have = read_marker(root, "synthetic-text", METADATA, _COMMAND)["params"]
    want = _params(seed, counts, n_eval_per_group)
    if have != want:
        raise ValueError(
            f"{root} holds synthetic-text generated with {have}, not {want}; pass another root "
            f"or regenerate with `{_COMMAND} --root {root}`"
        )
    return root


def load(root: Path, split: str, transform: Callable[[Any], Any] | None = None) -> GroupDataset:
    """Split ``split`` as a ``GroupDataset`` whose inputs are the sentences (strings).

    The default transform is none: tokenisation belongs to the text model.
    """
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLIT_CODES)}")
    root = Path(root)
    read_marker(root, "synthetic-text", METADATA, f"{_COMMAND} --root {root}")
    with open(root / METADATA, newline="") as f:
        rows = list(csv.DictReader(f))
    split_code = np.array([int(r["split"]) for r in rows])
    y = np.array([int(r["y"]) for r in rows])
    attr = np.array([int(r["attribute"]) for r in rows])
    train = split_code == 0
    sel = split_code == SPLIT_CODES[split]
    return GroupDataset(
        "synthetic-text", split, [r["text"] for r, s in zip(rows, sel, strict=True) if s],
        y[sel], attr[sel], n_classes=2, n_attr=2, group_names=GROUP_NAMES,
        train_group_counts=np.bincount(y[train] * 2 + attr[train], minlength=4),
        transform=transform,
    )
