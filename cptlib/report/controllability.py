"""The controllability chapter's figures: accuracy against c, paired changes, the trade-off."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence

import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.transforms import Bbox

from cptlib.analysis.controllability import (
    CONTROLLED_FAMILIES,
    c_effect_grids,
    raised_entries,
    tradeoff_data,
)
from cptlib.analysis.frames import group_names, per_group_long, sweep_runs
from cptlib.analysis.labels import CHECKPOINTS, c_order, ordered
from cptlib.analysis.text import Note, nothing
from cptlib.report.style import caption, figure, group_palette, move_legend, palette, renderer

#: Offsets (points) tried for a point's label, nearest first; (dx, dy, horizontal alignment).
_DIRECTIONS = ((1, 0.4, "left"), (1, -1, "left"), (-1, 0.4, "right"), (-1, -1, "right"),
               (0, 1.2, "center"), (0, -1.8, "center"))


def c_sweep_figure(runs: pd.DataFrame) -> Figure | Note:
    """Per-group test accuracy against c for CPT and Scalarized, at the selected and the last
    checkpoint (points: mean over seeds; whiskers: ± SE where there are several)."""
    sweep = sweep_runs(runs)
    if sweep.empty or sweep["uniform_c"].all():
        return nothing("CPT or Scalarized runs with a non-uniform c")
    names = group_names(sweep)
    families = ordered(sweep["family"], CONTROLLED_FAMILIES)
    order = c_order(sweep["c_label"])
    fig, axes = figure(2, len(families), width=min(8.5, 3.6 * len(families) + 1.8),
                       height=7.0, sharey=True)
    for j, family in enumerate(families):
        sub = sweep[sweep["family"] == family]
        for i, checkpoint in enumerate(CHECKPOINTS):
            ax = axes[i, j]
            sns.pointplot(per_group_long(sub, checkpoint), x="c_label", y="acc", hue="group",
                          order=[c for c in order if c in set(sub["c_label"])],
                          hue_order=names, palette=group_palette(names), errorbar="se",
                          dodge=0.4, linestyle="none", markersize=6, ax=ax)
            ax.set_title(f"{family}, {CHECKPOINTS[checkpoint]}")
            ax.set_xlabel("control vector c (1 = uniform)")
            ax.set_ylabel("test accuracy (%)")
            ax.tick_params(axis="x", labelrotation=20)
    move_legend(fig, axes.ravel(), "group")
    return caption(fig, "Per-group test accuracy against the control vector c")


def c_effect_figure(runs: pd.DataFrame, checkpoint: str = "last_test") -> Figure | Note:
    """Heatmaps of the paired change of every group's test accuracy when c changes from 1
    (mean over the paired seeds), one per method; the raised entries of c are outlined."""
    grids = c_effect_grids(runs, checkpoint)
    if not grids:
        return nothing("pairs of a non-uniform-c run and its c = 1 run")
    limit = max(1.0, max(float(g.abs().max().max()) for g in grids.values()))
    rows = max(len(g) for g in grids.values())
    fig, axes = figure(1, len(grids), width=min(8.5, 3.6 * len(grids) + 1.6),
                       height=2.2 + 0.45 * rows)
    for j, (ax, (family, grid)) in enumerate(zip(axes[0], grids.items(), strict=True)):
        with warnings.catch_warnings():  # seaborn 0.13 calls a colormap method matplotlib retires
            warnings.filterwarnings("ignore", message="The set_bad function",
                                    category=PendingDeprecationWarning)
            sns.heatmap(grid, ax=ax, cmap="RdBu", center=0, vmin=-limit, vmax=limit,
                        annot=True, fmt=".1f", cbar=j == len(grids) - 1,
                        cbar_kws={"label": "Δ test accuracy (points)"})
        for i, c in enumerate(grid.index):
            for k in raised_entries(c):
                ax.add_patch(Rectangle((k, i), 1, 1, fill=False, edgecolor="black", lw=2))
        ax.set_title(family)
        ax.set_xlabel("group")
        ax.set_ylabel("control vector c")
        ax.tick_params(axis="x", labelrotation=20)
        ax.tick_params(axis="y", labelrotation=0)
    fig.legend(handles=[Rectangle((0, 0), 1, 1, fill=False, edgecolor="black", lw=2,
                                  label="the raised entry of c")],
               loc="outside lower center", frameon=False)
    return caption(fig, "Change of each group's test accuracy against c = 1, same seed "
                        f"({CHECKPOINTS[checkpoint]})")


def _overlap(box: Bbox, others: list[Bbox]) -> float:
    """Total area ``box`` shares with ``others`` (display units)."""
    total = 0.0
    for other in others:
        w = min(box.x1, other.x1) - max(box.x0, other.x0)
        h = min(box.y1, other.y1) - max(box.y0, other.y0)
        total += max(w, 0.0) * max(h, 0.0)
    return total


def place_labels(ax: Axes, points: list[tuple[float, float, str]],
                 avoid: Sequence[tuple[float, float]] = (), *, fontsize: float = 7,
                 marker_px: float = 9.0) -> list:
    """Annotate data points so that no two labels overlap and no label covers a point.

    Greedy: each label takes the first offset (nearest first, then farther out, with a leader
    line) whose box is clear of the labels already placed, of every labelled point and of the
    unlabelled points in ``avoid``; when none is
    clear, the one with the least overlap. The figure's layout is fixed first, so the boxes are
    measured where they will be drawn; labels do not take part in the layout afterwards.
    """
    measure = renderer(ax.figure)
    marks = [Bbox.from_bounds(x - marker_px / 2, y - marker_px / 2, marker_px, marker_px)
             for x, y in (ax.transData.transform(xy)
                          for xy in [*((px, py) for px, py, _ in points), *avoid])]
    placed, texts = [], []
    for px, py, text in sorted(points, key=lambda p: (p[0], p[1])):
        best = None
        for radius, (dx, dy, ha) in itertools.product((6, 16, 28, 42), _DIRECTIONS):
            note = ax.annotate(text, (px, py), xytext=(dx * radius, dy * radius),
                               textcoords="offset points", fontsize=fontsize, ha=ha,
                               va="center", annotation_clip=False)
            box = note.get_window_extent(measure).expanded(1.05, 1.1)
            cost = _overlap(box, placed) + _overlap(box, marks)
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, note, box, radius)
            else:
                note.remove()
            if cost == 0:
                break
        _, note, box, radius = best
        if radius > 6:
            note.remove()
            note = ax.annotate(text, (px, py), xytext=note.xyann, textcoords="offset points",
                               fontsize=fontsize, ha=note.get_ha(), va="center",
                               annotation_clip=False,
                               arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6})
        note.set_in_layout(False)
        placed.append(box)
        texts.append(note)
    return texts


def tradeoff_figure(runs: pd.DataFrame, checkpoint: str = "test") -> Figure | Note:
    """Worst-group against average test accuracy, one point per run (non-uniform c labelled,
    the labels placed so that none overlaps another)."""
    data = tradeoff_data(runs, checkpoint)
    if data.empty:
        return nothing("runs")
    methods = ordered(data["method"])
    fig, axes = figure(width=8.5, height=5.2)
    ax = axes[0, 0]
    sns.scatterplot(data, x="avg", y="wga", hue="method", hue_order=methods,
                    palette=palette(methods), style="control vector",
                    style_order=["c = 1", "c ≠ 1"], s=70, ax=ax)
    ax.set_xlabel("test average accuracy (%), training-weighted")
    ax.set_ylabel("test worst-group accuracy (%)")
    ax.margins(0.12)
    move_legend(fig, [ax], "", below=True)  # on the right, it would run into the title
    caption(fig, f"Worst-group against average accuracy, every run\n"
                 f"(test, {CHECKPOINTS[checkpoint]}; labels: c)")
    labelled, others = data[~data["uniform_c"]], data[data["uniform_c"]]
    place_labels(ax, [(r["avg"], r["wga"], f"({r['c_label']})") for _, r in labelled.iterrows()],
                 avoid=list(zip(others["avg"], others["wga"], strict=True)))
    return fig
