"""What every figure module shares: figure size and resolution, pyplot on first use, atomic PNG writes,
and the checks of a result JSON's parts (one error line for anything malformed)."""

import numpy as np

from .errors import InputError
from .files.outputs import atomic_path

#: Figure size in inches and resolution: every PNG is FIGSIZE * DPI pixels.
FIGSIZE = (6.4, 5.2)
DPI = 150


def pyplot():
    """matplotlib's pyplot on the Agg backend (imported here, on first use: analyze without figures never loads it)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    return plt


def save_png(plt, fig, path):
    """Write ``fig`` to ``path`` as PNG atomically (a reader never sees half a file), then close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


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
