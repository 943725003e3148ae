"""The paper-scale pages: a profile's parameters and runs of one experiment, the page title.

The book passes each page its experiment, dataset and title (from the experiment registry);
``paper_title`` is the fallback for a page executed without them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cptlib import records
from cptlib.analysis.labels import CONTROLLED, DATASET_TITLES, model_title, run_label
from cptlib.analysis.text import Note


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


def paper_dataset(experiment: str, params: dict[str, Any]) -> str:
    """The dataset of a paper experiment when the book did not pass it: the profile's
    ``dataset`` parameter, else the experiment's name up to the first ``_``."""
    if params.get("dataset"):
        return str(params["dataset"])
    base = experiment.split("_")[0]
    if base in DATASET_TITLES:
        return base
    raise ValueError(f"cannot tell the dataset of experiment {experiment!r}: give it a "
                     "'dataset' parameter in profiles.yaml")


def paper_title(dataset: str, params: dict[str, Any]) -> str:
    """The page title of a paper-scale experiment: its dataset and model, as the profile sets."""
    name = DATASET_TITLES.get(dataset, dataset)
    model = params.get("model")
    return f"{name}, {model_title(model)}" if model else name


def cost_text(params: dict[str, Any], data_note: str, gpu: pd.DataFrame) -> Note:
    """What a run of this experiment costs before anyone starts it: hardware, data and time,
    each from a measurement (the GPU benchmark) or plainly "not measured"."""
    model = params.get("model")
    rows = gpu[gpu["model"] == model] if not gpu.empty and "model" in gpu else gpu.iloc[0:0]
    if rows.empty:
        speed = ("not measured: no GPU benchmark of this model exists yet "
                 "(`python scripts/bench_gpu.py` on a GPU writes one)")
        memory = "not measured"
    else:
        best = rows.sort_values("median_s").iloc[0]
        batch = float(best.get("batch", 1) or 1)
        speed = (f"{batch / float(best['median_s']):.0f} images per second per step of "
                 f"`{best['method']}` at batch {batch:g} (GPU benchmark, random weights)")
        memory = f"{float(rows['peak_mem_mb'].max()) / 1024:.1f} GiB at most over the methods"
    return Note("\n".join([
        "| before you run it | |", "|---|---|",
        f"| hardware | one GPU (model `{model}` with its pretrained weights from the hub) |",
        f"| data | {data_note or 'see the dataset chapter'} (prepared once with `cpt data`) |",
        f"| speed | {speed} |", f"| peak GPU memory | {memory} |",
        "| hours per run | not measured (no paper-scale run has been made with this code) |",
    ]))


def reported_numbers(experiment: str, path: Path) -> pd.DataFrame | Note:
    """The paper's own numbers for this experiment, with their source, once someone has
    transcribed them into ``path`` (YAML: experiment → rows of method, metric, value, source)."""
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    rows = (data or {}).get(experiment) or []
    if not rows:
        return Note(f"**The paper's reported numbers: not transcribed.** Add them with their "
                    f"source (table and version of arXiv 2403.02695) under `{experiment}:` in "
                    f"`{path.name}` to show them here beside the study's.")
    missing = [r for r in rows if not r.get("source")]
    if missing:
        raise ValueError(f"{path}: every reported number of {experiment} needs a 'source'")
    return pd.DataFrame(rows).set_index(["method", "metric"])
