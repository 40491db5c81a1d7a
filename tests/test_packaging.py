"""The wheel and sdist built from this checkout: the package and its data, no tests, benchmarks,
CI or caches; metadata with one version, the license and a core without torch.

(Installing the wheel away from the clone and running it is ``.ci/check-wheel``'s job.)
"""

import subprocess
import sys
import tarfile
import zipfile
from email.parser import HeaderParser

import pytest

import qkalign
from qkalign.testing.processes import REPO_ROOT

pytestmark = pytest.mark.slow  # builds (a fresh process, ~5 s)

#: What no distribution may hold: the test suite, benchmarks, CI, bytecode and numba caches.
FORBIDDEN = ("tests/", "benchmarks/", ".ci/", "__pycache__", ".pyc", ".nbi", ".nbc", ".ci-venv", ".git")
DATA = ("qkalign/data/example.json", "qkalign/data/example-eigdirs.safetensors")


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(wheel names, wheel METADATA, sdist names) built from the checkout, numba caches and all in it."""
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO_ROOT)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    version = qkalign.__version__
    with zipfile.ZipFile(out / f"qkalign-{version}-py3-none-any.whl") as wheel:
        names = wheel.namelist()
        metadata = HeaderParser().parsestr(wheel.read(f"qkalign-{version}.dist-info/METADATA").decode())
        entry_points = wheel.read(f"qkalign-{version}.dist-info/entry_points.txt").decode()
    with tarfile.open(out / f"qkalign-{version}.tar.gz") as sdist:
        sdist_names = [name.partition("/")[2] for name in sdist.getnames()]
    return names, metadata, entry_points, sdist_names


def test_the_wheel_holds_the_package_and_its_data_only(dists):
    names, _, entry_points, _ = dists
    assert all(n.startswith(("qkalign/", f"qkalign-{qkalign.__version__}.dist-info/")) for n in names), names
    assert not [n for n in names if any(bad in n for bad in FORBIDDEN)]
    assert set(DATA) <= set(names) and "qkalign/kernels/grams.py" in names and "qkalign/__main__.py" in names
    assert f"qkalign-{qkalign.__version__}.dist-info/licenses/LICENSE" in names
    assert "qkalign = qkalign.cli:main" in entry_points


def test_the_sdist_holds_no_tests_or_caches(dists):
    *_, names = dists
    assert not [n for n in names if any(bad in n for bad in FORBIDDEN)]
    assert {"pyproject.toml", "README.md", "LICENSE", "qkalign/cli.py", *DATA} <= set(names)


def test_metadata_one_version_a_license_and_a_core_without_torch(dists):
    _, metadata, _, _ = dists
    assert metadata["Version"] == qkalign.__version__
    assert metadata["License-Expression"] == "MIT" and metadata["License-File"] == "LICENSE"
    requires = metadata.get_all("Requires-Dist")
    core = [r for r in requires if "extra ==" not in r]
    assert core and not [r for r in core if r.lower().startswith("torch")]
    assert 'torch>=2.6; extra == "torch"' in requires and 'torch==2.13.0; extra == "test"' in requires
    assert "Programming Language :: Python :: 3" in metadata.get_all("Classifier")
