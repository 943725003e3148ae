"""The dynamics chapter's figures: per-group curves, conflicting groups, the balancer's modes."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from cptlib.analysis.dynamics import conflict_rows, mode_rows, mode_shares
from cptlib.analysis.labels import DYNAMICS_LABELS
from cptlib.analysis.text import Note, nothing, seeds_text
from cptlib.report.style import caption, figure, group_palette, move_legend, palette


def dynamics_figure(
    hist: pd.DataFrame, metric: str = "acc", labels: Sequence[str] = DYNAMICS_LABELS,
    split: str = "test",
) -> Figure | Note:
    """Per-group ``metric`` (acc or loss) over training for each label, mean over seeds with a
    ± SE band; dotted lines: each seed's selected step."""
    if metric not in ("acc", "loss"):
        raise ValueError(f"metric must be 'acc' or 'loss', got {metric!r}")
    present = [x for x in labels if not hist.empty and x in set(hist["label"])]
    if not present:
        return nothing(f"runs of {', '.join(labels)}")
    data = hist[(hist["split"] == split) & hist["label"].isin(present)]
    names = list(dict.fromkeys(data.sort_values("group_index")["group"]))
    fig, axes = figure(1, len(present), width=min(8.5, 2.9 * len(present) + 0.6), height=4.2,
                       sharey=True)
    for ax, label in zip(axes[0], present, strict=True):
        sub = data[data["label"] == label]
        sns.lineplot(sub, x="step", y=metric, hue="group", hue_order=names,
                     palette=group_palette(names), errorbar="se", ax=ax)
        for step in sub["selected_step"].dropna().unique():
            ax.axvline(step, color="0.4", linestyle=":", linewidth=1)
        ax.set_title(f"{label} ({seeds_text(sub['run_id'].nunique())})")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(f"{split} {'accuracy (%)' if metric == 'acc' else 'loss'}")
    move_legend(fig, axes[0], "group", below=True)
    what = "accuracy" if metric == "acc" else "loss"
    return caption(fig, f"Per-group {split} {what} during training\n"
                        "(line: mean over seeds, band: ± SE, dotted: selected steps)")


def conflict_figure(diag: pd.DataFrame, labels: Sequence[str] = DYNAMICS_LABELS) -> Figure | Note:
    """Fraction of groups whose gradient conflicts with the update (cos(g_k, d) < 0) over
    training, per label, mean over seeds with a ± SE band. The title names the methods drawn."""
    data = conflict_rows(diag, labels)
    if data.empty:
        return nothing("conflict measurements")
    present = [x for x in labels if x in set(data["label"])]
    fig, axes = figure(width=8.5, height=4.0)
    ax = axes[0, 0]
    sns.lineplot(data, x="step", y="conflict_frac", hue="label", hue_order=present,
                 palette=palette(present), errorbar="se", marker="o", ax=ax)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("fraction of conflicting groups")
    move_legend(fig, [ax], "method")
    return caption(fig, "Groups whose gradient points against the update, cos(g_k, d) < 0\n"
                        f"({', '.join(present)}; mean over each evaluation window)")


def modes_figure(diag: pd.DataFrame, labels: Sequence[str] = DYNAMICS_LABELS) -> Figure | Note:
    """For the ``labels`` whose balancer reports modes (CPT): the share of steps in each mode
    per evaluation window, and the non-uniformity μ of the c-weighted training losses."""
    data = mode_rows(diag, labels)
    if data.empty:
        return nothing(f"balancer modes of {', '.join(labels)} (only CPT reports them)")
    long = mode_shares(diag, labels)
    present = [x for x in labels if x in set(data["label"])]
    colours = palette(present)
    fig, axes = figure(1, 2, width=8.5, height=4.0)
    ax = axes[0, 0]
    sns.lineplot(long, x="step", y="share", hue="label", hue_order=present, palette=colours,
                 style="mode", errorbar="se", marker="o", ax=ax)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("share of the window's steps")
    ax.set_title("Mode of the LP per window")
    ax.legend(fontsize="small")
    ax = axes[0, 1]
    mu = data.dropna(subset=["mu"])
    if mu.empty:
        ax.text(0.5, 0.5, "no μ recorded", ha="center", va="center", transform=ax.transAxes)
    else:
        sns.lineplot(mu, x="step", y="mu", hue="label", hue_order=present, palette=colours,
                     errorbar="se", marker="o", ax=ax)
        ax.set_yscale("log")
        ax.legend(title="method", fontsize="small")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("μ (mean over the window)")
    ax.set_title("Non-uniformity μ of c ⊙ L")
    return caption(fig, "What the balancer did during training (mean over seeds, band: ± SE)")
