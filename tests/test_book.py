"""The book: a strict smoke-scale build from fake records (statistics and figures are tested
in ``test_analysis`` and ``test_report``).

The build test stages the book's sources in a temporary folder, writes fake run records there
(``fake_records``: made-up numbers in the exact record layout), executes every summary chapter
with papermill, stands in small notebooks for the featured run pages (those are the experiment
notebooks' own outputs, tested with them), builds the HTML with warnings as errors and checks
that every chapter and every figure it references exist.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
import yaml

from cptlib import book
from cptlib.paths import project_root
from cptlib.runs import experiments

sys.path.insert(0, str(Path(__file__).parent))
from fake_records import write_fake_results  # noqa: E402

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
    book.write_verdicts(stage, "smoke", results)
    book.write_provenance(stage, "smoke", results, 61.0)
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
                "runs/controllability", "runs/fronts", "runs/every_c", "runs/dynamics",
                "runs/efficiency", "models", "runs/text", "runs/text_run"]
    expected += [f"runs/paper_{e.name}" for e in experiments.paper_experiments()]
    expected += ["reproduce", "cluster"]
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
    for f in ("runs/benchmark", "runs/controllability", "runs/every_c", "runs/dynamics",
              "runs/efficiency", "runs/text", "runs/paper_waterbirds"):
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


def test_pages_explain_their_inconsistencies(built):
    _, index = built
    runs = index.parent / "runs"
    efficiency = _text(runs / "efficiency.html")
    assert "8,450" in efficiency and "3,842" in efficiency  # MiniLM: defaults vs the profile
    assert "include the classification head" in efficiency
    assert "not a comparison of the methods" in efficiency  # recorded times vs the bench
    assert "Where a quick run" in efficiency and "Under bf16 autocast" in efficiency  # profile
    assert "nan" not in efficiency.lower().split()
    dynamics = _text(runs / "dynamics.html")
    assert "never above the peak" in dynamics
    conflict = dynamics[dynamics.index("Conflicting groups"):dynamics.index("What the CPT")]
    assert "MGDA" not in conflict  # the conflict figure draws ERM, GroupDRO and CPT
    benchmark = _text(runs / "benchmark.html")
    assert "val test" in benchmark  # the group counts of every split, from the records


def test_figures_have_alt_text(built):
    _, index = built
    for page in ("benchmark", "controllability", "dynamics"):
        html = (index.parent / "runs" / f"{page}.html").read_text(encoding="utf-8")
        alts = re.findall(r'<img[^>]*\balt="([^"]*)"', html)
        assert alts, f"{page}: no image with alt text"
        assert all(len(a.split()) >= 4 for a in alts), f"{page}: alt text is not prose: {alts}"


def test_landing_page_opens_with_verdicts_and_ends_with_provenance(built):
    stage, index = built
    text = _text(index.parent / "intro.html")
    assert "Verdicts at a glance" in text and "CPT raises the worst group over ERM" in text
    assert any(word in text for word in ("holds", "does not hold", "cannot be told"))
    assert "This book was built at the smoke profile" in text and "1.0 min" in text
    assert "This book was built" in _text(index.parent / "reproduce.html")
