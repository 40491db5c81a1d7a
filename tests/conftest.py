"""Shared fixtures: synthetic inputs written in the seed's format, and the CLI run in this process.

Helpers that tests import (fresh processes, dense float64 constructions, tiny model folders)
live in ``qkalign.testing``.
"""

import os
from types import SimpleNamespace

import pytest

from qkalign.files.seed_format import save
from qkalign.weights.synthetic import PRESETS, SyntheticSpec, make_qkdata

# Tests that want a background compile start one themselves (tests/test_compile_state.py).
os.environ["QKALIGN_BACKGROUND_COMPILE"] = "0"

#: 36 layers (the seed's fixed layer ranges fit), small heads so the suite stays fast.
SPEC_36 = SyntheticSpec(36, 4, 2, 8, 40, topk=6, drift=0.15, seed=3)
#: Fewer layers than the seed's ranges assume.
SPEC_SMALL = PRESETS["small"]


@pytest.fixture()
def cli(capsys):
    """Run ``qkalign.cli.main(ARGS)`` in this process; returns (returncode, stdout, stderr) like a subprocess.

    An exception escaping ``main`` fails the test: the CLI must never show a traceback.
    """
    from qkalign.cli import main

    def run(*args):
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return run


@pytest.fixture(scope="session")
def spec36():
    return SPEC_36


@pytest.fixture(scope="session")
def data36():
    return make_qkdata(SPEC_36)


@pytest.fixture(scope="session")
def data_small():
    return make_qkdata(SPEC_SMALL)


@pytest.fixture(scope="session")
def written36(data36, tmp_path_factory):
    """(json_path, pt_path) of SPEC_36 in the seed's format (the seed script reads .pt), eig_dirs stored as float64."""
    return save(data36, tmp_path_factory.mktemp("in36") / "model36", eig_dirs_dtype="float64", file_format="pt")


@pytest.fixture(scope="session")
def written_small(data_small, tmp_path_factory):
    return save(data_small, tmp_path_factory.mktemp("small") / "small", eig_dirs_dtype="float64", file_format="pt")


@pytest.fixture(scope="module")
def dask_scheduler():
    """Address of a local Dask cluster of 2 single-threaded worker processes, for the sweep tests."""
    distributed = pytest.importorskip("distributed")
    environment = dict(os.environ)  # the nanny writes its pre-spawn variables into this process's environment
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address
    os.environ.clear()
    os.environ.update(environment)


@pytest.fixture()
def hub(monkeypatch, tmp_path):
    """huggingface_hub's constants with its cache in ``tmp_path/hub``, offline unless a test says otherwise."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return constants
