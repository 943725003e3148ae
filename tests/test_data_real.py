"""The real-dataset loaders on small fixtures of each published layout.

Hand-written fixtures pin the exact group of each row (Waterbirds, CelebA in both metadata
variants, CivilComments); the stand-ins of ``cptlib.data.fakes`` check every loader's splits,
counts and items; the default image transforms are checked for shape and normalisation.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cptlib.data import load
from cptlib.data.download import DataError, safe_extract, write_marker
from cptlib.data.fakes import CELEBA_ATTRIBUTES, REAL, fake_archive, write_fake
from cptlib.data.isic import image_path
from cptlib.data.multinli import PAIR_SEP, finish, has_negation
from cptlib.data.sources import holdout_split
from cptlib.data.transforms import IMAGENET_MEAN, image_transform

SPLITS = ("train", "val", "test")


def _counts(name: str, root: Path) -> dict[str, list[int]]:
    return {s: load(name, root, s).group_counts.tolist() for s in SPLITS}


# --------------------------------------------------------------------------- hand-written


def test_waterbirds_groups_from_metadata(tmp_path):
    (tmp_path / "metadata.csv").write_text(
        "img_id,img_filename,y,split,place,place_filename\n"
        "1,001.Albatross/a1.jpg,0,0,0,/f/forest/1.jpg\n"
        "2,001.Albatross/a2.jpg,0,0,1,/o/ocean/2.jpg\n"
        "3,002.Gull/g1.jpg,1,0,1,/o/ocean/3.jpg\n"
        "4,002.Gull/g2.jpg,1,1,0,/f/forest/4.jpg\n"
        "5,002.Gull/g3.jpg,1,2,1,/o/ocean/5.jpg\n"
        "6,001.Albatross/a3.jpg,0,2,0,/f/forest/6.jpg\n"
    )
    write_marker(tmp_path, "waterbirds")
    train, val, test = (load("waterbirds", tmp_path, s) for s in SPLITS)
    assert train.groups.tolist() == [0, 1, 3] and val.groups.tolist() == [2]
    assert test.groups.tolist() == [3, 0] and test.y.tolist() == [1, 0]
    assert train.items[2] == str(tmp_path / "002.Gull" / "g1.jpg")
    assert [d.train_group_counts.tolist() for d in (train, val, test)] == [[1, 1, 0, 1]] * 3
    assert train.group_names[1] == "landbird/water"
    expected = torch.tensor([1, 1, 0, 1], dtype=torch.float64) / 3
    assert torch.allclose(test.train_group_proportions, expected, atol=1e-12, rtol=0)


# (file, Blond_Hair, Male, partition, expected group = 2·blond + male)
CELEBA_ROWS = [("000001.jpg", 1, 1, 0, 3), ("000002.jpg", -1, 1, 0, 1),
               ("000003.jpg", 1, -1, 0, 2), ("000004.jpg", -1, -1, 1, 0),
               ("000005.jpg", 1, 1, 2, 3), ("000006.jpg", -1, 1, 2, 1)]


def _celeba_values(blond: int, male: int) -> list[int]:
    """All 40 attributes; the neighbours of Blond_Hair and Male carry the opposite values,
    so reading a column off by one changes the groups."""
    values = [-1] * len(CELEBA_ATTRIBUTES)
    for name, v in (("Blond_Hair", blond), ("Male", male)):
        i = CELEBA_ATTRIBUTES.index(name)
        values[i], values[i - 1], values[i + 1] = v, -v, -v
    return values


def _write_celeba(root: Path, variant: str) -> None:
    if variant == "txt":
        lines = [str(len(CELEBA_ROWS)), " ".join(CELEBA_ATTRIBUTES)]
        lines += [f"{f}  " + " ".join(f"{v:2d}" for v in _celeba_values(b, m))
                  for f, b, m, _, _ in CELEBA_ROWS]
        (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
        (root / "list_eval_partition.txt").write_text(
            "".join(f"{f} {p}\n" for f, _, _, p, _ in CELEBA_ROWS))
    else:
        rows = [f"{f}," + ",".join(map(str, _celeba_values(b, m))) for f, b, m, _, _ in CELEBA_ROWS]
        (root / "list_attr_celeba.csv").write_text(
            "image_id," + ",".join(CELEBA_ATTRIBUTES) + "\n" + "\n".join(rows) + "\n")
        (root / "list_eval_partition.csv").write_text(  # another row order: joined by id
            "image_id,partition\n" + "".join(f"{f},{p}\n" for f, _, _, p, _ in CELEBA_ROWS[::-1]))
    write_marker(root, "celeba")


@pytest.mark.parametrize("variant", ["txt", "csv"])
def test_celeba_groups_by_attribute_name(tmp_path, variant):
    _write_celeba(tmp_path, variant)
    got = {s: load("celeba", tmp_path, s) for s in SPLITS}
    for split, code in zip(SPLITS, range(3), strict=True):
        expected = [g for _, _, _, p, g in CELEBA_ROWS if p == code]
        assert got[split].groups.tolist() == expected
    assert got["train"].items[0] == str(tmp_path / "img_align_celeba" / "000001.jpg")
    assert got["test"].train_group_counts.tolist() == [0, 1, 1, 1]


def test_celeba_truncated_attribute_file_is_refused(tmp_path):
    _write_celeba(tmp_path, "txt")
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(DataError, match="rows for a declared 6"):
        load("celeba", tmp_path, "train")


def test_civilcomments_thresholds_and_identity_columns(tmp_path):
    ids = "male,female,LGBTQ,christian,muslim,other_religions,black,white"
    (tmp_path / "all_data_with_identities.csv").write_text(
        f",id,comment_text,split,toxicity,{ids},asian\n"
        "0,1,NA,train,0.5,0,0,0,0,0,0,0,0.5,0\n"          # toxic, identity (0.5 counts)
        '1,2,"hi, ""you""",train,0.49,0.49,0,0,0,0,0,0,0,1\n'  # asian is not a WILDS identity
        '2,3,"two\nlines",train,0.9,,,,,,,,,\n'             # missing identities: no mention
        "3,4,ok,val,0.1,0,0,0,0,0,0.6,0,0,0\n"
        "4,5,x,test,0.0,0,0,0,0,0,0,0,0,0\n"
        "5,6,y,test,1.0,0,1,0,0,0,0,0,0,0\n"
    )
    write_marker(tmp_path, "civilcomments")
    train, val, test = (load("civilcomments", tmp_path, s) for s in SPLITS)
    assert train.groups.tolist() == [3, 0, 2] and val.groups.tolist() == [1]
    assert test.groups.tolist() == [0, 3]
    assert [train[i][0] for i in range(3)] == ["NA", 'hi, "you"', "two\nlines"]
    assert test.train_group_counts.tolist() == [1, 0, 1, 1]


# --------------------------------------------------------------------------- every layout


@pytest.mark.parametrize("name", REAL)
def test_stand_in_loads_with_consistent_groups(tmp_path, name):
    n = 2
    root = write_fake(name, tmp_path / name, n_per_group=n, img_size=16)
    sets = {s: load(name, root, s) for s in SPLITS}
    for ds in sets.values():
        assert len(ds.group_names) == ds.n_groups
        assert torch.equal(ds.groups, ds.y * ds.n_attr + ds.attr)
        assert torch.equal(ds.train_group_counts, sets["train"].group_counts)
        x, y, g = ds[len(ds) - 1]
        assert (y, g) == (int(ds.y[-1]), int(ds.groups[-1]))
        if ds.loader is None:
            assert isinstance(x, str) and x
        else:
            assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    counts = {s: d.group_counts.tolist() for s, d in sets.items()}
    if name == "metashift":  # 4 training contexts; val / test from the shelf pool of 4n each
        assert counts["train"] == [n, n, 0, n, n, 0]
        pool = [a + b for a, b in zip(counts["val"], counts["test"], strict=True)]
        assert pool == [0, 0, 4 * n, 0, 0, 4 * n]
        assert len(sets["val"]) == 8 * n - math.ceil(0.85 * 8 * n)
        assert not set(sets["val"].items) & set(sets["test"].items)
    elif name == "isic":  # val / test from the test csv of 3n per group
        assert counts["train"] == [n] * 4
        assert [a + b for a, b in zip(counts["val"], counts["test"], strict=True)] == [3 * n] * 4
        assert len(sets["val"]) == 12 * n - math.ceil(0.8 * 12 * n)
    else:
        assert all(c == [n] * sets["train"].n_groups for c in counts.values())


def test_stand_ins_are_deterministic_and_fast(tmp_path):
    def tree_digest(root: Path) -> str:
        h = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.name != ".cpt-complete.json":
                h.update(str(p.relative_to(root)).encode() + p.read_bytes())
        return h.hexdigest()

    for name in REAL:
        start = time.perf_counter()
        a = write_fake(name, tmp_path / "a" / name)
        assert time.perf_counter() - start < 2.0, name
        b = write_fake(name, tmp_path / "b" / name)
        c = write_fake(name, tmp_path / "c" / name, seed=1)
        assert tree_digest(a) == tree_digest(b) != tree_digest(c), name
    assert (fake_archive("metashift", tmp_path / "1.tar.gz").read_bytes()
            == fake_archive("metashift", tmp_path / "2.tar.gz").read_bytes())


def test_stand_in_is_reused_replaced_or_refused(tmp_path):
    root = write_fake("metashift", tmp_path / "ms", n_per_group=3)
    marker_time = (root / ".cpt-complete.json").stat().st_mtime_ns
    assert write_fake("metashift", root, n_per_group=3) == root  # same parameters: kept
    assert (root / ".cpt-complete.json").stat().st_mtime_ns == marker_time
    write_fake("metashift", root, n_per_group=1)  # other parameters: no stale images remain
    assert _counts("metashift", root)["train"] == [1, 1, 0, 1, 1, 0]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="not overwriting"):
        write_fake("waterbirds", mine)
    assert (mine / "notes.txt").read_text() == "keep"


def test_stand_in_images_carry_the_group_signal(tmp_path):
    root = write_fake("waterbirds", tmp_path / "wb", n_per_group=3)
    ds = load("waterbirds", root, "test", transform=lambda img: np.asarray(img, dtype=float))
    corner = {g: [] for g in range(4)}
    for i in range(len(ds)):
        x, _, g = ds[i]
        corner[g].append(x[:4, :4].mean(axis=(0, 1)))
    blue = [np.mean([c[2] - c[1] for c in corner[g]]) for g in range(4)]
    assert blue[1] > blue[0] and blue[3] > blue[2]  # water backgrounds are bluer


def test_unknown_split_is_refused(tmp_path):
    root = write_fake("civilcomments", tmp_path / "cc")
    with pytest.raises(ValueError, match="unknown split"):
        load("civilcomments", root, "dev")


# --------------------------------------------------------------------------- dataset rules


def test_holdout_split_matches_scikit_learn():
    from sklearn.model_selection import train_test_split

    for n in (8, 13, 50, 333):
        for test_size in (0.8, 0.85):
            val, test = holdout_split(n, test_size)
            first, second = train_test_split(np.arange(n), test_size=test_size, random_state=0)
            assert np.array_equal(val, np.sort(first)) and np.array_equal(test, np.sort(second))


def test_isic_image_names_map_to_jpg(tmp_path):
    assert image_path(tmp_path, "ISIC_0000013.png").endswith("ISIC_0000013.jpg")
    assert image_path(tmp_path, "ISIC_0000013.jpg").endswith("ISIC_0000013.jpg")


def test_multinli_pairs_and_negation_rule(tmp_path):
    ds = load("multinli", write_fake("multinli", tmp_path / "m"), "train")
    assert all(x.count(PAIR_SEP) == 1 for x in ds.items)
    neg = torch.tensor([has_negation(x.split(PAIR_SEP)[1]) for x in ds.items])
    assert torch.equal(neg.long(), ds.attr)
    assert has_negation("No, never.") and has_negation("I saw nothing!")
    assert not has_negation("Notably, a no-show.")  # group_DRO's tokens: "notably", "noshow"


def test_multinli_refuses_a_misaligned_corpus(tmp_path):
    safe_extract(fake_archive("multinli", tmp_path / "m.tar.gz"), tmp_path / "x")
    root = tmp_path / "x"
    path = root / "multinli_1.0" / "multinli_1.0_dev_matched.jsonl"
    lines = path.read_text().splitlines()
    lines.insert(0, lines.pop())  # shift the rows: labels no longer line up
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="disagree"):
        finish(root)
    assert not (root / "sentences.csv").exists()


# --------------------------------------------------------------------------- transforms


def test_default_transforms_shapes_and_normalisation():
    img = Image.new("RGB", (50, 40), tuple(round(255 * m) for m in IMAGENET_MEAN))
    for split in SPLITS:
        out = image_transform(split)(img)
        assert out.shape == (3, 224, 224)
        assert out.abs().max() < 0.02  # the ImageNet mean colour normalises to ~0
    assert image_transform("train", img_size=32)(img).shape == (3, 32, 32)
    assert image_transform("val", img_size=32, resize=64)(img).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="unknown split"):
        image_transform("dev")
    with pytest.raises(ValueError, match="resize"):
        image_transform("test", img_size=224, resize=200)
