"""Benchmark inputs: the qwen3-4b preset cached on disk (generating it takes minutes), or a
small preset for a smoke run (``QKALIGN_BENCH_PRESET=small``).

``QKALIGN_BENCH_CACHE`` sets the cache folder (default ``~/.cache/qkalign``);
``QKALIGN_BENCH_SLOW=1`` adds the numpy reference of the all-pairs principal angles
(~2 minutes per round at the qwen3-4b preset).
"""

import os
import sys
from pathlib import Path

import pytest

import qkalign
from qkalign.testing.comparisons import Inputs
from qkalign.seed_format import save
from qkalign.weights.synthetic import PRESETS, make_qkdata

sys.path.insert(0, str(Path(__file__).parent))  # seed_loop, timing

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
        save(make_qkdata(PRESETS[preset]), cache_dir() / preset)
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
