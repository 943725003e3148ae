"""The ``cpt bench`` measurements: reading the JSON files, the tables and the targets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from cptlib.analysis.labels import model_title
from cptlib.analysis.text import DASH, Note, nothing, pct

BENCH_MISSING = {
    False: "**The benchmark has not been run** for this build (no `results/bench/*.json`). "
           "Run it with:\n\n```console\n$ cpt bench --json results/bench/cpu.json\n```",
    True: "**Ready and unmeasured.** The GPU benchmark (`scripts/bench_gpu.py`, which writes "
          "`results/bench/gpu-<device>.json`) has not been run for this build, so this book "
          "reports no GPU timing.",
}
#: The bench's name for the LP alone (no model, no ERM step to compare with).
BALANCER_ONLY = "balancer-only"
# The performance targets of the study (issue "Performance"), on the quick backbone, batch 64.
#: The performance issue's targets: (what, K, limit). Step ratios hold for every model the
#: bench measures at its quick shapes (batch 64 for the image models, 32 for the text model).
BENCH_TARGETS = (("CPT step / ERM step", 4, 1.1), ("CPT step / ERM step", 16, 1.1),
                 ("balancer time per step (ms)", 16, 1.0),
                 ("balancer time per step (ms)", 64, 3.0))
#: Rows of a smoke bench (``cpt bench --quick``: batch 8 or 32) are not measurements of these.
TARGET_BATCHES = {"minilm": 32}


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


def bench_section(folder: Path | str, gpu: bool = False) -> tuple[pd.DataFrame, Note]:
    """The bench rows of ``folder`` (see ``load_bench``) and the sentence that introduces them:
    the machines they were measured on, or how to produce them."""
    rows, machines = load_bench(folder, gpu=gpu)
    if rows.empty:
        return rows, Note(BENCH_MISSING[gpu])
    return rows, Note("Measured on: " + "; ".join(machines))


def _numbers(rows: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(rows[name] if name in rows else pd.Series(index=rows.index),
                         errors="coerce")


def bench_table(rows: pd.DataFrame) -> pd.DataFrame | Note:
    """The bench rows rounded: median time per step (ms), ratio to ERM, peak memory (MB);
    a dash where the bench has no value (see ``bench_table_text``)."""
    if rows.empty:
        return nothing("benchmark rows")
    keys = (["file"] if rows["file"].nunique() > 1 else []) + ["model", "method", "K"]
    out = pd.DataFrame({
        "file": rows["file"],
        "model": [DASH if m == "none" else model_title(m) for m in rows["model"]],
        "method": rows["method"], "K": rows["groups"],
        "ms per step": [pct(1000 * v) for v in _numbers(rows, "median_s")],
        "× ERM": [pct(v, 2) for v in _numbers(rows, "ratio_to_erm")],
        "peak MB": [pct(v, 0) for v in _numbers(rows, "peak_mem_mb")],
    })
    return out.set_index(keys).drop(columns=[c for c in ("file",) if c not in keys])


def bench_table_text(rows: pd.DataFrame) -> Note | None:
    """What the dashes of ``bench_table`` mean, for the dashes it has (None when it has none)."""
    if rows.empty:
        return None
    alone = rows["method"] == BALANCER_ONLY
    ratio, memory = _numbers(rows, "ratio_to_erm"), _numbers(rows, "peak_mem_mb")
    parts = []
    if alone.any() and (ratio[alone].isna().any() or (rows.loc[alone, "model"] == "none").any()):
        parts.append(f"`{BALANCER_ONLY}` times the LP alone, without a model, so it has no "
                     "model, no ERM step to be compared with and no step memory")
    if ratio[~alone].isna().any():
        parts.append("a ratio dash means the file has no ERM row of the same model, batch and K")
    if memory[~alone].isna().any():
        parts.append("a memory dash means the bench did not measure memory for that row")
    if not parts:
        return None
    return Note("A dash (—) marks a value that does not exist: " + "; ".join(parts) + ".")


def figure_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows a per-step-cost figure can draw: a model and a ratio to ERM."""
    if rows.empty:
        return rows
    keep = (rows["method"] != BALANCER_ONLY) & (rows["model"] != "none")
    keep &= _numbers(rows, "ratio_to_erm").notna()
    return rows[keep].assign(ratio=_numbers(rows, "ratio_to_erm"),
                             groups=rows["groups"].astype(str))


def bench_targets(rows: pd.DataFrame) -> pd.DataFrame | Note:
    """Each target next to what the bench measured for every per-group-gradient way."""
    if rows.empty:
        return nothing("benchmark rows")
    out = []
    for what, k, limit in BENCH_TARGETS:
        if what.startswith("balancer"):
            hit = rows[(rows["method"] == BALANCER_ONLY) & (rows["groups"] == k)]
            cases = [(BALANCER_ONLY, 1000 * pd.to_numeric(hit["median_s"]))]
        else:
            batch = _numbers(rows, "batch") if "batch" in rows else pd.Series(64, rows.index)
            wanted = rows["model"].map(lambda m: TARGET_BATCHES.get(m, 64))
            step = rows[(rows["groups"] == k) & (rows["model"] != "none") & (batch == wanted)
                        & rows["method"].astype(str).str.startswith("cpt-")]
            cases = [(f"{model}: {method}", _numbers(part, "ratio_to_erm"))
                     for (model, method), part in step.groupby(["model", "method"], sort=True)]
        for method, values in cases:
            if values.empty or values.isna().all():
                continue
            value = float(values.median())
            out.append({"target": what, "K": k, "method": method, "limit": f"≤ {limit:g}",
                        "measured": round(value, 2), "met": "yes" if value <= limit else "no"})
    if not out:
        return nothing("rows for the targets (models at their quick shapes at K = 4 or 16, "
                       "the balancer at K = 16 or 64)")
    return pd.DataFrame(out).set_index(["target", "K", "method"])


def bench_ratio(rows: pd.DataFrame, model: str, method: str, groups: int) -> float | None:
    """The median ratio to ERM the bench measured for one (model, method, K), if it did."""
    if rows.empty:
        return None
    hit = rows[(rows["model"] == model) & (rows["method"] == method) & (rows["groups"] == groups)]
    values = _numbers(hit, "ratio_to_erm").dropna()
    return float(values.median()) if not values.empty else None
