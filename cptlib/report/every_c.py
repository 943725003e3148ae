"""The "one adapter for every c" chapter's figures: per-group accuracy along the dial's paths
(the adapter as curves, the dedicated runs as points) and the two fronts."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from cptlib.analysis.every_c import c_key, dedicated_long
from cptlib.analysis.text import Note, nothing
from cptlib.report.dial import dial_figure, dial_html
from cptlib.report.style import PALETTE, caption, figure, group_palette, move_legend

ADAPTER, DEDICATED = "one adapter", "dedicated CPT(c)"
COLOURS = {ADAPTER: PALETTE["CPT"], DEDICATED: PALETTE["MGDA"]}


def paths_figure(curves: pd.DataFrame, ded: pd.DataFrame, split: str = "test") -> Figure | Note:
    """One panel per path (the group whose c_k is raised to 1, 2, 4, 8): each group's accuracy
    as the adapter's curve (mean ± SE over seeds, shaded) and the dedicated CPT(c) runs at the
    same c as points with SE whiskers."""
    if curves.empty:
        return nothing("conditioned runs")
    rows = curves[curves["split"] == split]
    paths = list(dict.fromkeys(rows["path"]))
    names = rows.drop_duplicates("group_index").sort_values("group_index")["group"].tolist()
    colours = group_palette(names)
    dedicated = dedicated_long(ded)
    if not dedicated.empty:
        dedicated = dedicated[dedicated["split"] == split]
    fig, axes = figure(1, len(paths), width=3.2 * len(paths), height=3.8, sharey=True)
    for ax, (k, path) in zip(axes[0], enumerate(paths), strict=True):
        for name in names:
            g = rows[(rows["path"] == path) & (rows["group"] == name)].sort_values("strength")
            ax.plot(g["strength"], g["mean"], marker="o", ms=3, color=colours[name], label=name)
            ax.fill_between(g["strength"], g["mean"] - g["se"].fillna(0),
                            g["mean"] + g["se"].fillna(0), color=colours[name], alpha=0.15)
            for strength in g["strength"]:
                c = c_key([strength if j == k else 1.0 for j in range(len(names))])
                d = dedicated[(dedicated["c"] == c) & (dedicated["group"] == name)] \
                    if not dedicated.empty else dedicated
                if d.empty:
                    continue
                acc = 100 * d["acc"]
                se = acc.std(ddof=1) / len(acc) ** 0.5 if len(acc) > 1 else 0.0
                ax.errorbar([strength], [acc.mean()], yerr=[se], fmt="D", ms=6, mfc="white",
                            color=colours[name], capsize=3)
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8], ["1", "2", "4", "8"])
        ax.set_title(f"raise c of {path}", fontsize=10)
        ax.set_xlabel("that group's entry of c")
    axes[0, 0].set_ylabel(f"{split} accuracy (%)")
    axes[0, 0].plot([], [], "D", mfc="white", color="black", label="dedicated CPT(c) run")
    axes[0, 0].legend()
    move_legend(fig, axes[0], "group", below=True)
    caption(fig, f"Per-group {split} accuracy as one entry of c is raised: the one adapter "
                 "(lines, mean ± SE over seeds)\nand the dedicated CPT(c) runs (diamonds)")
    return fig


def front_figure(front: pd.DataFrame) -> Figure | Note:
    """Worst-group against average test accuracy: the adapter along its paths and the
    dedicated runs, means over seeds with SE whiskers."""
    if front.empty:
        return nothing("conditioned runs")
    fig, axes = figure(width=7.5, height=5.0)
    ax = axes[0, 0]
    for who, marker in ((ADAPTER, "o"), (DEDICATED, "D")):
        g = front[front["who"] == who]
        if g.empty:
            continue
        ax.errorbar(g["avg"], g["worst"], xerr=g["avg_se"].fillna(0),
                    yerr=g["worst_se"].fillna(0), fmt=marker, color=COLOURS[who], ms=6,
                    capsize=2, alpha=0.85, label=f"{who} ({len(g)} c)")
    ax.set_xlabel("test average accuracy (%), training-weighted")
    ax.set_ylabel("test worst-group accuracy (%)")
    ax.margins(0.12)
    ax.legend(loc="best")
    caption(fig, "Worst-group against average accuracy: the one adapter at every c of its "
                 "paths\nand the dedicated CPT(c) runs (means over seeds ± SE)")
    return fig


def dial_output(frame: pd.DataFrame, title: str) -> object:
    """The dial as a notebook output (inline HTML with plotly.js embedded: it works offline
    and in the static book), or a Note when there are no conditioned runs."""
    if frame.empty:
        return nothing("conditioned runs")
    from IPython.display import HTML  # lazy: only a notebook needs it

    return HTML(dial_html(dial_figure(frame, title=title)))
