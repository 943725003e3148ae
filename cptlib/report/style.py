"""The book's look: one colour per method family across every chapter, and figure helpers.

Nothing changes matplotlib's global state at import; a notebook calls ``apply()`` once.
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.backend_bases import RendererBase
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure

from cptlib.analysis.labels import FAMILIES, label_family

#: One colour per method family, six distinct hues (blue, cyan, green, purple, grey, red).
PALETTE: dict[str, str] = dict(zip(FAMILIES, (
    "#1f77b4", "#17becf", "#2ca02c", "#9467bd", "#7f7f7f", "#d62728"), strict=True))
#: Colours for families the palette does not know (a new method), in order of appearance.
EXTRA = ("#8c564b", "#e377c2", "#bcbd22", "#ff7f0e")


def apply() -> None:
    """The book's theme for every figure drawn afterwards in this process."""
    sns.set_theme(style="whitegrid", context="notebook", palette=list(PALETTE.values()))


def _lighter(colour: str, amount: float = 0.45) -> str:
    """The same hue, paler: a family's variant with another sampling exponent α or step size."""
    h, lightness, s = colorsys.rgb_to_hls(*to_rgb(colour))
    return to_hex(colorsys.hls_to_rgb(h, lightness + (1 - lightness) * amount, s))


def colour(name: str) -> str | None:
    """The colour of a label or family (``CPT(c=1)`` → CPT's); None for an unknown one."""
    family = label_family(name)
    base, sep, _ = family.partition(" (")  # a variant: "CPT (α=2)", "GroupDRO (η=0.1)"
    if family in PALETTE:
        return PALETTE[family]
    if sep and base in PALETTE:
        return _lighter(PALETTE[base])
    return None


def palette(names: Iterable[str]) -> dict[str, str]:
    """A colour for each of ``names``: the family's, else the next free extra colour."""
    out, extra = {}, iter(EXTRA * 4)
    for name in dict.fromkeys(names):
        out[name] = colour(name) or next(extra)
    return out


def group_palette(names: Sequence[str]) -> dict[str, Any]:
    """Colours of the groups of a dataset (figures whose hue is the group, not the method)."""
    return dict(zip(names, sns.color_palette("colorblind", len(names)), strict=True))


def figure(nrows: int = 1, ncols: int = 1, *, width: float = 9.0, height: float = 4.5,
           **kwargs: Any) -> tuple[Figure, np.ndarray]:
    """A figure detached from pyplot: a notebook shows it once, where the cell returns it."""
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(width, height),
                             layout="constrained", **kwargs)
    plt.close(fig)
    return fig, axes


def renderer(fig: Figure) -> RendererBase:
    """A renderer to measure text with, after fixing the layout (a figure closed from pyplot
    keeps a bare canvas, so it gets an Agg one: that is what the notebook's PNG uses)."""
    if not hasattr(fig.canvas, "get_renderer"):
        FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    return fig.canvas.get_renderer()


def caption(fig: Figure, title: str) -> Figure:
    """Give ``fig`` the title that serves as its caption (and as the figure's label)."""
    fig.suptitle(title)
    fig.set_label(title.replace("\n", " "))
    return fig


def move_legend(fig: Figure, axes: Iterable[Any], title: str, below: bool = False) -> None:
    """One legend for the whole figure, outside the panels (right, or below for wide figures),
    from the first panel that has one."""
    handles, labels = [], []
    for ax in axes:
        legend = ax.get_legend()
        if legend is not None:
            if not handles:
                handles, labels = ax.get_legend_handles_labels()
            legend.remove()
    if handles:
        where = {"loc": "outside lower center", "ncols": min(len(labels), 4)} if below else {
            "loc": "outside right upper"}
        fig.legend(handles, labels, title=title, frameon=False, **where)
