"""Headless Chromium for the tests that look at the HTML report page as a browser draws it.

The browser is the system's Chromium (Debian's package ``chromium``), driven through Playwright's Python
API with ``executable_path``: Playwright's own browser download (``playwright install``) is never used.
:func:`find_chromium` looks, in this order, at the ``QKALIGN_CHROMIUM`` environment variable (a path),
``/usr/bin/chromium``, and ``chromium`` (or ``chromium-browser``) on ``PATH``. The browser starts with
the flags a root container needs (:data:`LAUNCH_ARGS`: no sandbox, no GPU, no ``/dev/shm``).

Where no browser (or no Playwright) is found the tests skip and say why, except where one is required
(:func:`browser_required`: ``CI`` or ``QKALIGN_REQUIRE_BROWSER`` set): there a missing browser fails.

:func:`load_page` opens a file in a fresh page and returns what a person would see of it (a
:class:`PageLoad`): every console message, uncaught page error and request the page made, and the
drawn size of each ``<figure class="qk-figure">``, of its ``<svg>`` and the text of every ``data-key`` element.
"""

import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

#: Environment variable naming the Chromium executable to use.
CHROMIUM_ENV = "QKALIGN_CHROMIUM"
#: Environment variable that turns a missing browser into a failure (``CI`` does too).
REQUIRE_ENV = "QKALIGN_REQUIRE_BROWSER"
#: Where Debian's ``chromium`` package puts its launcher.
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
#: Root in a container: Chromium's sandbox cannot start, there is no GPU, and ``/dev/shm`` may be tiny.
LAUNCH_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage")
#: Milliseconds to wait for the browser to start and for a page to load.
TIMEOUT_MS = 60_000


class BrowserMissing(RuntimeError):
    """No Chromium or no Playwright here; the message says which and where it looked."""


def browser_required():
    """True where a missing browser must fail rather than skip: ``CI`` or ``QKALIGN_REQUIRE_BROWSER`` set
    (to anything but an empty string or ``0``)."""
    return any(os.environ.get(name, "") not in ("", "0") for name in ("CI", REQUIRE_ENV))


def find_chromium():
    """Path of the Chromium executable: ``$QKALIGN_CHROMIUM``, else ``/usr/bin/chromium``, else ``chromium``
    or ``chromium-browser`` on ``PATH``.

    Raises
    ------
    BrowserMissing
        If ``$QKALIGN_CHROMIUM`` names no executable file, or none of the others exists.
    """
    named = os.environ.get(CHROMIUM_ENV)
    if named:
        path = Path(named)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BrowserMissing(f"${CHROMIUM_ENV} is {named!r}: not an executable file")
        return path
    if DEBIAN_CHROMIUM.is_file() and os.access(DEBIAN_CHROMIUM, os.X_OK):
        return DEBIAN_CHROMIUM
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise BrowserMissing(f"no Chromium: ${CHROMIUM_ENV} unset, no {DEBIAN_CHROMIUM}, no chromium on PATH "
                         "(Debian: apt-get install chromium)")


@contextmanager
def chromium():
    """A headless Playwright ``Browser`` on :func:`find_chromium`'s executable, closed on exit.

    Raises
    ------
    BrowserMissing
        If Playwright is not installed or there is no Chromium.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise BrowserMissing(f"Playwright is not installed ({exc}; pip install playwright, no browser "
                             "download needed)") from None
    executable = find_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), headless=True,
                                             args=list(LAUNCH_ARGS), timeout=TIMEOUT_MS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class DrawnFigure:
    """One ``<figure class="qk-figure">`` as drawn: its ``data-name``, its box and its first ``<svg>``'s box
    (CSS pixels; ``svg_width`` and ``svg_height`` are None without an ``<svg>`` inside)."""

    name: str
    width: float
    height: float
    svg_width: float | None
    svg_height: float | None


@dataclass
class PageLoad:
    """What loading a page showed.

    ``url`` the page's own URL; ``console`` (type, text) of every console message; ``page_errors`` the
    uncaught errors; ``requests`` every URL the page asked for (itself included) and ``failed`` those that
    failed; ``figures`` every ``figure.qk-figure`` in document order; ``keys`` {data-key: [text of each drawn
    element with it]} (an element not drawn, e.g. under ``display: none``, is left out); ``scripts`` the number
    of ``<script>`` elements; ``title`` the document's title.
    """

    url: str
    console: list = field(default_factory=list)
    page_errors: list = field(default_factory=list)
    requests: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    figures: list = field(default_factory=list)
    keys: dict = field(default_factory=dict)
    scripts: int = 0
    title: str = ""

    def console_errors(self):
        """The console messages of type ``error``, and the uncaught page errors."""
        return [text for kind, text in self.console if kind == "error"] + list(self.page_errors)

    def other_requests(self):
        """Every request but the page itself (a file:// page that needs nothing else has none)."""
        return [url for url in self.requests if url != self.url]


# Runs in the page: the boxes of the figures and their svgs, and the drawn text of every data-key element.
_MEASURE_PAGE = """() => {
  const box = (el) => { const r = el.getBoundingClientRect(); return [r.width, r.height]; };
  const figures = Array.from(document.querySelectorAll("figure.qk-figure")).map((fig) => {
    const svg = fig.querySelector("svg");
    const [w, h] = box(fig);
    const [sw, sh] = svg ? box(svg) : [null, null];
    return {name: fig.getAttribute("data-name"), width: w, height: h, svg_width: sw, svg_height: sh};
  });
  const keys = {};
  for (const el of document.querySelectorAll("[data-key]")) {
    if (el.getClientRects().length === 0) continue;  // not drawn (display: none, or inside such an element)
    (keys[el.getAttribute("data-key")] ||= []).push(el.innerText.trim());
  }
  return {figures, keys, scripts: document.scripts.length, title: document.title};
}"""


_NOT_A_FILE = re.compile(r"^(?!file:)")


def load_page(browser, path, viewport=(1280, 900)):
    """Open the file ``path`` in a new page of ``browser`` (from :func:`chromium`) and report what it showed.

    The page is loaded to its ``load`` event, then the network is left to go idle, so a late request is seen too.
    Every request for anything but a ``file:`` URL is recorded (``requests``) and aborted (``failed``).
    A ``data-key`` element with no box (not drawn) is left out of ``keys``; the text of the others is their
    ``innerText`` (as drawn: CSS whitespace and case rules applied).

    Returns
    -------
    PageLoad
    """
    url = Path(path).resolve().as_uri()
    page_load = PageLoad(url=url)
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    try:
        # whatever a page asks for beyond files is recorded, then refused: a test never reaches a host
        context.route(_NOT_A_FILE, lambda route: route.abort())
        page = context.new_page()
        page.on("console", lambda message: page_load.console.append((message.type, message.text)))
        page.on("pageerror", lambda error: page_load.page_errors.append(str(error)))
        page.on("request", lambda request: page_load.requests.append(request.url))
        page.on("requestfailed", lambda request: page_load.failed.append(request.url))
        page.goto(url, wait_until="load", timeout=TIMEOUT_MS)
        page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)
        drawn = page.evaluate(_MEASURE_PAGE)
    finally:
        context.close()
    page_load.figures = [DrawnFigure(**figure) for figure in drawn["figures"]]
    page_load.keys = drawn["keys"]
    page_load.scripts = drawn["scripts"]
    page_load.title = drawn["title"]
    return page_load
