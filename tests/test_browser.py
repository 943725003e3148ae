"""The book as a reader sees it: every page of the smoke build opened in headless Chromium.

The HTML is served from a loopback HTTP server and the browser's network is cut (every host
name resolves to nothing, every proxied request goes to a refused port), so a page that needs
the network shows it here as it would to a reader offline. Each page is loaded once; the checks
below read what the browser reported: formulas typeset by MathJax, images decoded, console
errors, requests, and the page's text. A screenshot of every page is kept in
``build/browser-screenshots/`` as a test artifact.

The pages are those of ``build/book-smoke/_build/html`` (written by ``cpt book --profile smoke
--out build/book-smoke``, which ``make test`` runs first); ``CPT_BROWSER_BOOK`` points the test
at another build, e.g. ``book/_build/html`` of ``make book``. Without Chromium or without the
build the tests skip with the reason, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cptlib.paths import project_root

HTML = Path(os.environ.get("CPT_BROWSER_BOOK") or project_root() / "build/book-smoke/_build/html")
SHOTS = project_root() / "build" / "browser-screenshots"
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = "chromedriver"
IN_CI = os.environ.get("CI", "").lower() == "true"
LOAD_TIMEOUT_S = 60
SHOT_MAX_HEIGHT = 16000  # px; a longer page is cut there (the checks still see all of it)


def _pages() -> list[str]:
    """Every HTML page of the build, relative to its root (search and index pages included)."""
    if not HTML.is_dir():
        return []
    skip = {"_static", "_sources", "_images"}
    return sorted(str(p.relative_to(HTML)) for p in HTML.rglob("*.html")
                  if not skip & set(p.relative_to(HTML).parts))


def _redirect(page: Path) -> str | None:
    """Where a redirect stub (a bare meta refresh, as jupyter-book's index.html) points."""
    if not page.is_file():
        return None
    found = re.search(r'http-equiv="refresh"\s+content="\d+;\s*url=([^"]+)"',
                      page.read_text(encoding="utf-8")[:2000], re.IGNORECASE)
    return found.group(1) if found else None


def _unavailable(reason: str) -> None:
    """Fail in CI, where the browser test must run; skip elsewhere, saying why."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the browser test must run in CI)", pytrace=False)
    pytest.skip(reason)


# ----------------------------------------------------------------------------- the browser

# Run in the page after its load event: wait for MathJax's first typeset and for every image,
# then report what a reader would see. Text inside code is left out of the raw-TeX check (a
# shell prompt's `$` is fine there) but kept for the traceback and path checks.
_INSPECT_JS = r"""
const done = arguments[arguments.length - 1];
(async () => {
  const mj = window.MathJax;
  let mathjax = "absent";
  if (mj && mj.startup && mj.startup.promise) {
    try { await mj.startup.promise; mathjax = "ready"; } catch (e) { mathjax = "failed: " + e; }
  }
  const images = await Promise.all(Array.from(document.images, async (img) => {
    img.loading = "eager";
    let decoded = true;
    try { await img.decode(); } catch (e) { decoded = false; }
    return {src: img.getAttribute("src"), decoded: decoded && img.complete &&
            img.naturalWidth > 0};
  }));
  if (document.fonts) { await document.fonts.ready; }
  const math = Array.from(document.querySelectorAll(".math"));
  const untypeset = math.filter((m) => !m.querySelector("mjx-container"))
                        .map((m) => m.textContent.trim().slice(0, 80));
  const errors = Array.from(
    document.querySelectorAll("mjx-merror, [data-mjx-error]"),
    (e) => (e.getAttribute("data-mjx-error") || e.textContent).slice(0, 80));
  const texts = (skip) => {
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
      acceptNode: (n) => n.parentElement && n.parentElement.closest(skip)
        ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
    const parts = [];
    while (walker.nextNode()) { parts.push(walker.currentNode.nodeValue); }
    return parts.join(" ");
  };
  const links = Array.from(document.querySelectorAll("[href], [src]"),
                           (e) => e.getAttribute("href") || e.getAttribute("src"));
  done({
    mathjax: mathjax,
    formulas: document.querySelectorAll("mjx-container").length,
    math: math.length, untypeset: untypeset, errors: errors, images: images,
    prose: texts("script, style, noscript, template, pre, code, kbd, samp, textarea, " +
                 ".highlight, mjx-container, mjx-assistive-mml"),
    text: texts("script, style, noscript, template, mjx-container, mjx-assistive-mml"),
    links: links,
    traceback_outputs: document.querySelectorAll(".traceback, .output.error").length,
    height: Math.max(document.documentElement.scrollHeight, document.body.scrollHeight),
  });
})().catch((e) => done({fatal: String(e)}));
"""


@dataclass
class Page:
    """What the browser reported for one page."""

    name: str
    report: dict
    console: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the test reports what matters itself
        pass


class Browser:
    """One headless Chromium (via Debian's chromedriver) for the whole module."""

    def __init__(self, root: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        binary = next(filter(None, map(shutil.which, CHROMIUM)), None)
        driver = shutil.which(CHROMEDRIVER)
        if not binary or not driver:
            _unavailable("headless Chromium and chromedriver are not installed "
                         "(run scripts/system_deps.sh: Debian's chromium, chromium-driver)")
        handler = functools.partial(_Quiet, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}/"
        # A port bound and never listened on: the proxy every non-local request is sent to is
        # refused at once (loopback is never proxied).
        self.dead = socket.socket()
        self.dead.bind(("127.0.0.1", 0))
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--hide-scrollbars", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-extensions",
                    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                    f"--proxy-server=http://127.0.0.1:{self.dead.getsockname()[1]}"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.profile = tempfile.TemporaryDirectory(prefix="cpt-chromium-")
        options.add_argument(f"--user-data-dir={self.profile.name}")
        self.driver = webdriver.Chrome(options=options, service=Service(executable_path=driver))
        self.driver.set_page_load_timeout(LOAD_TIMEOUT_S)
        self.driver.set_script_timeout(LOAD_TIMEOUT_S)
        self.driver.get("about:blank")  # leave the start page (its chrome:// loads are logged)

    def close(self) -> None:
        self.driver.quit()
        self.server.shutdown()
        self.server.server_close()
        self.dead.close()
        self.profile.cleanup()

    def visit(self, name: str) -> Page:
        """Load one page, wait for its scripts and images, screenshot it, collect the logs."""
        for log in ("browser", "performance"):
            self.driver.get_log(log)  # drain the previous page's entries
        self.driver.get(self.origin + name)
        target = _redirect(HTML / name)
        if target:  # index.html is a stub that sends the reader on: check where it lands
            from selenium.webdriver.support.wait import WebDriverWait

            url = self.origin + str(Path(name).parent / target).removeprefix("./")
            WebDriverWait(self.driver, LOAD_TIMEOUT_S).until(
                lambda d: d.current_url == url
                and d.execute_script("return document.readyState") == "complete")
        report = self.driver.execute_async_script(_INSPECT_JS)
        assert "fatal" not in report, f"{name}: inspecting the page failed: {report['fatal']}"
        self._screenshot(name, report["height"])
        page = Page(name, report)
        # The browser asks for /favicon.ico on its own, once per site; the book has no icon.
        favicon = f"{self.origin}favicon.ico - "
        page.console = [f"{e['level']}: {e['message']}" for e in self.driver.get_log("browser")
                        if e["level"] == "SEVERE" and not e["message"].startswith(favicon)]
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            if message["method"] == "Network.requestWillBeSent":
                page.requests.append(params["request"]["url"])
            elif message["method"] == "Network.responseReceived":
                response = params["response"]
                if response["status"] >= 400 and response["url"] != f"{self.origin}favicon.ico":
                    page.failed.append(f"{response['url']}: HTTP {response['status']}")
            elif message["method"] == "Network.loadingFailed" and not params.get("canceled"):
                page.failed.append(f"request {params['requestId']}: {params['errorText']}")
        return page

    def _screenshot(self, name: str, height: int) -> None:
        """The whole page (up to SHOT_MAX_HEIGHT), not just the window."""
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": 1280, "height": min(height, SHOT_MAX_HEIGHT),
                     "scale": 1}})
        path = SHOTS / (name.removesuffix(".html").replace("/", "__") + ".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".png.part")
        tmp.write_bytes(base64.b64decode(shot["data"]))
        tmp.replace(path)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not _pages():
        _unavailable(f"no book build at {HTML}: run "
                     "`cpt book --profile smoke --out build/book-smoke` first")
    try:
        import selenium  # noqa: F401
    except ImportError:
        _unavailable("selenium is not installed (pip install -r requirements.txt)")
    shutil.rmtree(SHOTS, ignore_errors=True)  # screenshots of this build only
    b = Browser(HTML)
    yield b
    b.close()


@pytest.fixture(scope="module")
def visited(browser: Browser) -> dict[str, Page]:
    """Pages are loaded lazily, each once, whichever check asks first."""
    return {}


def _page(visited: dict[str, Page], browser: Browser, name: str) -> Page:
    if name not in visited:
        visited[name] = browser.visit(name)
    return visited[name]


# ----------------------------------------------------------------------------- the checks

# Page-content problems known today, each owned by the notebooks or cptlib (not by the book's
# build): (check, page) → the problem. The marker is strict, so the test says when a fix lands
# and the entry must go. None today.
KNOWN: dict[tuple[str, str], str] = {}

RAW_TEX = re.compile(r"\$|\\\(|\\\)|\\\[|\\\]|\\begin\{|\\end\{")
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|PapermillExecutionError")


def _machine_paths() -> re.Pattern:
    """Absolute paths of the machine that built the book: the clone, home, temp, the venv."""
    prefixes = {"/root", "/tmp", "/work", "/home", str(project_root()), str(Path.home()),
                tempfile.gettempdir(), sys.prefix, os.environ.get("CPT_CACHE", "/root")}
    alternatives = "|".join(sorted(map(re.escape, prefixes), key=len, reverse=True))
    return re.compile(rf"(?<![\w.~-])(?:{alternatives})(?=[/\s'\"),:;]|$)")


MACHINE_PATH = _machine_paths()


def _local(url: str, origin: str) -> bool:
    return url.startswith((origin, "data:", "blob:", "about:"))


def _hits(pattern: re.Pattern, text: str, width: int = 40) -> list[str]:
    """Each match with some context, so a failure shows where on the page it is."""
    return [" ".join(text[max(m.start() - width, 0):m.end() + width].split())
            for m in pattern.finditer(text)][:10]


def check_math_typeset(page: Page, browser: Browser) -> None:
    r = page.report
    assert not r["untypeset"], f"formulas left as TeX (MathJax {r['mathjax']}): {r['untypeset']}"
    assert not r["errors"], f"MathJax could not typeset: {r['errors']}"
    assert r["formulas"] >= r["math"], "fewer MathJax outputs than formulas"
    raw = _hits(RAW_TEX, r["prose"])
    assert not raw, f"raw TeX delimiters in the page's text: {raw}"


def check_images_decoded(page: Page, browser: Browser) -> None:
    bad = [i["src"] for i in page.report["images"] if not i["decoded"]]
    assert not bad, f"images that did not load or decode: {bad}"


def check_no_console_errors(page: Page, browser: Browser) -> None:
    assert not page.console, f"console errors: {page.console}"


def check_only_local_requests(page: Page, browser: Browser) -> None:
    outside = sorted({u for u in page.requests if not _local(u, browser.origin)})
    assert not outside, f"requests that leave the machine: {outside}"
    assert not page.failed, f"requests that failed: {page.failed}"


def check_no_tracebacks(page: Page, browser: Browser) -> None:
    assert not page.report["traceback_outputs"], "error outputs shown on the page"
    found = _hits(TRACEBACK, page.report["text"])
    assert not found, f"traceback text: {found}"


def check_no_machine_paths(page: Page, browser: Browser) -> None:
    text = page.report["text"] + "\n" + "\n".join(page.report["links"])
    found = _hits(MACHINE_PATH, text)
    assert not found, f"build-machine paths: {found}"


CHECKS = {f.__name__.removeprefix("check_"): f for f in (
    check_math_typeset, check_images_decoded, check_no_console_errors,
    check_only_local_requests, check_no_tracebacks, check_no_machine_paths)}


def _cases() -> list:
    pages = _pages() or ["(no build)"]
    cases = []
    for check in CHECKS:
        for name in pages:
            reason = KNOWN.get((check, name))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            cases.append(pytest.param(check, name, marks=marks, id=f"{check}:{name}"))
    return cases


@pytest.mark.parametrize(("check", "name"), _cases())
def test_page(check: str, name: str, browser: Browser, visited: dict[str, Page]) -> None:
    CHECKS[check](_page(visited, browser, name), browser)


def test_the_checks_catch_what_they_look_for(browser: Browser) -> None:
    """A page made to break every rule fails every check (no check passes by looking away)."""
    bad = HTML / "_browser_test_bad.html"
    png = "data:image/png;base64,iVBORw0KGgo="  # a truncated PNG: loads, never decodes
    bad.write_text(
        "<html><body><p>Raw \\(c\\) and $x$ left over.</p>"
        "<span class='math'>\\(c\\)</span>"
        f"<img src='{png}'><img src='https://example.org/a.png'>"
        f"<pre>Traceback (most recent call last):\n  File \"{project_root()}/x.py\"</pre>"
        "<script>console.error('boom')</script></body></html>")
    try:
        page = browser.visit(bad.name)
    finally:
        bad.unlink()
        (SHOTS / "_browser_test_bad.png").unlink(missing_ok=True)
    for check in CHECKS.values():
        with pytest.raises(AssertionError):
            check(page, browser)
    assert page.report["untypeset"] == ["\\(c\\)"]
    assert "https://example.org/a.png" in page.requests


# ----------------------------------------------------------------------------- without a browser


class _Resources(HTMLParser):
    """Every URL a page loads by itself (not the links a reader may follow)."""

    LOADS = {"script": "src", "img": "src", "iframe": "src", "source": "src", "video": "src",
             "audio": "src", "embed": "src", "object": "data", "link": "href"}

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "link" and not {"stylesheet", "preload", "icon", "modulepreload"} & set(
                (values.get("rel") or "").split()):
            return  # prev/next/search links are navigation, not loads
        if tag in self.LOADS and values.get(self.LOADS[tag]):
            self.urls.append(values[self.LOADS[tag]])


REMOTE = re.compile(r"^(?:https?:)?//", re.IGNORECASE)
CSS_REMOTE = re.compile(r"""(?:url\(|@import)\s*['"]?(?:https?:)?//""", re.IGNORECASE)


def test_the_build_loads_nothing_remote() -> None:
    """The HTML and CSS alone, no browser needed: MathJax is the book's own copy."""
    pages = _pages()
    if not pages:
        _unavailable(f"no book build at {HTML}")
    remote = {}
    for name in pages:
        parser = _Resources()
        parser.feed((HTML / name).read_text(encoding="utf-8"))
        remote.update({f"{name}: {u}": 1 for u in parser.urls if REMOTE.match(u)})
    for css in (HTML / "_static").rglob("*.css"):
        if CSS_REMOTE.search(css.read_text(encoding="utf-8", errors="replace")):
            remote[f"{css.relative_to(HTML)}: a remote url() or @import"] = 1
    assert not remote, f"resources loaded from the network: {sorted(remote)}"
    method = (HTML / "method.html").read_text(encoding="utf-8")
    assert re.search(r'src="_static/mathjax/tex-chtml\.js(\?[^"]*)?"', method)
    assert (HTML / "_static/mathjax/tex-chtml.js").is_file()
    assert any((HTML / "_static/mathjax/output/chtml/fonts/woff-v2").glob("*.woff"))


@pytest.mark.parametrize("ci", [True, False])
def test_missing_browser_fails_in_ci_and_skips_elsewhere(monkeypatch, ci: bool) -> None:
    monkeypatch.setattr(sys.modules[__name__], "IN_CI", ci)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match="no chromium here"):
        _unavailable("no chromium here")
