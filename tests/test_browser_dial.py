"""The "dial c" figure as a reader sees it: a one-page jupyter-book (the book's own _config.yml)
whose notebook shows ``dial_html(dial_figure(...))``, opened in headless Chromium with the
network cut (tests/test_browser.py's Browser). The plot must draw its bars, the slider and the
menu must change them, and the page must stay offline and free of console errors.

Skips without Chromium or selenium, as tests/test_browser.py does (fails in CI instead).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
import yaml
from test_browser import (
    Browser,
    Page,
    _unavailable,
    check_no_console_errors,
    check_only_local_requests,
)
from test_report_dial import GROUPS, PATHS, STRENGTHS, _acc, synthetic

from cptlib.book import build_html
from cptlib.paths import project_root
from cptlib.report.dial import dial_figure, dial_html

PAGE = "dial.html"

# The plot's state as drawn: its bars' pixel heights, the slider's and the menu's labels.
_STATE_JS = r"""
const gd = document.querySelector(".js-plotly-plot");
if (!gd) { return null; }
const bars = Array.from(gd.querySelectorAll(".barlayer .point path"),
                        (p) => p.getBBox().height);
return {bars: bars, plotly: typeof window.Plotly,
        title: (gd.querySelector(".gtitle") || {}).textContent || "",
        slider: (gd.querySelector(".slider-group .slider-currentvalue") || {}).textContent,
        menu: (gd.querySelector(".updatemenu-header-group text") || {}).textContent,
        y: gd.data.filter((t) => t.visible === true).map((t) => t.y)};
"""


def _notebook(html: str) -> nbformat.NotebookNode:
    """An executed notebook (the book renders, never runs): prose with math, then the dial."""
    cell = nbformat.v4.new_code_cell(
        "from IPython.display import HTML\nHTML(dial_html(dial_figure(frame)))",
        execution_count=1)
    cell.outputs = [nbformat.v4.new_output("execute_result", execution_count=1, data={
        "text/html": html, "text/plain": "<IPython.core.display.HTML object>"})]
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Dial c\n\nMove the slider to raise one entry of $c$."),
        cell], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                        "language": "python"}})


@pytest.fixture(scope="module")
def html_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-chapter book with the project's configuration, built strictly (-W)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        _unavailable("selenium is not installed (pip install -r requirements.txt)")
    stage = tmp_path_factory.mktemp("dial-book")
    config = yaml.safe_load((project_root() / "book" / "_config.yml").read_text())
    (stage / "_config.yml").write_text(yaml.safe_dump(config))
    (stage / "_toc.yml").write_text("format: jb-book\nroot: dial\n")
    nbformat.write(_notebook(dial_html(dial_figure(synthetic()))), stage / "dial.ipynb")
    build_html(stage, strict=True)
    return stage / "_build" / "html"


@pytest.fixture(scope="module")
def browser(html_root: Path) -> Iterator[Browser]:
    b = Browser(html_root)
    yield b
    b.close()


@pytest.fixture(scope="module")
def page(browser: Browser) -> Page:
    return browser.visit(PAGE)


def _state(browser: Browser) -> dict:
    return browser.driver.execute_script(_STATE_JS)


def _click(browser: Browser, css: str, text: str) -> None:
    """Click the SVG element ``css`` whose text starts with the line ``text`` (a menu's header
    adds its arrow below), as a reader's mouse would."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    element = next(e for e in browser.driver.find_elements(By.CSS_SELECTOR, css)
                   if e.text.split("\n")[0] == text)
    ActionChains(browser.driver).move_to_element(element).click().perform()


def _expected(path: str, strength: float) -> list[float]:
    p = list(PATHS).index(path)
    return [100 * _acc(p, strength, g) for g in range(len(GROUPS))]


def test_the_page_stays_offline_and_quiet(page: Page, browser: Browser) -> None:
    check_no_console_errors(page, browser)
    check_only_local_requests(page, browser)
    assert page.report["mathjax"] == "ready", "the book's MathJax still typesets the prose"
    assert page.report["formulas"] >= 1


def test_the_plot_draws_its_bars(page: Page, browser: Browser) -> None:
    state = _state(browser)
    assert state is not None, "no .js-plotly-plot on the page: the HTML output was not kept"
    assert state["plotly"] == "object"
    assert len(state["bars"]) == len(GROUPS) and min(state["bars"]) > 10
    first = list(PATHS)[0]
    assert state["y"] == [pytest.approx(_expected(first, STRENGTHS[0]))]
    assert "c = [1, 1, 1, 1]" in state["title"]


def test_the_slider_and_the_menu_change_the_bars(page: Page, browser: Browser) -> None:
    before = _state(browser)
    _click(browser, ".slider-group .slider-label", "4")
    after = _state(browser)
    first, second = PATHS
    assert after["y"] == [pytest.approx(_expected(first, 4.0))]
    assert after["bars"] != before["bars"]
    assert "c = [1, 1, 4, 1]" in after["title"]
    _click(browser, ".updatemenu-header-group", first)
    _click(browser, ".updatemenu-dropdown-button", second)
    switched = _state(browser)
    assert switched["menu"] == second
    assert switched["y"] == [pytest.approx(_expected(second, STRENGTHS[0]))]
    _click(browser, ".slider-group .slider-label", "2")
    assert _state(browser)["y"] == [pytest.approx(_expected(second, 2.0))]
    assert "c = [1, 2, 1, 1]" in _state(browser)["title"]
    check_no_console_errors(Page(PAGE, {}, console=[
        f"{e['level']}: {e['message']}" for e in browser.driver.get_log("browser")
        if e["level"] == "SEVERE"]), browser)
