"""Compute backends: the numpy reference and (where available) the Numba kernels.

A backend is a module with the functions :data:`BACKEND_FUNCTIONS` of
``qkalign.stats.reference``, with the same signatures; ``analyze`` calls them for
all heavy work, so the numbers of a backend differ from the reference only by
what its kernels compute. ``qkalign.testing.comparisons`` pairs each with its reference.
"""

import sys

from ..errors import InputError
from . import reference

#: The functions every backend provides, with the reference's signatures.
BACKEND_FUNCTIONS = (
    "operator_cos_per_head",
    "rescale_to_anchor",
    "sign_agreement",
    "fraction_positive",
    "principal_cosines_to_anchor",
    "top1_overlap",
    # All layer pairs (``qkalign.stats.all_pairs``).
    "sign_agreement_all_pairs",
    "top1_overlap_all_pairs",
    "principal_cosines_all_pairs",
    "spectral_cos_all_pairs",
    # Signs of one spectrum (``AnalysisResult.signed_mass``, ``frac_positive_topk``).
    "signed_mass",
    "fraction_positive_topk",
)

BACKEND_NAMES = ("auto", "numpy", "numba")

#: What ``analyze`` and the CLI use when no backend is named: see :func:`choose_backend`.
DEFAULT_BACKEND = "auto"

#: ``auto`` picks the numpy reference below this much work (``L^2 H k^2 n``, the all-pairs
#: principal angles'): there it finishes before numba has loaded its cached kernels (~0.6 s;
#: measured on 2 cores, the bundled example's 8.5e7 takes 0.33 s with numpy).
NUMPY_FASTER_WORK = 2e8
#: ... and, while the kernels are not compiled yet, below this much: numpy then finishes before
#: the kernels would have compiled (~10-15 s; 5.4e9 took numpy 8.4 s).
NUMPY_FASTER_THAN_COMPILING_WORK = 5e9

_told = set()


def get_backend(name):
    """The backend module called ``name`` (``"numpy"`` or ``"numba"``)."""
    if name == "numpy":
        return reference
    if name == "numba":
        from .. import kernels  # imports numba: only when asked for

        return kernels
    raise InputError("--backend", "", "one of " + ", ".join(repr(n) for n in BACKEND_NAMES), repr(name))


def analysis_work(data):
    """``L^2 H k^2 n``: the all-pairs principal angles' work, which sets the time of an analysis."""
    return float(data.num_layers) ** 2 * data.num_heads * data.topk**2 * data.hidden_size


def choose_backend(name, data, background_compile=False):
    """``(module, name)`` of the backend that computes ``data``'s numbers (the same numbers either way).

    ``"auto"`` takes the numpy reference for small inputs (:data:`NUMPY_FASTER_WORK`), else
    the Numba kernels; while those are not compiled (the first run after an install), inputs
    below :data:`NUMPY_FASTER_THAN_COMPILING_WORK` are answered by numpy, and with
    ``background_compile`` (the command line's choice) the kernels compile in a background
    process for the next run. Whenever a run has to wait for a compilation, or starts one,
    it says so once on stderr.
    """
    if name == "numpy" or (name == "auto" and analysis_work(data) < NUMPY_FASTER_WORK):
        return reference, "numpy"
    module = get_backend(name if name != "auto" else "numba")
    from ..kernels.compile_state import COMPILE_SECONDS, compile_in_background, kernels_compiled

    if kernels_compiled():
        return module, "numba"
    if name == "auto" and analysis_work(data) < NUMPY_FASTER_THAN_COMPILING_WORK:
        if background_compile and compile_in_background():
            _tell("the Numba kernels are not compiled yet: this run uses the numpy reference (the same "
                  "numbers) while they compile in the background for the next one")
        return reference, "numpy"
    from ..kernels.cache_dir import using_fallback

    if not using_fallback():  # else its warning has said that every run compiles
        _tell(f"compiling the Numba kernels: about {COMPILE_SECONDS} s on 2 cores, once after an install "
              "(numba keeps them in its cache)")
    return module, "numba"


def _tell(message):
    """``qkalign: MESSAGE`` on stderr, once per process."""
    if message not in _told:
        _told.add(message)
        print(f"qkalign: {message}", file=sys.stderr, flush=True)
