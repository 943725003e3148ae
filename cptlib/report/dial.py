"""An interactive figure where the reader "dials c": per-group accuracy for one control vector,
a slider over how far one entry of c is raised and a menu over which entry (the path).

The book is static HTML read offline, so every state is precomputed in the figure (one bar
trace per (path, strength), shown or hidden by the slider and the menu) and plotly.js is
embedded inline: nothing runs in Python and nothing is fetched when the reader moves the dial.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pandas as pd
from matplotlib.colors import to_hex

from cptlib.report.style import group_palette

if TYPE_CHECKING:
    import plotly.graph_objects as go

#: Columns of the long input frame, one row per (path, strength, group, split).
COLUMNS = ("path", "strength", "c", "group", "split", "acc")

#: A script loaded from elsewhere (a CDN) instead of written inline.
SCRIPT_SRC = re.compile(r"<script\b[^>]*\bsrc\s*=", re.IGNORECASE)

#: plotly.js settings for a page read offline: no mode bar (its zoom tools are no use on a few
#: bars, and its logo and "edit in Chart Studio" buttons link out), no MathJax typesetting (the
#: book loads its own MathJax for its formulas), no link to plotly's site.
CONFIG: dict[str, Any] = {
    "displayModeBar": False,
    "displaylogo": False,
    "showSendToCloud": False,
    "responsive": True,
    "typesetMath": False,
}


def _check(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of ``split``, after checking that every path has the same strengths and groups
    (else a slider position would mean different things on different paths)."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"dial_figure: the frame lacks the columns {missing} "
                         f"(it needs {list(COLUMNS)})")
    rows = frame[frame["split"] == split]
    if rows.empty:
        raise ValueError(f"dial_figure: no rows for split {split!r} "
                         f"(splits present: {sorted(frame['split'].unique())})")
    acc = rows["acc"].astype(float)
    if not acc.between(0.0, 1.0).all():
        raise ValueError("dial_figure: acc must be a fraction in [0, 1] (not a percentage)")
    if rows.duplicated(["path", "strength", "group"]).any():
        raise ValueError("dial_figure: more than one row for a (path, strength, group)")
    if (rows.groupby(["path", "strength"])["c"].nunique() > 1).any():
        raise ValueError("dial_figure: a (path, strength) has more than one c label")
    for column in ("strength", "group"):
        sets = rows.groupby("path")[column].agg(frozenset)
        if sets.nunique() > 1:
            raise ValueError(f"dial_figure: the paths do not share the same {column} values: "
                             + "; ".join(f"{p}: {sorted(s)}" for p, s in sets.items()))
    if len(rows) != rows["path"].nunique() * rows["strength"].nunique() * rows[
            "group"].nunique():
        raise ValueError("dial_figure: some (path, strength) lacks a group's accuracy")
    return rows


def _strength_label(strength: float) -> str:
    """1.5 → "1.5", 4.0 → "4" (the slider's tick labels)."""
    return f"{strength:g}"


def _title(path: str, c: str, worst: float, title: str | None) -> str:
    head = f"{title}<br>" if title else ""
    return f"{head}{path}: c = {c} <span style='font-size:0.8em'>(worst group {worst:.1f}%)</span>"


def _worst_line(worst: float) -> dict[str, Any]:
    """A dashed horizontal line at the worst group's accuracy, across the whole plot."""
    return {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": worst,
            "y1": worst, "line": {"color": "black", "width": 1.5, "dash": "dash"}}


def _states(rows: pd.DataFrame, groups: list[str]) -> list[dict[str, Any]]:
    """One state per (path, strength), in path-major order: the bars and what the title says."""
    states = []
    for path in dict.fromkeys(rows["path"]):
        on_path = rows[rows["path"] == path]
        for strength in sorted(on_path["strength"].unique()):
            here = on_path[on_path["strength"] == strength].set_index("group").loc[groups]
            percent = [100.0 * float(a) for a in here["acc"]]
            states.append({"path": path, "strength": float(strength), "c": here["c"].iloc[0],
                           "percent": percent, "worst": min(percent)})
    return states


def _layout_for(state: dict[str, Any], title: str | None) -> dict[str, Any]:
    return {"title.text": _title(state["path"], state["c"], state["worst"], title),
            "shapes": [_worst_line(state["worst"])]}


def _slider(states: list[dict[str, Any]], path: str, title: str | None) -> dict[str, Any]:
    """The strength slider of one path: each step shows that path's bars at one strength."""
    steps = []
    for state in states:
        if state["path"] != path:
            continue
        visible = [s is state for s in states]
        steps.append({"method": "update", "label": _strength_label(state["strength"]),
                      "args": [{"visible": visible}, _layout_for(state, title)]})
    return {"active": 0, "steps": steps, "pad": {"t": 50},
            "currentvalue": {"prefix": "raised entry of c: ", "font": {"size": 14}}}


def dial_figure(frame: pd.DataFrame, *, split: str = "test",
                title: str | None = None) -> go.Figure:
    """Per-group accuracy (%) for one control vector c, with a slider over the raised entry's
    strength and a menu over the paths; every state is in the figure (works in static HTML).

    ``frame`` is long: columns ``path``, ``strength``, ``c``, ``group``, ``split``, ``acc``
    (a fraction). Switching the path starts its slider at the smallest strength.
    """
    import plotly.graph_objects as go

    rows = _check(frame, split)
    groups = list(dict.fromkeys(rows["group"]))
    colours = [to_hex(c) for c in group_palette(groups).values()]
    states = _states(rows, groups)
    paths = list(dict.fromkeys(s["path"] for s in states))
    fig = go.Figure()
    for i, state in enumerate(states):
        fig.add_trace(go.Bar(
            x=groups, y=state["percent"], marker_color=colours, visible=i == 0,
            name=f"{state['path']}, c = {state['c']}", showlegend=False,
            meta={"path": state["path"], "strength": state["strength"], "c": state["c"]},
            text=[f"{p:.1f}" for p in state["percent"]], textposition="outside",
            hovertemplate="%{x}: %{y:.1f}%<extra>c = " + state["c"] + "</extra>"))
    sliders = {p: _slider(states, p, title) for p in paths}
    buttons = []
    for path in paths:
        first = next(s for s in states if s["path"] == path)
        buttons.append({"method": "update", "label": path, "args": [
            {"visible": [s is first for s in states]},
            {**_layout_for(first, title), "sliders": [sliders[path]]}]})
    first = states[0]
    fig.update_layout(
        title={"text": _title(first["path"], first["c"], first["worst"], title),
               "x": 0.5, "xanchor": "center", "y": 0.97, "yanchor": "top"},
        shapes=[_worst_line(first["worst"])],
        sliders=[sliders[paths[0]]],
        updatemenus=[{"type": "dropdown", "buttons": buttons, "active": 0, "direction": "down",
                      "x": 0.0, "xanchor": "left", "y": 1.03, "yanchor": "bottom",
                      "showactive": True}],
        xaxis={"title": {"text": "group"}},
        yaxis={"title": {"text": f"{split} accuracy (%)"}, "range": [0, 105]},
        template="plotly_white", margin={"t": 130}, height=520,
    )
    return fig


def dial_html(fig: go.Figure) -> str:
    """The figure as an HTML fragment with plotly.js inline (no CDN, no MathJax), for a notebook
    cell to show with ``IPython.display.HTML``; MyST-NB copies it into the page as it is."""
    html = fig.to_html(include_plotlyjs=True, include_mathjax=False, full_html=False,
                       config=CONFIG)
    if SCRIPT_SRC.search(html):
        raise RuntimeError("dial_html: plotly wrote a script that loads from the network")
    return html

