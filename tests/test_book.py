"""The book: a strict smoke-scale build from fake records, and the figures and tables it shows.

The build test stages the book's sources in a temporary folder, writes fake run records there
(``fake_records``: made-up numbers in the exact record layout), executes every summary chapter
with papermill, stands in small notebooks for the featured run pages (those are the experiment
notebooks' own outputs, tested with them), builds the HTML with warnings as errors and checks
that every chapter and every figure it references exist.
"""

from __future__ import annotations

import math
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

matplotlib.use("Agg")  # this process only: the notebooks' kernels keep their inline backend

from cptlib import book, plots, records  # noqa: E402
from cptlib.paths import project_root  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from fake_records import GROUPS, write_fake_bench, write_fake_results  # noqa: E402

FEATURED = {"toy": "The toy problem", "synthetic_run": "A training run",
            "text_run": "A text run"}


# ----------------------------------------------------------------------------- the build


def _placeholder(path: Path, title: str) -> None:
    """A featured page's stand-in: a title, a sentence, no outputs."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\nA stand-in for the test build.")]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("book")
    stage = book.stage_sources(tmp / "book")
    results = tmp / "results"
    write_fake_results(results, "smoke", paper=True, bench=True)
    for page, title in FEATURED.items():
        _placeholder(stage / "runs" / f"{page}.ipynb", title)
    executed = book.execute_summaries(stage, "smoke", results)
    assert sorted(executed) == sorted(book.SUMMARIES)
    index = book.build_html(stage)
    return stage, index


def _toc_files(stage: Path) -> list[str]:
    toc = yaml.safe_load((stage / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources += [v for k, v in attrs if k == "src" and v]


def _images(html: Path) -> list[str]:
    parser = _Images()
    parser.feed(html.read_text(encoding="utf-8"))
    return parser.sources


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _text(html: Path) -> str:
    """The page's text without markup (code blocks are split into highlighted spans)."""
    parser = _Text()
    parser.feed(html.read_text(encoding="utf-8"))
    return " ".join("".join(parser.parts).split())


def test_toc_lists_every_chapter_in_order():
    files = _toc_files(book.book_dir())
    expected = ["intro", "method", "runs/toy", "runs/benchmark", "runs/synthetic_run",
                "runs/controllability", "runs/dynamics", "runs/efficiency", "models",
                "runs/text", "runs/text_run"]
    expected += [f"runs/paper_{e}" for e in book.PAPER_EXPERIMENTS] + ["reproduce"]
    assert files == expected
    summaries = {f"runs/{page}" for page in book.SUMMARIES}
    assert summaries <= set(files), "a summary chapter is missing from _toc.yml"


def test_every_chapter_is_built(built):
    stage, index = built
    html = index.parent
    missing = [f for f in _toc_files(stage) if not (html / f"{f}.html").is_file()]
    assert not missing, f"chapters without HTML: {missing}"


def test_every_referenced_figure_exists(built):
    stage, index = built
    html = index.parent
    counts = {}
    for f in _toc_files(stage):
        page = html / f"{f}.html"
        sources = [s for s in _images(page) if not s.startswith(("http:", "https:", "data:"))]
        for src in sources:
            assert (page.parent / src).is_file(), f"{page.name} shows {src}, which is missing"
        counts[f] = len(sources)
    # Pages that must show figures with these records (a chapter of text alone would pass the
    # existence check above trivially).
    for f in ("runs/benchmark", "runs/controllability", "runs/dynamics", "runs/efficiency",
              "runs/text", "runs/paper_waterbirds"):
        assert counts[f] >= 1, f"{f} shows no figure"


def test_summaries_have_no_errors_or_stray_output(built):
    stage, _ = built
    for page in book.SUMMARIES:
        nb = nbformat.read(stage / "runs" / f"{page}.ipynb", as_version=4)
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                assert out["output_type"] != "error", f"{page}: {out.get('ename')}"
                assert not (out["output_type"] == "stream" and out["name"] == "stderr"), (
                    f"{page}: stray stderr output: {out['text'][:300]}")


def test_paper_pages_say_plainly_when_no_records(built):
    stage, index = built
    with_records = _text(index.parent / "runs" / "paper_waterbirds.html")
    without = _text(index.parent / "runs" / "paper_celeba.html")
    assert "No paper-profile records of celeba exist yet" in without
    assert "cpt run celeba --profile paper" in without
    assert "No paper-profile records of waterbirds exist yet" not in with_records
    assert "CPT(c=1) (α=2) minus ERM" in with_records  # the comparison found its CPT runs


def test_a_chapter_without_records_says_so(tmp_path):
    import papermill as pm

    out = tmp_path / "controllability.ipynb"
    pm.execute_notebook(
        str(project_root() / "notebooks" / "summary_controllability.ipynb"), str(out),
        parameters={"profile": "smoke", "results_dir": str(tmp_path / "none")},
        kernel_name="python3", progress_bar=False,
    )
    text = "".join(
        str(o.get("data", {}).get("text/markdown", "")) + str(o.get("text", ""))
        for cell in nbformat.read(out, as_version=4).cells for o in cell.get("outputs", [])
    )
    assert "No runs of this kind at profile `smoke` yet" in text
    assert "cpt sweep --profile smoke --only synthetic" in text
    assert "±" not in text  # no table, no number


# ----------------------------------------------------------------------------- plots


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> pd.DataFrame:
    results = tmp_path_factory.mktemp("results")
    write_fake_results(results, "smoke", bench=True)
    frame = plots.load_runs(results, "smoke", "synthetic")
    frame.attrs["results"] = results
    return frame


def _check_figure(fig) -> None:
    """A figure the book may show: a title, labelled axes, a legend."""
    assert isinstance(fig, matplotlib.figure.Figure)
    axes = [ax for ax in fig.axes
            if ax.get_visible() and ax.has_data() and ax.get_label() != "<colorbar>"]
    assert axes
    titled = fig._suptitle is not None or all(ax.get_title() for ax in axes)
    assert titled, "figure without a title"
    for ax in axes:
        assert ax.get_xlabel() and ax.get_ylabel(), f"unlabelled axes: {ax.get_title()}"
    assert fig.legends or any(ax.get_legend() for ax in axes), "figure without a legend"


def test_labels_follow_method_alpha_and_c():
    assert plots.run_label("erm", 0.0) == "ERM"
    assert plots.run_label("erm", 1.0) == "ERM (group-balanced)"
    assert plots.run_label("groupdro", 1.0) == "GroupDRO"
    assert plots.run_label("cpt", 1.0, [2, 2, 2, 2]) == "CPT(c=1)"
    assert plots.run_label("cpt", 1.0, None) == "CPT(c=1)"
    assert plots.run_label("scalarized", 1.0, [1, 1, 8, 1]) == "Scalarized(c=1,1,8,1)"
    assert plots.run_label("cpt", 2.0, [1, 1, 1, 1]) == "CPT(c=1) (α=2)"


def test_main_table_is_mean_and_se_of_the_records(runs):
    table = plots.main_table(runs)
    assert list(table.index) == list(plots.MAIN_LABELS)
    assert (table[("", "seeds")] == 3).all()
    cpt = runs[runs["label"] == "CPT(c=1)"]["test.worst_group_acc"]
    se = cpt.std(ddof=1) / math.sqrt(len(cpt))
    cell = table.loc["CPT(c=1)", ("test (%)", "worst-group")]
    assert cell.replace("\u00a0", " ") == records.format_mean_se(cpt.mean(), se)
    last = runs[runs["label"] == "ERM"]["last_val.worst_group_acc"]
    cell = plots.main_table(runs, "last_test").loc["ERM", ("validation, last step (%)",
                                                          "worst-group")]
    assert cell.startswith(f"{100 * last.mean():.1f}")
    text = str(plots.comparison_text(runs))
    assert records.format_mean_se(cpt.mean(), se) in text


def test_controllability_pairs_runs_with_their_c1_seed(runs):
    deltas = plots.controllability_deltas(runs)
    assert len(deltas) == 8  # CPT and Scalarized, each of the four groups raised once
    row = deltas[(deltas["method"] == "CPT") & (deltas["c"] == "1,1,4,1")].iloc[0]
    assert row["group"] == GROUPS[2]
    run = runs[(runs["label"] == "CPT(c=1,1,4,1)")].iloc[0]
    base = runs[(runs["label"] == "CPT(c=1)") & (runs["seed"] == run["seed"])].iloc[0]
    expected = 100 * (run["last_test.per_group_acc.2"] - base["last_test.per_group_acc.2"])
    assert row["Δ acc. last (points)"] == pytest.approx(expected)
    assert "of 4 paired runs" in str(plots.controllability_text(runs, "smoke", "synthetic"))


def test_summary_figures_have_titles_labels_and_legends(runs):
    hist, diag = plots.history_frame(runs), plots.diagnostics_frame(runs)
    bench, machines = plots.load_bench(runs.attrs["results"] / "bench")
    assert machines and not bench.empty
    for fig in (plots.per_group_bars(runs), plots.c_sweep_figure(runs),
                plots.tradeoff_figure(runs), plots.dynamics_figure(hist, "acc"),
                plots.dynamics_figure(hist, "loss"), plots.conflict_figure(diag),
                plots.modes_figure(diag), plots.bench_figure(bench), plots.c_effect_figure(runs)):
        _check_figure(fig)


def test_run_level_figures_and_tables(runs):
    record = plots.read_run(runs["path"].iloc[0])
    _check_figure(plots.group_curves(record))
    table = plots.per_group_table(record)
    assert list(table.index) == GROUPS
    last = record["metrics"]["last_test"]["per_group_acc"]
    assert table["test acc. (%), last"].tolist() == [f"{100 * v:.1f}" for v in last]


def test_empty_records_give_notes_not_empty_tables():
    empty = plots.label_runs(records.load_records(Path("/nonexistent")))
    hist, diag = plots.history_frame(empty), plots.diagnostics_frame(empty)
    for shown in (plots.main_table(empty), plots.per_group_bars(empty),
                  plots.c_sweep_figure(empty), plots.controllability_table(empty),
                  plots.c_effect_figure(empty), plots.minority_table(hist),
                  plots.tradeoff_figure(empty), plots.dynamics_figure(hist),
                  plots.conflict_figure(diag), plots.modes_figure(diag),
                  plots.balancer_table(diag), plots.minority_text(hist),
                  plots.adapter_table(empty), plots.run_time_table(empty)):
        assert isinstance(shown, plots.Note)
    assert "No runs of this kind at profile `quick` yet" in str(
        plots.status_text(empty, "quick", "synthetic"))


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


def test_group_counts_and_examples():
    import torch

    gen = torch.Generator().manual_seed(0)
    groups = [0, 0, 1, 2, 3, 3, 3]
    images = _Data([torch.randn(3, 8, 8, generator=gen) for _ in groups], groups)
    data = type("Splits", (), {"train": images, "val": images, "test": images})()
    counts = plots.group_counts(data)
    assert counts.loc["a/x", "train"] == 2 and counts.loc["total", "test"] == len(groups)
    fig = plots.example_grid(images, per_group=2)
    assert len([ax for ax in fig.axes if ax.images]) == 6  # groups hold 2, 1, 1 and 3 items
    sentences = plots.example_grid(_Data([f"sentence {i}" for i in groups], groups), 2)
    assert list(sentences.index.unique()) == images.group_names
    with pytest.raises(ValueError, match="per_group"):
        plots.example_grid(images, per_group=0)


def test_toy_figures():
    import torch

    from cptlib import balancers, toy

    frames = []
    for method in ("cpt", "scalarized"):
        for c in ([1.0, 1.0], [1.0, 3.0]):
            df = toy.run(balancers.get(method, c=c), torch.tensor([0.3, -0.6]), 60, 0.2, c=c)
            frames.append(df.assign(method=method, c=[c] * len(df)))
    df = pd.concat(frames, ignore_index=True)
    _check_figure(plots.toy_trajectories(df, toy.pareto_front(50)))
    _check_figure(plots.toy_endpoints(df))


def test_toy_endpoint_table_shares_and_targets():
    df = pd.DataFrame({"method": ["cpt", "cpt", "scalarized"], "c": [[1, 3], [1, 3], [1, 3]],
                       "step": [0, 1, 1], "L_1": [0.9, 0.6, 0.5], "L_2": [0.9, 0.2, 0.5]})
    table = plots.toy_endpoint_table(df).set_index(["method", "loss"])
    assert table.loc[("CPT", "L1"), "share"] == pytest.approx(0.75)  # the last step counts
    assert table.loc[("CPT", "L1"), "CPT's target share"] == pytest.approx(0.75)  # (1/1)/(4/3)
    assert table.loc[("CPT", "L1"), "mu"] == pytest.approx(0.0, abs=1e-12)  # on the ray
    assert table.loc[("Scalarized", "L2"), "share"] == pytest.approx(0.5)
    assert table.loc[("Scalarized", "L2"), "mu"] > 0.1


def test_bench_targets_compare_each_way_with_its_limit():
    rows = pd.DataFrame([
        {"model": "quick", "method": "cpt-expand", "groups": 16, "median_s": 0.1,
         "ratio_to_erm": 1.02},
        {"model": "quick", "method": "cpt-split", "groups": 16, "median_s": 0.2,
         "ratio_to_erm": 1.76},
        {"model": "quick", "method": "cpt-split", "groups": 4, "median_s": 0.1,
         "ratio_to_erm": 1.2},  # at the limit: met
        {"model": "vit_base_patch16_224", "method": "cpt-split", "groups": 4, "median_s": 2.0,
         "ratio_to_erm": 9.0},  # another model: not a target row
        {"model": "quick", "method": "cpt-naive", "groups": 4, "median_s": 0.1, "batch": 32,
         "ratio_to_erm": 2.0},  # a smoke bench's batch: the targets are for batch 64
        {"model": "none", "method": "balancer-only", "groups": 4, "median_s": 0.0025,
         "ratio_to_erm": None},
    ])
    rows["batch"] = rows["batch"].fillna(64)
    table = plots.bench_targets(rows)
    assert table.loc[("CPT step / ERM step", 16, "cpt-expand"), "met"] == "yes"
    assert table.loc[("CPT step / ERM step", 16, "cpt-split"), "met"] == "no"
    assert table.loc[("CPT step / ERM step", 4, "cpt-split"), "met"] == "yes"
    assert table.loc[("balancer time per step (ms)", 4, "balancer-only"), "measured"] == 2.5
    assert table.loc[("balancer time per step (ms)", 4, "balancer-only"), "met"] == "no"
    assert len(table) == 4
    assert isinstance(plots.bench_targets(rows.iloc[3:5]), plots.Note)


def test_bench_section_says_where_it_was_measured_or_how_to_measure(tmp_path):
    rows, note = plots.bench_section(tmp_path / "bench", gpu=True)
    assert rows.empty and "Ready and unmeasured" in str(note)
    rows, note = plots.bench_section(tmp_path / "bench")
    assert rows.empty and "cpt bench --json" in str(note)
    write_fake_bench(tmp_path / "bench")
    rows, note = plots.bench_section(tmp_path / "bench", gpu=True)
    assert set(rows["file"]) == {"gpu-h200.json"} and "fake GPU" in str(note)
