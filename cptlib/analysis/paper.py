"""The paper-scale pages: a profile's parameters and runs of one experiment, the page title.

The book passes each page its experiment, dataset and title (from the experiment registry);
``paper_title`` is the fallback for a page executed without them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from cptlib import records
from cptlib.analysis.labels import CONTROLLED, DATASET_TITLES, model_title, run_label


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
