"""The HTML page (``analyze --report``, ``qkalign report``): every section's numbers as the result holds them, every
figure inline, nothing fetched, the same bytes for the same result; a result read back from JSON gives the same
text report; malformed results are one error line. The page in a real browser: tests/test_html_browser.py."""

import html
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from qkalign.cli import bundled_example_path
from qkalign.files.seed_format import load
from qkalign.stats.analyze import analyze
from qkalign.stats.chance import ChanceLevel, z_score
from qkalign.stats.result import AnalysisResult
from qkalign.testing.model_folders import write_model
from qkalign.views.analysis_figures import write_figures
from qkalign.views.figure_files import FigureCollection
from qkalign.views.html_page import page_html
from qkalign.views.text_report import format_report
from qkalign.weights.measure import measure


class _Page(HTMLParser):
    """Tags, attributes, the text under each ``data-key`` and the ``<svg>`` count of each ``<figure>``."""

    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.keys, self.figures, self.headings = [], [], {}, {}, []
        self._key = self._figure = self._heading = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.attrs += [(tag, name, value or "") for name, value in attrs.items()]
        if "data-key" in attrs:
            self._key = attrs["data-key"]
            self.keys[self._key] = ""
        if tag == "figure":
            self._figure = attrs.get("data-name")
            self.figures[self._figure] = 0
        if tag == "svg" and self._figure is not None:
            self.figures[self._figure] += 1
        if tag == "h2":
            self._heading = ""

    def handle_endtag(self, tag):
        if tag in ("td", "div", "span"):
            self._key = None
        if tag == "figure":
            self._figure = None
        if tag == "h2":
            self.headings.append(self._heading)
            self._heading = None

    def handle_data(self, data):
        if self._key is not None:
            self.keys[self._key] += data
        if self._heading is not None:
            self._heading += data


def parsed(page):
    p = _Page()
    p.feed(page)
    return p


@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    """A small rotary model's result with every optional part: pairs, chance, matched heads, the rotary profile and
    bands, per-head and per-layer symmetry and the symmetric/skew split."""
    folder = tmp_path_factory.mktemp("rich")
    model = write_model(folder / "model", "llama", shape=(4, 4, 2, 8, 32), seed=7)
    data = measure(model.folder, topk=3, progress=False, layer_symmetry=True, symmetry_split=True)
    return analyze(data, match_heads=True)


@pytest.fixture(scope="module")
def rich_page(rich):
    return page_html(rich.to_dict(), "rich.json")


@pytest.fixture(scope="module")
def example():
    return analyze(load(bundled_example_path()))


@pytest.mark.parametrize("which", ["example", "rich"])
def test_a_result_read_back_from_json_gives_the_same_report(which, request):
    result = request.getfixturevalue(which)
    doc = json.loads(result.to_json())
    again = AnalysisResult.from_dict(doc)
    assert json.loads(again.to_json()) == doc
    assert format_report(again) == format_report(result)


def test_every_section_and_figure_of_a_rich_result(rich, rich_page):
    doc = rich.to_dict()
    page = parsed(rich_page)
    collection = FigureCollection()
    write_figures(doc, collection)
    assert set(page.figures) == set(collection.figures) and len(page.figures) >= 14
    assert all(count == 1 for count in page.figures.values())  # one inline <svg> in each figure
    assert [h for h in page.headings if h] == [
        "Provenance", "Every layer against the anchor (seed sections a–d)", "Curvature-sign agreement with the anchor (c)",
        "All layer pairs (e)", "By layer distance (f)", "Chance levels: unrelated operators of this shape",
        "Head matching", "Rotary distance profile (h)", "Rotary frequency bands (i)", "Symmetry of the operators (j)",
        "Symmetric and skew parts across layers (k)", "The text report"]
    meta, verdict = rich.meta, rich.verdict
    L, H, anchor = meta["num_layers"], meta["num_heads"], meta["anchor"]
    assert page.keys["verdict.label"] == verdict["label"]
    assert page.keys["verdict.mean_cos_to_anchor_excluding_anchor"] == \
        f"{verdict['mean_cos_to_anchor_excluding_anchor']:+.4f}"
    observed = float(np.delete(rich.rescale["mean_cos"], anchor).mean())
    z = float(z_score(observed, ChanceLevel(**rich.chance["operator_cos"]), H * (L - 1)))
    assert page.keys["chance.operator_cos.z"] == f"{z:+.1f}"
    assert page.keys["chance.symmetry.z"] == f"{rich.symmetry['z']:+.1f}"
    assert page.keys["chance.symmetry_split.A.z"] == f"{rich.symmetry_split['A']['z_offdiag']:+.1f}"
    text = rich_page
    for layer in range(L):  # the per-layer table holds each layer's numbers as the report prints them
        assert f"<td>{rich.to_anchor['t_opt'][layer]:+.3f}</td>" in text
        assert f"<td>{rich.symmetry['directionality'][layer]:+.4f}</td>" in text
    assert f"<td class='text'>{html.escape(meta['provenance']['layout'])}</td>" in text  # provenance: what was measured
    assert "qkalign analyze: input" in text  # the text report, folded


def test_the_page_fetches_nothing_and_is_the_same_each_time(rich, rich_page, example):
    for result, first in ((rich, rich_page), (example, None)):
        doc = json.loads(json.dumps(result.to_dict()))
        second = page_html(doc, "rich.json")
        first = first or page_html(doc, "rich.json")
        assert first == second
        page = parsed(first)
        assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
        links = [(tag, name, value) for tag, name, value in page.attrs if name in ("src", "href", "xlink:href")]
        assert links and all(value.startswith(("#", "data:")) for _, _, value in links)  # the rasters, inline
        assert not re.search(r"url\((?!#)", first)  # CSS and SVG refer only to ids in the page


def test_strings_from_the_input_are_escaped(example):
    doc = example.to_dict()
    doc["meta"]["grams_path"] = "<script>alert(1)</script>.json"
    doc["verdict"]["text"] = "<img src=x onerror=alert(1)>"
    page = page_html(doc)
    assert "<script>" not in page and "<img src=x" not in page and "&lt;script&gt;" in page


def test_command_line_analyze_report_and_report(tmp_path, cli, written_small):
    out = cli("analyze", written_small[0], "--json", tmp_path / "r.json", "--report", tmp_path / "a.html")
    assert out.returncode == 0 and f"wrote {tmp_path / 'a.html'}" in out.stderr
    assert cli("report", tmp_path / "r.json", tmp_path / "b.html").returncode == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    assert (tmp_path / "b.html").read_text() == page_html(doc, str(tmp_path / "r.json"))
    first = parsed((tmp_path / "a.html").read_text())
    assert first.keys == parsed((tmp_path / "b.html").read_text()).keys  # the same numbers either way
    assert first.keys["verdict.label"] == doc["verdict"]["label"]


def test_analyze_without_report_writes_no_page(tmp_path, cli):
    assert cli("analyze", "--json", tmp_path / "r.json").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def _damaged(doc, case):
    if case == "rescale":
        doc["rescale"]["mean_cos"] = doc["rescale"]["mean_cos"][:-1]
    elif case == "label":
        doc["verdict"]["label"] = 3
    elif case == "k":
        doc["sign_agreement"]["k"] = ["two"]
    elif case == "frac_positive":
        doc["frac_positive"] = "many"
    return doc, {"rescale": "rescale.mean_cos", "label": "verdict.label", "k": "sign_agreement.k",
                 "frac_positive": "frac_positive"}[case]


@pytest.mark.parametrize("case", ["rescale", "label", "k", "frac_positive"])
def test_a_malformed_result_is_one_error_line(case, tmp_path, cli, example):
    doc, field = _damaged(example.to_dict(), case)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    out = cli("report", path, tmp_path / "page.html")
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qkalign: error:") and str(path) in lines[0] and field in lines[0]
    assert not (tmp_path / "page.html").exists()


def test_an_unwritable_page_path_is_refused_before_the_work(tmp_path, cli):
    (tmp_path / "blocker").write_text("")
    out = cli("analyze", "--report", tmp_path / "blocker" / "x.html")
    assert out.returncode == 2 and out.stdout == "" and "--report" in out.stderr


def test_sweep_page_lists_every_run_and_draws_the_figures(tmp_path, cli):
    pytest.importorskip("xarray")
    pytest.importorskip("zarr")
    from qkalign.sweeps.store import SweepStore
    from qkalign.sweeps.task import Outcome
    from qkalign.sweeps.variables import flatten
    from qkalign.views.sweep_figures import statistic

    results = {}
    for step, seed in ((100, 1), (200, 2)):
        model = write_model(tmp_path / f"step{step}", "llama", shape=(3, 2, 1, 8, 24), seed=seed)
        results[step] = analyze(measure(model.folder, progress=False))
    store = SweepStore(tmp_path / "s.zarr", {"topk": 16}, "test")
    indices = store.add_runs([("org/m", "step100"), ("org/m", "step200"), ("org/m", "step300")])
    store.write(indices[0], Outcome("ok", variables=flatten(results[100].to_dict())))
    store.write(indices[1], Outcome("ok", variables=flatten(results[200].to_dict())))
    store.write(indices[2], Outcome("failed", error="the weights are truncated <here>", error_type="InputError"))
    assert cli("report", tmp_path / "s.zarr", tmp_path / "sweep.html").returncode == 0
    text = (tmp_path / "sweep.html").read_text()
    page = parsed(text)
    assert "statistics_vs_step.png" in page.figures and all(c == 1 for c in page.figures.values())
    import xarray as xr

    ds = xr.open_zarr(tmp_path / "s.zarr", chunks=None)
    for index, step in zip(indices[:2], (100, 200)):
        assert f"<td>{statistic(ds, index, 'anchor_operator_cos'):+.4f}</td>" in text
        assert f"<td class='text'>{results[step].verdict['label']}</td>" in text
    assert "the weights are truncated &lt;here&gt;" in text and "script" not in page.tags
    out = cli("report", tmp_path / "missing.zarr", tmp_path / "x.html")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
