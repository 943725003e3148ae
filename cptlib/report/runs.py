"""One run's figures (the featured run pages): example images per group, curves over training."""

from __future__ import annotations

from typing import Any

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from cptlib.analysis.frames import record_history
from cptlib.analysis.text import Note
from cptlib.report.style import caption, figure, group_palette, move_legend


def _as_image(x: Any) -> np.ndarray:
    """An (H, W, 3) array in [0, 1]: a normalised CHW tensor is min-max scaled per image."""
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    low, high = arr.min(), arr.max()
    return (arr - low) / (high - low) if high > low else np.zeros_like(arr)


def pick_examples(dataset: Any, per_group: int, seed: int) -> dict[int, list[int]]:
    """Up to ``per_group`` random item indices of each group (seeded)."""
    rng = np.random.default_rng(seed)
    groups = np.asarray(dataset.groups)
    picked = {}
    for k in range(len(dataset.group_names)):
        idx = np.flatnonzero(groups == k)
        picked[k] = sorted(rng.choice(idx, size=min(per_group, len(idx)), replace=False).tolist())
    return picked


def _cell(text: str) -> str:
    """A sentence as one Markdown table cell: pipes escaped, line breaks as spaces."""
    return " ".join(str(text).split()).replace("|", "\\|")


def example_grid(dataset: Any, per_group: int = 4, seed: int = 0) -> Figure | Note:
    """A few examples of each group: an image grid, or a table of whole sentences for text
    (a DataFrame would cut them at 50 characters, and the label is in the sentence's end)."""
    if per_group < 1:
        raise ValueError(f"per_group must be at least 1, got {per_group}")
    picked = pick_examples(dataset, per_group, seed)
    names = list(dataset.group_names)
    first = next((idx[0] for idx in picked.values() if idx), None)
    if first is None:
        raise ValueError("example_grid: the dataset has no items")
    if isinstance(dataset[first][0], str):
        rows = [f"| {names[k]} | {_cell(dataset[i][0])} |" for k, idx in picked.items()
                for i in idx]
        split = getattr(dataset, "split", "")
        return Note("\n".join([f"{per_group} random examples per group ({split} split), "
                               "whole:", "", "| group | example |", "|---|---|", *rows]))
    fig, axes = figure(len(names), per_group, width=1.6 * per_group + 1.2,
                       height=1.6 * len(names) + 0.6)
    for k, row in enumerate(axes):
        for j, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if j < len(picked[k]):
                ax.imshow(_as_image(dataset[picked[k][j]][0]), cmap="gray")
            else:
                ax.set_axis_off()
        row[0].set_ylabel(names[k], rotation=0, ha="right", va="center")
    return caption(fig, f"{per_group} random examples per group "
                        f"({getattr(dataset, 'split', '')} split)")


def group_curves(record: dict[str, Any]) -> Figure:
    """Per-group validation and test accuracy and loss over training; the selected step marked."""
    if not record.get("history"):
        raise ValueError("group_curves: the record has no history")
    hist = record_history(record)
    names = list(dict.fromkeys(hist.sort_values("group_index")["group"]))
    fig, axes = figure(2, 2, width=8.5, height=6.2, sharex=True)
    selected = (record.get("metrics") or {}).get("selected_step")
    for j, split in enumerate(("val", "test")):
        for i, (metric, title) in enumerate((("acc", "accuracy (%)"), ("loss", "loss"))):
            ax = axes[i, j]
            sns.lineplot(hist[hist["split"] == split], x="step", y=metric, hue="group",
                         hue_order=names, palette=group_palette(names), marker="o", ax=ax)
            if selected is not None:
                ax.axvline(selected, color="0.3", linestyle="--", label="selected step")
            ax.set_title(f"{'validation' if split == 'val' else 'test'} {title.split(' ')[0]}")
            ax.set_xlabel("optimiser step")
            ax.set_ylabel(title)
    move_legend(fig, axes.ravel(), "group", below=True)
    return caption(fig, "Per-group accuracy and loss during training\n"
                        "(dashed: the checkpoint selected on validation worst-group accuracy)")
