"""The trade-offs chapter's figures: every family's front, in accuracy and in per-group losses,
and how close CPT and Scalarized run to their rays over training."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from cptlib.analysis.control import control_over_training
from cptlib.analysis.families import FRONT_FAMILIES, front_points, loss_points
from cptlib.analysis.frames import group_names, sweep_runs
from cptlib.analysis.labels import c_order
from cptlib.analysis.text import Note, nothing
from cptlib.records import read_record
from cptlib.report.controllability import place_labels
from cptlib.report.style import caption, figure, move_legend, palette


def _families(points: pd.DataFrame) -> list[str]:
    present = set(points["front"])
    return [f for f in FRONT_FAMILIES if f in present] + sorted(present - set(FRONT_FAMILIES))


def front_figure(runs: pd.DataFrame) -> Figure | Note:
    """Worst-group against average test accuracy (selected checkpoint), one point per
    (family, knob value) as the mean over seeds with ± SE whiskers; each family's front of
    the means joined by a line; points labelled by their knob value."""
    pts = front_points(runs)
    if pts.empty:
        return nothing("runs of the families (ERM, GroupDRO, Scalarized, MGDA, CPT)")
    fams = _families(pts)
    colours = palette(fams)
    fig, axes = figure(width=8.5, height=6.0)
    ax = axes[0, 0]
    for fam in fams:
        sub = pts[pts["front"] == fam]
        ax.errorbar(sub["avg"], sub["wga"], xerr=sub["avg_se"].fillna(0),
                    yerr=sub["wga_se"].fillna(0), fmt="o", color=colours[fam], ms=6,
                    elinewidth=0.8, capsize=2, label=fam, alpha=0.9)
        front = sub[sub["on_front"]].sort_values("avg")
        ax.plot(front["avg"], front["wga"], "-", color=colours[fam], lw=1.2, alpha=0.7)
    ax.set_xlabel("test average accuracy (%), training-weighted")
    ax.set_ylabel("test worst-group accuracy (%)")
    ax.margins(0.1)
    ax.legend(title="family", frameon=False)
    move_legend(fig, [ax], "family", below=True)
    caption(fig, "Each family's front: worst-group against average test accuracy\n"
                 "(selected checkpoint; mean over seeds ± SE; lines join each front)")
    labelled = pts[pts["knob"] != "—"]
    place_labels(ax, [(r["avg"], r["wga"], r["knob"]) for _, r in labelled.iterrows()],
                 avoid=list(zip(pts.loc[pts["knob"] == "—", "avg"],
                                pts.loc[pts["knob"] == "—", "wga"], strict=True)),
                 fontsize=6)
    return fig


def loss_plane_figure(runs: pd.DataFrame) -> Figure | Note:
    """One panel per group: its test loss against the mean test loss of the other groups,
    one point per (family, knob value), mean over seeds (lower left is better on both)."""
    pts = loss_points(runs)
    if pts.empty:
        return nothing("runs of the families with per-group test losses")
    names = group_names(runs)
    fams = _families(pts)
    k = int(pts["group_index"].max()) + 1
    cols = min(k, 2 if k <= 4 else 4)
    rows = -(-k // cols)
    fig, axes = figure(rows, cols, width=min(8.5, 3.4 * cols + 1.0), height=2.7 * rows + 1.4)
    for j in range(rows * cols):
        ax = axes[j // cols, j % cols]
        if j >= k:
            ax.set_visible(False)
            continue
        sns.scatterplot(pts[pts["group_index"] == j], x="loss", y="others", hue="front",
                        hue_order=fams, palette=palette(fams), s=30, ax=ax)
        ax.set_title(names[j] if j < len(names) else f"group {j}", fontsize=9)
        ax.set_xlabel("this group's test loss")
        ax.set_ylabel("others' mean loss")
    move_legend(fig, axes.ravel(), "family", below=True)
    return caption(fig, "The plane of per-group losses: each group against the others\n"
                        "(test, selected checkpoint, mean over seeds; both minimised)")


def control_figure(runs: pd.DataFrame, split: str = "train",
                   read: Callable[[str], dict[str, Any]] = read_record) -> Figure | Note:
    """The angle between (L_k) and (1/c_k) over training, per c (mean over seeds ± SE), for
    CPT and for Scalarized, on the ``split`` per-group losses."""
    sweep = sweep_runs(runs)
    if sweep.empty:
        return nothing("CPT or Scalarized runs")
    try:
        data = control_over_training(sweep, split, read=read)
    except ValueError as err:  # records written before the training losses were kept
        return Note(f"*{err}*")
    data = data.assign(c=data["c_str"].fillna("1").map(
        lambda s: "1" if len(set(str(s).split(","))) <= 1 else s))
    methods = [m for m in ("cpt", "scalarized") if m in set(data["method"])]
    order = c_order(data["c"])
    fig, axes = figure(1, len(methods), width=min(8.5, 3.9 * len(methods) + 1.6), height=4.0,
                       sharey=True)
    for ax, method in zip(axes[0], methods, strict=True):
        sub = data[data["method"] == method]
        sns.lineplot(sub, x="step", y="angle", hue="c", hue_order=[c for c in order if c in
                                                                   set(sub["c"])],
                     palette="viridis", errorbar="se", ax=ax)
        ax.set_title({"cpt": "CPT", "scalarized": "Scalarized"}[method])
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("angle to the ray (°)")
    move_legend(fig, axes.ravel(), "c", below=True)
    where = {"train": "training losses of each evaluation window", "val": "validation losses"}
    return caption(fig, "Angle between (L_k) and (1/c_k) over training\n"
                        f"({where.get(split, f'{split} losses')}; mean over seeds ± SE)")
