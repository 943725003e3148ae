"""The upstream task the quick backbone is pretrained on: 8 shapes × 4 background families.

Why a *different* task than the downstream benchmark: the frozen features must carry both the
object and the background cue (as ImageNet features do for Waterbirds) without having seen the
downstream correlation. Shapes and backgrounds are uniform and independent here, so neither cue
is a shortcut for the other. Drawing is ``cptlib.data.synthetic.render``: one drawing code path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cptlib.data.synthetic import BACKGROUNDS, SHAPES, UPSTREAM_STYLE, render, rng_for


@dataclass(frozen=True)
class UpstreamData:
    """Images (N, H, W, 3) uint8 with their shape id (0..7) and background id (0..3)."""

    images: np.ndarray
    shape: np.ndarray
    background: np.ndarray

    def __len__(self) -> int:
        return len(self.shape)


def generate_upstream(
    n_train: int, n_heldout: int, seed: int = 0, img_size: int = 32
) -> tuple[UpstreamData, UpstreamData]:
    """Train and held-out sets of the upstream task, in memory (never written to disk).

    Labels are drawn independently and uniformly: every (shape, background) pair is equally
    likely, so held-out accuracy measures each cue on its own.
    """
    if n_train <= 0 or n_heldout < 0:
        raise ValueError(f"need n_train > 0 and n_heldout >= 0, got {n_train}, {n_heldout}")
    rng = rng_for(seed, "upstream")
    n = n_train + n_heldout
    shape = rng.integers(0, len(SHAPES), n)
    background = rng.integers(0, len(BACKGROUNDS), n)
    images = render(shape, background, rng, img_size, UPSTREAM_STYLE)
    parts = (slice(0, n_train), slice(n_train, n))
    train, heldout = (UpstreamData(images[s], shape[s], background[s]) for s in parts)
    return train, heldout
