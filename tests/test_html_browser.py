"""The HTML report page as a browser draws it (issue 25.4): headless Chromium opens the file offline.

Two pages: the bundled example's (``qkalign analyze --json R --report P``) and a tiny rotary model's measured with
its profile, frequency bands and symmetry statistics (``qkalign report R P``), so that every kind of figure is drawn.
Each must load with no console error and no request but the page itself, and no script; every figure the result
has (the PNG names of ``qkalign plot``) is a ``<figure class="qk-figure">`` drawn at a non-zero size around an
``<svg>`` of non-zero size; the verdict and the operator cosine to the anchor show the result's values.

The browser is the system's Chromium, driven by Playwright (``qkalign.testing.browser``). Without one the tests
skip and say why; with ``CI`` or ``QKALIGN_REQUIRE_BROWSER`` set (``.ci/run``), they fail instead.
"""

import json
from contextlib import ExitStack

import numpy as np
import pytest

from qkalign.testing.browser import BrowserMissing, browser_required, chromium, load_page
from qkalign.views.analysis_figures import FIGURE_NAMES, ROPE_FIGURE_NAMES
from qkalign.views.symmetry_figures import SYMMETRY_FIGURE_NAMES

# A browser process, and two pages of every figure drawn (tens of seconds on 2 busy cores).
pytestmark = pytest.mark.slow

#: The tiny rotary model: (L, H, H_kv, d, n), and the rotary distances of its profile.
ROTARY_SHAPE = (4, 4, 2, 8, 24)
ROTARY_DELTAS = (0, 1, 3, 16, 100)


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for the module; skips (or fails, where a browser is required) without one."""
    with ExitStack() as stack:
        try:
            launched = stack.enter_context(chromium())
        except BrowserMissing as exc:
            if browser_required():
                pytest.fail(f"{exc}; a browser is required here (CI or QKALIGN_REQUIRE_BROWSER is set)")
            pytest.skip(str(exc))
        yield launched


def example_page(cli, folder):
    """The bundled example's result dict and page, written by ``analyze --json --report``."""
    result_path, page_path = folder / "example.json", folder / "example.html"
    proc = cli("analyze", "--json", result_path, "--report", page_path)
    assert proc.returncode == 0, proc.stderr
    return json.loads(result_path.read_text()), page_path


def rotary_page(cli, folder):
    """A tiny Llama's result (rotary profile and bands, per-layer symmetry, symmetry split) and its page, written
    by ``qkalign report``."""
    pytest.importorskip("torch")
    from qkalign.stats.analyze import analyze
    from qkalign.testing.model_folders import write_model
    from qkalign.weights.measure import measure

    model = write_model(folder / "llama", "llama", shape=ROTARY_SHAPE, seed=4)
    data = measure(model.folder, topk=2, deltas=ROTARY_DELTAS, layer_symmetry=True, symmetry_split=True,
                   progress=False)
    result_path, page_path = folder / "rotary.json", folder / "rotary.html"
    analyze(data).to_json(result_path)
    proc = cli("report", result_path, page_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(result_path.read_text())
    for part in ("rope_profile", "rope_bands", "symmetry", "symmetry_split"):
        assert result.get(part), f"the rotary model's result has no {part}"
    return result, page_path


def expected_figures(result):
    """The PNG names ``qkalign plot`` writes for ``result``: all of them, less the rotary ones without RoPE and
    the symmetry ones without those statistics."""
    absent = set()
    if not result.get("rope_profile"):
        absent |= set(ROPE_FIGURE_NAMES[:2])
    if not result.get("rope_bands"):
        absent |= set(ROPE_FIGURE_NAMES[2:])
    if not result.get("symmetry"):
        absent.add(SYMMETRY_FIGURE_NAMES[0])
    if not result.get("symmetry_split"):
        absent.add(SYMMETRY_FIGURE_NAMES[1])
    return [name for name in FIGURE_NAMES if name not in absent]


@pytest.fixture(scope="module")
def cli_module():
    """``qkalign.cli.main(ARGS)`` in this process (the conftest ``cli`` fixture is per test): its exit code and
    stderr, with stdout thrown away."""
    import contextlib
    import io
    from types import SimpleNamespace

    from qkalign.cli import main

    def run(*args):
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
        return SimpleNamespace(returncode=code, stderr=err.getvalue())

    return run


@pytest.fixture(scope="module", params=["example", "rotary"])
def drawn(request, browser, cli_module, tmp_path_factory):
    """(result dict, page path, PageLoad) of one page, loaded once."""
    writer = {"example": example_page, "rotary": rotary_page}[request.param]
    result, page_path = writer(cli_module, tmp_path_factory.mktemp(request.param))
    return result, page_path, load_page(browser, page_path)


def test_page_loads_offline_without_errors(drawn):
    _, page_path, page = drawn
    assert page.console_errors() == []
    assert page.requests == [page_path.resolve().as_uri()] and page.failed == []
    assert page.scripts == 0


def test_every_figure_is_drawn_with_its_svg(drawn):
    result, _, page = drawn
    assert sorted(figure.name for figure in page.figures) == sorted(expected_figures(result))  # each once
    for figure in page.figures:
        assert figure.width > 0 and figure.height > 0, figure
        assert figure.svg_width is not None, f"{figure.name}: no <svg> inside the figure"
        assert figure.svg_width > 0 and figure.svg_height > 0, figure


def test_key_numbers_show_the_result(drawn):
    result, _, page = drawn
    verdict, anchor = result["verdict"], result["meta"]["anchor"]
    # the operator cosine to the anchor, rebuilt from the per-layer head means: the anchor's own 1.0 left out
    mean_cos = np.asarray(result["rescale"]["mean_cos"], dtype=float)
    expected = float(np.mean(np.delete(mean_cos, anchor)))
    # the JSON's float64 against a mean of its L - 1 values: a few ulps, far below the 4 printed decimals
    assert verdict["mean_cos_to_anchor_excluding_anchor"] == pytest.approx(expected, rel=0, abs=1e-12)
    assert page.keys.get("verdict.label") and set(page.keys["verdict.label"]) == {verdict["label"]}
    shown = page.keys.get("verdict.mean_cos_to_anchor_excluding_anchor")
    assert shown and set(shown) == {f"{expected:+.4f}"}


BROKEN_PAGE = """<!doctype html><html><head><title>broken</title></head><body>
<figure class="qk-figure" data-name="drawn.png"><svg width="120" height="80"><rect width="120" height="80"/></svg>
</figure>
<figure class="qk-figure" data-name="hidden.png" style="display:none"><svg width="120" height="80"></svg></figure>
<figure class="qk-figure" data-name="empty.png"></figure>
<span data-key="verdict.label">similar</span><span data-key="verdict.label" style="display:none">x</span>
<img src="http://127.0.0.1:9/fetched.png" alt="">
<script>console.error("an error on purpose")</script>
</body></html>"""


def test_the_checks_see_what_a_broken_page_does(browser, tmp_path):
    """A page with a request, a console error, a script, a hidden and an empty figure: each is reported."""
    path = tmp_path / "broken.html"
    path.write_text(BROKEN_PAGE)
    page = load_page(browser, path)
    assert page.title == "broken" and page.scripts == 1
    assert "an error on purpose" in page.console_errors()
    assert page.other_requests() == ["http://127.0.0.1:9/fetched.png"]  # recorded, and refused: nothing is sent
    assert page.failed == ["http://127.0.0.1:9/fetched.png"]
    drawn, hidden, empty = page.figures
    assert (drawn.name, drawn.svg_width, drawn.svg_height) == ("drawn.png", 120, 80) and drawn.width > 0
    assert (hidden.width, hidden.height, hidden.svg_width, hidden.svg_height) == (0, 0, 0, 0)
    assert empty.svg_width is None
    assert page.keys["verdict.label"] == ["similar"]  # hidden text is not drawn
