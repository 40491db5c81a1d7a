"""qkalign: are the attention QK operators of a transformer the same across layers?

Two pipelines meet at :class:`QKData` (the grams and eigen-directions of one model):

- ``qkalign.weights``: a model's weights -> ``QKData`` (:func:`measure`; in memory
  :func:`from_weights`, :func:`from_transformer_lens`, :func:`from_state_dict`);
- ``qkalign.stats``: ``QKData`` -> every number of the report (:func:`analyze`), computed by
  the numpy reference (``qkalign.stats.reference``) or the Numba kernels (``qkalign.kernels``);

with the seed's file format in between (:func:`load`, :func:`save`) and the report, JSON and
figures at the end (:func:`format_report`, ``AnalysisResult.to_json``, ``qkalign.views``).

Names are imported on first use, so ``import qkalign`` stays quick and a run imports only
what it needs.
"""

import importlib

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "AnalysisResult": "qkalign.stats.result",
    "InputError": "qkalign.errors",
    "MissingDependency": "qkalign.errors",
    "QKAlignError": "qkalign.errors",
    "QKData": "qkalign.qkdata",
    "analyze": "qkalign.stats.analyze",
    "format_report": "qkalign.views.text_report",
    "from_state_dict": "qkalign.weights.in_memory",
    "from_transformer_lens": "qkalign.weights.in_memory",
    "from_weights": "qkalign.weights.in_memory",
    "load": "qkalign.files.seed_format",
    "measure": "qkalign.weights.measure",
    "save": "qkalign.files.seed_format",
    "sweep": "qkalign.sweeps",
}
_SUBMODULES = ("cli", "checks", "errors", "extras", "files", "kernels", "linalg", "qkdata", "stats", "sweeps", "testing",
               "views", "weights")

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"qkalign.{name}")
    else:
        raise AttributeError(f"module 'qkalign' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))
