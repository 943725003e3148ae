"""What the runs cost: trainable parameters, adapter files, time per step.

The parameter counts come from ``<results>/<profile>/trainable_params.json``, which ``cpt book``
writes before the chapters run (``cptlib.models.trainable_table``): a chapter never builds a
model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from cptlib import records
from cptlib.analysis.bench import bench_ratio
from cptlib.analysis.frames import read_run, results_path
from cptlib.analysis.labels import c_text, model_title, ordered
from cptlib.analysis.text import DASH, Note, missing, nothing, pct

TRAINABLE_FILE = "trainable_params.json"
TRAINABLE_COLUMNS = ("model", "method", "trainable", "backbone_params", "percent")


def trainable_path(results_dir: Path | str, profile: str) -> Path:
    """Where ``cpt book`` writes the parameter counts of a profile's build."""
    return results_path(results_dir) / profile / TRAINABLE_FILE


def load_trainable(results_dir: Path | str, profile: str) -> pd.DataFrame:
    """The rows of ``trainable_params.json`` (empty when the file does not exist)."""
    path = trainable_path(results_dir, profile)
    if not path.is_file():
        return pd.DataFrame(columns=list(TRAINABLE_COLUMNS))
    rows = json.loads(path.read_text())
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of rows with {list(TRAINABLE_COLUMNS)}")
    table = pd.DataFrame(rows)
    absent = [c for c in TRAINABLE_COLUMNS if c not in table.columns]
    if absent:
        raise ValueError(f"{path}: rows lack the column(s) {absent}")
    return table


def trainable_table(counts: pd.DataFrame, profile: str) -> pd.DataFrame | Note:
    """``load_trainable`` for display: adaptation, trainable, backbone size, ratio."""
    if counts.empty:
        return Note(f"*The parameter counts of this build have not been computed: "
                    f"`cpt book --profile {profile}` writes them to "
                    f"`results/{profile}/{TRAINABLE_FILE}` before the chapters run.*")
    return pd.DataFrame({
        "adaptation": counts["method"].tolist(),
        "trainable": [f"{int(v):,}" for v in counts["trainable"]],
        "backbone (M)": [pct(v / 1e6) for v in counts["backbone_params"]],
        "trainable / backbone (%)": [DASH if missing(v) else f"{float(v):.3g}"
                                     for v in counts["percent"]],
    }, index=[model_title(m) for m in counts["model"]])


def adapter_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run: model, its options, c, trainable parameters, adapter size, time and steps."""
    rows = []
    for _, run in runs.iterrows():
        record = read_run(run["path"])
        params = record.get("params") or {}
        resolved = record.get("resolved") or {}
        rows.append({
            "profile": run["profile"], "experiment": run["experiment"],
            "model": params.get("model", DASH), "model_options": params.get("model_options"),
            "c": c_text(params.get("c")),
            "trainable_params": record.get("trainable_params"),
            "adapter_bytes": record.get("adapter_bytes"),
            "train_time_s": record.get("train_time_s"),
            "steps": resolved.get("steps", params.get("steps")),
            "grad_way": resolved.get("grad_way", params.get("grad_way")),
            "eval_every": resolved.get("eval_every", params.get("eval_every")),
            "diag_every": params.get("diag_every"),
            "hardware": ((record.get("provenance") or {}).get("hardware") or {}),
            "label": run.get("label"), "n_groups": len(record.get("group_names") or []),
        })
    return pd.DataFrame(rows)


def _all_runs(frames: tuple[pd.DataFrame, ...]) -> pd.DataFrame:
    runs = pd.concat([f for f in frames if not f.empty] or [pd.DataFrame()], ignore_index=True)
    return runs if runs.empty else runs.drop_duplicates("path")


def adapter_table(*frames: pd.DataFrame) -> pd.DataFrame | Note:
    """Per profile, experiment and model: trainable parameters, adapter file size, how many
    runs and distinct c values, and the storage all of their adapters take together.

    Takes one or more ``load_runs`` frames (e.g. this profile's and the paper profile's).
    """
    runs = _all_runs(frames)
    if runs.empty:
        return nothing("runs")
    rows = adapter_rows(runs).dropna(subset=["trainable_params", "adapter_bytes"], how="all")
    if rows.empty:  # e.g. only the toy, which trains no adapter
        return nothing("runs that trained an adapter")
    out, index = [], []
    for (profile, experiment, model), sub in rows.groupby(["profile", "experiment", "model"]):
        params = sorted({int(v) for v in sub["trainable_params"].dropna()})
        size = pd.to_numeric(sub["adapter_bytes"], errors="coerce")
        index.append(f"{experiment} ({profile})")
        out.append({
            "model": model_title(model),
            "trainable": " / ".join(f"{p:,}" for p in params) or DASH,
            "adapter (KB)": pct(size.mean() / 1024),
            "runs": len(sub), "c values": sub["c"].nunique(),
            "all (MB)": pct(size.sum() / 2**20, 2),
        })
    return pd.DataFrame(out, index=index)


def _options_text(options: Any) -> str:
    if not isinstance(options, dict) or not options:
        return "no model options"
    return ", ".join(f"`{k}: {json.dumps(v)}`" for k, v in sorted(options.items())
                     if k != "pretrained") or "no model options"


def trainable_text(counts: pd.DataFrame, *frames: pd.DataFrame) -> Note | None:
    """Why a model's count in the runs differs from its count in the table of models.

    Both count every parameter with ``requires_grad`` (prompts *and* classification head);
    the table builds each model at its default options, a run at its profile's options (e.g.
    fewer prompt tokens), so the numbers differ exactly when the options do.
    """
    runs = _all_runs(frames)
    if counts.empty or runs.empty:
        return None
    rows = adapter_rows(runs).dropna(subset=["trainable_params"])
    lines = []
    for (experiment, profile, model), sub in rows.groupby(["experiment", "profile", "model"]):
        listed = {int(v) for v in counts.loc[counts["model"] == model, "trainable"]}
        trained = sorted({int(v) for v in sub["trainable_params"]} - listed)
        if not listed or not trained:
            continue
        lines.append(
            f"- {model_title(model)}: the table of models counts "
            f"{' / '.join(f'{v:,}' for v in sorted(listed))} trainable parameters, the runs of "
            f"`{experiment}` ({profile}) trained {' / '.join(f'{v:,}' for v in trained)}. The "
            "table builds the model at its default options, the runs at their profile's "
            f"({_options_text(sub['model_options'].iloc[0])}); both counts include the "
            "classification head.")
    if not lines:
        return None
    return Note("Why some counts differ between the two tables:\n\n" + "\n".join(lines))


def _time_rows(runs: pd.DataFrame) -> pd.DataFrame:
    rows = adapter_rows(runs[runs["uniform_c"]]).dropna(subset=["train_time_s", "steps"])
    if not rows.empty:
        rows["ms_per_step"] = 1000 * rows["train_time_s"] / rows["steps"]
    return rows


def run_time_table(runs: pd.DataFrame) -> pd.DataFrame | Note:
    """Training time per optimiser step of the recorded runs, per method, relative to ERM.

    Includes each run's evaluations and whatever else ran on the machine: the bench is the
    controlled measurement; this is what the runs actually cost.
    """
    if runs.empty:
        return nothing("runs")
    rows = _time_rows(runs)
    if rows.empty:
        return nothing("training times")
    agg = records.aggregate(rows, ["experiment", "label"], ["ms_per_step"]).set_index("label")
    out = []
    for experiment, sub in agg.groupby("experiment"):
        erm = sub.loc["ERM", "ms_per_step"] if "ERM" in sub.index else math.nan
        for label in ordered(sub.index):
            r = sub.loc[label]
            out.append({"experiment": experiment, "method": label, "runs": int(r["n"]),
                        "ms per step": records.format_mean_se(r["ms_per_step"],
                                                              r["ms_per_step_se"], scale=1),
                        "× ERM": pct(r["ms_per_step"] / erm, 2)})
    return pd.DataFrame(out).set_index(["experiment", "method"])


def _side_by_side(hardware: pd.Series) -> str:
    """How many runs shared the machine, from the records' hardware (threads of cores)."""
    threads = {h.get("torch_threads") for h in hardware if isinstance(h, dict)}
    cores = {h.get("cpu_count") for h in hardware if isinstance(h, dict)}
    if len(threads) != 1 or len(cores) != 1 or None in threads | cores:
        return "the records do not say how many runs shared the machine"
    t, n = threads.pop(), cores.pop()
    side = max(1, n // t)
    return (f"each run used {t} torch thread{'s' if t != 1 else ''} of a {n}-core machine, "
            f"{'alone' if side == 1 else f'with about {side} runs side by side'} (the sweep "
            "gives each of its parallel runs cores ÷ runs threads)")


def _diagnostics_text(diag_every: pd.Series) -> str:
    every = pd.to_numeric(diag_every, errors="coerce").dropna()
    if every.empty or not (every > 0).any():
        return ""
    return (", and ERM's and GroupDRO's per-group gradients for the conflict diagnostics "
            f"every {int(every.iloc[0])} steps (CPT computes them for its update anyway; the "
            "benchmark turns them off)")


def run_time_text(runs: pd.DataFrame, bench: pd.DataFrame) -> Note | None:
    """Why the recorded runs' CPT/ERM time ratio need not match the bench's, with both numbers.

    The recorded time covers every evaluation, ERM's and GroupDRO's per-group-gradient
    diagnostics and whatever ran beside the run; the bench times one step of each method alone.
    """
    rows = _time_rows(runs) if not runs.empty else pd.DataFrame()
    if rows.empty:
        return None
    lines = []
    for experiment, sub in rows.groupby("experiment"):
        per = sub.groupby("label")["ms_per_step"].mean()
        cpt = next((x for x in per.index if x.startswith("CPT(c=1)")), None)
        if "ERM" not in per.index or cpt is None:
            continue
        first = sub[sub["label"] == cpt].iloc[0]
        ways = sub.loc[sub["label"] == cpt, "grad_way"].dropna().unique()
        way = ways[0] if len(ways) == 1 else None
        measured = bench_ratio(bench, first["model"], f"cpt-{way}", first["n_groups"]) \
            if way else None
        evals = sub["steps"] / pd.to_numeric(sub["eval_every"], errors="coerce")
        bench_part = (f"; the controlled benchmark measured {measured:.2f}× for `cpt-{way}` on "
                      f"the same model at K = {first['n_groups']}" if measured is not None
                      else "; the benchmark has no row for the same model, way and K")
        lines.append(
            f"- `{experiment}`: in the recorded runs {cpt} took "
            f"{per[cpt] / per['ERM']:.2f}× ERM's time per step{bench_part}. The recorded time "
            f"includes about {evals.mean():.0f} evaluations of the validation and test sets "
            f"per run{_diagnostics_text(sub['diag_every'])}; {_side_by_side(sub['hardware'])}. "
            "So it is what "
            "the runs cost, not a comparison of the methods: the benchmark is.")
    if not lines:
        return None
    return Note("\n".join(lines))
