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
    """Run the kernels of a default ``analyze`` (their types do not depend on the storage precision)
    and of ``measure`` once on small inputs, filling numba's cache."""
    import numpy as np

    from ..stats.analyze import analyze
    from ..weights.synthetic import SyntheticSpec, make_qkdata
    from .block_sums import layer_gram_accumulated

    analyze(make_qkdata(SyntheticSpec(4, 2, 1, 4, 16, topk=3)), backend="numba", chance=False)
    for dtype in (np.float32, np.float64):  # measure's two precisions
        layer_gram_accumulated(np.eye(8, dtype=dtype), np.eye(8, dtype=dtype), 2, 4)


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
