"""The Numba backend: the functions of :mod:`qkalign.stats.reference`, computed by cached Numba kernels.

Each public function has the signature and the result of its namesake in the reference
(to rounding; ``qkalign.testing.comparisons`` pairs them and the tests hold them to it).
The wrappers check and prepare the input in Python (``arguments``) and run the O(n)
products that BLAS does best; the ``@njit(cache=True)`` kernels behind them never raise and
call no BLAS. The heavy ones are ``parallel=True`` and write only to output slots owned by
their ``prange`` iteration, so results are bit-identical for any ``NUMBA_NUM_THREADS``;
kernels whose whole work is a fraction of a millisecond run on one thread (``thread_count``).

Modules: ``operator_cos`` (a, b), ``signs`` (c and the spectra's signs), ``grams`` +
``principal_angles`` + ``small_linalg`` (d), ``top1``, ``spectral``; ``pair_lists`` names the
layer pairs a kernel loops over. ``block_sums``, ``rotary_grams``, ``transpose_sums`` and ``layer_sums`` serve
``qkalign.weights.measure``, not the backend. ``cache_dir`` makes sure numba has somewhere to cache them before any is defined.
"""

from .cache_dir import ensure_writable_cache

ensure_writable_cache()

from .operator_cos import operator_cos_per_head, rescale_to_anchor
from .principal_angles import principal_cosines_all_pairs, principal_cosines_to_anchor
from .signs import fraction_positive, fraction_positive_topk, sign_agreement, sign_agreement_all_pairs, signed_mass
from .spectral import spectral_cos_all_pairs
from .top1 import top1_overlap, top1_overlap_all_pairs

__all__ = [
    "fraction_positive",
    "fraction_positive_topk",
    "operator_cos_per_head",
    "principal_cosines_all_pairs",
    "principal_cosines_to_anchor",
    "rescale_to_anchor",
    "sign_agreement",
    "sign_agreement_all_pairs",
    "signed_mass",
    "spectral_cos_all_pairs",
    "top1_overlap",
    "top1_overlap_all_pairs",
]
