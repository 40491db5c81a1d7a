"""What every figure is drawn under (``figure_files.figure_style``): axes with values that differ only in the
sixth decimal still print them in full (matplotlib's default would move ``1e-6+9.99999e-1`` into an offset text),
and the caller's matplotlib settings are the same afterwards."""

import re

import matplotlib
import numpy as np

from qkalign.cli import bundled_example_path
from qkalign.files.seed_format import load
from qkalign.stats.analyze import analyze
from qkalign.views.analysis_figures import write_figures
from qkalign.views.figure_files import FIGURE_RC, FigureCollection


def _texts(svg):
    """The strings of the figure's ``<text>`` elements (SVG text is kept as text: ``svg.fonttype none``)."""
    return [re.sub(r"<[^>]+>", "", t) for t in re.findall(r"<text\b[^>]*>(.*?)</text>", svg, flags=re.DOTALL)]


def test_tick_labels_near_one_are_printed_in_full_and_rc_is_restored():
    doc = analyze(load(bundled_example_path())).to_dict()
    L = doc["meta"]["num_layers"]
    near_one = 1 - 1e-6 * (1 + np.random.default_rng(0).random((L, L)))  # the |λ| spectral cosine of real models
    doc["pairs"]["spectral_abs_cos"]["mean"] = near_one.tolist()
    doc["chance"]["spectral_abs_cos"].update(mean=1 - 1.5e-6, sd=1e-7)  # its band within the same millionth
    before = {key: matplotlib.rcParams[key] for key in FIGURE_RC}
    collection = FigureCollection()
    write_figures(doc, collection)
    texts = _texts(collection.figures["to_anchor.png"])
    assert any(re.fullmatch(r"0\.99999\d+", t) for t in texts), texts  # the |λ| panel's ticks, in full
    assert not [t for t in texts if re.search(r"\de[−-]\d|^[+−-]\d.*e", t)], "an offset text or exponent label"
    assert {key: matplotlib.rcParams[key] for key in FIGURE_RC} == before
