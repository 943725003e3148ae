"""Where each real dataset is published, what its files must hash to, and how its layout reads.

Hosts move and break (CodaLab's migration, dead Google-Drive ids), and the projects that publish
these datasets ship no checksums. So each dataset lists alternative releases (tried in order),
each file its mirrors, and its digests where a source we can name publishes them
(``digest_source`` says which):

- CelebA (the three official Google-Drive files): SHA-256 and size from TensorFlow Datasets'
  ``tensorflow_datasets/datasets/celeb_a/checksums.tsv`` (the same Drive ids), MD5 from
  torchvision's ``CelebA`` dataset.
- MultiNLI 1.0 (``multinli_1.0.zip``): SHA-256 and size from TensorFlow Datasets'
  ``tensorflow_datasets/url_checksums/multi_nli.txt``; ParlAI's ``parlai/tasks/multinli/build.py``
  lists the same SHA-256.
- Everything else (Waterbirds, the WILDS bundles, MetaShift, ISIC, CivilComments, group_DRO's
  ``metadata_random.csv``): no digest is published anywhere we could find (WILDS records
  ``compressed_size: None`` for Waterbirds). The first successful preparation records the
  SHA-256 and size it saw in ``<root>.cpt-digests.json`` beside the dataset folder and prints
  them (trust on first use); later preparations of that root are held to them.

Also here: the small reading rules the loaders share (split codes, required columns, the
authors' fixed-seed val/test carve-out, integer labels), so every loader reads its table the
same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cptlib.data.download import DataError
from cptlib.data.groups import GroupDataset, group_ids

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class Part:
    """One published file: its local name, its mirrors (tried in order) and known digests."""

    filename: str
    urls: tuple[str, ...]
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    digest_source: str = ""


@dataclass(frozen=True)
class Source:
    """How to obtain one dataset and turn the published files into the layout its loader reads.

    ``releases``: alternative sets of files, tried in order (the first that downloads fully
    wins). ``anchors``: relative paths, one of which marks the dataset folder inside whatever the
    archives unpack to. ``finish``: ``"module:function"`` run on that folder after extraction
    (flattening, building derived files), or None. ``manual``: hints for a by-hand download.
    """

    name: str
    releases: tuple[tuple[Part, ...], ...]
    anchors: tuple[str, ...]
    homepage: str
    finish: str | None = None
    manual: str = ""

    @property
    def parts(self) -> tuple[Part, ...]:
        """Every file of every release (to match a mirror or a local file by its name)."""
        return tuple(p for release in self.releases for p in release)


def drive(file_id: str) -> tuple[str, ...]:
    """Download URLs of a public Google-Drive file (the new host first, then the old one)."""
    return (
        f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t",
        f"https://drive.google.com/uc?export=download&id={file_id}",
    )


def codalab(bundle: str, path: str = "") -> str:
    """URL of a CodaLab bundle (WILDS's host): the whole bundle as a tar.gz, or one file of it."""
    return f"https://worksheets.codalab.org/rest/bundles/{bundle}/contents/blob/{path}"


_WB_TAR = "waterbird_complete95_forest2water2.tar.gz"
_TFDS_CELEBA = ("TensorFlow Datasets tensorflow_datasets/datasets/celeb_a/checksums.tsv (SHA-256, "
                "size); torchvision datasets.CelebA (MD5)")

SOURCES: dict[str, Source] = {
    "waterbirds": Source(
        name="waterbirds",
        releases=(
            (Part(_WB_TAR, (f"https://nlp.stanford.edu/data/dro/{_WB_TAR}",
                            f"https://downloads.cs.stanford.edu/nlp/data/dro/{_WB_TAR}")),),
            (Part("waterbirds_v1.0.tar.gz", (codalab("0x505056d5cdea4e4eaa0e242cbfe2daa4"),)),),
        ),
        anchors=("metadata.csv",),
        homepage="https://github.com/kohpangwei/group_DRO",
        manual="The group_DRO tarball and the WILDS bundle (waterbirds_v1.0) hold the same "
        "metadata.csv layout; either works. Regenerating it from CUB + Places does not "
        "reproduce the tarball.",
    ),
    "celeba": Source(
        name="celeba",
        releases=(
            (
                Part("img_align_celeba.zip", drive("0B7EVK8r0v71pZjFTYXZWM3FlRnM"),
                     sha256="46fb89443c578308acf364d7d379fe1b9efb793042c0af734b6112e4fd3a8c74",
                     md5="00d2c5bc6d35e252742224ab0c1e8fcb", size=1443490838,
                     digest_source=_TFDS_CELEBA),
                Part("list_attr_celeba.txt", drive("0B7EVK8r0v71pblRyaVFSWGxPY0U"),
                     sha256="f0e5da289d5ccf75ffe8811132694922b60f2af59256ed362afa03fefba324d0",
                     md5="75e246fa4810816ffd6ee81facbd244c", size=26721026,
                     digest_source=_TFDS_CELEBA),
                Part("list_eval_partition.txt", drive("0B7EVK8r0v71pY0NSMzRuSXJEVkk"),
                     sha256="fc955bcb3ef8fbdf7d5640d9a8693a8431b5f2ee291a5c1449a1549e7e073fe7",
                     md5="d32c9cbf5e040fd4025c592c306e6668", size=2836386,
                     digest_source=_TFDS_CELEBA),
            ),
            (Part("celebA_v1.0.tar.gz", (codalab("0xfe55077f5cd541f985ebf9ec50473293"),)),),
        ),
        anchors=("list_eval_partition.txt", "list_eval_partition.csv"),
        homepage="https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
        finish="cptlib.data.celeba:finish",
        manual="The official Google-Drive files often answer with a quota page. Alternatives: "
        "the Kaggle release (`kaggle datasets download jessicali9530/celeba-dataset`, then "
        "`--source archive.zip --no-verify`: no digest is published for it; needs a Kaggle "
        "account) or the WILDS bundle (1.3 GB, trusted on first use).",
    ),
    "metashift": Source(
        name="metashift",
        releases=((Part("metashifts.zip", drive("1WySOxBRkxAUlSokgZrC-0JaWZwcG5UMT")),),),
        anchors=("train/cat/cat(sofa)",),
        homepage="https://github.com/Wuyxin/DISC",
        manual="This is DISC's release (the one the CPT authors used); it unpacks to "
        "metashifts/MetaDatasetCatDog/{train,test}/{cat,dog}/<animal>(<context>)/.",
    ),
    "isic": Source(
        name="isic",
        releases=((Part("isic.zip", drive("1Os34EapIAJM34DrwZMw2rRRJij3HAUDV")),),),
        anchors=("trap-sets/isic_annotated_train5.csv",),
        homepage="https://github.com/alceubissoto/debiasing-skin",
        manual="This is DISC's release: trap-sets/isic_annotated_{train,val,test}5.csv and the "
        "ISIC 2018 Task 1-2 images in ISIC2018_Task1-2_Training_Input/.",
    ),
    "multinli": Source(
        name="multinli",
        releases=(
            (
                Part("metadata_random.csv", (
                    "https://raw.githubusercontent.com/kohpangwei/group_DRO/"
                    "cbbc1c5b06844e46b87e264326b56056d2a437d1/"
                    "dataset_metadata/multinli/metadata_random.csv",)),
                Part("multinli_1.0.zip", (
                    "https://cims.nyu.edu/~sbowman/multinli/multinli_1.0.zip",),
                    sha256="049f507b9e36b1fcb756cfd5aeb3b7a0cfcb84bf023793652987f7e7e0957822",
                    size=226850426,
                    digest_source="TensorFlow Datasets url_checksums/multi_nli.txt; ParlAI "
                    "parlai/tasks/multinli/build.py"),
            ),
        ),
        anchors=("metadata_random.csv",),
        homepage="https://cims.nyu.edu/~sbowman/multinli/",
        finish="cptlib.data.multinli:finish",
        manual="cptlib reads the raw sentence pairs, not group_DRO's BERT features "
        "(multinli_bert_features.tar.gz is not needed): it takes group_DRO's "
        "metadata_random.csv and the MultiNLI 1.0 corpus, and writes sentences.csv.",
    ),
    "civilcomments": Source(
        name="civilcomments",
        releases=(
            (Part("all_data_with_identities.csv", (
                codalab("0x8cd3de0634154aeaad2ee6eb96723c6e", "all_data_with_identities.csv"),)),),
            (Part("civilcomments_v1.0.tar.gz", (codalab("0x8cd3de0634154aeaad2ee6eb96723c6e"),)),),
        ),
        anchors=("all_data_with_identities.csv",),
        homepage="https://wilds.stanford.edu/datasets/",
    ),
}


def get(name: str) -> Source:
    """The source description of a real dataset; ValueError for any other name."""
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"no download source for {name!r}; real datasets: "
                         f"{', '.join(SOURCES)}") from None


def known_part(name: str, filename: str) -> Part | None:
    """The published file called ``filename`` (a mirror or local copy inherits its digests)."""
    return next((p for p in get(name).parts if p.filename == filename), None)


def manual_steps(name: str, root: Path) -> str:
    """What to do by hand when no host answers: every URL, the file names, the command."""
    src = get(name)
    lines = [f"Manual steps for {name} (see {src.homepage}):"]
    for i, release in enumerate(src.releases, 1):
        lines.append(f"  release {i}: download " + (
            "each of these files into one folder DIR:" if len(release) > 1 else "this file:"))
        for part in release:
            lines.append(f"    {part.filename}  <-  {part.urls[0]}")
        target = "DIR" if len(release) > 1 else f"/path/to/{release[0].filename}"
        lines.append(f"    then: cpt data {name} --root {root} --source {target}")
    lines.append("  A mirror works too: --source URL (one archive) or --source URL/ (a folder "
                 "holding the files above by name).")
    if src.manual:
        lines.append(f"  Note: {src.manual}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- reading rules


def read_csv(path: Path, **read_csv_kwargs: Any) -> pd.DataFrame:
    """``pandas.read_csv`` whose every failure (empty, binary, malformed, not UTF-8) is a
    DataError naming the file, never a parser traceback."""
    if not path.is_file():
        raise DataError(f"missing metadata file {path}")
    try:
        return pd.read_csv(path, **read_csv_kwargs)
    except (ValueError, OSError) as exc:  # ParserError, EmptyDataError, UnicodeDecodeError
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path} is not a readable table ({type(exc).__name__}: "
                        f"{reason[:160]})") from None


def read_table(path: Path, columns: Sequence[str], **read_csv_kwargs: Any) -> pd.DataFrame:
    """Read a metadata csv, naming the file and the missing columns if it is not as expected."""
    table = read_csv(path, **read_csv_kwargs)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing}; it has {list(table.columns)}")
    return table


def _first_bad(path: Path, column: str, values: pd.Series, bad: np.ndarray, want: str) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = values.iloc[i]
        value = value.item() if isinstance(value, np.generic) else value
        raise DataError(f"{path}: column {column!r} must hold {want}; data row {i + 1} has "
                        f"{value!r} ({int(bad.sum())} bad value(s) in all)")


def int_column(table: pd.DataFrame, column: str, path: Path, allowed: Sequence[int]) -> np.ndarray:
    """``table[column]`` as int64, refusing text, blanks, fractions (1.5 is not truncated to 1)
    and values outside ``allowed``: a label the model would silently learn wrong."""
    raw = table[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    whole = np.isfinite(values) & (values == np.round(values))
    ok = whole & np.isin(np.where(whole, values, 0), np.asarray(allowed, dtype=float))
    _first_bad(path, column, raw, ~ok, f"integers in {sorted(set(allowed))}")
    return values.astype(np.int64)


def float_column(table: pd.DataFrame, column: str, path: Path, *, blank: float | None = None
                 ) -> np.ndarray:
    """``table[column]`` as float64, refusing text; blanks become ``blank`` (refused if None)."""
    raw = table[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    missing = raw.isna().to_numpy()
    _first_bad(path, column, raw, (np.isnan(values) & ~missing) | (missing & (blank is None)),
               "numbers" + ("" if blank is None else " or blanks"))
    return np.where(missing, np.nan if blank is None else blank, values)


def split_column(table: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """``table[column]`` after checking every row names a split (0/1/2 or train/val/test): a
    blank or unknown code would silently drop the row from every split."""
    raw = table[column]
    if pd.api.types.is_numeric_dtype(raw):
        return pd.Series(int_column(table, column, path, tuple(SPLIT_CODES.values())))
    names = raw.astype(str).str.strip().str.lower()
    _first_bad(path, column, raw, ~names.isin(list(SPLIT_CODES)).to_numpy() | raw.isna().to_numpy(),
               f"split codes {tuple(SPLIT_CODES.values())} or names {tuple(SPLIT_CODES)}")
    return raw


def split_mask(codes: pd.Series, split: str) -> np.ndarray:
    """Rows of ``split``, whether the table codes splits as 0/1/2 or as train/val/test."""
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLIT_CODES)}")
    if pd.api.types.is_numeric_dtype(codes):
        return (codes == SPLIT_CODES[split]).to_numpy()
    return (codes.astype(str).str.strip().str.lower() == split).to_numpy()


def holdout_split(n: int, test_size: float) -> tuple[np.ndarray, np.ndarray]:
    """The authors' carve-out of val and test from one pool; returns (val idx, test idx), sorted.

    Identical to scikit-learn's ``train_test_split(arange(n), test_size=test_size,
    random_state=0)`` (a test checks it) without importing scikit-learn in every loader.
    """
    n_test = math.ceil(test_size * n)
    if not 0 < n_test < n:
        raise DataError(f"cannot split {n} item(s) into val and test at test_size={test_size}")
    perm = np.random.RandomState(0).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def make_dataset(
    name: str,
    split: str,
    items: Sequence[object],
    y: Sequence[int] | np.ndarray,
    attr: Sequence[int] | np.ndarray,
    rows: np.ndarray,
    train_rows: np.ndarray,
    **dataset_kwargs: Any,
) -> GroupDataset:
    """The ``rows`` of a whole table as a GroupDataset whose training counts come from
    ``train_rows``: every loader reads all splits at once, so its training counts are exact."""
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLIT_CODES)}")
    y_all = torch.tensor(np.asarray(y, dtype=np.int64))
    a_all = torch.tensor(np.asarray(attr, dtype=np.int64))
    rows_t = torch.tensor(np.asarray(rows, dtype=bool))
    train_t = torch.tensor(np.asarray(train_rows, dtype=bool))
    n_attr = int(dataset_kwargs["n_attr"])
    n_groups = int(dataset_kwargs["n_classes"]) * n_attr
    counts = torch.bincount(group_ids(y_all[train_t], a_all[train_t], n_attr), minlength=n_groups)
    picked = [items[i] for i in np.flatnonzero(np.asarray(rows))]
    return GroupDataset(name, split, picked, y_all[rows_t], a_all[rows_t],
                        train_group_counts=counts, **dataset_kwargs)
