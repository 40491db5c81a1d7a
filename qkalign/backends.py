"""Compute backends: the numpy reference and (where available) the Numba kernels.

A backend is a module with the same four functions as ``qkalign.reference``
(:data:`BACKEND_FUNCTIONS`); :func:`analyze` calls them and nothing else, so the
numbers of a backend differ from the reference only by what its kernels compute.
"""

from . import reference
from .errors import InputError

#: The functions every backend provides, with the reference's signatures.
BACKEND_FUNCTIONS = (
    "operator_cos_per_head",
    "sign_agreement",
    "principal_cosines_to_anchor",
    "top1_overlap",
)

BACKEND_NAMES = ("numpy", "numba")

#: What ``analyze`` and the CLI use when no backend is named.
DEFAULT_BACKEND = "numpy"


def get_backend(name):
    """The backend module called ``name`` (``"numpy"`` or ``"numba"``)."""
    if name == "numpy":
        return reference
    if name == "numba":
        raise InputError("--backend", "", "'numpy' (the numba kernels arrive with the kernel issue)", repr(name))
    raise InputError("--backend", "", "one of " + ", ".join(repr(n) for n in BACKEND_NAMES), repr(name))
