"""The embedded datasets: determinism, group counts and proportions, layout, markers, loaders."""

from __future__ import annotations

import hashlib
import json
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from cptlib.data import load
from cptlib.data import synthetic as syn
from cptlib.data import synthetic_text as syt
from cptlib.data.upstream import generate_upstream


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory) -> Path:
    return syn.generate(tmp_path_factory.mktemp("syn") / "synthetic", seed=0, progress=False,
                        **syn.SMOKE)


# ----------------------------------------------------------------------------- synthetic
def test_same_seed_same_bytes_other_seed_other_bytes(smoke_root, tmp_path):
    again = syn.generate(tmp_path / "again", seed=0, progress=False, **syn.SMOKE)
    assert _digests(again) == _digests(smoke_root)
    other = _digests(syn.generate(tmp_path / "other", seed=1, progress=False, **syn.SMOKE))
    ref = _digests(smoke_root)
    images = [k for k in ref if k.endswith(".png")]
    assert sum(other.get(k) != ref[k] for k in images) == len(images)
    assert other["metadata.csv"] != ref["metadata.csv"]


def test_layout_and_marker(smoke_root):
    lines = (smoke_root / "metadata.csv").read_text().splitlines()
    assert lines[0] == "img_filename,y,place,split"
    meta = syn.read_metadata(smoke_root)
    n = sum(syn.SMOKE["counts"]) + 2 * 4 * syn.SMOKE["n_eval_per_group"]  # + val + test
    assert len(meta["y"]) == n
    for name, y in zip(meta["img_filename"], meta["y"], strict=True):
        assert name.startswith(syn.CLASS_NAMES[y] + "/") and (smoke_root / name).is_file()
    marker = json.loads((smoke_root / syn.MARKER).read_text())
    assert marker["params"] == {"seed": 0, "img_size": 32, "counts": list(syn.SMOKE["counts"]),
                                "n_eval_per_group": syn.SMOKE["n_eval_per_group"],
                                "drawing_version": syn.DRAWING_VERSION}
    names = list(meta["img_filename"])
    assert marker["data_sha256"] == syn._sha256_files(smoke_root, names)


def test_waterbirds_counts_and_balance():
    # img_size 8 keeps this fast; counts do not depend on the image size.
    data = syn.generate_arrays(seed=0, img_size=8)
    group = data.y * 2 + data.place
    train = data.split == 0
    assert np.bincount(group[train], minlength=4).tolist() == list(syn.TRAIN_COUNTS)
    agreement = np.mean(data.y[train] == data.place[train])
    assert agreement == pytest.approx(0.95, abs=0.002)
    for code in (1, 2):
        assert np.bincount(group[data.split == code], minlength=4).tolist() == [300] * 4
    assert data.images.shape == (len(group), 8, 8, 3) and data.images.dtype == np.uint8


def test_background_is_the_colour_cue_and_foreground_colour_is_independent():
    data = syn.generate_arrays(seed=0, img_size=16, counts=(200, 200, 200, 200),
                               n_eval_per_group=0)
    img = data.images.astype(float) / 255
    border = np.concatenate([img[:, 0], img[:, -1]], axis=1)  # mostly background
    blue_minus_green = border[..., 2].mean(1) - border[..., 1].mean(1)
    water = data.place == 1
    assert blue_minus_green[water].min() > blue_minus_green[~water].max() - 0.1
    assert np.mean((blue_minus_green > 0.1) == water) > 0.97
    # The object's colour does not tell the class: mean centre colour is similar per class.
    centre = img[:, 6:10, 6:10].mean(axis=(1, 2))
    assert np.abs(centre[data.y == 0].mean(0) - centre[data.y == 1].mean(0)).max() < 0.08


def test_load_splits_and_transforms(smoke_root):
    train = load("synthetic", smoke_root, "train")
    test = load("synthetic", smoke_root, "test")
    assert train.group_counts.tolist() == list(syn.SMOKE["counts"])
    assert test.group_counts.tolist() == [syn.SMOKE["n_eval_per_group"]] * 4
    assert train.train_group_counts.tolist() == test.train_group_counts.tolist()
    assert train.group_names == list(syn.GROUP_NAMES) and train.n_groups == 4
    assert torch.equal(train.groups, train.y * 2 + train.attr)
    x, y, g = test[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and g == 2 * y + int(test.attr[0])
    assert torch.equal(test[0][0], test[0][0])  # no augmentation at evaluation
    raw = np.asarray(load("synthetic", smoke_root, "test", transform=np.asarray)[0][0])
    expected = (torch.tensor(raw).permute(2, 0, 1).float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, expected, atol=1e-6)
    torch.manual_seed(0)
    xs = [train[0][0] for _ in range(20)]  # the random horizontal flip shows up, and only it
    assert any(torch.equal(x, xs[0].flip(2)) for x in xs)
    assert all(torch.equal(x, xs[0]) or torch.equal(x, xs[0].flip(2)) for x in xs)


@pytest.mark.parametrize("split", ["train", "test"])
def test_items_normalised_once_equal_the_default_transform_bit_for_bit(smoke_root, split):
    once = load("synthetic", smoke_root, split)  # tensors normalised as one batch at load
    per_item = load("synthetic", smoke_root, split, transform=syn.default_transform(split))

    def items(dataset):
        torch.manual_seed(3)  # the train flip: the same draws, so the same batches
        return [dataset[i][0] for i in range(len(dataset))]

    assert all(torch.equal(a, b) for a, b in zip(items(once), items(per_item), strict=True))


def test_example_grid(smoke_root):
    grid = syn.example_grid(smoke_root, per_group=3, split="train")
    assert grid.shape == (4 * 32, 3 * 32, 3) and grid.dtype == np.uint8
    assert grid[64:96, 64:96].max() == 0  # group 2 has only 2 training images: padded
    first, _, g = load("synthetic", smoke_root, "train", transform=np.asarray)[0]
    assert np.array_equal(first, grid[32 * g : 32 * (g + 1), :32])  # row g starts with it


def test_marker_required(smoke_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="cpt data synthetic"):
        load("synthetic", tmp_path, "train")
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "metadata.csv").write_text((smoke_root / "metadata.csv").read_text() + "x.png,0,0,0\n")
    (copy / syn.MARKER).write_text((smoke_root / syn.MARKER).read_text())
    with pytest.raises(ValueError, match="does not match its marker"):
        load("synthetic", copy, "train")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        syn.generate(copy.parent, progress=False, **syn.SMOKE)  # non-empty, no marker


def test_ensure_synthetic(tmp_path, monkeypatch):
    monkeypatch.setenv("CPT_DATA", str(tmp_path / "data"))
    root = syn.ensure_synthetic(seed=0, progress=False, **syn.SMOKE)
    assert root == tmp_path / "data" / "synthetic"
    stamp = (root / syn.MARKER).stat().st_mtime_ns
    assert syn.ensure_synthetic(seed=0, progress=False, **syn.SMOKE) == root
    assert (root / syn.MARKER).stat().st_mtime_ns == stamp  # reused, not regenerated
    with pytest.raises(ValueError, match="generated with"):
        syn.ensure_synthetic(seed=1, progress=False, **syn.SMOKE)
    assert not list((tmp_path / "data").glob(".synthetic.partial-*"))


def test_bad_arguments():
    with pytest.raises(ValueError, match="4 group sizes|needs 4"):
        syn.generate_arrays(counts=(1, 2, 3))
    with pytest.raises(ValueError, match="img_size"):
        syn.generate_arrays(img_size=4, counts=(1, 1, 1, 1), n_eval_per_group=0)
    with pytest.raises(ValueError, match="seed"):
        syn.generate_arrays(seed=-1, counts=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="split"):
        syn.load(Path("."), "validation")


# ----------------------------------------------------------------------------- upstream
def test_upstream_is_uniform_independent_and_deterministic():
    train, heldout = generate_upstream(1600, 100, seed=0, img_size=8)
    assert len(train) == 1600 and len(heldout) == 100
    joint = np.bincount(train.shape * 4 + train.background, minlength=32)
    assert joint.min() > 50 - 5 * np.sqrt(50) and joint.max() < 50 + 5 * np.sqrt(50)
    again, _ = generate_upstream(1600, 100, seed=0, img_size=8)
    assert np.array_equal(train.images, again.images)
    other, _ = generate_upstream(1600, 100, seed=1, img_size=8)
    assert not np.array_equal(train.images, other.images)


# ----------------------------------------------------------------------------- synthetic-text
@pytest.fixture(scope="module")
def text_root(tmp_path_factory) -> Path:
    return syt.generate(tmp_path_factory.mktemp("syt") / "synthetic-text", progress=False)


def test_text_determinism(text_root, tmp_path):
    again = syt.generate(tmp_path / "a", progress=False)
    assert _digests(again) == _digests(text_root)
    other = syt.generate(tmp_path / "b", seed=1, progress=False)
    assert _digests(other)["metadata.csv"] != _digests(text_root)["metadata.csv"]


def test_text_counts_and_load(text_root):
    train = load("synthetic-text", text_root, "train")
    val = load("synthetic-text", text_root, "val")
    assert train.group_counts.tolist() == list(syt.TRAIN_COUNTS)
    assert val.group_counts.tolist() == [syt.N_EVAL_PER_GROUP] * 4
    assert float((train.y == train.attr).double().mean()) == pytest.approx(0.95, abs=0.002)
    x, y, g = val[0]
    assert isinstance(x, str) and len(x.split()) >= 4 and g == 2 * y + int(val.attr[0])
    assert len(set(train.items)) > 0.5 * len(train)  # varied sentences, not a handful repeated


def _last_sentiment(text: str) -> int:
    """Polarity of the last sentiment expression (adjective or verdict clause) in ``text``."""
    ends = {}
    for polarity in (0, 1):
        spans = [m.end() for adj in syt._ADJECTIVES[polarity]
                 for m in re.finditer(rf"\b{adj}\b", text)]
        clauses = [c.lower() for c in syt._CLAUSES[polarity]]
        spans += [text.find(c) + len(c) for c in clauses if c in text]
        ends[polarity] = max(spans, default=-1)
    return int(ends[1] > ends[0])


def test_text_cues_are_carried_by_the_right_words(text_root):
    """Topic words only from the attribute's topic; both sentiments appear, the verdict (last)
    one is the label's: counting sentiment words cannot solve the task."""
    data = load("synthetic-text", text_root, "test")
    for text, y, a in zip(data.items, data.y.tolist(), data.attr.tolist(), strict=True):
        low = text.lower()
        words = set(re.findall(r"[a-z']+", low))
        assert words & set(syt._ADJECTIVES[1 - y])  # the aside of the opposite sentiment
        assert _last_sentiment(low) == y
        assert any(s in low for s in syt._SUBJECTS[a])
        assert not any(s in low for s in syt._SUBJECTS[1 - a])


def test_text_marker_and_ensure(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="cpt data synthetic-text"):
        load("synthetic-text", tmp_path, "train")
    monkeypatch.setenv("CPT_DATA", str(tmp_path / "data"))
    root = syt.ensure_synthetic_text(progress=False, **syt.SMOKE)
    assert root == tmp_path / "data" / "synthetic-text"
    assert load("synthetic-text", root, "train").group_counts.tolist() == list(syt.SMOKE["counts"])
    assert syt.ensure_synthetic_text(progress=False, **syt.SMOKE) == root
    with pytest.raises(ValueError, match="generated with"):
        syt.ensure_synthetic_text(seed=2, progress=False, **syt.SMOKE)


# ----------------------------------------------------------------------------- data scripts
@pytest.mark.parametrize("script, module", [("synthetic.py", syn), ("synthetic_text.py", syt)])
def test_data_scripts_generate_smoke(script, module, tmp_path, capsys):
    path = Path(__file__).resolve().parents[1] / "data_scripts" / script
    main = runpy.run_path(str(path), run_name="data_script")["main"]
    assert main(["--root", str(tmp_path / "out"), "--smoke", "--seed", "3", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(tmp_path / "out")
    marker = json.loads((tmp_path / "out" / syn.MARKER).read_text())
    assert marker["params"]["seed"] == 3
    assert marker["params"]["counts"] == list(module.SMOKE["counts"])
