"""Without torch (an install without the ``torch`` extra): the core job works and imports no torch,
and each path that needs torch ends in one line naming the extra, exit 2, before any work.

The processes make ``import torch`` fail (``sys.modules["torch"] = None``) although torch is
installed here: what a core install (``pip install qkalign``) gives.
"""

import json

import numpy as np
import pytest
import torch

import qkalign
from qkalign.files.seed_format import save
from qkalign.testing.http_server import RangeServer
from qkalign.testing.hub import write_hub_snapshot
from qkalign.testing.model_folders import write_model
from qkalign.testing.processes import NO_TORCH, run_concurrently, run_python, run_qkalign_without_torch
from qkalign.testing.quantized_folders import write_fp8_model
from qkalign.testing.refusals import one_error_line

pytestmark = pytest.mark.slow  # fresh processes

INSTALL_HINT = 'pip install "qkalign[torch]"'

#: measure (a local folder of bfloat16 shards, an FP8 checkpoint over HTTP, a Hub repo from the
#: cache), analyze and plot, as one process runs them; then whether torch was loaded.
CORE_JOB = """
import json, sys
from qkalign.cli import main
local, url, out = sys.argv[1:4]
commands = [["measure", local, "-o", out + "/local", "--quiet"], ["measure", url, "-o", out + "/url", "--quiet"],
            ["measure", "org/tiny", "-o", out + "/hub", "--quiet"],
            ["analyze", out + "/local.json", "--json", out + "/result.json"], ["plot", out + "/result.json", out + "/figs"]]
codes = [main(args) for args in commands]
print(json.dumps({"codes": codes, "torch": sys.modules.get("torch") is not None}))
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    local = write_model(root / "llama", "llama", dtype=torch.bfloat16, shards=2).folder
    fp8 = write_fp8_model(root / "fp8", "qwen3", shape=(2, 4, 2, 48, 200)).folder
    write_hub_snapshot(root / "hub", "org/tiny", "main", write_model(root / "gpt2", "gpt2", dtype=torch.float16,
                                                                    shape=(3, 4, 4, 8, 32)).folder)
    return root, local, fp8


@pytest.mark.parametrize("blocked", [True, False])
def test_the_core_job_needs_no_torch_and_imports_none(models, tmp_path, blocked):
    """measure (local, URL, Hub), analyze and plot: the same numbers without torch; with torch installed,
    torch is not even imported."""
    root, local, fp8 = models
    with RangeServer(root) as server:
        proc = run_python(["-c", (NO_TORCH + "\n" if blocked else "") + CORE_JOB, local,
                           f"{server.url}/{fp8.relative_to(root)}", tmp_path],
                          HF_HUB_OFFLINE=1, HF_HUB_CACHE=root / "hub", QKALIGN_BACKGROUND_COMPILE=0)
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome == {"codes": [0] * 5, "torch": False}, proc.stderr
    for name, folder in (("local", local), ("url", fp8), ("hub", root / "gpt2")):
        written = qkalign.load(tmp_path / f"{name}.json")
        here = qkalign.measure(folder, progress=False)
        for key in ("gram", "fro_sq", "sym_eigs", "eig_dirs"):
            np.testing.assert_array_equal(getattr(written, key), getattr(here, key).astype(written.eig_dirs.dtype)
                                          if key == "eig_dirs" else getattr(here, key), err_msg=f"{name} {key}")
    assert json.loads((tmp_path / "result.json").read_text())["meta"]["num_layers"] == 3
    figures = list((tmp_path / "figs").iterdir())
    assert figures and all(p.suffix == ".png" for p in figures)


def _torch_only_pt(data, path):
    """A .pt that only torch.load reads (a transposed view: its storage is pickled with strides)."""
    eig = torch.from_numpy(np.ascontiguousarray(np.swapaxes(data.eig_dirs, 0, 1)))
    torch.save({"eig_dirs": eig.transpose(0, 1), "sym_eigs": torch.from_numpy(data.sym_eigs.copy())}, path)
    return path


def test_each_torch_path_is_one_line_naming_the_extra(models, data_small, tmp_path):
    """``--format pt`` (measure, synthetic) before any work (no progress bar, nothing written), a .pt for
    torch.load (analyze, convert); a plain .pt (mapped without torch) still works."""
    _, local, _ = models
    plain_json, _ = save(data_small, tmp_path / "plain", file_format="pt")
    strided_json, _ = save(data_small, tmp_path / "strided")
    strided_pt = _torch_only_pt(data_small, tmp_path / "strided-eigdirs.pt")
    doc = json.loads(strided_json.read_text())
    del doc["run_id"]  # another tool's JSON: nothing ties it to the safetensors file
    strided_json.write_text(json.dumps(doc))
    (tmp_path / "strided-eigdirs.safetensors").unlink()
    commands = {"measure": ["measure", local, "-o", tmp_path / "m", "--format", "pt"],
                "synthetic": ["synthetic", "small", "-o", tmp_path / "s", "--format", "pt"],
                "analyze": ["analyze", strided_json], "convert": ["convert", strided_json],
                "plain": ["analyze", plain_json]}
    runs = run_concurrently(commands, runner=run_qkalign_without_torch)
    one_error_line(runs["measure"], "m-eigdirs.pt: expected torch installed to write a .pt file", INSTALL_HINT)
    one_error_line(runs["synthetic"], "s-eigdirs.pt: expected torch installed to write a .pt file", INSTALL_HINT)
    for name in ("analyze", "convert"):
        one_error_line(runs[name], f"{strided_pt}: expected torch installed to read this .pt", INSTALL_HINT)
    assert not list(tmp_path.glob("[ms].*")) and not list(tmp_path.glob("[ms]-eigdirs.*"))
    assert runs["plain"].returncode == 0 and "=== Verdict ===" in runs["plain"].stdout, runs["plain"].stderr


API_WITHOUT_TORCH = """
import sys
import numpy as np
import qkalign
from qkalign.weights.synthetic import PRESETS, make_qkdata
data = make_qkdata(PRESETS["small"])
try:
    qkalign.save(data, sys.argv[1] + "/a", file_format="pt")
except ImportError as exc:
    print("save:", type(exc).__name__, str(exc))
json_path, _ = qkalign.save(data, sys.argv[1] + "/b", eig_dirs_dtype="bfloat16")
print("bfloat16:", qkalign.load(json_path).eig_dirs.dtype)
rng = np.random.default_rng(0)
got = qkalign.from_weights(rng.standard_normal((2, 2, 16, 4)), rng.standard_normal((2, 1, 16, 4)), topk=2, progress=False)
print("from_weights:", got.gram.shape)
"""


def test_the_python_api_without_torch(tmp_path):
    proc = run_python(["-c", NO_TORCH + "\n" + API_WITHOUT_TORCH, tmp_path])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"save: MissingDependency {tmp_path}/a-eigdirs.pt: expected torch installed")
    assert INSTALL_HINT in lines[0]
    assert lines[1:] == ["bfloat16: float32", "from_weights: (2, 2, 2)"]
    assert not list(tmp_path.glob("a*"))
