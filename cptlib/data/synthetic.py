"""The embedded image benchmark ``synthetic``: a synthetic Waterbirds generated from a seed.

Why: the quick and smoke profiles need a group-robustness benchmark with no download. As in
Waterbirds, y is the foreground object (two bird-like shapes), the attribute ``place`` is the
background family (land / water), P(place = y) ≈ 0.95 in train with Waterbirds' group counts,
and val / test are group-balanced. Backgrounds fill the image and differ in colour while the
object is small (``DOWNSTREAM_STYLE``), so the background is the easier cue and ERM leans on it.

This module also holds the vectorised drawing code (``render``) that the upstream pretraining
task (``cptlib.data.upstream``) shares, and the small completion-marker helpers that the
embedded text task reuses. Settings come from ../shared/prototype-findings.md, except the
downstream object size (see ``Style``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cptlib import _io
from cptlib._env import show_progress
from cptlib.data.download import MARKER as DATA_MARKER
from cptlib.data.groups import GroupDataset
from cptlib.data.partials import preparing
from cptlib.paths import data_root

# ----------------------------------------------------------------------------- drawing
SHAPES = ("longbird", "neckbird", "square", "triangle", "ring", "cross", "crescent", "diamond")
BACKGROUNDS = ("land", "water", "desert", "snow")

# Per-family base colours: two anchors mixed by a random t, then jittered.
_BG_COLOURS = {
    "land": ((0.24, 0.46, 0.16), (0.46, 0.34, 0.18)),  # greens .. browns
    "water": ((0.14, 0.33, 0.66), (0.20, 0.52, 0.72)),  # deep .. light blue
    "desert": ((0.84, 0.69, 0.42), (0.72, 0.50, 0.30)),  # sand .. ochre
    "snow": ((0.90, 0.92, 0.96), (0.74, 0.78, 0.86)),  # white .. grey-blue
}


@dataclass(frozen=True)
class Style:
    """Ranges of the random drawing parameters (fractions of the image side, radians).

    Two styles share one drawing code path: the upstream pretraining task draws large objects;
    the downstream benchmark draws small ones (as birds are small in Waterbirds' scenes), which
    makes the object the harder cue for frozen features. Measured with the quick backbone's
    linear probe: at the upstream sizes ERM's worst-group accuracy was 0.81 (no shortcut), at
    the downstream sizes about 0.5, with group-balanced weights recovering about 0.8.
    """

    half_size: tuple[float, float] = (0.22, 0.38)
    rotation: float = 0.5  # each way
    opacity: tuple[float, float] = (0.85, 1.0)
    centre_jitter: float = 0.08  # each way
    texture_strength: float = 0.15
    pixel_noise: float = 0.03
    colour_jitter: float = 0.04
    brightness: tuple[float, float] = (0.85, 1.15)


UPSTREAM_STYLE = Style()
DOWNSTREAM_STYLE = Style(half_size=(0.12, 0.20))
# Bump when the drawing code or a style changes: it is part of the backbone's cache key.
DRAWING_VERSION = 1
_SUPERSAMPLE = 2  # shape edges are anti-aliased by rendering the mask at 2x

# Normalisation used by the default transforms and by the backbone's pretraining (one place,
# so the frozen features see the same input statistics upstream and downstream).
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def _segment_dist(u: np.ndarray, v: np.ndarray, a: tuple[float, float], b: tuple[float, float]):
    """Distance from each point (u, v) to the segment a-b."""
    du, dv = b[0] - a[0], b[1] - a[1]
    t = np.clip(((u - a[0]) * du + (v - a[1]) * dv) / (du * du + dv * dv), 0.0, 1.0)
    return np.hypot(u - a[0] - t * du, v - a[1] - t * dv)


def _disc(u: np.ndarray, v: np.ndarray, cu: float, cv: float, r: float) -> np.ndarray:
    return (u - cu) ** 2 + (v - cv) ** 2 <= r * r


def _longbird(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Elongated body, fanned tail behind, head and beak in front (a 'landbird')."""
    body = (u / 0.72) ** 2 + (v / 0.3) ** 2 <= 1.0
    tail = (u <= -0.55) & (u >= -1.0) & (np.abs(v + 0.05) <= (-0.55 - u) * 0.8)
    head = _disc(u, v, 0.72, -0.28, 0.22)
    beak = (u >= 0.9) & (u <= 1.1) & (np.abs(v + 0.28) <= (1.1 - u) * 0.4)
    return body | tail | head | beak


def _neckbird(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Round body, long thin neck rising to a small head (a 'waterbird')."""
    body = _disc(u, v, -0.2, 0.4, 0.5)
    neck = _segment_dist(u, v, (0.15, 0.2), (0.35, -0.72)) <= 0.1
    head = _disc(u, v, 0.45, -0.78, 0.17)
    beak = (u >= 0.55) & (u <= 0.85) & (np.abs(v + 0.78) <= (0.85 - u) * 0.3)
    return body | neck | head | beak


def _mask_fns() -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    r2 = lambda u, v: u * u + v * v  # noqa: E731
    return {
        "longbird": _longbird,
        "neckbird": _neckbird,
        "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.68,
        "triangle": lambda u, v: (v <= 0.6) & (np.abs(u) <= (v + 0.85) * 0.62),
        "ring": lambda u, v: (r2(u, v) <= 0.8**2) & (r2(u, v) >= 0.45**2),
        "cross": lambda u, v: ((np.abs(u) <= 0.24) & (np.abs(v) <= 0.85))
        | ((np.abs(v) <= 0.24) & (np.abs(u) <= 0.85)),
        "crescent": lambda u, v: (r2(u, v) <= 0.8**2) & ~_disc(u, v, 0.38, -0.12, 0.62),
        "diamond": lambda u, v: np.abs(u) / 0.6 + np.abs(v) / 0.95 <= 1.0,
    }


_MASKS = _mask_fns()


@dataclass(frozen=True)
class _Draws:
    """Every random number of a batch of images, drawn up front in a fixed order (determinism)."""

    bg_t: np.ndarray
    bg_jitter: np.ndarray
    brightness: np.ndarray
    freq: np.ndarray
    freq2: np.ndarray
    phase: np.ndarray
    angle: np.ndarray
    speckle: np.ndarray
    fg_colour: np.ndarray
    opacity: np.ndarray
    centre: np.ndarray
    half: np.ndarray
    rotation: np.ndarray
    mirror: np.ndarray
    noise: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, img_size: int, style: Style) -> _Draws:
        u = rng.uniform
        return cls(
            bg_t=u(0, 1, n),
            bg_jitter=rng.normal(0, style.colour_jitter, (n, 3)),
            brightness=u(*style.brightness, n),
            freq=u(2.0, 5.0, n),
            freq2=u(0.5, 1.5, n),
            phase=u(0, 2 * np.pi, (n, 2)),
            angle=rng.choice([-1.0, 1.0], n) * u(0.5, 1.0, n),
            speckle=rng.random((n, img_size, img_size)),
            fg_colour=u(0.03, 0.97, (n, 3)),
            opacity=u(*style.opacity, n),
            centre=u(-style.centre_jitter, style.centre_jitter, (n, 2)),
            half=u(*style.half_size, n),
            rotation=u(-style.rotation, style.rotation, n),
            mirror=rng.random(n) < 0.5,
            noise=rng.normal(0, style.pixel_noise, (n, img_size, img_size, 3)),
        )

    def take(self, idx: np.ndarray) -> _Draws:
        return _Draws(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in image-side units, x to the right and y down, in [-0.5, 0.5]."""
    c = (np.arange(size) + 0.5) / size - 0.5
    return np.meshgrid(c, c, indexing="xy")


def _texture(name: str, d: _Draws, img_size: int) -> np.ndarray:
    """Texture in [-1, 1] of family ``name`` for the images of ``d``: land vertical stripes,
    water horizontal waves, desert diagonal dunes, snow speckles."""
    x, y = (c[None] for c in _grid(img_size))
    f, f2 = d.freq[:, None, None], d.freq2[:, None, None]
    p0, p1 = d.phase[:, 0, None, None], d.phase[:, 1, None, None]
    two_pi = 2 * np.pi
    if name == "land":
        return np.sin(two_pi * f * x + p0 + 0.6 * np.sin(two_pi * f2 * y + p1))
    if name == "water":
        return np.sin(two_pi * f * y + p0 + 0.8 * np.sin(two_pi * f2 * x + p1))
    if name == "desert":
        cos, sin = np.cos(d.angle)[:, None, None], np.sin(d.angle)[:, None, None]
        return np.sin(two_pi * 0.6 * f * (x * cos + y * sin) + p0)
    return np.where(d.speckle > 0.88, 1.0, -0.15)  # snow


def _textures(family: np.ndarray, d: _Draws, img_size: int) -> np.ndarray:
    tex = np.empty((len(family), img_size, img_size))
    for b, name in enumerate(BACKGROUNDS):
        sel = np.flatnonzero(family == b)
        if len(sel):
            tex[sel] = _texture(name, d.take(sel), img_size)
    return tex


def _backgrounds(family: np.ndarray, d: _Draws, img_size: int, strength: float) -> np.ndarray:
    lo = np.array([_BG_COLOURS[b][0] for b in BACKGROUNDS])[family]
    hi = np.array([_BG_COLOURS[b][1] for b in BACKGROUNDS])[family]
    colour = (lo + (hi - lo) * d.bg_t[:, None] + d.bg_jitter) * d.brightness[:, None]
    tex = _textures(family, d, img_size)
    return colour[:, None, None, :] * (1.0 + strength * tex[..., None])


def _coverage(shape: np.ndarray, d: _Draws, img_size: int) -> np.ndarray:
    """Fraction of each pixel covered by the rotated, scaled, shifted shape, in [0, 1]."""
    hi = img_size * _SUPERSAMPLE
    x, y = _grid(hi)
    cos, sin = np.cos(d.rotation)[:, None, None], np.sin(d.rotation)[:, None, None]
    dx = x[None] - d.centre[:, 0, None, None]
    dy = y[None] - d.centre[:, 1, None, None]
    half = d.half[:, None, None]
    u = (dx * cos + dy * sin) / half
    v = (-dx * sin + dy * cos) / half
    u = np.where(d.mirror[:, None, None], -u, u)
    mask = np.zeros(u.shape, dtype=bool)
    for s, name in enumerate(SHAPES):
        sel = shape == s
        if sel.any():
            mask[sel] = _MASKS[name](u[sel], v[sel])
    s = _SUPERSAMPLE
    return mask.reshape(-1, img_size, s, img_size, s).mean(axis=(2, 4))


def render(
    shapes: np.ndarray,
    backgrounds: np.ndarray,
    rng: np.random.Generator,
    img_size: int = 32,
    style: Style = UPSTREAM_STYLE,
    chunk: int = 512,
) -> np.ndarray:
    """Images (N, img_size, img_size, 3) uint8 of shape ``shapes[i]`` on background family
    ``backgrounds[i]`` (indices into ``SHAPES`` / ``BACKGROUNDS``); all randomness from ``rng``.

    Foreground colour is uniform and independent of shape and background, so only the outline
    identifies the object.
    """
    shapes, backgrounds = np.asarray(shapes, np.int64), np.asarray(backgrounds, np.int64)
    if shapes.shape != backgrounds.shape or shapes.ndim != 1:
        raise ValueError("shapes and backgrounds must be 1-D arrays of the same length")
    if len(shapes) and (shapes.min() < 0 or shapes.max() >= len(SHAPES)):
        raise ValueError(f"shape ids must lie in 0..{len(SHAPES) - 1}")
    if len(backgrounds) and (backgrounds.min() < 0 or backgrounds.max() >= len(BACKGROUNDS)):
        raise ValueError(f"background ids must lie in 0..{len(BACKGROUNDS) - 1}")
    if img_size < 8:
        raise ValueError(f"img_size must be at least 8, got {img_size}")
    draws = _Draws.draw(rng, len(shapes), img_size, style)
    out = np.empty((len(shapes), img_size, img_size, 3), dtype=np.uint8)
    for start in range(0, len(shapes), chunk):
        idx = np.arange(start, min(start + chunk, len(shapes)))
        d = draws.take(idx)
        bg = _backgrounds(backgrounds[idx], d, img_size, style.texture_strength)
        alpha = (_coverage(shapes[idx], d, img_size) * d.opacity[:, None, None])[..., None]
        img = bg * (1 - alpha) + d.fg_colour[:, None, None, :] * alpha + d.noise
        out[idx] = np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)
    return out


def to_normalized_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NHWC images -> float NCHW, normalised exactly as the default transforms do."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def rng_for(seed: int, stream: str) -> np.random.Generator:
    """A generator for (seed, stream): the downstream and upstream tasks never share draws."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    key = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([seed, key]))


# ----------------------------------------------------------------------------- the benchmark
CLASS_NAMES = ("landbird", "waterbird")  # y: the long-bodied shape vs the long-necked shape
PLACE_NAMES = ("land", "water")  # the spurious attribute: background family
GROUP_NAMES = tuple(f"{c}/{p}" for c in CLASS_NAMES for p in PLACE_NAMES)
TRAIN_COUNTS = (3498, 184, 56, 1057)  # Waterbirds' training counts, g = 2 y + place
N_EVAL_PER_GROUP = 300
SMOKE = {"counts": (50, 3, 2, 15), "n_eval_per_group": 5}  # CI-sized: ~90 images, milliseconds
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
MARKER = DATA_MARKER  # one name for every dataset folder's completion marker
_FORMAT = 1


@dataclass(frozen=True)
class SyntheticArrays:
    """The benchmark in memory: images (N, H, W, 3) uint8 and per-image y, place, split code."""

    images: np.ndarray
    y: np.ndarray
    place: np.ndarray
    split: np.ndarray


def _check_counts(counts: Sequence[int], n_eval_per_group: int) -> tuple[int, ...]:
    counts = tuple(int(c) for c in counts)
    if len(counts) != len(GROUP_NAMES):
        raise ValueError(f"counts needs {len(GROUP_NAMES)} group sizes {GROUP_NAMES}, got {counts}")
    if min(counts) < 0 or n_eval_per_group < 0:
        raise ValueError("group counts and n_eval_per_group must be non-negative")
    if sum(counts) == 0:
        raise ValueError("the training split would be empty")
    return counts


def generate_arrays(
    seed: int = 0,
    img_size: int = 32,
    counts: Sequence[int] | None = None,
    n_eval_per_group: int = N_EVAL_PER_GROUP,
) -> SyntheticArrays:
    """The benchmark without touching the disk (used by ``generate`` and the backbone's gates).

    Items are ordered by split (train, val, test) and shuffled within a split.
    """
    counts = _check_counts(TRAIN_COUNTS if counts is None else counts, n_eval_per_group)
    rng = rng_for(seed, "synthetic")
    per_split = [counts, (n_eval_per_group,) * 4, (n_eval_per_group,) * 4]
    groups, split = [], []
    for code, sizes in enumerate(per_split):
        g = np.repeat(np.arange(4), sizes)
        groups.append(g[rng.permutation(len(g))])
        split.append(np.full(len(g), code))
    g, split = np.concatenate(groups), np.concatenate(split)
    y, place = g // 2, g % 2
    images = render(y, place, rng, img_size, DOWNSTREAM_STYLE)  # shape = y, background = place
    return SyntheticArrays(images=images, y=y, place=place, split=split)


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _sha256_files(root: Path, names: Iterable[str]) -> str:
    """One digest over (name, bytes) of the files, in the order given."""
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\0")
        h.update(hashlib.sha256((root / name).read_bytes()).digest())
    return h.hexdigest()


def write_marker(root: Path, dataset: str, params: Mapping[str, Any], data_files: Iterable[str],
                 metadata: str) -> dict[str, Any]:
    """Write the completion marker: parameters plus SHA-256 of the metadata and the data files.

    Written last (a folder without it is half-prepared) and with no timestamp, so that the same
    seed gives the same bytes everywhere.
    """
    marker = {
        "dataset": dataset,
        "format": _FORMAT,
        "params": dict(params),
        "metadata_sha256": hashlib.sha256((root / metadata).read_bytes()).hexdigest(),
        "data_sha256": _sha256_files(root, data_files),
    }
    _io.write_json(root / MARKER, marker, sort_keys=True)
    return marker


def read_marker(root: Path, dataset: str, metadata: str, command: str) -> dict[str, Any]:
    """The marker of a completed ``dataset`` folder; a clear error when missing or stale."""
    path = Path(root) / MARKER
    if not path.is_file():
        raise FileNotFoundError(
            f"{root} is not a completed {dataset!r} dataset (no {MARKER}); run `{command}` first"
        )
    marker = json.loads(path.read_text())
    if marker.get("dataset") != dataset:
        raise ValueError(f"{root} holds dataset {marker.get('dataset')!r}, not {dataset!r}")
    digest = hashlib.sha256((Path(root) / metadata).read_bytes()).hexdigest()
    if digest != marker.get("metadata_sha256"):
        raise ValueError(f"{root}/{metadata} does not match its marker; run `{command}` again")
    return marker


def publish(root: Path, fill: Callable[[Path], None]) -> Path:
    """Build a dataset in a temporary sibling folder with ``fill``, then move it to ``root``.

    A crash leaves nothing at ``root`` that looks finished; an existing completed dataset at
    ``root`` is replaced, but a non-empty folder without a marker is never deleted.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with preparing(root):  # also removes what a killed preparation of ``root`` left behind
        if root.exists() and any(root.iterdir()) and not (root / MARKER).is_file():
            raise FileExistsError(
                f"{root} exists, is not empty and has no {MARKER}: refusing to overwrite it; "
                "remove it or choose another --root"
            )
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
        try:
            fill(tmp)
            if root.exists():
                shutil.rmtree(root)
            os.replace(tmp, root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return root


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _params(seed: int, img_size: int, counts: Sequence[int] | None, n_eval: int) -> dict:
    """The generator's parameters as recorded in the marker (JSON types)."""
    counts = TRAIN_COUNTS if counts is None else counts
    return {"seed": int(seed), "img_size": int(img_size), "counts": [int(c) for c in counts],
            "n_eval_per_group": int(n_eval), "drawing_version": DRAWING_VERSION}


def generate(
    root: str | Path,
    seed: int = 0,
    img_size: int = 32,
    counts: Sequence[int] | None = None,
    n_eval_per_group: int = N_EVAL_PER_GROUP,
    progress: bool = True,
) -> Path:
    """Write the benchmark to ``root`` in the Waterbirds layout and return ``root``.

    ``root/<class>/<index>.png`` images, ``metadata.csv`` (img_filename, y, place, split with
    0/1/2 = train/val/test) and the marker ``.cpt-complete.json``. Same arguments, same bytes.
    ``counts`` are the four training group sizes (default Waterbirds'; ``SMOKE`` for CI).
    """
    from tqdm import tqdm

    params = _params(seed, img_size, counts, n_eval_per_group)
    data = generate_arrays(seed, img_size, counts, n_eval_per_group)

    def fill(tmp: Path) -> None:
        names = []
        for c in CLASS_NAMES:
            (tmp / c).mkdir()
        bar = tqdm(range(len(data.y)), desc="synthetic: writing images", unit="img",
                   disable=not show_progress(progress))
        for i in bar:
            name = f"{CLASS_NAMES[data.y[i]]}/{i:05d}.png"
            (tmp / name).write_bytes(_png_bytes(data.images[i]))
            names.append(name)
        rows = zip(names, data.y.tolist(), data.place.tolist(), data.split.tolist(), strict=True)
        _write_csv(tmp / "metadata.csv", ("img_filename", "y", "place", "split"), rows)
        write_marker(tmp, "synthetic", params, names, "metadata.csv")

    return publish(Path(root), fill)



def ensure_synthetic(
    root: str | Path | None = None,
    seed: int = 0,
    img_size: int = 32,
    counts: Sequence[int] | None = None,
    n_eval_per_group: int = N_EVAL_PER_GROUP,
    progress: bool = True,
) -> Path:
    """The benchmark's folder (default ``data_root()/"synthetic"``), generated if missing.

    A completed folder generated with other parameters is an error rather than silently reused
    or overwritten (it may be a user's deliberate ``cpt data synthetic --seed N``).
    """
    if root is None:
        root = data_root() / "synthetic"
    root = Path(root)
    want = _params(seed, img_size, counts, n_eval_per_group)
    if not (root / MARKER).is_file():
        return generate(root, seed, img_size, counts, n_eval_per_group, progress)
    have = read_marker(root, "synthetic", "metadata.csv", "cpt data synthetic")["params"]
    if have != want:
        raise ValueError(
            f"{root} holds the synthetic benchmark generated with {have}, not {want}; "
            f"pass another root or regenerate with `cpt data synthetic --root {root}`"
        )
    return root


def default_transform(split: str) -> Callable[[Any], torch.Tensor]:
    """To tensor + normalisation; for train also a random horizontal flip (method.md's
    augmentation minus the crop, which would cut the small shapes at 32 px)."""
    from torchvision import transforms as T

    steps: list[Callable[[Any], Any]] = [T.RandomHorizontalFlip()] if split == "train" else []
    steps += [T.ToTensor(), T.Normalize(MEAN, STD)]
    return T.Compose(steps)


def _flip_for(split: str) -> Callable[[Any], Any] | None:
    """The part of ``default_transform`` left once images are normalised tensors: the train
    flip (the same draw from torch's generator as on the PIL image, so the same batches)."""
    from torchvision import transforms as T

    return T.RandomHorizontalFlip() if split == "train" else None


def _open_rgb(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def read_metadata(root: Path) -> dict[str, np.ndarray]:
    """metadata.csv as columns (img_filename as a str array, the rest as int arrays)."""
    with open(root / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    cols = {"img_filename": np.array([r["img_filename"] for r in rows], dtype=object)}
    for key in ("y", "place", "split"):
        cols[key] = np.array([int(r[key]) for r in rows], dtype=np.int64)
    return cols


def load(root: Path, split: str, transform: Callable[[Any], Any] | None = None) -> GroupDataset:
    """Split ``split`` of a generated benchmark as a ``GroupDataset``.

    The images are decoded once, here (7,195 images of 32 px: about 20 MB and well under a
    second), so training steps do not spend an eighth of their time re-reading PNG files. With
    the default transform they are also normalised once, as one batch (``to_normalized_tensor``
    computes what ``default_transform`` does, bit for bit): items are then float tensors and
    only the train flip runs per item, which saves a step a tenth of its time. A ``transform``
    given here gets PIL images, as for every other dataset.
    """
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLIT_CODES)}")
    root = Path(root)
    read_marker(root, "synthetic", "metadata.csv", f"cpt data synthetic --root {root}")
    meta = read_metadata(root)
    train = meta["split"] == 0
    train_counts = np.bincount(meta["y"][train] * 2 + meta["place"][train], minlength=4)
    sel = meta["split"] == SPLIT_CODES[split]
    items: list[Any] = [_open_rgb(root / p) for p in meta["img_filename"][sel]]
    if transform is None and items:
        items = list(to_normalized_tensor(np.stack([np.asarray(im) for im in items])))
        transform = _flip_for(split)
    return GroupDataset(
        "synthetic", split, items,
        meta["y"][sel], meta["place"][sel], n_classes=2, n_attr=2, group_names=GROUP_NAMES,
        train_group_counts=torch.as_tensor(train_counts), transform=transform,
    )


def example_grid(root: str | Path, per_group: int = 8, split: str = "train") -> np.ndarray:
    """The first ``per_group`` images of each group of a generated benchmark as one uint8
    array (rows = groups in ``GROUP_NAMES`` order), for the book's figure of examples."""
    data = load(Path(root), split, transform=np.asarray)
    rows = []
    for g in range(data.n_groups):
        idx = torch.nonzero(data.groups == g).flatten()[:per_group].tolist()
        if not idx:
            raise ValueError(f"group {GROUP_NAMES[g]!r} has no images in split {split!r}")
        images = [data[i][0] for i in idx]
        images += [np.zeros_like(images[0])] * (per_group - len(images))
        rows.append(np.concatenate(images, axis=1))
    return np.concatenate(rows, axis=0)
