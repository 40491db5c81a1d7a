"""Compute backends: the numpy reference and (where available) the Numba kernels.

A backend is a module with the functions :data:`BACKEND_FUNCTIONS` of
``qkalign.stats.reference``, with the same signatures; ``analyze`` calls them for
all heavy work, so the numbers of a backend differ from the reference only by
what its kernels compute. ``qkalign.testing.comparisons`` pairs each with its reference.
"""

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

BACKEND_NAMES = ("numpy", "numba")

#: What ``analyze`` and the CLI use when no backend is named.
DEFAULT_BACKEND = "numba"


def get_backend(name):
    """The backend module called ``name`` (``"numpy"`` or ``"numba"``)."""
    if name == "numpy":
        return reference
    if name == "numba":
        from .. import kernels  # imports numba: only when asked for

        return kernels
    raise InputError("--backend", "", "one of " + ", ".join(repr(n) for n in BACKEND_NAMES), repr(name))
