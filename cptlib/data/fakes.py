"""Tiny stand-ins of the real datasets, written in each dataset's own published layout.

They let the real loaders, the download path and the paper notebooks (at smoke scale) run with
no download: ``write_fake`` writes a prepared folder (marked complete), ``fake_archive`` one
archive as a single-archive release or mirror serves it, ``fake_release`` every file of a
dataset's first release under its published name. Each split holds ``n_per_group`` items per
group (MetaShift and ISIC draw val and test from one pool, as the authors do: 4·n_per_group
shelf images per animal, 3·n_per_group test-csv rows per group). Images carry a faint group
signal (background tint = attribute, a central square's colour = label). Same arguments, same
bytes; each call takes well under a second.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cptlib.data import celeba, civilcomments, isic, metashift, multinli
from cptlib.data.download import DataError, read_marker, write_marker
from cptlib.data.sources import get

FAKE_SOURCE = "cptlib.data.fakes"
REAL = ("waterbirds", "celeba", "metashift", "isic", "multinli", "civilcomments")
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes "
    "No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns "
    "Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick "
    "Wearing_Necklace Wearing_Necktie Young"
).split()
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
_EPOCH = (1980, 1, 1, 0, 0, 0)


# --------------------------------------------------------------------------- shared pieces


def _rows(n_classes: int, n_attr: int, n: int, splits: tuple[int, ...],
          rng: np.random.Generator) -> np.ndarray:
    """(split, y, attribute) for ``n`` items per group and split, in a shuffled order."""
    grid = [(s, y, a) for s in splits for y in range(n_classes) for a in range(n_attr)
            for _ in range(n)]
    return np.array(grid, dtype=int)[rng.permutation(len(grid))]


def _image(path: Path, y: int, attr: int, size: int, rng: np.random.Generator) -> None:
    """A JPEG whose background tint encodes the attribute and central square the label."""
    tint = np.array([[0.35, 0.55, 0.25], [0.2, 0.35, 0.7], [0.6, 0.55, 0.45]])[attr % 3]
    img = tint + 0.08 * rng.standard_normal((size, size, 3))
    lo, hi = size // 4, size - size // 4
    img[lo:hi, lo:hi] = [0.9, 0.8, 0.2] if y % 2 else [0.5, 0.2, 0.5]
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)


# --------------------------------------------------------------------------- layouts


def _waterbirds(root: Path, rng: np.random.Generator, n: int, size: int, variant: str) -> None:
    species = ("Fake_Landbird", "Fake_Waterbird")
    places = ("/b/bamboo_forest", "/o/ocean")
    records = []
    for i, (split, y, place) in enumerate(_rows(2, 2, n, (0, 1, 2), rng)):
        name = f"{y + 1:03d}.{species[y]}/{species[y]}_{i:04d}.jpg"
        _image(root / name, y, place, size, rng)
        records.append((i + 1, name, y, split, place, f"{places[place]}/{i:08d}.jpg"))
    pd.DataFrame(records, columns=["img_id", "img_filename", "y", "split", "place",
                                   "place_filename"]).to_csv(root / "metadata.csv", index=False)


def _celeba(root: Path, rng: np.random.Generator, n: int, size: int, variant: str) -> None:
    """``variant``: "txt" (official files), "csv" (Kaggle / WILDS csv), "kaggle" (csv + the
    doubled image folder of Kaggle's archive)."""
    rows = _rows(2, 2, n, (0, 1, 2), rng)
    ids = [f"{i + 1:06d}.jpg" for i in range(len(rows))]
    attrs = np.where(rng.random((len(rows), len(CELEBA_ATTRIBUTES))) < 0.3, 1, -1)
    attrs[:, CELEBA_ATTRIBUTES.index(celeba.TARGET)] = np.where(rows[:, 1] == 1, 1, -1)
    attrs[:, CELEBA_ATTRIBUTES.index(celeba.ATTRIBUTE)] = np.where(rows[:, 2] == 1, 1, -1)
    images = root / celeba.IMAGES / (celeba.IMAGES if variant == "kaggle" else "")
    for image_id, (_, y, male) in zip(ids, rows, strict=True):
        _image(images / image_id, y, male, size, rng)
    if variant == "txt":
        lines = [str(len(ids)), " ".join(CELEBA_ATTRIBUTES) + " "]
        lines += [f"{i} " + " ".join(f"{v:2d}" for v in a) for i, a in zip(ids, attrs, strict=True)]
        (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
        (root / "list_eval_partition.txt").write_text(
            "".join(f"{i} {s}\n" for i, s in zip(ids, rows[:, 0], strict=True)))
        return
    table = pd.DataFrame(attrs, columns=CELEBA_ATTRIBUTES)
    table.insert(0, "image_id", ids)
    table.to_csv(root / "list_attr_celeba.csv", index=False)
    pd.DataFrame({"image_id": ids, "partition": rows[:, 0]}).to_csv(
        root / "list_eval_partition.csv", index=False)


def _metashift(root: Path, rng: np.random.Generator, n: int, size: int, variant: str) -> None:
    folders = [(stage, y, animal, slot, ctx, n if stage == "train" else 4 * n)
               for stage, y, animal, slot, ctx in metashift.folders()]
    folders.append(("train", 0, "cat", 0, "keyboard", 1))  # a context the task does not use
    ids = iter(rng.permutation(10**6)[: sum(f[-1] for f in folders)] + 10**6)
    for stage, y, animal, slot, ctx, count in folders:
        for _ in range(count):
            path = metashift.context_dir(root, stage, animal, ctx) / f"{next(ids)}.jpg"
            _image(path, y, slot, size, rng)


def _isic(root: Path, rng: np.random.Generator, n: int, size: int, variant: str) -> None:
    extra = ["dark_corner", "gel_border", "gel_bubble", "ruler", "ink", "patches"]
    counter = iter(range(10**6))
    for part, per_group in (("train", n), ("val", 1), ("test", 3 * n)):
        records = []
        for _, label, hair in _rows(2, 2, per_group, (0,), rng):
            name = f"ISIC_{next(counter):07d}.jpg"
            _image(root / isic.IMAGES / name, label, hair, size, rng)
            records.append((name, label, hair, *rng.integers(0, 2, len(extra))))
        path = isic.csv_path(root, part)
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(records, columns=["image", "label", "hair", *extra]).to_csv(path, index=False)


_SUBJECTS = ("A man", "The woman", "Two kids", "A dog", "The chef", "Some students")
_ACTIONS = ("walks along", "paints", "looks at", "sits near", "cleans", "photographs")
_OBJECTS = ("the river", "a red car", "the old bridge", "a small house", "the garden")
_NEGATIONS = ("no", "never", "nobody", "nothing")


def _pair(rng: np.random.Generator, negation: bool) -> tuple[str, str]:
    subject, action, obj = (str(rng.choice(w)) for w in (_SUBJECTS, _ACTIONS, _OBJECTS))
    premise = f"{subject} {action} {obj}."
    if not negation:
        return premise, f"{subject} {rng.choice(_ACTIONS)} something, \"NA\" style."
    word = str(rng.choice(_NEGATIONS))
    return premise, f"{word.capitalize()} one {action} {obj}, {word}!"


def _multinli(root: Path, rng: np.random.Generator, n: int, size: int, variant: str) -> None:
    """``variant``: "sentences" (the prepared layout) or "corpus" (group_DRO's metadata and the
    MultiNLI jsonl files, with unlabelled '-' rows that the metadata index skips)."""
    rows = _rows(3, 2, n, (0, 1, 2), rng)
    pairs = [_pair(rng, bool(neg)) for _, _, neg in rows]
    corpus, index = [], []
    for (_, y, _), (s1, s2) in zip(rows, pairs, strict=True):
        if rng.random() < 0.2:
            corpus.append({"gold_label": "-", "sentence1": s1, "sentence2": "unlabelled"})
        index.append(len(corpus))
        corpus.append({"gold_label": multinli.LABELS[y], "sentence1": s1, "sentence2": s2})
    meta = pd.DataFrame({"gold_label": rows[:, 1], "sentence2_has_negation": rows[:, 2],
                         "split": rows[:, 0]}, index=index)
    root.mkdir(parents=True, exist_ok=True)
    meta.to_csv(root / multinli.METADATA)
    if variant == "sentences":
        pd.DataFrame(pairs, columns=["sentence1", "sentence2"]).to_csv(
            root / multinli.SENTENCES, index=False)
        return
    cuts = np.array_split(np.arange(len(corpus)), 3)
    for name, cut in zip(multinli.CORPUS_FILES, cuts, strict=True):
        path = root / "multinli_1.0" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(corpus[i]) + "\n" for i in cut))


def _civilcomments(root: Path, rng: np.random.Generator, n: int, size: int,
                   variant: str) -> None:
    ids = civilcomments.IDENTITIES
    records = []
    for i, (split, y, mention) in enumerate(_rows(2, 2, n, (0, 1, 2), rng)):
        scores = {c: float(rng.choice([0.0, 0.1, 0.4])) for c in ids}
        if mention:
            scores[str(rng.choice(ids))] = float(rng.choice([0.5, 0.8, 1.0]))
        text = ["NA", f'comment {i}, with "quotes"', f"line one\nline two {i}"][i % 3]
        records.append({
            "id": 1000 + i, "comment_text": text, "split": ("train", "val", "test")[split],
            "toxicity": float(rng.choice([0.5, 0.7, 1.0] if y else [0.0, 0.2, 0.49])),
            "severe_toxicity": 0.0, **scores,
            "asian": 1.0 if not mention else 0.0,  # not a WILDS identity: must not count
            "identity_any": int(mention),
        })
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(records).to_csv(root / civilcomments.CSV)


_Writer = Callable[[Path, np.random.Generator, int, int, str], None]
_WRITERS: dict[str, tuple[_Writer, str]] = {  # writer, variant of the prepared layout
    "waterbirds": (_waterbirds, ""),
    "celeba": (_celeba, "txt"),
    "metashift": (_metashift, ""),
    "isic": (_isic, ""),
    "multinli": (_multinli, "sentences"),
    "civilcomments": (_civilcomments, ""),
}
# The unpacked published release: the folder the dataset sits in, and its metadata variant.
_RELEASE: dict[str, tuple[str, str]] = {
    "waterbirds": ("waterbird_complete95_forest2water2", ""),
    "celeba": ("", "txt"),
    "metashift": ("metashifts/MetaDatasetCatDog", ""),
    "isic": ("isic", ""),
    "multinli": ("", "corpus"),
    "civilcomments": ("", ""),
}


def _check(name: str) -> None:
    if name not in _WRITERS:
        raise ValueError(f"no fake for {name!r}; real datasets: {', '.join(REAL)}")


def _write(name: str, root: Path, seed: int, n: int, size: int, variant: str | None) -> None:
    _check(name)
    if n < 1 or size < 8:
        raise ValueError(f"need n_per_group >= 1 and img_size >= 8, got {n} and {size}")
    writer, default = _WRITERS[name]
    root.mkdir(parents=True, exist_ok=True)
    writer(root, np.random.default_rng(seed), n, size, variant or default)


# --------------------------------------------------------------------------- public API


def write_fake(
    name: str,
    root: str | Path,
    seed: int = 0,
    n_per_group: int = 4,
    img_size: int = 32,
    *,
    variant: str | None = None,
) -> Path:
    """Write a tiny prepared ``name`` dataset at ``root``, mark it complete, return ``root``.

    ``variant`` picks a metadata flavour where a dataset has several (CelebA: "txt" official
    files, default; "csv" Kaggle / WILDS files). A stand-in already at ``root`` with the same
    parameters is kept as is; one with other parameters is replaced; any other non-empty
    folder is refused (ValueError), never overwritten.
    """
    root = Path(root)
    params = {"source": FAKE_SOURCE, "seed": seed, "n_per_group": n_per_group,
              "img_size": img_size, "variant": variant}
    if root.is_dir() and any(root.iterdir()):
        try:
            previous = read_marker(root)
        except DataError:
            previous = {}
        if previous.get("source") != FAKE_SOURCE:
            raise ValueError(f"{root} is not empty and holds no cptlib stand-in; not overwriting")
        if previous.get("name") == name and all(previous.get(k) == v for k, v in params.items()):
            return root
        shutil.rmtree(root)
    _write(name, root, seed, n_per_group, img_size, variant)
    write_marker(root, name, **params)
    return root


def _release_tree(name: str, tmp: Path, seed: int, n: int, size: int, variant: str | None) -> None:
    _check(name)
    top, default = _RELEASE[name]
    _write(name, tmp / top, seed, n, size, variant or default)


def fake_archive(
    name: str, path: str | Path, seed: int = 0, n_per_group: int = 4, img_size: int = 32
) -> Path:
    """One archive holding a tiny ``name`` dataset as a single-archive release does (its top
    folder included; CelebA in Kaggle's layout). The suffix of ``path`` picks the format:
    ``.zip``, ``.tar.gz`` / ``.tgz`` or ``.tar``."""
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        variant = "kaggle" if name == "celeba" else None
        _release_tree(name, Path(tmp), seed, n_per_group, img_size, variant)
        return pack(Path(tmp), path)


def fake_release(
    name: str, folder: str | Path, seed: int = 0, n_per_group: int = 4, img_size: int = 32
) -> list[Path]:
    """Every file of ``name``'s first published release, under its published name, in
    ``folder`` (what a by-hand download or a mirror folder holds)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        _release_tree(name, tree, seed, n_per_group, img_size, None)
        for part in get(name).releases[0]:
            dest = folder / part.filename
            if (tree / part.filename).is_file():
                shutil.copyfile(tree / part.filename, dest)
            else:
                stem = _strip_archive_suffix(part.filename)
                pack(tree / stem, dest, prefix=stem)
            out.append(dest)
    return out


def _strip_archive_suffix(filename: str) -> str:
    for suffix in _ARCHIVE_SUFFIXES:
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    raise ValueError(f"{filename} is not an archive name ({', '.join(_ARCHIVE_SUFFIXES)})")


def pack(src: Path, path: Path, prefix: str = "") -> Path:
    """Archive the contents of ``src`` (under ``prefix/`` if given) reproducibly: sorted
    members, fixed times and owners, so the same tree gives the same bytes."""
    files = sorted(p for p in src.rglob("*"))
    names = [str(Path(prefix, p.relative_to(src)).as_posix()) for p in files]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for p, arc in zip(files, names, strict=True):
                info = zipfile.ZipInfo(arc + ("/" if p.is_dir() else ""), _EPOCH)
                info.external_attr = (0o40755 if p.is_dir() else 0o100644) << 16
                zf.writestr(info, b"" if p.is_dir() else p.read_bytes())
        return path
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for p, arc in zip(files, names, strict=True):
            info = tf.gettarinfo(str(p), arcname=arc)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if p.is_file():
                with open(p, "rb") as f:
                    tf.addfile(info, f)
            else:
                tf.addfile(info)
    data = buf.getvalue()
    if path.name.endswith((".tar.gz", ".tgz")):
        data = gzip.compress(data, mtime=0)
    elif not path.name.endswith(".tar"):
        raise ValueError(f"unknown archive format for {path.name}; use one of {_ARCHIVE_SUFFIXES}")
    path.write_bytes(data)
    return path
