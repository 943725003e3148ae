"""Image preprocessing of the real image datasets, as in the authors' code (method.md).

Train: RandomResizedCrop(scale 0.7-1) + horizontal flip; evaluation: a square resize to
256/224 of the crop size, then a centre crop (group_DRO's and the CPT authors' convention);
ImageNet normalisation. The authors' ISIC transform adds rotations and hue jitter (even at test
time); the study uses this one for ISIC too, which keeps evaluation deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_SPLITS = ("train", "val", "test")


def image_transform(
    split: str,
    img_size: int = 224,
    resize: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Callable[[Image.Image], Any]:
    """The PIL-image -> normalised tensor (3, img_size, img_size) transform of ``split``.

    ``resize`` is the side of the square resize before the evaluation centre crop (default
    ``round(img_size * 256 / 224)``, i.e. 256 for 224).
    """
    from torchvision import transforms as T

    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {_SPLITS}")
    if img_size < 1:
        raise ValueError(f"img_size must be positive, got {img_size}")
    resize = round(img_size * 256 / 224) if resize is None else resize
    if resize < img_size:
        raise ValueError(f"resize ({resize}) must be at least img_size ({img_size})")
    tail = [T.ToTensor(), T.Normalize(mean, std)]
    if split == "train":
        return T.Compose([T.RandomResizedCrop(img_size, scale=(0.7, 1.0)),
                          T.RandomHorizontalFlip(), *tail])
    return T.Compose([T.Resize((resize, resize)), T.CenterCrop(img_size), *tail])


def load_rgb(path: str) -> Image.Image:
    """Open an image file as RGB (the loaders keep paths, so workers open images lazily)."""
    with Image.open(path) as img:
        return img.convert("RGB")


def default_transform(
    split: str, transform: Callable[[Any], Any] | None
) -> Callable[[Any], Any]:
    """``transform`` when given, else the real image datasets' default for ``split``."""
    return transform if transform is not None else image_transform(split)
