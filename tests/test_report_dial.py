"""The "dial c" figure: one precomputed state per (path, strength), a slider and a menu that
switch between them, and an HTML fragment that carries plotly.js itself (no CDN)."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from cptlib.report.dial import dial_figure, dial_html

GROUPS = ("landbird on land", "landbird on water", "waterbird on land", "waterbird on water")
PATHS = {"raise waterbird on land": 2, "raise landbird on water": 1}
STRENGTHS = (1.0, 2.0, 4.0)


def _acc(path_index: int, strength: float, group_index: int) -> float:
    """A distinct, exactly representable accuracy for every cell."""
    return (40 + 10 * group_index + 4 * path_index + strength) / 100


def synthetic(split: str = "test") -> pd.DataFrame:
    rows = []
    for p, (path, entry) in enumerate(PATHS.items()):
        for strength in STRENGTHS:
            c = [1.0] * len(GROUPS)
            c[entry] = strength
            label = "[" + ", ".join(f"{x:g}" for x in c) + "]"
            for g, group in enumerate(GROUPS):
                rows.append({"path": path, "strength": strength, "c": label, "group": group,
                             "split": split, "acc": _acc(p, strength, g)})
    return pd.DataFrame(rows)


def _both_splits() -> pd.DataFrame:
    return pd.concat([synthetic("val").assign(acc=0.5), synthetic("test")], ignore_index=True)


def test_one_state_per_path_and_strength():
    fig = dial_figure(_both_splits())
    states = {(t.meta["path"], t.meta["strength"]) for t in fig.data}
    assert len(fig.data) == len(PATHS) * len(STRENGTHS)
    assert states == {(p, s) for p in PATHS for s in STRENGTHS}
    assert [t.visible for t in fig.data].count(True) == 1


def test_slider_steps_and_menu_buttons():
    fig = dial_figure(synthetic())
    assert len(fig.layout.sliders) == 1
    assert [s.label for s in fig.layout.sliders[0].steps] == ["1", "2", "4"]
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == list(PATHS)
    for button in buttons:  # each path brings its own slider, whose steps show its own bars
        slider = button.args[1]["sliders"][0]
        assert len(slider["steps"]) == len(STRENGTHS)
        for step in slider["steps"]:
            shown = [t for t, v in zip(fig.data, step["args"][0]["visible"], strict=True) if v]
            assert [t.meta["path"] for t in shown] == [button.label]


def test_bar_heights_are_the_accuracies_in_percent():
    fig = dial_figure(_both_splits())
    trace = next(t for t in fig.data if t.meta == {
        "path": "raise landbird on water", "strength": 4.0, "c": "[1, 4, 1, 1]"})
    assert list(trace.x) == list(GROUPS)
    assert list(trace.y) == pytest.approx([100 * _acc(1, 4.0, g) for g in range(len(GROUPS))])
    step = fig.layout.updatemenus[0].buttons[1].args[1]["sliders"][0]["steps"][2]
    layout = step["args"][1]
    assert "c = [1, 4, 1, 1]" in layout["title.text"]
    assert layout["shapes"][0]["y0"] == pytest.approx(min(trace.y))  # the worst-group line


def test_axes_and_title():
    fig = dial_figure(synthetic(), title="Waterbirds")
    assert tuple(fig.layout.yaxis.range) == (0, 105)
    assert "accuracy (%)" in fig.layout.yaxis.title.text
    assert fig.layout.title.text.startswith("Waterbirds<br>raise waterbird on land: c = [1, 1, 1")


@pytest.mark.parametrize(("frame", "message"), [
    (synthetic().drop(columns="c"), r"lacks the columns \['c'\]"),
    (synthetic().drop(synthetic().query("path == 'raise landbird on water' and strength == 4")
                      .index), "do not share the same strength"),
    (synthetic().drop(synthetic().query("path == 'raise landbird on water' and "
                                        "group == 'landbird on land'").index),
     "do not share the same group"),
    (synthetic().drop(index=0), "lacks a group's accuracy"),
    (synthetic().assign(acc=lambda f: 100 * f["acc"]), r"fraction in \[0, 1\]"),
    (synthetic("val"), "no rows for split 'test'"),
    (pd.concat([synthetic(), synthetic().head(1)]), "more than one row"),
])
def test_bad_input_says_what_is_wrong(frame: pd.DataFrame, message: str):
    with pytest.raises(ValueError, match=message):
        dial_figure(frame)


def test_html_embeds_plotly_js_inline():
    html = dial_html(dial_figure(synthetic()))
    assert "plotly.js v" in html and "Plotly.newPlot" in html
    assert not re.search(r"<script\b[^>]*\bsrc\s*=", html, re.IGNORECASE)
    assert "<html" not in html  # a fragment for a cell's output
    # What plotly writes around its library: the figure's own part names no remote site.
    library_end = html.index("</script>", html.index("plotly.js v"))
    assert not re.search(r"https?://|cdn", html[library_end:], re.IGNORECASE)
    assert "mathjax" not in html[library_end:].lower()
