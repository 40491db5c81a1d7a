"""What the page costs a run that does not ask for it (issue 25.5): ``qkalign analyze`` without ``--plot`` or
``--report`` loads no plotting library, and with ``--report`` it does.

Each command runs in a fresh process (``qkalign.cli.main`` called from ``python -c``), which then prints the
plotting packages in its ``sys.modules``: an import anywhere on the way (a module-level ``import matplotlib`` in
a view the CLI imports) shows up here.
"""

import json

import pytest

from qkalign.files.seed_format import save
from qkalign.testing.processes import run_python
from qkalign.weights.synthetic import PRESETS, make_qkdata

#: Top-level packages that draw: matplotlib, and what may come with one (PIL with matplotlib; plotly).
PLOTTING = ("matplotlib", "plotly", "PIL")

# Runs the CLI, then prints (last line) the plotting packages loaded by then. With QKALIGN_TEST_ONE_CORE=1 the
# process may run on one core only: the page then draws its figures here, not in worker processes (figure_jobs).
_CLI_THEN_MODULES = f"""
import json, os, sys
if os.environ.get("QKALIGN_TEST_ONE_CORE") == "1":
    os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}})
from qkalign.cli import main
code = main(sys.argv[1:])
loaded = sorted({{name.split(".")[0] for name, module in sys.modules.items() if module is not None}}
                & set({PLOTTING!r}))
print(json.dumps({{"code": code, "plotting": loaded}}))
"""

pytestmark = pytest.mark.slow


def plotting_loaded(*args, one_core=False):
    """The plotting packages a fresh process has loaded after ``qkalign ARGS`` succeeded (its worker processes'
    not counted); ``one_core``: the process may run on one core only."""
    proc = run_python(["-c", _CLI_THEN_MODULES, *args], QKALIGN_TEST_ONE_CORE=int(one_core))
    assert proc.returncode == 0, proc.stderr[-4000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome["code"] == 0, proc.stderr[-4000:]
    return outcome["plotting"]


@pytest.fixture(scope="module")
def grams_json(tmp_path_factory):
    """The small preset as a grams JSON with safetensors eig_dirs (no torch needed to read it)."""
    json_path, _ = save(make_qkdata(PRESETS["small"]), tmp_path_factory.mktemp("small") / "small")
    return json_path


def test_analyze_of_the_bundled_example_loads_no_plotting_library():
    assert plotting_loaded("analyze") == []


def test_analyze_of_a_json_input_with_json_output_loads_no_plotting_library(grams_json, tmp_path):
    assert plotting_loaded("analyze", grams_json, "--json", tmp_path / "result.json") == []
    assert (tmp_path / "result.json").is_file()


def test_the_figures_load_matplotlib(grams_json, tmp_path):
    """The other side, so that the checks above can fail: the figures are drawn with matplotlib. ``--plot``
    draws in this process; ``--report`` on one core too (with more it draws in worker processes, unseen here)."""
    page = tmp_path / "page.html"
    assert "matplotlib" in plotting_loaded("analyze", grams_json, "--report", page, one_core=True)
    assert page.is_file()
    assert "matplotlib" in plotting_loaded("analyze", grams_json, "--plot", tmp_path / "figures")
    assert any((tmp_path / "figures").iterdir())
