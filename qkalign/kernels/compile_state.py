"""Whether the kernels ``analyze`` runs are compiled, and compiling them in the background.

Numba compiles a kernel on its first call and keeps the machine code in its cache
(``cache=True``); after an install, or when the cache was cleared, the first call of
``analyze`` pays ~10-15 s of compilation on 2 cores. :func:`kernels_compiled` tells from
numba's cache index (without loading or compiling anything) whether that is still to come;
:func:`compile_in_background` starts a detached, low-priority process that compiles them
into the cache, so that a run can answer from the numpy reference meanwhile.

``python -m qkalign.kernels.compile_state`` compiles them in the foreground.
"""

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: Rough wall time of compiling every kernel on a 2-core machine (said to the user).
COMPILE_SECONDS = 15
#: Set to 0 to never start a background compile.
BACKGROUND_ENV = "QKALIGN_BACKGROUND_COMPILE"
#: A background compile younger than this holds its lock; an older lock is stale.
_LOCK_SECONDS = 600


def analyze_dispatchers():
    """The top-level kernels of a default ``analyze`` (their helpers are compiled into them)."""
    from . import operator_cos, principal_angles, signs

    return (operator_cos._operator_cos_per_head, operator_cos._rescale_to_anchor,
            principal_angles._principal_cosines, signs._pack_signs, signs._sign_agreement,
            signs._count_positive, signs._signed_spectra)


def _cached_for_this_machine(dispatcher):
    """True when numba's cache index holds this kernel, as its source is now, for this CPU."""
    cache = dispatcher._cache
    index = cache._cache_file._load_index()  # {} when missing or stale (another numba, an edited source)
    magic = dispatcher.targetctx.codegen().magic_tuple()
    code = (hashlib.sha256(dispatcher.py_func.__code__.co_code).hexdigest(), hashlib.sha256(b"").hexdigest())
    return any(key[1] == magic and key[2] == code for key in index)


def kernels_compiled():
    """True when every kernel of :func:`analyze_dispatchers` is compiled in this process or cached.

    Reads numba's private cache index; should that change, the answer is True (the kernels are
    then compiled on first use, as without this check).
    """
    try:
        return all(d.overloads or _cached_for_this_machine(d) for d in analyze_dispatchers())
    except Exception:  # noqa: BLE001 - numba internals moved: behave as if compiled
        return True


def _lock_path():
    return Path(tempfile.gettempdir()) / f"qkalign-compile-{os.getuid() if hasattr(os, 'getuid') else 0}.lock"


def compile_in_background():
    """Start ``python -m qkalign.kernels.compile_state`` detached, unless one is running or
    ``QKALIGN_BACKGROUND_COMPILE=0``. Returns True when a process was started."""
    from .cache_dir import using_fallback

    if os.environ.get(BACKGROUND_ENV, "1") == "0" or using_fallback():  # nothing would be kept
        return False
    lock = _lock_path()
    try:
        if time.time() - lock.stat().st_mtime < _LOCK_SECONDS:
            return False
        lock.unlink()
    except FileNotFoundError:
        pass
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except OSError:
        return False
    subprocess.Popen([sys.executable, "-m", "qkalign.kernels.compile_state", str(lock)],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
    return True


def compile_kernels():
    """Call every kernel of the backend and of ``measure`` once on tiny inputs, filling numba's cache.

    The inputs have the types ``analyze`` passes: read-only float64 gram and spectra (``QKData``
    freezes its arrays) and read-only eig_dirs in both storage precisions (a file's float32, or
    float64), and measure's two precisions. The kernels are called directly, so this module
    needs nothing above ``qkalign.kernels``.
    """
    from . import (
        block_sums,
        layer_sums,
        operator_cos,
        principal_angles,
        rotary_grams,
        signs,
        spectral,
        top1,
        transpose_sums,
    )

    layers, heads, topk, hidden, k_values, anchor = 4, 2, 3, 16, (2, 4), 3
    rng = np.random.default_rng(0)
    factors = rng.standard_normal((heads, layers, hidden))
    gram = _read_only(np.einsum("hln,hmn->lmh", factors, factors))  # a Gram matrix per head
    sym_eigs = _read_only(rng.standard_normal((layers, heads, 8)))
    operator_cos.operator_cos_per_head(gram)
    operator_cos.rescale_to_anchor(gram, anchor)
    for absolute in (False, True):
        spectral.spectral_cos_all_pairs(sym_eigs, absolute)
    signs.sign_agreement(sym_eigs, anchor, k_values)
    signs.sign_agreement_all_pairs(sym_eigs, k_values)
    signs.fraction_positive(sym_eigs)
    signs.fraction_positive_topk(sym_eigs, topk)
    signs.signed_mass(sym_eigs)
    for dtype in (np.float32, np.float64):  # eig_dirs keep their storage precision; measure has two
        eig_dirs = _read_only(rng.standard_normal((layers, heads, topk, hidden)).astype(dtype))
        principal_angles.principal_cosines_to_anchor(eig_dirs, anchor)
        principal_angles.principal_cosines_all_pairs(eig_dirs)
        top1.top1_overlap(eig_dirs, anchor)
        top1.top1_overlap_all_pairs(eig_dirs)
        block_sums.layer_gram_accumulated(np.eye(8, dtype=dtype), np.eye(8, dtype=dtype), 2, 4)
        transpose_sums.gram_transpose_from_product(np.eye(8, dtype=dtype), 2, 4)
        layer_sums.operator_sums(np.eye(8, dtype=dtype))
        angles = np.ones((2, 1))
        rotary_grams.rotary_layer_grams(np.eye(8, dtype=dtype), np.eye(8, dtype=dtype), 2, 4, angles, angles,
                                        np.array([0]), np.array([1]))


def _read_only(array):
    """A C-contiguous read-only copy: the array type numba sees for ``QKData``'s fields."""
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


def main(argv=None):
    """Compile the kernels (lowest priority), then release the background lock if one was given."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if hasattr(os, "nice"):
            os.nice(19)  # the user's own work comes first
        compile_kernels()
    finally:
        if argv:
            Path(argv[0]).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
