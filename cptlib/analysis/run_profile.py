"""Where a run's time goes (``python -m cptlib.run_profile``): the table and its sentences."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from cptlib.analysis.text import Note

PROFILE_MISSING = ("**Not profiled** for this build (no `results/profile/quick.json`). Run:"
                   "\n\n```console\n$ python -m cptlib.run_profile --json "
                   "results/profile/quick.json\n```")
PHASES = (("data_s", "load the data"), ("model_s", "build the model"),
          ("train_s", "training steps"), ("eval_s", "evaluation passes"),
          ("run_s", "the run (projected)"))


def load_run_profile(path: Path | str) -> dict[str, Any] | None:
    """The profile file, or None where it does not exist."""
    path = Path(path)
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ValueError(f"{path}: not a run profile (an object with a list 'runs')")
    return data


def run_profile_table(data: dict[str, Any]) -> pd.DataFrame:
    """Seconds per phase of each profiled run, per precision, and float32 / bf16."""
    rows = []
    for run in data["runs"]:
        fp32, bf16 = run["precisions"].get("fp32"), run["precisions"].get("bf16")
        for key, label in PHASES:  # data and model are timed once per run, not per precision
            a = run[key] if key in run else (fp32 or {}).get(key)
            b = run[key] if key in run else (bf16 or {}).get(key)
            rows.append({"experiment": run["experiment"], "phase": label,
                         "float32 (s)": a, "bf16 autocast (s)": b,
                         "float32 / bf16": a / b if a and b else None})
    return pd.DataFrame(rows).set_index(["experiment", "phase"]).round(2)


def run_profile_text(data: dict[str, Any]) -> Note:
    """What the profile says: the share of each phase, and what bf16 would change."""
    parts = [f"Importing torch, timm and transformers takes {data['imports_s']:.1f} s once per "
             "run's kernel."]
    for run in data["runs"]:
        fp32 = run["precisions"]["fp32"]
        share = {k: fp32[k] / fp32["run_s"] for k in ("train_s", "eval_s")}
        text = (f"A {run['profile']} **{run['experiment']}** run ({run['method']}, "
                f"{run['run_steps']} steps, {run['run_evals']} evaluations of validation and "
                f"test, {run['threads']} thread) is projected at {fp32['run_s']:.0f} s in "
                f"float32: {share['train_s']:.0%} training steps ({fp32['step_s']:.3f} s each) "
                f"and {share['eval_s']:.0%} evaluation.")
        bf16 = run["precisions"].get("bf16")
        if bf16:
            text += (f" Under bf16 autocast the run would take {bf16['run_s']:.0f} s "
                     f"(float32 / bf16 = {fp32['run_s'] / bf16['run_s']:.2f}; training steps "
                     f"{fp32['train_s'] / bf16['train_s']:.2f}, evaluation "
                     f"{fp32['eval_s'] / bf16['eval_s']:.2f}: above 1 is bf16 faster), and at "
                     f"the same parameters it changes the test prediction of "
                     f"{1 - bf16['same_prediction']:.1%} of examples (largest logit change "
                     f"{bf16['max_logit_diff']:.3f}).")
        parts.append(text)
    return Note(" ".join(parts))
