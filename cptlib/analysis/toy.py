"""The toy problem's statistics: where each method ends in loss space, as c changes."""

from __future__ import annotations

import pandas as pd

from cptlib import records
from cptlib.analysis.control import non_uniformity
from cptlib.analysis.labels import METHOD_NAMES, c_values


def toy_frame(df: pd.DataFrame) -> pd.DataFrame:
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


def toy_losses(df: pd.DataFrame) -> list[str]:
    """The loss columns ``L_1 … L_K`` in order."""
    return sorted((c for c in df.columns if c.startswith("L_")), key=lambda c: int(c[2:]))


def toy_endpoint_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per method and c: end-point losses, each loss's share of their sum, the share CPT aims
    at ((1/c_k) / Σ 1/c_j) and μ, the non-uniformity of the c-weighted losses (0 on the ray)."""
    toy = toy_frame(df)
    losses = toy_losses(toy)
    rows = []
    for (method, c), run in toy.groupby(["method", "c"], sort=False):
        end = run.sort_values("step")[losses].iloc[-1].to_numpy(dtype=float)
        cv = c_values(c)
        if len(cv) != len(losses):
            raise ValueError(f"c = ({c}) has {len(cv)} entries for {len(losses)} losses")
        mu = non_uniformity(end, cv)
        target = (1 / cv) / (1 / cv).sum()
        for k, name in enumerate(losses):
            rows.append({"method": method, "c": f"({c})", "loss": name.replace("_", ""),
                         "end value": end[k], "share": end[k] / end.sum(),
                         "CPT's target share": target[k], "mu": mu})
    return pd.DataFrame(rows)
