"""The seaborn figures and the tables of the book's notebooks.

Every function takes run records (one record dict, or the DataFrame of ``load_runs``) and
returns a matplotlib Figure, a DataFrame of rounded values, or a ``Note`` when there is nothing
to show, so a notebook stays a straight list of calls that runs with any number of records,
including none. Sentences that interpret results are built here from the numbers too: a
chapter never states a result that the records did not produce.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from tqdm import TqdmWarning

from cptlib import records
from cptlib.paths import cache_dir, project_root

sns.set_theme(style="whitegrid", context="notebook", palette="colorblind")
# tqdm.auto (imported by cptlib.train and cptlib.sweep) warns in a kernel without ipywidgets;
# the book never shows a progress bar, so the warning says nothing to its readers.
warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)

METHOD_NAMES = {
    "erm": "ERM", "groupdro": "GroupDRO", "scalarized": "Scalarized", "mgda": "MGDA", "cpt": "CPT",
}
#: Methods whose run is parameterised by a control vector c.
CONTROLLED = ("cpt", "scalarized")
#: The main table's rows, in this order (other settings follow, sorted).
MAIN_LABELS = (
    "ERM", "ERM (group-balanced)", "GroupDRO", "Scalarized(c=1)", "MGDA", "CPT(c=1)",
)
DYNAMICS_LABELS = ("ERM", "GroupDRO", "CPT(c=1)")
#: Parameters that must agree for two runs to be compared as a pair (besides method, α, seed).
SETTING_COLUMNS = (
    "dataset", "data_size", "data_seed", "model", "img_size", "lr", "batch_size", "weight_decay",
    "momentum", "clip_norm", "steps", "epochs", "warmup_steps", "warmup_epochs", "schedule",
    "eval_every", "eps", "eta", "selection", "grad_way",
)
CHECKPOINTS = {"test": "selected checkpoint", "last_test": "last checkpoint"}
#: The metrics of the main table and their column titles.
METRIC_TITLES = {"worst_group_acc": "worst-group", "avg_acc": "average", "mean_acc": "mean",
                 "auroc": "AUROC"}
MODEL_TITLES = {
    "vit_base_patch16_224.orig_in21k": "ViT-B/16 (ImageNet-21k)", "clip:ViT-L-14": "CLIP ViT-L/14",
    "resnet50": "ResNet-50", "bert-base-uncased": "BERT-base", "quick": "embedded ViT",
    "minilm": "MiniLM-L6",
}
DATASET_TITLES = {
    "waterbirds": "Waterbirds", "celeba": "CelebA", "metashift": "MetaShift (cat/dog)",
    "isic": "ISIC", "multinli": "MultiNLI", "civilcomments": "CivilComments",
    "synthetic": "the embedded image benchmark", "synthetic-text": "the embedded text task",
}


@dataclass(frozen=True)
class Note:
    """A sentence shown instead of a figure or table (rendered as Markdown in a notebook)."""

    text: str

    def _repr_markdown_(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text


# ----------------------------------------------------------------------------- labels


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def is_uniform(c: Sequence[float] | None) -> bool:
    """c = None and c = (v, …, v) ask for the same thing (r = c / Σc): equal group losses."""
    if _missing(c):
        return True
    values = [float(v) for v in c]
    return max(values) == min(values)


def c_text(c: Sequence[float] | None) -> str:
    """``"1"`` for a uniform control vector, else its entries: ``"1,1,4,1"``."""
    return "1" if is_uniform(c) else records.vector_str(c)


def _alpha(method: str, alpha: Any) -> float:
    """The sampler exponent, with the method's usual value when a record lacks it."""
    return (0.0 if method == "erm" else 1.0) if _missing(alpha) else float(alpha)


def method_family(method: str, alpha: Any = None) -> str:
    """A method with its sampling, without c: ``ERM``, ``ERM (group-balanced)``, ``CPT (α=2)``."""
    a = _alpha(method, alpha)
    if method == "erm":
        return {0.0: "ERM", 1.0: "ERM (group-balanced)"}.get(a, f"ERM (α={a:g})")
    name = METHOD_NAMES.get(method, str(method))
    return name if a == 1.0 else f"{name} (α={a:g})"


def run_label(method: str, alpha: Any = None, c: Sequence[float] | None = None) -> str:
    """How the book names a run setting: (method, α, c) → ``CPT(c=1,1,4,1)``, ``GroupDRO``."""
    family = method_family(method, alpha)
    if method not in CONTROLLED:
        return family
    name = METHOD_NAMES[method]
    return f"{name}(c={c_text(c)}){family[len(name):]}"


def _column(df: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    return df[name] if name in df.columns else pd.Series([default] * len(df), index=df.index)


def label_runs(df: pd.DataFrame) -> pd.DataFrame:
    """``load_records`` rows, plus the columns ``label``, ``family``, ``method_name``,
    ``uniform_c`` and ``c_label``."""
    out = df.copy()
    method, alpha, c = _column(out, "method", "?"), _column(out, "alpha"), _column(out, "c")
    out["label"] = [run_label(m, a, v) for m, a, v in zip(method, alpha, c, strict=True)]
    out["family"] = [method_family(m, a) for m, a in zip(method, alpha, strict=True)]
    out["method_name"] = [METHOD_NAMES.get(m, str(m)) for m in method]
    out["uniform_c"] = [is_uniform(v) for v in c]
    out["c_label"] = [c_text(v) for v in c]
    return out


def results_path(value: Path | str) -> Path:
    """A results folder resolved as ``cptlib.experiment.results_dir`` does (relative to the
    project; absolute paths unchanged), without importing torch into every summary chapter."""
    return project_root() / Path(value)


def load_runs(results_dir: Path | str, profile: str, experiment: str | None = None) -> pd.DataFrame:
    """The records of one experiment (or all) at one profile, labelled (``label_runs``)."""
    return label_runs(records.load_records(results_path(results_dir), profile, experiment))


def ordered(labels: Iterable[str], first: Sequence[str] = MAIN_LABELS) -> list[str]:
    """The main methods in the book's order, then any other label alphabetically."""
    present = list(dict.fromkeys(labels))
    return [x for x in first if x in present] + sorted(x for x in present if x not in first)


# ----------------------------------------------------------------------------- records


@lru_cache(maxsize=256)
def _read(path: str, mtime: float) -> dict[str, Any]:
    """A record file, cached by path and modification time (figures re-read histories)."""
    return records.read_record(path)


def read_run(path: str | Path) -> dict[str, Any]:
    """The full record behind a ``load_records`` row (history, group names, adapter size)."""
    return _read(str(path), Path(path).stat().st_mtime)


def n_groups(runs: pd.DataFrame, checkpoint: str = "test") -> int:
    prefix = f"{checkpoint}.per_group_acc."
    return sum(1 for col in runs.columns if col.startswith(prefix))


def group_names(runs: pd.DataFrame) -> list[str]:
    """Names of the groups of these runs (from the first record; ``group k`` if it has none)."""
    if runs.empty:
        return []
    k = n_groups(runs)
    names = read_run(runs["path"].iloc[0]).get("group_names") or []
    return [str(n) for n in names] if len(names) == k else [f"group {i}" for i in range(k)]


def per_group_long(runs: pd.DataFrame, checkpoint: str = "test") -> pd.DataFrame:
    """One row per (run, group): accuracy (%) and loss at ``checkpoint`` (test or last_test)."""
    names = group_names(runs)
    rows = []
    for _, run in runs.iterrows():
        for k, name in enumerate(names):
            rows.append({
                "label": run["label"], "family": run["family"], "c_label": run["c_label"],
                "seed": run.get("seed"), "group": name, "group_index": k,
                "acc": 100 * float(run[f"{checkpoint}.per_group_acc.{k}"]),
                "loss": float(run.get(f"{checkpoint}.per_group_loss.{k}", math.nan)),
            })
    return pd.DataFrame(rows)


def _history_rows(run: pd.Series, record: dict[str, Any]) -> Iterable[dict[str, Any]]:
    names = record.get("group_names") or []
    counts = record.get("train_group_counts") or []
    selected = (record.get("metrics") or {}).get("selected_step")
    for entry in record.get("history") or []:
        for split in ("val", "test"):
            metrics = entry.get(split) or {}
            accs = metrics.get("per_group_acc") or []
            losses = metrics.get("per_group_loss") or [None] * len(accs)
            for k, (acc, loss) in enumerate(zip(accs, losses, strict=True)):
                yield {
                    "run_id": run["run_id"], "label": run["label"], "seed": run.get("seed"),
                    "step": entry["step"], "split": split,
                    "group": names[k] if k < len(names) else f"group {k}", "group_index": k,
                    "train_count": counts[k] if k < len(counts) else math.nan,
                    "acc": math.nan if acc is None else 100 * acc,
                    "loss": math.nan if loss is None else loss,
                    "selected_step": selected,
                }


def history_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Every evaluation of every run: one row per (run, step, split, group), accuracy in %."""
    rows = [row for _, run in runs.iterrows() for row in _history_rows(run, read_run(run["path"]))]
    return pd.DataFrame(rows)


def diagnostics_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """The balancer diagnostics of every evaluation window: one row per (run, window).

    Columns: label, seed, step, steps (in the window), conflict_frac, mu, absent_steps,
    solver_failures, and ``mode:<name>`` counts (CPT's ``balance`` / ``descent``).
    """
    rows = []
    for _, run in runs.iterrows():
        for entry in read_run(run["path"]).get("history") or []:
            train = entry.get("train") or {}
            row = {
                "label": run["label"], "seed": run.get("seed"), "step": entry["step"],
                "steps": train.get("steps") or 0,
                "conflict_frac": train.get("conflict_frac"),
                "mu": train.get("mu"),
                "absent_steps": train.get("absent_steps") or 0,
                "solver_failures": train.get("solver_failures") or 0,
            }
            row.update({f"mode:{m}": n for m, n in (train.get("mode_counts") or {}).items()})
            rows.append(row)
    frame = pd.DataFrame(rows)
    for col in ("conflict_frac", "mu"):
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


# ----------------------------------------------------------------------------- helpers


def _figure(nrows: int = 1, ncols: int = 1, *, width: float = 9.0, height: float = 4.5,
            **kwargs: Any) -> tuple[Figure, np.ndarray]:
    """A figure detached from pyplot: a notebook shows it once, where the cell returns it."""
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(width, height),
                             layout="constrained", **kwargs)
    plt.close(fig)
    return fig, axes


def _move_legend(fig: Figure, axes: Iterable[Any], title: str, below: bool = False) -> None:
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


def _pct(value: float, digits: int = 1) -> str:
    return "—" if _missing(value) or not math.isfinite(value) else f"{value:.{digits}f}"


def _nothing(what: str) -> Note:
    return Note(f"*No {what} in these records.*")


def _seeds_text(n: int) -> str:
    return "one seed" if n == 1 else f"{n} seeds"


def no_runs_text(what: str, profile: str, commands: Sequence[str]) -> Note:
    """The plain statement a chapter makes when it has no records, with the commands to fix it."""
    shown = "\n".join(f"$ {c}" for c in commands)
    return Note(
        f"**No runs of this kind at profile `{profile}` yet** ({what}). Nothing below is "
        f"computed until they exist. To produce them, run:\n\n```console\n{shown}\n```\n\n"
        "then rebuild the book (`make book`, or `cpt book --profile " + profile + "`)."
    )


def status_text(runs: pd.DataFrame, profile: str, experiment: str) -> Note:
    """Which records a chapter reads: how many runs, which settings, how many seeds each."""
    if runs.empty:
        return no_runs_text(f"experiment `{experiment}`", profile,
                            [f"cpt sweep --profile {profile} --only {experiment}"])
    counts = runs.groupby("label").size()
    parts = ", ".join(f"{label} ({_seeds_text(int(counts[label]))})"
                      for label in ordered(counts.index))
    return Note(
        f"This page reads **{len(runs)} run record{'s' if len(runs) != 1 else ''}** of "
        f"experiment `{experiment}` at profile "
        f"`{profile}`: {parts}. Runs are grouped by method, sampling exponent α and control "
        "vector c; tables show the mean ± standard error over seeds."
    )


# ----------------------------------------------------------------------------- one run


def group_counts(data: Any) -> pd.DataFrame:
    """Samples per group in each split of ``data`` (attributes train / val / test)."""
    splits = {s: getattr(data, s, None) for s in ("train", "val", "test")}
    missing = [s for s, d in splits.items() if d is None]
    if missing:
        raise ValueError(f"group_counts needs data.train, .val and .test; missing {missing}")
    names = list(splits["train"].group_names)
    table = pd.DataFrame(
        {s: [int(v) for v in d.group_counts] for s, d in splits.items()},
        index=pd.Index(names, name="group"),
    )
    table.loc["total"] = table.sum()
    return table


def _as_image(x: Any) -> np.ndarray:
    """An (H, W, 3) array in [0, 1]: a normalised CHW tensor is min-max scaled per image."""
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    low, high = arr.min(), arr.max()
    return (arr - low) / (high - low) if high > low else np.zeros_like(arr)


def _pick(dataset: Any, per_group: int, seed: int) -> dict[int, list[int]]:
    """Up to ``per_group`` random item indices of each group (seeded)."""
    rng = np.random.default_rng(seed)
    groups = np.asarray(dataset.groups)
    picked = {}
    for k in range(len(dataset.group_names)):
        idx = np.flatnonzero(groups == k)
        picked[k] = sorted(rng.choice(idx, size=min(per_group, len(idx)), replace=False).tolist())
    return picked


def example_grid(dataset: Any, per_group: int = 4, seed: int = 0) -> Figure | pd.DataFrame:
    """A few examples of each group: an image grid, or a table of sentences for text data."""
    if per_group < 1:
        raise ValueError(f"per_group must be at least 1, got {per_group}")
    picked = _pick(dataset, per_group, seed)
    names = list(dataset.group_names)
    first = next((idx[0] for idx in picked.values() if idx), None)
    if first is None:
        raise ValueError("example_grid: the dataset has no items")
    if isinstance(dataset[first][0], str):
        rows = [{"group": names[k], "example": dataset[i][0]} for k, idx in picked.items()
                for i in idx]
        return pd.DataFrame(rows).set_index("group")
    fig, axes = _figure(len(names), per_group, width=1.6 * per_group + 1.2,
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
    fig.suptitle(f"{per_group} random examples per group ({getattr(dataset, 'split', '')} split)")
    return fig


def run_data(runs: pd.DataFrame) -> Any:
    """The data (``.train``, ``.val``, ``.test``) of the first of ``runs``, loaded the way its
    experiment loaded it; None when there is no run."""
    if runs.empty:
        return None
    from cptlib.experiment import EXPERIMENT_DEFAULTS, load_data  # torch: only when needed

    params = read_run(runs["path"].iloc[0])["params"]
    return load_data({**EXPERIMENT_DEFAULTS,
                      **{k: v for k, v in params.items() if k in EXPERIMENT_DEFAULTS}})


def _selected_step(record: dict[str, Any]) -> Any:
    return (record.get("metrics") or {}).get("selected_step")


def group_curves(record: dict[str, Any]) -> Figure:
    """Per-group validation and test accuracy and loss over training; the selected step marked."""
    history = record.get("history") or []
    if not history:
        raise ValueError("group_curves: the record has no history")
    run = pd.Series({"run_id": record.get("run_id"), "label": "run",
                     "seed": (record.get("params") or {}).get("seed")})
    hist = pd.DataFrame(list(_history_rows(run, record)))
    fig, axes = _figure(2, 2, width=8.5, height=6.2, sharex=True)
    selected = _selected_step(record)
    for j, split in enumerate(("val", "test")):
        for i, (metric, title) in enumerate((("acc", "accuracy (%)"), ("loss", "loss"))):
            ax = axes[i, j]
            sns.lineplot(hist[hist["split"] == split], x="step", y=metric, hue="group",
                         marker="o", ax=ax)
            if selected is not None:
                ax.axvline(selected, color="0.3", linestyle="--", label="selected step")
            ax.set_title(f"{'validation' if split == 'val' else 'test'} {title.split(' ')[0]}")
            ax.set_xlabel("optimiser step")
            ax.set_ylabel(title)
    _move_legend(fig, axes.ravel(), "group", below=True)
    fig.suptitle("Per-group accuracy and loss during training\n"
                 "(dashed: the checkpoint selected on validation worst-group accuracy)")
    return fig


def per_group_table(record: dict[str, Any]) -> pd.DataFrame:
    """Group, training count, validation and test accuracy (%) at the selected and last step."""
    metrics = record.get("metrics") or {}
    names = record.get("group_names") or []
    counts = record.get("train_group_counts") or [None] * len(names)

    def accs(key: str) -> list[str]:
        values = (metrics.get(key) or {}).get("per_group_acc") or [None] * len(names)
        return [_pct(math.nan if v is None else 100 * v) for v in values]

    table = pd.DataFrame({
        "train count": counts,
        "val acc. (%), selected": accs("val"),
        "test acc. (%), selected": accs("test"),
        "val acc. (%), last": accs("last_val"),
        "test acc. (%), last": accs("last_test"),
    }, index=pd.Index(names, name="group"))
    return table


# ----------------------------------------------------------------------------- the toy problem


def _toy_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Toy rows with display names for methods and a text label for c (from ``c``, a list or
    text, or from ``c_str``)."""
    needed = {"method", "step", "L_1", "L_2"}
    if not needed <= set(df.columns) or not {"c", "c_str"} & set(df.columns):
        raise ValueError(f"toy frame needs columns {sorted(needed)} and c (or c_str); got "
                         f"{sorted(df.columns)}")
    out = df.copy()
    out["method"] = [METHOD_NAMES.get(m, m) for m in out["method"]]
    if "c" not in out.columns:
        out["c"] = out["c_str"]
    out["c"] = [v if isinstance(v, str) else records.vector_str(v) for v in out["c"]]
    return out


def _toy_losses(df: pd.DataFrame) -> list[str]:
    return sorted((c for c in df.columns if c.startswith("L_")), key=lambda c: int(c[2:]))


def _c_values(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.split(",")])


def toy_trajectories(df: pd.DataFrame, front: np.ndarray) -> Figure:
    """Trajectories in loss space (L1 against L2) per method and c, against the Pareto front.

    ``df``: rows of ``cptlib.toy.run`` concatenated, with columns ``method`` and ``c`` added.
    ``front``: (n, ≥2) points of the front. For CPT the ray L_k ∝ 1/c_k is drawn: the point
    of the front it should end on.
    """
    toy = _toy_frame(df)
    methods = ordered(toy["method"], ("CPT", "Scalarized", "MGDA"))
    cs = sorted(toy["c"].unique(), key=lambda t: tuple(_c_values(t)))
    palette = dict(zip(cs, sns.color_palette("colorblind", len(cs)), strict=True))
    front = np.asarray(front)
    fig, axes = _figure(1, len(methods), width=min(8.5, 3.0 * len(methods) + 0.5),
                        height=4.3, sharex=True, sharey=True)
    for ax, method in zip(axes[0], methods, strict=True):
        ax.plot(front[:, 0], front[:, 1], color="black", linewidth=2)
        sub = toy[toy["method"] == method]
        for c, run in sub.groupby("c", sort=False):
            run = run.sort_values("step")
            ax.plot(run["L_1"], run["L_2"], color=palette[c], linewidth=1.3)
            ax.scatter(run["L_1"].iloc[-1], run["L_2"].iloc[-1], color=palette[c], s=60,
                       edgecolor="black", zorder=3)
            if method == "CPT":
                inv = 1.0 / _c_values(c)[:2]
                t = np.linspace(0, 1.1 / inv.max(), 20)
                ax.plot(t * inv[0], t * inv[1], color=palette[c], linestyle="--", linewidth=1)
        ax.set_title(method)
        ax.set_xlabel("L₁ (objective 1)")
        ax.set_ylabel("L₂ (objective 2)")
        ax.set_xlim(0, 1.05)
        ax.set_ylim(0, 1.05)
        ax.set_aspect("equal")
    handles = [Line2D([], [], color=palette[c], label=f"c = ({c})") for c in cs]
    handles += [
        Line2D([], [], color="black", linewidth=2, label="Pareto front"),
        Line2D([], [], color="0.4", marker="o", linestyle="", markeredgecolor="black",
               label="end point"),
        Line2D([], [], color="0.4", linestyle="--", label="CPT's target ray L ∝ 1/c"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False,
               fontsize="small")
    projection = "" if len(_toy_losses(toy)) == 2 else " (projection on the first two losses)"
    fig.suptitle(f"Gradient descent on the toy problem, in loss space{projection}")
    return fig


def toy_endpoint_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per method and c: end-point losses, each loss's share of their sum, the share CPT aims
    at ((1/c_k) / Σ 1/c_j) and μ, the non-uniformity of the c-weighted losses (0 on the ray)."""
    from cptlib.balancers import non_uniformity  # torch: only the toy chapter needs it

    toy = _toy_frame(df)
    losses = _toy_losses(toy)
    rows = []
    for (method, c), run in toy.groupby(["method", "c"], sort=False):
        end = run.sort_values("step")[losses].iloc[-1].to_numpy(dtype=float)
        cv = _c_values(c)
        if len(cv) != len(losses):
            raise ValueError(f"c = ({c}) has {len(cv)} entries for {len(losses)} losses")
        mu, _ = non_uniformity(end, cv / cv.sum())
        target = (1 / cv) / (1 / cv).sum()
        for k, name in enumerate(losses):
            rows.append({"method": method, "c": f"({c})", "loss": name.replace("_", ""),
                         "end value": end[k], "share": end[k] / end.sum(),
                         "CPT's target share": target[k], "mu": mu})
    return pd.DataFrame(rows)


def toy_endpoints(df: pd.DataFrame) -> Figure:
    """How the end points move with c: each loss's share of the total against CPT's target.

    On the diagonal, c_1 L_1 = … = c_K L_K (what CPT asks for); scalarisation's end points stay
    where the front's geometry puts them, whatever c says.
    """
    table = toy_endpoint_table(df)
    methods = ordered(table["method"], ("CPT", "Scalarized", "MGDA"))
    fig, axes = _figure(1, 2, width=9.0, height=4.0)
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", label="share = target")
    sns.scatterplot(table, x="CPT's target share", y="share", hue="method", hue_order=methods,
                    style="loss", s=70, ax=ax)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("End-point loss shares against 1/c")
    ax.set_xlabel("target share (1/c_k) / Σ_j (1/c_j)")
    ax.set_ylabel("end-point share L_k / Σ_j L_j")
    ax = axes[0, 1]
    per_run = table.drop_duplicates(["method", "c"])
    sns.barplot(per_run, x="c", y="mu", hue="method", hue_order=methods, ax=ax)
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_title("Non-uniformity μ of c ⊙ L at the end point")
    ax.set_xlabel("control vector c")
    ax.set_ylabel("μ (0: exactly on the ray)")
    _move_legend(fig, axes[0], "")
    fig.suptitle("Where each method ends, as c changes")
    return fig


# ----------------------------------------------------------------------------- main table


def _validation(checkpoint: str) -> str:
    """The validation metrics of the same checkpoint (``val`` for ``test``, ``last_val`` …)."""
    return {"test": "val", "last_test": "last_val"}.get(checkpoint, "val")


def method_summary(runs: pd.DataFrame, checkpoint: str = "test") -> pd.DataFrame:
    """Mean and SE over seeds of the main metrics per label (runs with a uniform c only)."""
    main = runs[runs["uniform_c"]] if not runs.empty else runs
    if main.empty:
        return pd.DataFrame()
    metrics = [f"{checkpoint}.{m}" for m in METRIC_TITLES if f"{checkpoint}.{m}" in main]
    metrics += [f"{_validation(checkpoint)}.worst_group_acc", "trainable_params"]
    agg = records.aggregate(main, ["label"], metrics).set_index("label")
    return agg.loc[ordered(agg.index)]


def _mean_se_texts(agg: pd.DataFrame, col: str) -> list[str]:
    """``"81.3 ± 1.2"`` per row of an ``aggregate`` table (fractions shown as %), kept on one
    line in HTML tables."""
    return [records.format_mean_se(m, se).replace(" ± ", "\u00a0±\u00a0")
            for m, se in zip(agg[col], agg[f"{col}_se"], strict=True)]


def _uses_auroc(runs: pd.DataFrame) -> bool:
    return bool((_column(runs, "selection") == "auroc").any())


def main_table(runs: pd.DataFrame, checkpoint: str = "test") -> pd.DataFrame | Note:
    """The main results: per method, test worst-group, average (train-weighted) and mean
    accuracy, validation worst-group accuracy (same checkpoint) and trainable parameters, as
    mean ± SE (%) over seeds."""
    agg = method_summary(runs, checkpoint)
    if agg.empty:
        return _nothing("runs with a uniform control vector")
    val = _validation(checkpoint)
    test = "test (%)" if checkpoint == "test" else "test, last step (%)"
    shown = ["worst_group_acc", "avg_acc", "mean_acc"] + (["auroc"] if _uses_auroc(runs) else [])
    columns = {("", "seeds"): agg["n"].astype(int).tolist()}
    for m in shown:
        columns[(test, METRIC_TITLES[m])] = _mean_se_texts(agg, f"{checkpoint}.{m}")
    columns[(test.replace("test", "validation"), METRIC_TITLES["worst_group_acc"])] = (
        _mean_se_texts(agg, f"{val}.worst_group_acc"))
    columns[("", "trainable")] = [
        "—" if _missing(v) else f"{v:,.0f}" for v in agg["trainable_params"]]
    return pd.DataFrame(columns, index=list(agg.index))


def _difference(a: pd.Series, b: pd.Series, col: str) -> str:
    """``+3.1 ± 1.0 points (beyond 2 SE)`` and the like."""
    d = 100 * (a[col] - b[col])
    se = 100 * math.hypot(a[f"{col}_se"], b[f"{col}_se"])
    if not math.isfinite(se):
        return f"{d:+.1f} points (a single seed: no SE)"
    return f"{d:+.1f} ± {se:.1f} points ({'beyond' if abs(d) > 2 * se else 'within'} 2 SE)"


def comparison_text(
    runs: pd.DataFrame,
    focus: str | None = None,
    against: Sequence[str] | None = None,
    checkpoint: str = "test",
) -> Note:
    """Computed sentences: the focus method's mean test worst-group and average accuracy, the
    difference to each other method, and whether it exceeds two standard errors.

    ``focus`` defaults to CPT with c = 1 (at whatever α the runs used); ``against`` to every
    other setting present. Settings named in ``against`` without runs are listed as missing.
    """
    agg = method_summary(runs, checkpoint)
    if focus is None:
        focus = next((x for x in agg.index if x.startswith("CPT(c=1)")), "CPT(c=1)")
    if agg.empty or focus not in agg.index:
        return Note(f"*No {focus} runs in these records, so there is nothing to compare.*")
    expected = against is not None
    against = list(against) if expected else [x for x in agg.index if x != focus]
    wga, avg = f"{checkpoint}.worst_group_acc", f"{checkpoint}.avg_acc"

    def both(r: pd.Series) -> str:
        return (f"worst-group {records.format_mean_se(r[wga], r[wga + '_se'])} %, "
                f"average {records.format_mean_se(r[avg], r[avg + '_se'])} %")

    f = agg.loc[focus]
    lines = [f"- **{focus}** ({_seeds_text(int(f['n']))}): mean test {both(f)}."]
    for other in (o for o in against if o in agg.index):
        o = agg.loc[other]
        lines.append(
            f"- **{other}** ({_seeds_text(int(o['n']))}): {both(o)}. {focus} minus {other}: "
            f"worst-group {_difference(f, o, wga)}, average {_difference(f, o, avg)}."
        )
    best = agg.index[agg[wga] == agg[wga].max()].tolist()
    lines.append(f"- Highest mean test worst-group accuracy: **{' and '.join(best)}** "
                 f"({100 * agg[wga].max():.1f} %).")
    missing = [m for m in against if m not in agg.index]
    if expected and missing:
        lines.append(f"- No runs yet of: {', '.join(missing)}.")
    return Note("\n".join(lines))


def per_group_bars(runs: pd.DataFrame, checkpoint: str = "test") -> Figure | Note:
    """Per-group test accuracy of each method (uniform c), mean ± SE over seeds."""
    main = runs[runs["uniform_c"]] if not runs.empty else runs
    if main.empty:
        return _nothing("runs with a uniform control vector")
    long = per_group_long(main, checkpoint)
    labels = ordered(long["label"])
    fig, axes = _figure(width=8.5, height=4.2)
    ax = axes[0, 0]
    sns.barplot(long, x="group", y="acc", hue="label", hue_order=labels, errorbar="se",
                capsize=0.1, err_kws={"linewidth": 1}, ax=ax)
    ax.set_ylim(0, 100)
    ax.set_xlabel("group (class / spurious attribute)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Per-group test accuracy, {CHECKPOINTS[checkpoint]}\n"
                 "(bars: mean over seeds, whiskers: ± SE)")
    _move_legend(fig, [ax], "method")
    return fig


# ----------------------------------------------------------------------------- controllability


def sweep_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of methods that take a control vector (CPT, Scalarized), any c."""
    return runs if runs.empty else runs[_column(runs, "method").isin(CONTROLLED)]


def _c_order(runs: pd.DataFrame) -> list[str]:
    """c = 1 first, then the vectors by which entry they raise."""
    labels = list(dict.fromkeys(runs["c_label"]))

    def key(text: str) -> tuple:
        if text == "1":
            return (-1, ())
        values = _c_values(text)
        return (int(values.argmax()), tuple(values))

    return sorted(labels, key=key)


def c_sweep_figure(runs: pd.DataFrame) -> Figure | Note:
    """Per-group test accuracy against c for CPT and Scalarized, at the selected and the last
    checkpoint (points: mean over seeds; whiskers: ± SE where there are several)."""
    sweep = sweep_runs(runs)
    if sweep.empty or sweep["uniform_c"].all():
        return _nothing("CPT or Scalarized runs with a non-uniform c")
    names = group_names(sweep)
    families = ordered(sweep["family"], ("CPT", "Scalarized"))
    order = _c_order(sweep)
    fig, axes = _figure(2, len(families), width=min(8.5, 3.6 * len(families) + 1.8),
                        height=7.0, sharey=True)
    for j, family in enumerate(families):
        sub = sweep[sweep["family"] == family]
        for i, checkpoint in enumerate(CHECKPOINTS):
            ax = axes[i, j]
            sns.pointplot(per_group_long(sub, checkpoint), x="c_label", y="acc", hue="group",
                          order=[c for c in order if c in set(sub["c_label"])],
                          hue_order=names, errorbar="se", dodge=0.4, linestyle="none",
                          markersize=6, ax=ax)
            ax.set_title(f"{family}, {CHECKPOINTS[checkpoint]}")
            ax.set_xlabel("control vector c (1 = uniform)")
            ax.set_ylabel("test accuracy (%)")
            ax.tick_params(axis="x", labelrotation=20)
    _move_legend(fig, axes.ravel(), "group")
    fig.suptitle("Per-group test accuracy against the control vector c")
    return fig


def _same(a: Any, b: Any) -> bool:
    return (_missing(a) and _missing(b)) or a == b


def _pair_keys(runs: pd.DataFrame) -> list[str]:
    options = [c for c in runs.columns if c.startswith("model_options.")]
    return ["family", "seed", *[c for c in SETTING_COLUMNS if c in runs.columns], *options]


def _pairs(runs: pd.DataFrame) -> list[tuple[pd.Series, pd.Series]]:
    """(run, reference) for every CPT / Scalarized run with a non-uniform c that has a c = 1
    run of the same method, α, seed and settings (its reference)."""
    sweep = sweep_runs(runs)
    if sweep.empty:
        return []
    keys = _pair_keys(sweep)
    base = sweep[sweep["uniform_c"]]
    pairs = []
    for _, run in sweep[~sweep["uniform_c"]].iterrows():
        match = base[[all(_same(b[k], run[k]) for k in keys) for _, b in base.iterrows()]]
        if not match.empty:
            pairs.append((run, match.iloc[0]))
    return pairs


def _changes(run: pd.Series, ref: pd.Series, checkpoint: str, metric: str, k: int) -> list[float]:
    """Per-group change of ``metric`` (per_group_acc or per_group_loss) from ``ref`` to ``run``."""
    col = f"{checkpoint}.{metric}."
    return [float(run[f"{col}{j}"] - ref[f"{col}{j}"]) for j in range(k)]


def controllability_deltas(runs: pd.DataFrame) -> pd.DataFrame:
    """Paired effect of raising c: for every run whose c is not uniform, the change of its
    emphasised group(s) (the largest c_k) against the c = 1 run of the same method, α, seed and
    settings. Accuracy changes in points, loss changes in nats; "others" averages the rest."""
    pairs = _pairs(runs)
    if not pairs:
        return pd.DataFrame()
    names = group_names(sweep_runs(runs))
    rows = []
    for run, ref in pairs:
        c = [float(v) for v in run["c"]]
        for k in (i for i, v in enumerate(c) if v == max(c)):
            row = {"method": run["family"], "c": run["c_label"], "seed": run.get("seed"),
                   "group": names[k], "run_id": run["run_id"]}
            for checkpoint, when in (("test", "selected"), ("last_test", "last")):
                acc = _changes(run, ref, checkpoint, "per_group_acc", len(names))
                row[f"Δ acc. {when} (points)"] = 100 * acc[k]
                row[f"others' Δ acc. {when} (points)"] = 100 * float(
                    np.mean([a for j, a in enumerate(acc) if j != k]))
                row[f"Δ loss {when}"] = _changes(run, ref, checkpoint, "per_group_loss",
                                                 len(names))[k]
            rows.append(row)
    deltas = pd.DataFrame(rows)
    family = {f: i for i, f in enumerate(ordered(deltas["method"], ("CPT", "Scalarized")))}
    c_rank = {c: i for i, c in enumerate(_c_order(sweep_runs(runs)))}
    rank = [(family[f], c_rank[c], s) for f, c, s in zip(
        deltas["method"], deltas["c"], deltas["seed"], strict=True)]
    return deltas.iloc[sorted(range(len(rank)), key=rank.__getitem__)].reset_index(drop=True)


def c_effect_figure(runs: pd.DataFrame, checkpoint: str = "last_test") -> Figure | Note:
    """Heatmaps of the paired change of every group's test accuracy when c changes from 1
    (mean over the paired seeds), one per method; the raised entries of c are outlined."""
    pairs = _pairs(runs)
    if not pairs:
        return _nothing("pairs of a non-uniform-c run and its c = 1 run")
    names = group_names(sweep_runs(runs))
    rows = [{"method": run["family"], "c": run["c_label"], "group": name,
             "change": 100 * change}
            for run, ref in pairs
            for name, change in zip(names, _changes(run, ref, checkpoint, "per_group_acc",
                                                    len(names)), strict=True)]
    data = pd.DataFrame(rows)
    families = ordered(data["method"], ("CPT", "Scalarized"))
    order = [c for c in _c_order(sweep_runs(runs)) if c in set(data["c"])]
    limit = max(1.0, float(data["change"].abs().max()))
    fig, axes = _figure(1, len(families), width=min(8.5, 3.6 * len(families) + 1.6),
                        height=2.2 + 0.45 * len(order))
    for j, (ax, family) in enumerate(zip(axes[0], families, strict=True)):
        grid = (data[data["method"] == family].pivot_table(index="c", columns="group",
                                                            values="change", aggfunc="mean")
                .reindex(index=[c for c in order if c in set(data[data["method"] == family]["c"])],
                         columns=names))
        with warnings.catch_warnings():  # seaborn 0.13 calls a colormap method matplotlib retires
            warnings.filterwarnings("ignore", message="The set_bad function",
                                    category=PendingDeprecationWarning)
            sns.heatmap(grid, ax=ax, cmap="RdBu", center=0, vmin=-limit, vmax=limit,
                        annot=True, fmt=".1f", cbar=j == len(families) - 1,
                        cbar_kws={"label": "Δ test accuracy (points)"})
        for i, c in enumerate(grid.index):
            values = _c_values(c)
            for k in np.flatnonzero(values == values.max()):
                ax.add_patch(Rectangle((k, i), 1, 1, fill=False, edgecolor="black", lw=2))
        ax.set_title(family)
        ax.set_xlabel("group")
        ax.set_ylabel("control vector c")
        ax.tick_params(axis="x", labelrotation=20)
        ax.tick_params(axis="y", labelrotation=0)
    fig.legend(handles=[Rectangle((0, 0), 1, 1, fill=False, edgecolor="black", lw=2,
                                  label="the raised entry of c")],
               loc="outside lower center", frameon=False)
    fig.suptitle(f"Change of each group's test accuracy against c = 1, same seed "
                 f"({CHECKPOINTS[checkpoint]})")
    return fig


def controllability_table(runs: pd.DataFrame) -> pd.DataFrame | Note:
    """``controllability_deltas`` rounded for display (one row per raised entry of c)."""
    deltas = controllability_deltas(runs)
    if deltas.empty:
        return _nothing("pairs of a non-uniform-c run and its c = 1 run (same method, α, seed "
                        "and settings)")
    table = pd.DataFrame({
        ("selected checkpoint", "Δ acc."): deltas["Δ acc. selected (points)"].round(1),
        ("last checkpoint", "Δ acc."): deltas["Δ acc. last (points)"].round(1),
        ("last checkpoint", "others' Δ acc."): deltas["others' Δ acc. last (points)"].round(1),
        ("last checkpoint", "Δ loss"): deltas["Δ loss last"].round(3) + 0.0,  # no "-0.000"
    })
    table.index = pd.MultiIndex.from_frame(deltas[["method", "c", "seed", "group"]])
    return table


def controllability_text(runs: pd.DataFrame, profile: str, experiment: str) -> Note:
    """Computed sentences: how often raising c_k raised group k's accuracy, per method."""
    deltas = controllability_deltas(runs)
    if deltas.empty:
        return no_runs_text(
            "CPT or Scalarized runs with a non-uniform c, paired with a c = 1 run of the same "
            "seed", profile,
            [f'cpt run {experiment} --profile {profile} -p method=cpt -p alpha=1.0 '
             f'-p "c=[1,1,4,1]" -p seed=0'],
        )
    lines = []
    for family, sub in deltas.groupby("method", sort=False):
        for when in ("last", "selected"):
            col = f"Δ acc. {when} (points)"
            others = sub[f"others' {col}"].mean()
            lower_loss = int((sub[f"Δ loss {when}"] < 0).sum())
            lines.append(
                f"- **{family}**, {when} checkpoint: raising c_k raised group k's test accuracy "
                f"in {int((sub[col] > 0).sum())} of {len(sub)} paired runs (mean change "
                f"{sub[col].mean():+.1f} points; the other groups changed by {others:+.1f} "
                f"points on average) and lowered its test loss in {lower_loss} of {len(sub)}."
            )
    return Note("\n".join(lines))


def tradeoff_figure(runs: pd.DataFrame, checkpoint: str = "test") -> Figure | Note:
    """Worst-group against average test accuracy, one point per run (non-uniform c annotated)."""
    if runs.empty:
        return _nothing("runs")
    data = runs.assign(
        wga=100 * runs[f"{checkpoint}.worst_group_acc"],
        avg=100 * runs[f"{checkpoint}.avg_acc"],
        method=runs["family"],
        control=["c = 1" if u else "c ≠ 1" for u in runs["uniform_c"]],
    ).rename(columns={"control": "control vector"})
    fig, axes = _figure(width=8.5, height=5.2)
    ax = axes[0, 0]
    sns.scatterplot(data, x="avg", y="wga", hue="method", hue_order=ordered(data["method"]),
                    style="control vector", style_order=["c = 1", "c ≠ 1"], s=70, ax=ax)
    for _, run in data[~data["uniform_c"]].iterrows():
        ax.annotate(f"({run['c_label']})", (run["avg"], run["wga"]), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("test average accuracy (%), training-weighted")
    ax.set_ylabel("test worst-group accuracy (%)")
    ax.set_title(f"Worst-group against average test accuracy, every run\n"
                 f"({CHECKPOINTS[checkpoint]})")
    _move_legend(fig, [ax], "")
    return fig


# ----------------------------------------------------------------------------- dynamics


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
        return _nothing(f"runs of {', '.join(labels)}")
    data = hist[(hist["split"] == split) & hist["label"].isin(present)]
    names = list(dict.fromkeys(data.sort_values("group_index")["group"]))
    fig, axes = _figure(1, len(present), width=min(8.5, 2.9 * len(present) + 0.6), height=4.2,
                        sharey=True)
    for ax, label in zip(axes[0], present, strict=True):
        sub = data[data["label"] == label]
        sns.lineplot(sub, x="step", y=metric, hue="group", hue_order=names, errorbar="se", ax=ax)
        for step in sub["selected_step"].dropna().unique():
            ax.axvline(step, color="0.4", linestyle=":", linewidth=1)
        ax.set_title(f"{label} ({_seeds_text(sub['run_id'].nunique())})")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(f"{split} {'accuracy (%)' if metric == 'acc' else 'loss'}")
    _move_legend(fig, axes[0], "group", below=True)
    what = "accuracy" if metric == "acc" else "loss"
    fig.suptitle(f"Per-group {split} {what} during training\n"
                 "(line: mean over seeds, band: ± SE, dotted: selected steps)")
    return fig


def conflict_figure(diag: pd.DataFrame, labels: Sequence[str] = DYNAMICS_LABELS) -> Figure | Note:
    """Fraction of groups whose gradient conflicts with the update (cos(g_k, d) < 0) over
    training, per label, mean over seeds with a ± SE band."""
    present = [x for x in labels if not diag.empty and x in set(diag["label"])]
    data = diag[diag["label"].isin(present)].dropna(subset=["conflict_frac"]) if present else diag
    if data.empty:
        return _nothing("conflict measurements")
    fig, axes = _figure(width=8.5, height=4.0)
    ax = axes[0, 0]
    sns.lineplot(data, x="step", y="conflict_frac", hue="label", hue_order=present,
                 errorbar="se", marker="o", ax=ax)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("fraction of conflicting groups")
    ax.set_title("Groups whose gradient points against the update, cos(g_k, d) < 0\n"
                 "(mean over each evaluation window)")
    _move_legend(fig, [ax], "method")
    return fig


def _mode_columns(diag: pd.DataFrame) -> list[str]:
    return sorted(c for c in diag.columns if c.startswith("mode:"))


def modes_figure(diag: pd.DataFrame, labels: Sequence[str] = DYNAMICS_LABELS) -> Figure | Note:
    """For the ``labels`` whose balancer reports modes (CPT): the share of steps in each mode
    per evaluation window, and the non-uniformity μ of the c-weighted training losses."""
    modes = _mode_columns(diag)
    if diag.empty or not modes:
        return _nothing("balancer modes (only CPT reports them)")
    data = diag[diag["label"].isin(labels) & (diag[modes].fillna(0).sum(axis=1) > 0)].copy()
    if data.empty:
        return _nothing(f"balancer modes of {', '.join(labels)}")
    shares = data[modes].fillna(0).div(data["steps"].where(data["steps"] > 0), axis=0)
    long = pd.concat([data[["label", "seed", "step"]], shares], axis=1).melt(
        id_vars=["label", "seed", "step"], var_name="mode", value_name="share")
    long["mode"] = long["mode"].str.removeprefix("mode:")
    long["series"] = long["label"] + ": " + long["mode"]
    fig, axes = _figure(1, 2, width=8.5, height=4.0)
    ax = axes[0, 0]
    sns.lineplot(long, x="step", y="share", hue="series", errorbar="se", marker="o", ax=ax)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("share of the window's steps")
    ax.set_title("Mode of the LP per window")
    ax.legend(title="method: mode", fontsize="small")
    ax = axes[0, 1]
    mu = data.dropna(subset=["mu"])
    if mu.empty:
        ax.text(0.5, 0.5, "no μ recorded", ha="center", va="center", transform=ax.transAxes)
    else:
        sns.lineplot(mu, x="step", y="mu", hue="label", errorbar="se", marker="o", ax=ax)
        ax.set_yscale("log")
        ax.legend(title="method", fontsize="small")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("μ (mean over the window)")
    ax.set_title("Non-uniformity μ of c ⊙ L")
    fig.suptitle("What the balancer did during training (mean over seeds, band: ± SE)")
    return fig


def balancer_table(diag: pd.DataFrame) -> pd.DataFrame | Note:
    """Per label, summed over seeds and windows: steps, steps per mode, steps with an absent
    group, solver failures (the study counts these instead of hiding them)."""
    if diag.empty:
        return _nothing("training diagnostics")
    modes = _mode_columns(diag)
    cols = ["steps", *modes, "absent_steps", "solver_failures"]
    table = diag.groupby("label")[cols].sum().fillna(0).astype(int)
    table = table.loc[ordered(table.index)]
    table.columns = ["steps", *[f"{m.removeprefix('mode:')} mode" for m in modes],
                     "steps with an absent group", "solver failures"]
    table.index.name = "method"
    return table


def minority_summary(hist: pd.DataFrame, labels: Sequence[str] = DYNAMICS_LABELS) -> pd.DataFrame:
    """For the group with the fewest training samples: mean test accuracy (over seeds) at the
    first evaluation, its peak and where it peaks, at the selected steps and at the last step."""
    rows = []
    data = hist[hist["split"] == "test"] if not hist.empty else hist
    for label in labels:
        sub = data[data["label"] == label] if not data.empty else data
        if sub.empty:
            continue
        minority = sub.loc[sub["train_count"].idxmin(), "group_index"]
        g = sub[sub["group_index"] == minority]
        curve = g.groupby("step")["acc"].mean()
        selected = g[g["step"] == g["selected_step"]]["acc"].mean()
        rows.append({
            "method": label, "minority group": g["group"].iloc[0],
            "train count": int(g["train_count"].iloc[0]),
            "seeds": g["run_id"].nunique(),
            "first evaluation step": int(curve.index[0]),
            "acc. at first evaluation (%)": curve.iloc[0],
            "peak acc. (%)": curve.max(), "peak step": int(curve.idxmax()),
            "acc. at selected steps (%)": selected,
            "acc. at last step (%)": curve.iloc[-1],
            "peak − last (points)": curve.max() - curve.iloc[-1],
        })
    return pd.DataFrame(rows).set_index("method").round(1) if rows else pd.DataFrame()


def minority_table(
    hist: pd.DataFrame, labels: Sequence[str] = DYNAMICS_LABELS
) -> pd.DataFrame | Note:
    """``minority_summary`` for display: test accuracy (%) of the minority group, with steps."""
    table = minority_summary(hist, labels)
    if table.empty:
        return _nothing(f"histories of {', '.join(labels)}")
    return pd.DataFrame({
        "minority group": table["minority group"],
        "first evaluation": [f"{a:.1f} (step {s})" for a, s in zip(
            table["acc. at first evaluation (%)"], table["first evaluation step"], strict=True)],
        "peak": [f"{a:.1f} (step {s})" for a, s in zip(
            table["peak acc. (%)"], table["peak step"], strict=True)],
        "selected steps": table["acc. at selected steps (%)"].map(_pct),
        "last step": table["acc. at last step (%)"].map(_pct),
        "peak − last": table["peak − last (points)"].map(_pct),
    }, index=table.index)


def minority_text(hist: pd.DataFrame, labels: Sequence[str] = DYNAMICS_LABELS) -> Note:
    """Computed sentences: does the minority group improve early, and does it overfit late?"""
    table = minority_summary(hist, labels)
    if table.empty:
        return _nothing(f"histories of {', '.join(labels)}")
    lines = []
    for label, r in table.iterrows():
        lines.append(
            f"- **{label}** ({_seeds_text(int(r['seeds']))}): the minority group "
            f"*{r['minority group']}* ({int(r['train count'])} training samples) was at "
            f"{r['acc. at first evaluation (%)']:.1f} % after {int(r['first evaluation step'])} "
            f"steps, peaked at {r['peak acc. (%)']:.1f} % at step {int(r['peak step'])} and "
            f"ended at {r['acc. at last step (%)']:.1f} % "
            f"({r['peak − last (points)']:.1f} points below its peak)."
        )
    return Note("\n".join(lines))


# ----------------------------------------------------------------------------- efficiency


def _adapter_rows(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, run in runs.iterrows():
        record = read_run(run["path"])
        params = record.get("params") or {}
        rows.append({
            "profile": run["profile"], "experiment": run["experiment"],
            "model": params.get("model", "—"), "c": c_text(params.get("c")),
            "trainable_params": record.get("trainable_params"),
            "adapter_bytes": record.get("adapter_bytes"),
            "train_time_s": record.get("train_time_s"),
            "steps": params.get("steps"), "label": run.get("label"),
        })
    return pd.DataFrame(rows)


def adapter_table(*frames: pd.DataFrame) -> pd.DataFrame | Note:
    """Per profile, experiment and model: trainable parameters, adapter file size, how many
    runs and distinct c values, and the storage all of their adapters take together.

    Takes one or more ``load_runs`` frames (e.g. this profile's and the paper profile's).
    """
    runs = pd.concat([f for f in frames if not f.empty] or [pd.DataFrame()], ignore_index=True)
    if runs.empty:
        return _nothing("runs")
    rows = _adapter_rows(runs.drop_duplicates("path"))
    out, index = [], []
    for (profile, experiment, model), sub in rows.groupby(["profile", "experiment", "model"]):
        params = sorted({int(v) for v in sub["trainable_params"].dropna()})
        size = pd.to_numeric(sub["adapter_bytes"], errors="coerce")
        index.append(f"{experiment} ({profile})")
        out.append({
            "model": model_title(model),
            "trainable": " / ".join(f"{p:,}" for p in params) or "—",
            "adapter (KB)": _pct(size.mean() / 1024),
            "runs": len(sub), "c values": sub["c"].nunique(),
            "all (MB)": _pct(size.sum() / 2**20, 2),
        })
    return pd.DataFrame(out, index=index)


@contextmanager
def _quiet_model_building() -> Iterator[None]:
    """Hide what building random-weight models always prints and which says nothing here:
    open_clip's "No pretrained weights loaded" and a transformers deprecation warning."""

    def keep(record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                    category=FutureWarning)
            yield
    finally:
        root.removeFilter(keep)


def _trainable_cache_key() -> str:
    """The models' code and the libraries that define the architectures (found without
    importing them: on a cache hit the chapter never loads the model libraries)."""
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec("cptlib.models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("cptlib.models is not installed")
    versions = []
    for dist in ("timm", "open_clip_torch", "transformers", "peft", "torchvision"):
        try:
            versions.append(f"{dist}={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{dist}=none")
    code = records.code_version([Path(p) for p in spec.submodule_search_locations])
    return hashlib.sha256(f"{code};{';'.join(versions)}".encode()).hexdigest()[:12]


def trainable_parameters(cache: Path | None = None) -> pd.DataFrame | Note:
    """Trainable parameters per model as ``cptlib.models.trainable_table`` counts them.

    Building the paper-size models takes tens of seconds, so the table is cached in
    ``cache`` (default: the study's cache folder), keyed by the models' code and the library
    versions: a change to either recounts.
    """
    try:
        path = (cache or cache_dir() / "book") / f"trainable-{_trainable_cache_key()}.json"
        if not path.exists():
            from cptlib.models import trainable_table
    except ImportError as err:
        return Note(f"*The parameter counts are unavailable: {err}.*")
    if path.exists():
        table = pd.read_json(path, orient="records")
    else:
        with _quiet_model_building():
            table = trainable_table()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(table.to_json(orient="records"))
        tmp.replace(path)
    return pd.DataFrame({
        "adaptation": table["method"].tolist(),
        "trainable": [f"{int(v):,}" for v in table["trainable"]],
        "backbone (M)": (table["backbone_params"] / 1e6).round(1).tolist(),
        "trainable / backbone (%)": [f"{v:.3g}" for v in table["percent"]],
    }, index=[model_title(m) for m in table["model"]])


def run_time_table(runs: pd.DataFrame) -> pd.DataFrame | Note:
    """Training time per optimiser step of the recorded runs, per method, relative to ERM.

    Includes each run's evaluations and whatever else ran on the machine: the bench is the
    controlled measurement; this is what the runs actually cost.
    """
    if runs.empty:
        return _nothing("runs")
    rows = _adapter_rows(runs[runs["uniform_c"]]).dropna(subset=["train_time_s", "steps"])
    if rows.empty:
        return _nothing("training times")
    rows["ms_per_step"] = 1000 * rows["train_time_s"] / rows["steps"]
    agg = records.aggregate(rows, ["experiment", "label"], ["ms_per_step"]).set_index("label")
    out = []
    for experiment, sub in agg.groupby("experiment"):
        erm = sub.loc["ERM", "ms_per_step"] if "ERM" in sub.index else math.nan
        for label in ordered(sub.index):
            r = sub.loc[label]
            out.append({"experiment": experiment, "method": label, "runs": int(r["n"]),
                        "ms per step": records.format_mean_se(r["ms_per_step"],
                                                              r["ms_per_step_se"], scale=1),
                        "× ERM": _pct(r["ms_per_step"] / erm, 2)})
    return pd.DataFrame(out).set_index(["experiment", "method"])


def _machine_text(machine: Any) -> str:
    if isinstance(machine, dict):
        return ", ".join(f"{k}: {v}" for k, v in machine.items() if not isinstance(v, dict | list))
    return "not described in the file" if machine is None else str(machine)


def load_bench(folder: Path | str, gpu: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Rows of the ``cpt bench`` JSON files in ``folder`` (``gpu-*.json`` when ``gpu``) and a
    description of each file's machine. A file holds a list of rows, or an object with
    ``rows`` and ``machine``."""
    folder = Path(folder)
    files = sorted(folder.glob("gpu-*.json" if gpu else "*.json")) if folder.is_dir() else []
    files = [f for f in files if gpu or not f.name.startswith("gpu-")]
    frames, machines = [], []
    for path in files:
        data = json.loads(path.read_text())
        rows = data.get("rows", []) if isinstance(data, dict) else data
        machine = data.get("machine") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise ValueError(f"{path}: 'rows' must be a list of benchmark rows")
        frames.append(pd.DataFrame(rows).assign(file=path.name))
        machines.append(f"`{path.name}`: {_machine_text(machine)}")
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), machines


BENCH_MISSING = {
    False: "**The benchmark has not been run** for this build (no `results/bench/*.json`). "
           "Run it with:\n\n```console\n$ cpt bench --json results/bench/cpu.json\n```",
    True: "**Ready and unmeasured.** The GPU benchmark (`scripts/bench_gpu.py`, which writes "
          "`results/bench/gpu-<device>.json`) has not been run for this build, so this book "
          "reports no GPU timing.",
}


def bench_section(folder: Path | str, gpu: bool = False) -> tuple[pd.DataFrame, Note]:
    """The bench rows of ``folder`` (see ``load_bench``) and the sentence that introduces them:
    the machines they were measured on, or how to produce them."""
    rows, machines = load_bench(folder, gpu=gpu)
    if rows.empty:
        return rows, Note(BENCH_MISSING[gpu])
    return rows, Note("Measured on: " + "; ".join(machines))


def bench_table(rows: pd.DataFrame) -> pd.DataFrame | Note:
    """The bench rows rounded: median time per step (ms), ratio to ERM, peak memory (MB)."""
    if rows.empty:
        return _nothing("benchmark rows")
    keys = (["file"] if rows["file"].nunique() > 1 else []) + ["model", "method", "K"]
    out = pd.DataFrame({
        "file": rows["file"], "model": rows["model"].map(model_title), "method": rows["method"],
        "K": rows["groups"],
        "ms per step": (1000 * pd.to_numeric(rows["median_s"])).round(1),
        "× ERM": pd.to_numeric(rows["ratio_to_erm"]).round(2),
        "peak MB": pd.to_numeric(rows.get("peak_mem_mb"), errors="coerce").round(0),
    })
    return out.set_index(keys).drop(columns=[c for c in ("file",) if c not in keys])


# The performance targets of the study (issue "Performance"), on the quick backbone, batch 64.
BENCH_TARGETS = (("CPT step / ERM step", 4, 1.2), ("CPT step / ERM step", 16, 1.5),
                 ("balancer time per step (ms)", 4, 2.0))


def bench_targets(rows: pd.DataFrame) -> pd.DataFrame | Note:
    """Each target next to what the bench measured for every per-group-gradient way."""
    if rows.empty:
        return _nothing("benchmark rows")
    out = []
    for what, k, limit in BENCH_TARGETS:
        if what.startswith("balancer"):
            hit = rows[(rows["method"] == "balancer-only") & (rows["groups"] == k)]
            cases = [("balancer-only", 1000 * pd.to_numeric(hit["median_s"]))]
        else:
            quick = rows[(rows["model"] == "quick") & (rows["groups"] == k)
                         & (pd.to_numeric(rows.get("batch", 64)) == 64)]
            methods = sorted(m for m in quick["method"].unique() if m.startswith("cpt-"))
            cases = [(m, pd.to_numeric(quick[quick["method"] == m]["ratio_to_erm"]))
                     for m in methods]
        for method, values in cases:
            if values.empty or values.isna().all():
                continue
            value = float(values.median())
            out.append({"target": what, "K": k, "method": method, "limit": f"≤ {limit:g}",
                        "measured": round(value, 2), "met": "yes" if value <= limit else "no"})
    if not out:
        return _nothing("rows for the targets (quick model at K = 4 or 16, balancer at K = 4)")
    return pd.DataFrame(out).set_index(["target", "K", "method"])


def bench_figure(rows: pd.DataFrame) -> Figure | Note:
    """Per-step cost relative to ERM, per method and number of groups (one panel per model)."""
    if rows.empty:
        return _nothing("benchmark rows")
    data = rows.assign(ratio=pd.to_numeric(rows["ratio_to_erm"]), groups=rows["groups"].astype(str))
    models = list(dict.fromkeys(data["model"]))
    fig, axes = _figure(1, len(models), width=min(8.5, 3.6 * len(models) + 1.6), height=4.2,
                        sharey=True)
    for ax, model in zip(axes[0], models, strict=True):
        sns.barplot(data[data["model"] == model], x="method", y="ratio", hue="groups",
                    errorbar=None, ax=ax)
        ax.axhline(1.0, color="0.3", linestyle="--", linewidth=1)
        ax.set_title(model_title(model))
        ax.set_xlabel("method")
        ax.set_ylabel("median time per step / ERM's")
        ax.tick_params(axis="x", labelrotation=20)
    _move_legend(fig, axes[0], "groups K", below=True)
    fig.suptitle("Per-step cost against ERM (dashed line: ERM)")
    return fig


# ----------------------------------------------------------------------------- paper pages


def _flat_params(params: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, str]]:
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flat_params(value, f"{name}.")
        else:
            yield name, json.dumps(value) if isinstance(value, list | bool | None) else str(value)


def params_table(params: dict[str, Any]) -> pd.DataFrame:
    """A profile's parameters of one experiment, one row per (flattened) parameter."""
    rows = list(_flat_params(params))
    return pd.DataFrame({"value": [v for _, v in rows]}, index=[k for k, _ in rows])


def profile_runs_table(entries: Sequence[dict[str, Any]], params: dict[str, Any]) -> pd.DataFrame:
    """The runs a profile lists for one experiment: setting, α, c values and seeds."""
    rows = []
    for entry in entries:
        method = entry.get("method", "erm")
        alpha = entry.get("alpha", params.get("alpha"))
        cs = entry.get("cs") or [entry.get("c")]
        seeds = entry.get("seeds") or [entry.get("seed", 0)]
        for c in cs:
            if method not in CONTROLLED:
                c_shown = "—"
            else:
                c_shown = "uniform" if c is None else f"({records.vector_str(c)})"
            rows.append({"setting": run_label(method, alpha, c),
                         "α": "notebook default" if alpha is None else f"{float(alpha):g}",
                         "c": c_shown, "seeds": ", ".join(str(s) for s in seeds)})
    return pd.DataFrame(rows).set_index("setting")


def model_title(name: Any) -> str:
    """A model's name as the book prints it (``lora:<model>`` keeps its model's title)."""
    text = str(name)
    prefix, sep, rest = text.partition(":")
    if sep and prefix != "clip":
        return model_title(rest)
    return MODEL_TITLES.get(text, text)


def paper_dataset(experiment: str, params: dict[str, Any]) -> str:
    """The dataset a paper experiment trains on: the profile's ``dataset`` parameter, else the
    experiment notebook's default, else the experiment's name up to the first ``_``."""
    if params.get("dataset"):
        return str(params["dataset"])
    from cptlib.sweep import notebook_defaults

    try:
        return str(notebook_defaults(experiment)["dataset"])
    except (ValueError, KeyError):
        base = experiment.split("_")[0]
        if base in DATASET_TITLES:
            return base
        raise ValueError(f"cannot tell the dataset of experiment {experiment!r}: give it a "
                         "'dataset' parameter in profiles.yaml") from None


def paper_title(experiment: str, dataset: str, params: dict[str, Any]) -> str:
    """The page title of a paper-scale experiment: its dataset and model, as the profile sets."""
    name = DATASET_TITLES.get(dataset, dataset)
    model = params.get("model")
    return f"{name}, {model_title(model)}" if model else name
