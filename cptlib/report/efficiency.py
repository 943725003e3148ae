"""The efficiency chapter's figure: per-step cost of each method against ERM (``cpt bench``)."""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from cptlib.analysis.bench import figure_rows
from cptlib.analysis.labels import model_title
from cptlib.analysis.text import Note, nothing
from cptlib.report.style import caption, figure, group_palette, move_legend


def bench_figure(rows: pd.DataFrame) -> Figure | Note:
    """Per-step cost relative to ERM, per method and number of groups, one panel per model
    (the LP timed alone has no model and no ERM step: it is in the tables, not here)."""
    data = figure_rows(rows)
    if data.empty:
        return nothing("benchmark rows with a model and a ratio to ERM")
    models = list(dict.fromkeys(data["model"]))
    ks = sorted(data["groups"].unique(), key=int)
    fig, axes = figure(1, len(models), width=min(8.5, 3.6 * len(models) + 1.6), height=4.2,
                       sharey=True)
    for ax, model in zip(axes[0], models, strict=True):
        sns.barplot(data[data["model"] == model], x="method", y="ratio", hue="groups",
                    hue_order=ks, palette=group_palette(ks), errorbar=None, ax=ax)
        ax.axhline(1.0, color="0.3", linestyle="--", linewidth=1)
        ax.set_title(model_title(model))
        ax.set_xlabel("method")
        ax.set_ylabel("median time per step / ERM's")
        ax.tick_params(axis="x", labelrotation=20)
    move_legend(fig, axes[0], "groups K", below=True)
    return caption(fig, "Per-step cost against ERM (dashed line: ERM)")
