"""A numba cache the kernels can be written to, or a one-line warning and a cache for this run only.

The kernels are ``@njit(cache=True)``: numba keeps their machine code in ``__pycache__``
beside the source, or else in the user's cache folder (``~/.cache/numba``). When neither is
writable (a shared read-only install run by a user whose home is read-only, a locked-down
container) numba refuses to define the kernels at all ("cannot cache function"). Then the
kernels are compiled into a temporary folder that is removed at exit: every run pays the
compilation, and says so once.
"""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

_FALLBACK = []  # the temporary cache folder, once one was made


def _probe():
    """A function in the kernels' folder: where numba would cache it, it caches every kernel."""


def numba_can_cache():
    """True when one of numba's cache locators accepts a function of this folder (as for every kernel)."""
    from numba.core import caching

    try:
        return any(cls.from_function(_probe, __file__) is not None for cls in caching.CacheImpl._locator_classes)
    except Exception:  # noqa: BLE001 - numba internals moved: let numba decide as it always did
        return True


def ensure_writable_cache():
    """Point numba at a temporary cache folder, with one warning line, when it has no writable one.

    Returns the temporary folder, or None when numba's own cache is writable.
    """
    if _FALLBACK:
        return _FALLBACK[0]
    if numba_can_cache():
        return None
    from numba import config

    folder = tempfile.mkdtemp(prefix="qkalign-numba-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    config.CACHE_DIR = folder
    os.environ["NUMBA_CACHE_DIR"] = folder  # for the processes this one starts
    _FALLBACK.append(folder)
    print(f"qkalign: warning: no writable numba cache ({Path(__file__).parent / '__pycache__'} and the user cache "
          "folder are read-only): kernels are compiled for this run only (~15 s); set NUMBA_CACHE_DIR to a writable "
          "folder to keep them", file=sys.stderr)
    return folder


def using_fallback():
    """True when this process compiles into a temporary cache (nothing would be kept for later runs)."""
    return bool(_FALLBACK)
