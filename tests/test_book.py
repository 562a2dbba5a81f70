"""The book, built for real and read in a real browser.

A module-scoped fixture runs ``jupyter-book build <repo> --warningiserror --keep-going`` (execution is
cached, so this is quick after ``make book``), serves ``_build/html`` on 127.0.0.1 and opens every page of
``_toc.yml`` in Debian's Chromium through Playwright. Each page must load without console errors or failed
requests, have its equations typeset by the local MathJax, load every image and link only to pages and
anchors that exist, and have no code cell that scrolls sideways at 1280 px. Further tests check that each
chapter contains the figures, drawn diagrams and tables it promises, that each animation plays (its frame
changes after pressing play) and that the search finds the LSTM chapter.

Chromium: ``make chromium`` (or ``apt-get install -y chromium``); Playwright cannot download browsers here.
Screenshots of two pages are written to ``test-artifacts/``.
"""

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import pytest
from conftest import CHROMIUM_ARGS, PAGES, REPO
from playwright.sync_api import Browser, Page, sync_playwright

ARTIFACTS = REPO / "test-artifacts"
# What each chapter promises (notes/common.md, "Book conventions"): named figures, and tables on some pages.
PROMISED_FIGURES = {
    "book/sequences": ["diag-sequence-shapes"],
    "book/recurrent_cell": ["fig-times-three", "diag-rnn-cell", "diag-unrolled"],
    "book/vanishing_gradients": [
        "diag-gradient-paths",
        "fig-scalar-powers",
        "fig-eigen-directions",
        "fig-repeated-vs-distinct",
        "fig-gradient-norms",
        "fig-remedies",
    ],
    "book/lstm": [
        "fig-sigmoid-tanh",
        "diag-lstm-cell",
        "diag-lstm-forget",
        "diag-lstm-input",
        "diag-lstm-cell-state",
        "diag-lstm-output",
    ],
    "book/gru": ["fig-ewma", "diag-gru-cell", "diag-gru-update"],
    "book/long_range": ["fig-adding-curves"],
    "book/char_lstm": ["fig-char-loss"],
}
PROMISED_TABLES = ["book/long_range", "book/char_lstm"]
SAMPLE_CHARS = 200  # char_lstm shows generated text: at least one cell output this long
SCREENSHOTS = ["book/recurrent_cell", "book/lstm", "book/summary"]
ANIMATIONS = {"book/lstm": 1, "book/vanishing_gradients": 1}  # pages with matplotlib jshtml animations




# --- fixtures: build, serve, browse -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def book_html() -> Path:
    """Build the book exactly as `make book` does and return _build/html."""
    venv_bin = Path(sys.executable).parent
    path = f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"
    env = dict(os.environ, PATH=path, OMP_NUM_THREADS="1")  # as `make book`
    cmd = [str(venv_bin / "jupyter-book"), "build", str(REPO), "--warningiserror", "--keep-going"]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        output = f"{result.stdout[-15000:]}\n{result.stderr[-5000:]}"
        pytest.fail(f"`{' '.join(cmd)}` exited with {result.returncode}:\n{output}", pytrace=False)
    return REPO / "_build" / "html"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server(book_html: Path) -> Iterator[str]:
    """Serve the built book on 127.0.0.1 (a free port) from a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(book_html))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        message = "Chromium not found on PATH: run `make chromium` (or `apt-get install -y chromium`)."
        pytest.fail(message, pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class PageProblems:
    """Console errors, uncaught exceptions and failed requests seen while a page loads."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(f"console: {msg.text}"))
        page.on("pageerror", lambda exc: self.errors.append(f"exception: {exc}"))
        page.on("requestfailed", lambda req: self.errors.append(f"request failed: {req.url} ({req.failure})"))
        page.on("response", lambda r: r.status >= 400 and self.errors.append(f"HTTP {r.status}: {r.url}"))


def open_page(browser: Browser, url: str) -> tuple[Page, PageProblems]:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = PageProblems(page)
    page.goto(url, wait_until="load")
    # MathJax 3 typesets after loading; its startup promise resolves when the page's math is done.
    page.evaluate("() => window.MathJax?.startup?.promise")
    return page, problems


# --- link checking ------------------------------------------------------------------------------------------


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.names.add(value)


@functools.cache
def fetch(url: str) -> tuple[int, frozenset[str]]:
    """HTTP status of a same-origin URL and the ids/names defined in it (for anchors)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, frozenset()
    anchors = _Anchors()
    if url.endswith((".html", "/")):
        anchors.feed(body.decode("utf-8", errors="replace"))
    return status, frozenset(anchors.names)


def broken_links(page: Page, base: str) -> list[str]:
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(a => a.href)")
    problems = []
    for href in sorted(set(hrefs)):
        if urlparse(href).netloc != urlparse(base).netloc:
            continue  # external (and mailto:) links are not followed: the book must work offline
        target, fragment = urldefrag(href)
        status, anchors = fetch(target)
        if status != 200:
            problems.append(f"{href}: HTTP {status}")
        elif fragment and unquote(fragment) not in anchors:
            problems.append(f"{href}: no element with id '{unquote(fragment)}'")
    return problems


# --- the tests ----------------------------------------------------------------------------------------------

VISIBLE_PROSE_JS = """() => {
    const article = document.querySelector('article.bd-article') || document.body;
    const clone = article.cloneNode(true);
    clone.querySelectorAll('pre, code, script, style, mjx-container, .highlight').forEach(e => e.remove());
    return clone.innerText;
}"""


# Parts of code cells whose content is wider than their box: they would scroll sideways.
OVERFLOWING_CELLS_JS = """() => [...document.querySelectorAll(
        'div.cell pre, div.cell div.highlight, div.cell div.cell_input, div.cell div.cell_output')]
    .filter(e => e.scrollWidth > e.clientWidth + 1)
    .map(e => `${e.scrollWidth} > ${e.clientWidth} px: ${e.innerText.split('\\n')[0].slice(0, 80)}`)"""


@pytest.mark.browser
@pytest.mark.parametrize("doc", PAGES)
def test_page_renders_in_browser(browser: Browser, server: str, doc: str) -> None:
    page, problems = open_page(browser, urljoin(server, f"{doc}.html"))
    try:
        assert not problems.errors, f"{doc}: errors while loading:\n" + "\n".join(problems.errors)

        n_math = page.locator(".math").count()  # Sphinx marks every inline and display equation
        n_typeset = page.locator("mjx-container").count()
        if n_math:
            assert n_typeset >= n_math, f"{doc}: MathJax typeset {n_typeset} of {n_math} equations"
        errors = page.locator("mjx-merror").all_inner_texts()
        assert not errors, f"{doc}: MathJax could not typeset: {errors}"
        prose = page.evaluate(VISIBLE_PROSE_JS)
        raw = [m.group(0) for m in re.finditer(r".{0,40}(\$|\\\(|\\\[).{0,40}", prose)]
        assert not raw, f"{doc}: raw TeX left in the visible text: {raw}"

        images = page.eval_on_selector_all("img", "els => els.map(i => [i.src, i.complete, i.naturalWidth])")
        unloaded = [src for src, complete, width in images if not (complete and width > 0)]
        assert not unloaded, f"{doc}: images that did not load: {unloaded}"

        overflowing = page.evaluate(OVERFLOWING_CELLS_JS)
        assert not overflowing, f"{doc}: code cells scroll sideways at 1280 px:\n" + "\n".join(overflowing)

        links = broken_links(page, server)
        assert not links, f"{doc}: broken internal links:\n" + "\n".join(links)

        if doc in SCREENSHOTS:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{doc.replace('/', '_')}.png"), full_page=True)
    finally:
        page.close()


@pytest.mark.browser
@pytest.mark.parametrize("query", ["forget gate", "conveyor belt"])
def test_search_finds_lstm_chapter(browser: Browser, server: str, query: str) -> None:
    page, problems = open_page(browser, urljoin(server, f"search.html?q={query.replace(' ', '+')}"))
    try:
        page.wait_for_selector("#search-results .search-summary", timeout=30_000)
        results = page.eval_on_selector_all("#search-results ul.search li a", "els => els.map(a => a.href)")
        assert any(urlparse(r).path.endswith("/book/lstm.html") for r in results), (
            f"searching '{query}' did not list the LSTM chapter; results: {results}"
        )
        assert not problems.errors, "errors on the search page:\n" + "\n".join(problems.errors)
    finally:
        page.close()


@pytest.mark.browser
@pytest.mark.parametrize("doc", sorted(ANIMATIONS))
def test_animations_play(browser: Browser, server: str, doc: str) -> None:
    """Each jshtml animation shows its first frame, and another one after its Play button is pressed."""
    page, problems = open_page(browser, urljoin(server, f"{doc}.html"))
    try:
        frames = page.locator("img[id^='_anim_img']")
        count = frames.count()
        assert count == ANIMATIONS[doc], f"{doc}: {count} animations, expected {ANIMATIONS[doc]}"
        for k in range(frames.count()):
            frame = frames.nth(k)
            anim_id = frame.get_attribute("id").removeprefix("_anim_img")
            frame.scroll_into_view_if_needed()
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=frame.element_handle())
            first = frame.get_attribute("src")
            page.locator(f"button[onclick='anim{anim_id}.play_animation()']").click()
            changed = "([img, first]) => img.getAttribute('src') !== first"
            page.wait_for_function(changed, arg=[frame.element_handle(), first], timeout=10_000)
            assert frame.evaluate("img => img.naturalWidth") > 0, f"{doc}: animation {k} shows a broken frame"
        assert not problems.errors, f"{doc}: errors while playing:\n" + "\n".join(problems.errors)
    finally:
        page.close()


@pytest.mark.browser
@pytest.mark.parametrize("doc", sorted(set(PROMISED_FIGURES) | set(PROMISED_TABLES)))
def test_chapter_has_promised_figures_and_tables(browser: Browser, server: str, doc: str) -> None:
    page, _ = open_page(browser, urljoin(server, f"{doc}.html"))
    try:
        missing = []
        for fig_id in PROMISED_FIGURES.get(doc, []):
            images = f"figure[id='{fig_id}'] img"
            widths = page.eval_on_selector_all(images, "els => els.map(i => i.naturalWidth)")
            if not any(w > 0 for w in widths):
                missing.append(f"figure '{fig_id}' (a <figure id=...> with a loaded image)")
        if doc in PROMISED_TABLES and page.locator("article table").count() == 0:
            missing.append("a <table>")
        if doc == "book/char_lstm":
            outputs = page.locator(".cell_output").all_inner_texts()
            if not any(len(text) >= SAMPLE_CHARS for text in outputs):
                missing.append(f"generated samples (a cell output of at least {SAMPLE_CHARS} characters)")
        assert not missing, f"{doc} is missing: " + "; ".join(missing)
    finally:
        page.close()
