"""What every figure module shares: figure size and resolution, pyplot on first use, atomic PNG writes
(or SVG kept in memory for the page),
and the checks of a result JSON's parts (one error line for anything malformed)."""

import io
import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files.outputs import atomic_path

#: Figure size in inches and resolution: every PNG is FIGSIZE * DPI pixels.
FIGSIZE = (6.4, 5.2)
DPI = 150


#: matplotlib settings every qkalign figure is drawn under (:func:`figure_style`). Titles sit at the top of their
#: axes: matplotlib's automatic placement measures every tick label of every axes to see whether something is above
#: it (nothing is, in these figures), a fifth of the drawing time. No offset notation: ``1e-6+9.999e-1`` on an axis
#: is unreadable, and an offset text would reach into a title so placed.
FIGURE_RC = {"axes.titley": 1.0, "axes.formatter.useoffset": False}

#: Ticks on a layer axis or a colour bar: at most about this many (each tick costs milliseconds to draw, and five
#: labels place a layer or a value well enough).
TICKS = 5


def figure_style():
    """A context in which figures are drawn with :data:`FIGURE_RC` (the caller's matplotlib settings are left as
    they were outside it)."""
    import matplotlib

    return matplotlib.rc_context(FIGURE_RC)


def integer_ticks(axis):
    """At most about :data:`TICKS` integer ticks on ``axis`` (``ax.xaxis`` or ``ax.yaxis``), e.g. layers or heads."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(nbins=TICKS, integer=True))


def colorbar(fig, image, **kwargs):
    """``fig.colorbar(image, **kwargs)`` with at most about :data:`TICKS` ticks; returns the colour bar."""
    from matplotlib.ticker import MaxNLocator

    bar = fig.colorbar(image, **kwargs)
    bar.locator = MaxNLocator(nbins=TICKS)
    return bar


def pyplot():
    """matplotlib's pyplot on the Agg backend (imported here, on first use: analyze without figures never loads it)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    return plt


class FigureCollection:
    """Figures kept in memory as SVG text (for the HTML page), in the order they were drawn.

    A figure writer takes a folder ``out_dir`` and saves to ``out_dir / NAME``; given a collection
    instead, ``collection / NAME`` names a slot and :func:`save_figure` fills it with the figure's SVG.
    ``figures`` maps each PNG file name the folder would hold to its SVG text.
    """

    def __init__(self):
        self.figures = {}

    def __truediv__(self, name):
        return CollectedFigure(self, str(name))

    def mkdir(self, parents=False, exist_ok=False):
        """Nothing to create (the folder API the writers call)."""


class CollectedFigure:
    """One slot of a :class:`FigureCollection` (what ``collection / NAME`` gives)."""

    def __init__(self, collection, name):
        self.collection, self.name = collection, name

    def __str__(self):
        return self.name


def caption(meta, what):
    """A figure's title line: the model, the operator, what is compared, and the sizes (n, d, H, L)."""
    sizes = [f"n={meta['hidden_size']}" if meta.get("hidden_size") else None,
             f"d={meta['head_dim']}" if meta.get("head_dim") else None,
             f"{meta['num_heads']} heads × {meta['num_layers']} layers"]
    return f"{meta['model']} · operator {meta.get('operator', 'raw')} · {what}\n" + ", ".join(s for s in sizes if s)


def figure_folder(out_dir):
    """``out_dir`` as the writers use it: a :class:`FigureCollection` as it is, else a folder, created if missing."""
    if isinstance(out_dir, FigureCollection):
        return out_dir
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def save_figure(plt, fig, target):
    """Write ``fig`` to ``target`` and close it.

    A path gets a PNG, atomically (a reader never sees half a file); a :class:`CollectedFigure`
    gets the figure's SVG text (heatmap cells stay raster images inside it, so a 36 x 36 map stays small).
    """
    if isinstance(target, CollectedFigure):
        target.collection.figures[target.name] = svg_text(fig)
    else:
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format="png")
    plt.close(fig)
    return target


def svg_text(fig):
    """``fig`` as an ``<svg>`` element to inline in HTML: no XML declaration, DOCTYPE or RDF metadata, and no date
    (the same result gives the same page)."""
    import matplotlib

    buffer = io.StringIO()
    # a fixed salt: matplotlib's clip-path and image ids are otherwise random each run (a page would differ
    # byte for byte); ids stay hashes of their content, so figures inlined side by side do not clash.
    # Text as <text> (the browser's sans-serif), not one glyph path per character: a third of the size,
    # and the numbers in a figure can be selected and searched.
    with matplotlib.rc_context({"svg.hashsalt": "qkalign", "svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    return re.sub(r"\s*<metadata>.*?</metadata>", "", svg, count=1, flags=re.DOTALL)


def part(doc, key, source, prefix=""):
    """``doc[key]``, which must be a JSON object; one error line naming ``prefix + key`` otherwise."""
    value = doc.get(key)
    if not isinstance(value, dict):
        raise InputError(source, prefix + key, "an object", type(value).__name__ if key in doc else "it missing")
    return value


def numbers(value, shape, source, field):
    """``value`` as a float array of ``shape`` (JSON null as nan); one error line if it is anything else."""
    try:
        array = np.array(value, dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise InputError(source, field, f"numbers (or null) of shape {shape}", repr(value)[:60]) from None
    if array.shape != shape:
        raise InputError(source, field, f"numbers of shape {shape}", f"shape {array.shape}")
    if np.isinf(array).any():
        raise InputError(source, field, "finite numbers (or null)", "an infinite value")
    return array
