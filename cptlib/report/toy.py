"""The toy chapter's figures: paths in loss space and where each method ends as c changes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from cptlib.analysis.labels import c_values, ordered
from cptlib.analysis.toy import toy_endpoint_table, toy_frame, toy_losses
from cptlib.report.style import caption, figure, move_legend, palette

TOY_METHODS = ("CPT", "Scalarized", "MGDA")


def toy_trajectories(df: pd.DataFrame, front: np.ndarray) -> Figure:
    """Trajectories in loss space (L1 against L2) per method and c, against the Pareto front.

    ``df``: rows of ``cptlib.toy.run`` concatenated, with columns ``method`` and ``c`` added.
    ``front``: (n, ≥2) points of the front. For CPT the ray L_k ∝ 1/c_k is drawn: the point
    of the front it should end on.
    """
    toy = toy_frame(df)
    methods = ordered(toy["method"], TOY_METHODS)
    cs = sorted(toy["c"].unique(), key=lambda t: tuple(c_values(t)))
    colours = dict(zip(cs, sns.color_palette("colorblind", len(cs)), strict=True))
    front = np.asarray(front)
    fig, axes = figure(1, len(methods), width=min(8.5, 3.0 * len(methods) + 0.5),
                       height=4.3, sharex=True, sharey=True)
    for ax, method in zip(axes[0], methods, strict=True):
        ax.plot(front[:, 0], front[:, 1], color="black", linewidth=2)
        sub = toy[toy["method"] == method]
        for c, run in sub.groupby("c", sort=False):
            run = run.sort_values("step")
            ax.plot(run["L_1"], run["L_2"], color=colours[c], linewidth=1.3)
            ax.scatter(run["L_1"].iloc[-1], run["L_2"].iloc[-1], color=colours[c], s=60,
                       edgecolor="black", zorder=3)
            if method == "CPT":
                inv = 1.0 / c_values(c)[:2]
                t = np.linspace(0, 1.1 / inv.max(), 20)
                ax.plot(t * inv[0], t * inv[1], color=colours[c], linestyle="--", linewidth=1)
        ax.set_title(method)
        ax.set_xlabel("L₁")
        ax.set_ylabel("L₂")
        ax.set_xlim(0, 1.05)
        ax.set_ylim(0, 1.05)
        ax.set_aspect("equal")
    handles = [Line2D([], [], color=colours[c], label=f"c = ({c})") for c in cs]
    handles += [
        Line2D([], [], color="black", linewidth=2, label="Pareto front"),
        Line2D([], [], color="0.4", marker="o", linestyle="", markeredgecolor="black",
               label="end point"),
        Line2D([], [], color="0.4", linestyle="--", label="CPT's target ray L ∝ 1/c"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False,
               fontsize="small")
    title = "Toy problem: descent paths in loss space"
    if len(toy_losses(toy)) > 2:
        title += "\n(projection on the first two losses)"
    return caption(fig, title)


def toy_endpoints(df: pd.DataFrame) -> Figure:
    """How the end points move with c: each loss's share of the total against CPT's target.

    On the diagonal, c_1 L_1 = … = c_K L_K (what CPT asks for); scalarisation's end points stay
    where the front's geometry puts them, whatever c says.
    """
    table = toy_endpoint_table(df)
    methods = ordered(table["method"], TOY_METHODS)
    colours = palette(methods)
    fig, axes = figure(1, 2, width=9.0, height=4.0)
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", label="share = target")
    sns.scatterplot(table, x="CPT's target share", y="share", hue="method", hue_order=methods,
                    palette=colours, style="loss", s=70, ax=ax)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("End-point loss shares against 1/c")
    ax.set_xlabel("target share (1/c_k) / Σ_j (1/c_j)")
    ax.set_ylabel("end-point share L_k / Σ_j L_j")
    ax = axes[0, 1]
    per_run = table.drop_duplicates(["method", "c"])
    sns.barplot(per_run, x="c", y="mu", hue="method", hue_order=methods, palette=colours,
                saturation=1, ax=ax)
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_title("Non-uniformity μ of c ⊙ L at the end point")
    ax.set_xlabel("control vector c")
    ax.set_ylabel("μ (0: exactly on the ray)")
    move_legend(fig, axes[0], "")
    return caption(fig, "Where each method ends, as c changes")
