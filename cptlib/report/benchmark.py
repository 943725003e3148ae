"""The benchmark chapters' figure: per-group test accuracy of each method."""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from cptlib.analysis.frames import per_group_long
from cptlib.analysis.labels import CHECKPOINTS, ordered
from cptlib.analysis.text import Note, nothing
from cptlib.report.style import caption, figure, move_legend, palette


def per_group_bars(runs: pd.DataFrame, checkpoint: str = "test") -> Figure | Note:
    """Per-group test accuracy of each method (uniform c), mean ± SE over seeds."""
    main = runs[runs["uniform_c"]] if not runs.empty else runs
    if main.empty:
        return nothing("runs with a uniform control vector")
    long = per_group_long(main, checkpoint)
    labels = ordered(long["label"])
    fig, axes = figure(width=8.5, height=4.2)
    ax = axes[0, 0]
    sns.barplot(long, x="group", y="acc", hue="label", hue_order=labels,
                palette=palette(labels), saturation=1, errorbar="se", capsize=0.1,
                err_kws={"linewidth": 1}, ax=ax)
    ax.set_ylim(0, 100)
    ax.set_xlabel("group (class / spurious attribute)")
    ax.set_ylabel("test accuracy (%)")
    move_legend(fig, [ax], "method")
    return caption(fig, f"Per-group test accuracy, {CHECKPOINTS[checkpoint]}\n"
                        "(bars: mean over seeds, whiskers: ± SE)")
