"""The book's figures (``cptlib.report``): titles, labels, legends, one colour per method, and
the readability fixes (labels that do not overlap, no empty panel, no promise a figure breaks).
"""

from __future__ import annotations

import colorsys
import itertools
import re
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex, to_rgb

matplotlib.use("Agg")  # this process only

from cptlib import analysis, plots, report  # noqa: E402
from cptlib.analysis.labels import FAMILIES  # noqa: E402
from cptlib.paths import project_root  # noqa: E402
from cptlib.report import style  # noqa: E402
from cptlib.report.controllability import _overlap  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from fake_records import fake_runs  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> pd.DataFrame:
    return fake_runs(tmp_path_factory.mktemp("results"))


def check_figure(fig) -> None:
    """A figure the book may show: a title that serves as caption, labelled axes, a legend."""
    assert isinstance(fig, matplotlib.figure.Figure)
    axes = [ax for ax in fig.axes
            if ax.get_visible() and ax.has_data() and ax.get_label() != "<colorbar>"]
    assert axes
    assert fig.get_suptitle() and fig.get_label() == fig.get_suptitle().replace("\n", " ")
    for ax in axes:
        assert ax.get_xlabel() and ax.get_ylabel(), f"unlabelled axes: {ax.get_title()}"
    assert fig.legends or any(ax.get_legend() for ax in axes), "figure without a legend"


def test_importing_report_leaves_the_style_alone_until_apply():
    code = ("import matplotlib; import cptlib.report, cptlib.analysis\n"
            "print(matplotlib.rcParams['axes.grid'])\n"
            "cptlib.report.style.apply(); print(matplotlib.rcParams['axes.grid'])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]


def test_one_distinct_colour_per_method_family():
    colours = [style.colour(f) for f in FAMILIES]
    assert len(set(colours)) == len(FAMILIES)
    hues = [colorsys.rgb_to_hls(*to_rgb(c)) for c in colours]
    chromatic = [h for h, _, s in hues if s > 0.2]
    gaps = [min(abs(a - b), 1 - abs(a - b)) for a, b in itertools.combinations(chromatic, 2)]
    assert min(gaps) > 0.04, "two methods in nearly the same hue"
    assert len([c for c in colours if colorsys.rgb_to_hls(*to_rgb(c))[2] <= 0.2]) <= 1
    # A label takes its family's colour; another α keeps the hue, paler; unknowns differ.
    assert style.colour("CPT(c=1,1,4,1)") == style.colour("CPT(c=1)") == style.PALETTE["CPT"]
    pale = style.colour("CPT(c=1) (α=2)")
    assert pale != style.PALETTE["CPT"] and abs(
        colorsys.rgb_to_hls(*to_rgb(pale))[0] - colorsys.rgb_to_hls(*to_rgb(
            style.PALETTE["CPT"]))[0]) < 0.02
    found = style.palette(["NewMethod", "Other", "ERM"])
    assert len(set(found.values())) == 3 and found["ERM"] == style.PALETTE["ERM"]


def test_bars_use_the_book_palette(runs):
    fig = report.per_group_bars(runs)
    check_figure(fig)
    legend = fig.legends[0]
    for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
        assert to_hex(handle.get_facecolor()) == style.colour(text.get_text())


def test_summary_figures_have_titles_labels_and_legends(runs):
    hist, diag = analysis.history_frame(runs), analysis.diagnostics_frame(runs)
    bench, _ = analysis.bench_section(runs.attrs["results"] / "bench")
    for fig in (report.c_sweep_figure(runs), report.tradeoff_figure(runs),
                report.dynamics_figure(hist, "acc"), report.dynamics_figure(hist, "loss"),
                report.conflict_figure(diag), report.modes_figure(diag),
                report.bench_figure(bench), report.c_effect_figure(runs)):
        check_figure(fig)


def test_tradeoff_labels_do_not_overlap(runs):
    fig = report.tradeoff_figure(runs)
    renderer = style.renderer(fig)
    notes = [t for t in fig.axes[0].texts if t.get_text().startswith("(")]
    assert len(notes) == int((~runs["uniform_c"]).sum())
    boxes = [t.get_window_extent(renderer) for t in notes]
    for a, b in itertools.combinations(boxes, 2):
        assert _overlap(a, [b]) == 0, "two c labels overlap"


def test_bench_figure_draws_no_empty_panel(runs):
    bench, _ = analysis.bench_section(runs.attrs["results"] / "bench")
    assert "none" in set(bench["model"])  # the LP timed alone is in the rows
    fig = report.bench_figure(bench)
    assert [ax.get_title() for ax in fig.axes if ax.has_data()] == ["embedded ViT"]
    assert all(ax.has_data() for ax in fig.axes)


def test_conflict_figure_names_only_what_it_draws(runs):
    diag = analysis.diagnostics_frame(runs)
    fig = report.conflict_figure(diag)
    drawn = [t.get_text() for t in fig.legends[0].get_texts()]
    assert drawn == ["ERM", "GroupDRO", "CPT(c=1)"]
    assert "MGDA" not in fig.get_suptitle()
    with_mgda = report.conflict_figure(diag, labels=("ERM", "MGDA"))
    assert "MGDA" in with_mgda.get_suptitle()


def test_empty_records_give_notes(tmp_path):
    empty = analysis.load_runs(tmp_path, "smoke")
    hist, diag = analysis.history_frame(empty), analysis.diagnostics_frame(empty)
    for shown in (report.per_group_bars(empty), report.c_sweep_figure(empty),
                  report.c_effect_figure(empty), report.tradeoff_figure(empty),
                  report.dynamics_figure(hist), report.conflict_figure(diag),
                  report.modes_figure(diag), report.bench_figure(pd.DataFrame())):
        assert isinstance(shown, analysis.Note)


def test_run_level_figures(runs):
    record = analysis.read_run(runs["path"].iloc[0])
    check_figure(report.group_curves(record))


class _Data:
    """A tiny stand-in with the attributes a GroupDataset has."""

    def __init__(self, items: list, groups: list[int]) -> None:
        self.items, self.groups = items, np.asarray(groups)
        self.group_names = ["a/x", "a/y", "b/x", "b/y"]
        self.group_counts = np.bincount(self.groups, minlength=4)
        self.split = "test"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i], int(self.groups[i]) // 2, int(self.groups[i])


def test_example_grid_of_images_and_of_sentences():
    rng = np.random.default_rng(0)
    groups = [0, 0, 1, 2, 3, 3, 3]
    images = _Data([rng.normal(size=(3, 8, 8)) for _ in groups], groups)
    fig = report.example_grid(images, per_group=2)
    assert len([ax for ax in fig.axes if ax.images]) == 6  # groups hold 2, 1, 1 and 3 items
    assert fig.get_suptitle()
    long = "a review long enough to be cut at fifty characters | by a pipe and a line\nbreak "
    texts = [f"{long}{i}" for i in range(len(groups))]
    table = report.example_grid(_Data(texts, groups), 2)._repr_markdown_()
    lines = table.splitlines()
    rows = lines[lines.index("|---|---|") + 1:]
    assert [row.split(" | ")[0][2:] for row in rows] == [  # groups in order, at most 2 each
        images.group_names[k] for k in (0, 0, 1, 2, 3, 3)]
    assert all(row.count(" | ") == 1 and row.endswith(" |") for row in rows)  # one cell each
    assert "fifty characters \\| by a pipe and a line break 0" in table  # whole, escaped
    with pytest.raises(ValueError, match="per_group"):
        report.example_grid(images, per_group=0)


def _toy_frame() -> pd.DataFrame:
    import torch

    from cptlib import balancers, toy

    frames = []
    for method in ("cpt", "scalarized"):
        for c in ([1.0, 1.0], [1.0, 3.0]):
            df = toy.run(balancers.get(method, c=c), torch.tensor([0.3, -0.6]), 60, 0.2, c=c)
            frames.append(df.assign(method=method, c=[c] * len(df)))
    return pd.concat(frames, ignore_index=True)


def test_toy_figures():
    from cptlib import toy

    df = _toy_frame()
    fig = report.toy_trajectories(df, toy.pareto_front(50))
    check_figure(fig)
    assert "\n" not in fig.get_suptitle() and len(fig.get_suptitle()) <= 45  # not crowded
    endpoints = report.toy_endpoints(df)
    check_figure(endpoints)
    legend = {t.get_text(): h for t, h in zip(endpoints.legends[0].get_texts(),
                                               endpoints.legends[0].legend_handles,
                                               strict=True)}
    assert to_hex(legend["CPT"].get_markerfacecolor()) == style.PALETTE["CPT"]


def test_toy_endpoint_table_shares_and_targets():
    from cptlib.analysis.toy import toy_endpoint_table

    df = pd.DataFrame({"method": ["cpt", "cpt", "scalarized"], "c": [[1, 3], [1, 3], [1, 3]],
                       "step": [0, 1, 1], "L_1": [0.9, 0.6, 0.5], "L_2": [0.9, 0.2, 0.5]})
    table = toy_endpoint_table(df).set_index(["method", "loss"])
    assert table.loc[("CPT", "L1"), "share"] == pytest.approx(0.75)  # the last step counts
    assert table.loc[("CPT", "L1"), "CPT's target share"] == pytest.approx(0.75)  # (1/1)/(4/3)
    assert table.loc[("CPT", "L1"), "mu"] == pytest.approx(0.0, abs=1e-12)  # on the ray
    assert table.loc[("Scalarized", "L2"), "share"] == pytest.approx(0.5)
    assert table.loc[("Scalarized", "L2"), "mu"] > 0.1


def test_plots_keeps_every_name_the_experiment_notebooks_use():
    used = set()
    for path in (project_root() / "notebooks").glob("*.ipynb"):
        if not path.name.startswith("summary_"):
            used |= set(re.findall(r"plots\.([a-zA-Z_]+)", path.read_text()))
    assert {"group_counts", "example_grid", "group_curves", "per_group_table"} <= used
    assert not [name for name in used if not hasattr(plots, name)]
    summaries = " ".join(p.read_text() for p in
                         (project_root() / "notebooks").glob("summary_*.ipynb"))
    n = len(list((project_root() / "notebooks").glob("summary_*.ipynb")))
    assert "plots" not in summaries and summaries.count("report.style.apply()") == n
