"""Benchmark inputs: the qwen3-4b preset cached on disk (generating it takes minutes), or a
small preset for a smoke run (``QKALIGN_BENCH_PRESET=small``).

``QKALIGN_BENCH_CACHE`` sets the cache folder (default ``~/.cache/qkalign``);
``QKALIGN_BENCH_SLOW=1`` adds the numpy reference of the all-pairs principal angles
(~2 minutes per round at the qwen3-4b preset) and of the rotary Grams (~20 s per round).

The run's ``machine_info`` (``--benchmark-json``, ``--benchmark-save``) also records the
preset, the RAM, the cores this process may use and the versions of python's numerical
stack, so ``summary.py`` reports what the run ran on (and ``--benchmark-compare`` warns
when they differ).
"""

import os
import platform
import sys
from pathlib import Path

import pytest

import qkalign
from qkalign.files.seed_format import save
from qkalign.testing.comparisons import Inputs
from qkalign.weights.synthetic import PRESETS, make_qkdata

sys.path.insert(0, str(Path(__file__).parent))  # seed_loop

PRESET = os.environ.get("QKALIGN_BENCH_PRESET", "qwen3-4b")
SMOKE = PRESET != "qwen3-4b"
SLOW = os.environ.get("QKALIGN_BENCH_SLOW") == "1"


def cache_dir():
    """Folder of the cached preset inputs."""
    return Path(os.environ.get("QKALIGN_BENCH_CACHE", Path.home() / ".cache" / "qkalign"))


def preset_json(preset=PRESET):
    """The seed-format JSON of ``preset`` in the cache, written first if missing (float32 eig_dirs)."""
    json_path = cache_dir() / f"{preset}.json"
    if not json_path.exists():
        save(make_qkdata(PRESETS[preset]), cache_dir() / preset, file_format="pt")  # the seed reads .pt
    return json_path


@pytest.fixture(scope="session")
def data():
    """The benchmark model, as ``qkalign.load`` reads it."""
    if SMOKE:
        return make_qkdata(PRESETS[PRESET])
    return qkalign.load(preset_json())


@pytest.fixture(scope="session")
def inputs(data):
    return Inputs.from_qkdata(data, anchor=-1)


def pytest_benchmark_update_machine_info(config, machine_info):
    """Add the preset, RAM, usable cores and library versions (incl. every loaded BLAS) to the run's JSON."""
    import numba
    import numpy
    import scipy
    import scipy.linalg  # noqa: F401  (loads scipy's BLAS, so threadpoolctl lists it)
    from threadpoolctl import threadpool_info

    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = None
    machine_info["qkalign_bench"] = {
        "preset": PRESET,
        "slow": SLOW,
        "ram_bytes": ram,
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "versions": {"python": platform.python_version(), "numpy": numpy.__version__,
                     "numba": numba.__version__, "scipy": scipy.__version__},
        "blas": [{key: lib.get(key) for key in ("internal_api", "version", "num_threads", "architecture")}
                 # the folder tells whose copy it is, e.g. numpy.libs/libscipy_openblas64_-....so
                 | {"library": os.sep.join(Path(lib.get("filepath", "")).parts[-2:])}
                 for lib in threadpool_info() if lib.get("user_api") == "blas"],
    }
