"""The trade-offs chapter's figures: one front per family, the loss plane, control over training."""

from __future__ import annotations

import matplotlib
import pytest

matplotlib.use("Agg")  # this process only

from fake_records import fake_runs  # noqa: E402
from test_report import check_figure  # noqa: E402

from cptlib.analysis.families import FRONT_FAMILIES, front_points  # noqa: E402
from cptlib.analysis.text import Note  # noqa: E402
from cptlib.report import fronts  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return fake_runs(tmp_path_factory.mktemp("results"), fronts=True)


def test_front_figure_has_one_series_and_one_front_line_per_family(runs):
    fig = fronts.front_figure(runs)
    check_figure(fig)
    ax = fig.axes[0]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == list(FRONT_FAMILIES)
    lines = [line for line in ax.get_lines() if line.get_linestyle() == "-"
             and len(line.get_xdata()) > 0]
    pts = front_points(runs)
    n_front = pts.groupby("front")["on_front"].sum()
    front_lines = [line for line in lines if len(line.get_xdata()) in set(n_front)]
    assert len(front_lines) >= len(FRONT_FAMILIES)
    knobs = {t.get_text() for t in ax.texts}
    assert {"α=0.5", "η=0.1", "c=1,1,4,1"} <= knobs and "—" not in knobs


def test_loss_plane_has_a_panel_per_group(runs):
    fig = fronts.loss_plane_figure(runs)
    check_figure(fig)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.has_data()]
    assert len(panels) == 4
    assert [ax.get_title() for ax in panels][2] == "waterbird/land"


def test_control_figure_reads_the_training_windows(runs):
    fig = fronts.control_figure(runs, "train")
    check_figure(fig)
    assert [ax.get_title() for ax in fig.axes if ax.has_data()] == ["CPT", "Scalarized"]


def test_figures_say_what_is_missing(runs):
    empty = runs.iloc[:0]
    for draw in (fronts.front_figure, fronts.loss_plane_figure, fronts.control_figure):
        assert isinstance(draw(empty), Note)
