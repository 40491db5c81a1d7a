"""The notebook summary (``AnalysisResult._repr_html_``): the verdict and the operator cosine against chance, a
small figure, and every string from the input escaped."""

import dataclasses
from html.parser import HTMLParser

import numpy as np

import qkalign
from qkalign.cli import bundled_example_path
from qkalign.stats.chance import ChanceLevel, z_score


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text, self.attrs = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(name, value or "") for name, value in attrs]

    def handle_data(self, data):
        self.text.append(data)


def parsed(page):
    collect = _Collect()
    collect.feed(page)
    return collect


def test_summary_holds_the_verdict_the_cosine_against_chance_and_a_figure():
    result = qkalign.analyze(qkalign.load(bundled_example_path()))
    page = parsed(result._repr_html_())
    text = " ".join(page.text)
    meta = result.meta
    L, H, anchor = meta["num_layers"], meta["num_heads"], meta["anchor"]
    observed = float(np.mean(np.delete(result.rescale["mean_cos"], anchor)))
    z = float(z_score(observed, ChanceLevel(**result.chance["operator_cos"]), H * (L - 1)))
    assert result.verdict["label"] in text and f"{observed:+.4f}" in text and f"z = {z:+.1f}" in text
    assert f"{L} layers × {H} heads" in text
    assert page.tags.count("svg") == 1 and "path" in page.tags  # the figure is drawn, inline
    links = [value for name, value in page.attrs if name in ("src", "href", "xlink:href")]
    assert all(value.startswith(("#", "data:")) for value in links)  # nothing a browser would fetch


def test_summary_escapes_the_input_path():
    result = qkalign.analyze(qkalign.load(bundled_example_path()))
    hostile = dataclasses.replace(result, meta={**result.meta, "grams_path": "<script>alert(1)</script>.json"})
    page = hostile._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page
