"""Sweeps on a real Dask LocalCluster (2 worker processes, ``dask_scheduler`` in conftest.py).

The store's every value is compared with a single ``analyze`` of the same checkpoint computed in
this process (and once with ``qkalign analyze --json``); failures, retries after a killed
worker, reruns and an interrupted sweep are checked on the store itself and on the scheduler's
task stream (what was really computed).
"""

import json
import os
import signal
import textwrap

import numpy as np
import pytest

pytest.importorskip("distributed")
pytest.importorskip("xarray")
pytest.importorskip("zarr")

import xarray as xr  # noqa: E402
from distributed import Client, get_task_stream  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from qkalign import InputError  # noqa: E402
from qkalign.stats.analyze import analyze  # noqa: E402
from qkalign.sweeps import sweep  # noqa: E402
from qkalign.sweeps.run import SweepSummary, planned_runs, read_revisions, run_sweep  # noqa: E402
from qkalign.sweeps.store import SweepStore  # noqa: E402
from qkalign.sweeps.task import Outcome, run_task  # noqa: E402
from qkalign.sweeps.variables import flatten  # noqa: E402
from qkalign.testing.model_folders import write_model  # noqa: E402
from qkalign.testing.processes import run_python  # noqa: E402
from qkalign.weights.measure import measure  # noqa: E402

STEPS = (0, 1000, 4000, 16000)
RUN_LEVEL = {"status", "error", "error_type", "seconds", "source", "revision", "commit"}


def fake_training_run(folder, steps=STEPS):
    """Checkpoint folders ``step<N>`` of one small Llama model: the final weights plus noise whose
    size halves every 2000 steps (the drift from the end of training shrinks with the step)."""
    final = write_model(folder / "final", "llama", shape=(3, 4, 2, 8, 24), seed=11)
    tensors = load_file(str(final.folder / "model.safetensors"))
    rng = np.random.default_rng(5)
    paths = []
    for step in steps:
        drift = 0.5 * 2.0 ** (-step / 2000)
        out = folder / f"step{step}"
        out.mkdir()
        (out / "config.json").write_text((final.folder / "config.json").read_text())
        noisy = {name: t + drift * t.std() * _noise(rng, t) if "q_proj" in name or "k_proj" in name else t
                 for name, t in tensors.items()}
        save_file(noisy, str(out / "model.safetensors"), metadata={"format": "pt"})
        paths.append(out)
    return paths


def _noise(rng, tensor):
    import torch

    return torch.from_numpy(rng.standard_normal(tuple(tensor.shape))).to(tensor.dtype)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{name: folder}: four training steps (L=3, H=4), a larger model (L=5, H=2, so runs need
    padding) and a broken checkpoint (truncated weights)."""
    root = tmp_path_factory.mktemp("training")
    folders = {path.name: path for path in fake_training_run(root)}
    folders["bigger"] = write_model(root / "bigger", "llama", shape=(5, 2, 1, 8, 24), seed=2).folder
    broken = write_model(root / "broken", "llama", seed=3).folder
    weights = broken / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    folders["broken"] = broken
    return folders


@pytest.fixture(scope="module")
def reference(checkpoints):
    """{name: flattened analyze(measure(folder)).to_dict()}, computed in this process."""
    return {name: flatten(analyze(measure(folder, progress=False)).to_dict())
            for name, folder in checkpoints.items() if name != "broken"}


@pytest.fixture(scope="module")
def swept(dask_scheduler, checkpoints, tmp_path_factory):
    """(store path, dataset) of one sweep of every checkpoint, written with the Python API."""
    out = tmp_path_factory.mktemp("sweep") / "out.zarr"
    ds = sweep([str(p) for p in checkpoints.values()], out=out, scheduler=dask_scheduler, progress=False)
    return out, ds


def assert_run_equals(ds, run, expected):
    """Row ``run`` of ``ds`` holds exactly the values of ``expected`` (flattened), NaN beyond their shape."""
    assert set(expected) <= set(ds.data_vars) | set(ds.coords)
    for name, value in expected.items():
        stored = ds[name].values[run]
        if name in ("meta.provenance.model_dir", "meta.provenance.source_kind", "meta.provenance.revision",
                    "meta.provenance.commit_hash"):  # where it was read from: a Hub id in the sweep, a folder here
            continue
        if isinstance(value, str):
            assert stored == value, name
            continue
        inside = tuple(slice(0, size) for size in value.shape)
        np.testing.assert_array_equal(stored[inside], value, err_msg=name)
        padding = np.ones(stored.shape, bool)
        padding[inside] = False
        assert np.isnan(stored[padding]).all(), name


def run_index(ds, folder):
    return list(ds["source"].values).index(str(folder))


def test_every_value_equals_a_single_analyze_and_a_broken_checkpoint_is_recorded(swept, checkpoints, reference):
    _, ds = swept
    assert ds.sizes["run"] == len(checkpoints)
    assert ds.sizes["layer"] == 5 and ds.sizes["head"] == 4  # the largest run's shape
    assert set(ds.data_vars) | set(ds.coords) == set(reference["step0"]) | RUN_LEVEL
    for name, expected in reference.items():
        run = run_index(ds, checkpoints[name])
        assert ds["status"].values[run] == "ok" and ds["error"].values[run] == ""
        assert ds["revision"].values[run] == ""
        assert_run_equals(ds, run, expected)
    assert ds["meta.num_layers"].values[run_index(ds, checkpoints["bigger"])] == 5
    assert ds["meta.num_heads"].values[run_index(ds, checkpoints["step0"])] == 4
    broken = run_index(ds, checkpoints["broken"])
    assert ds["status"].values[broken] == "failed" and ds["error_type"].values[broken] == "InputError"
    error = ds["error"].values[broken]
    assert "\n" not in error and "model.safetensors" in error and "truncated" in error
    assert np.isnan(ds["operator_cos"].values[broken]).all()
    options = json.loads(ds.attrs["options"])
    assert options["topk"] == 16 and options["anchor"] == -1 and ds.attrs["qkalign_version"]


def test_command_line_sweep_exit_codes_and_analyze_json(dask_scheduler, checkpoints, cli, tmp_path):
    out, good, broken = tmp_path / "cli.zarr", checkpoints["step1000"], checkpoints["broken"]
    first = cli("sweep", good, broken, "-o", out, "--scheduler", dask_scheduler, "--quiet")
    assert first.returncode == 2  # the one failure is a bad input: the input-error code
    assert first.stdout.splitlines()[-1] == f"qkalign sweep: 1 runs succeeded, 1 failed (2 computed now, 0 already in {out})"
    again = cli("sweep", good, "-o", out, "--scheduler", dask_scheduler, "--quiet")
    assert again.returncode == 0
    assert again.stdout.splitlines()[-1] == f"qkalign sweep: 1 runs succeeded, 0 failed (0 computed now, 1 already in {out})"
    analyzed = cli("analyze", good, "--json", tmp_path / "one.json", "--quiet")
    assert analyzed.returncode == 0
    ds = xr.open_zarr(out, chunks=None)
    assert_run_equals(ds, run_index(ds, good), flatten(json.loads((tmp_path / "one.json").read_text())))
    other = cli("sweep", good, "-o", out, "--topk", "4", "--quiet")  # a store holds one set of options
    assert other.returncode == 2 and "attrs.options" in other.stderr


def test_a_rerun_computes_nothing(swept, dask_scheduler, checkpoints):
    out, before = swept
    with Client(dask_scheduler) as client, get_task_stream(client) as stream:
        summary = run_sweep([str(p) for p in checkpoints.values() if p.name != "broken"], out,
                            scheduler=dask_scheduler, progress=False)
    assert len(stream.data) == 0 and summary.computed == 0
    assert (summary.succeeded, summary.failed, summary.skipped) == (len(checkpoints) - 1, 0, len(checkpoints) - 1)
    after = xr.open_zarr(out, chunks=None)
    np.testing.assert_array_equal(after["operator_cos"].values, before["operator_cos"].values)


def test_without_a_store_the_dataset_is_in_memory(dask_scheduler, checkpoints, reference):
    import qkalign

    assert qkalign.sweep is sweep
    ds = qkalign.sweep(checkpoints["bigger"], scheduler=dask_scheduler, progress=False)
    assert ds.sizes["run"] == 1
    assert_run_equals(ds, 0, reference["bigger"])


def test_a_killed_worker_does_not_lose_a_run(dask_scheduler, checkpoints, reference, tmp_path):
    marker = tmp_path / "killed"

    def kill_worker_once(source, revision, options):  # pickled by value: it runs on the workers
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # the worker process dies mid-task
        return run_task(source, revision, options)

    sources = [str(checkpoints["step0"]), str(checkpoints["step4000"])]
    summary = run_sweep(sources, tmp_path / "out.zarr", scheduler=dask_scheduler, progress=False, task=kill_worker_once)
    assert marker.exists()
    assert (summary.succeeded, summary.failed, summary.computed) == (2, 0, 2)
    ds = xr.open_zarr(tmp_path / "out.zarr", chunks=None)
    for name in ("step0", "step4000"):
        assert_run_equals(ds, run_index(ds, checkpoints[name]), reference[name])


def test_a_task_that_keeps_raising_is_retried_then_recorded(dask_scheduler, checkpoints, tmp_path):
    attempts = tmp_path / "attempts"

    def always_raises(source, revision, options):
        with open(attempts, "a") as f:
            f.write("x")
        raise ValueError("boom\non two lines")

    summary = run_sweep([str(checkpoints["step0"])], tmp_path / "out.zarr", scheduler=dask_scheduler,
                        progress=False, retries=2, task=always_raises)
    assert attempts.read_text() == "xxx"  # the first attempt and 2 retries
    assert (summary.succeeded, summary.failed, summary.input_failures, summary.exit_code()) == (0, 1, 0, 1)
    ds = xr.open_zarr(tmp_path / "out.zarr", chunks=None)
    assert ds["error"].values[0] == "ValueError: boom on two lines" and ds["error_type"].values[0] == "ValueError"


INTERRUPTED = textwrap.dedent("""
    import os, signal, sys
    from qkalign.sweeps import store
    from qkalign.sweeps.run import run_sweep

    write = store.SweepStore.write
    written = []

    def write_then_die(self, index, outcome):  # the client dies after its second result is stored
        write(self, index, outcome)
        written.append(index)
        if len(written) == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    store.SweepStore.write = write_then_die
    run_sweep(sys.argv[3:], sys.argv[1], scheduler=sys.argv[2], progress=False)
""")


def test_an_interrupted_sweep_resumes(dask_scheduler, checkpoints, reference, tmp_path):
    out = tmp_path / "out.zarr"
    names = ["step0", "step1000", "step4000", "step16000"]
    sources = [str(checkpoints[name]) for name in names]
    killed = run_python(["-c", INTERRUPTED, out, dask_scheduler, *sources])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    statuses = xr.open_zarr(out, chunks=None)["status"].values
    assert sorted(statuses) == ["ok", "ok", "pending", "pending"]
    with Client(dask_scheduler) as client, get_task_stream(client) as stream:
        summary = run_sweep(sources, out, scheduler=dask_scheduler, progress=False)
    assert len(stream.data) == 2 and (summary.computed, summary.skipped, summary.succeeded) == (2, 2, 4)
    ds = xr.open_zarr(out, chunks=None)
    for name in names:
        assert_run_equals(ds, run_index(ds, checkpoints[name]), reference[name])


def test_plot_of_a_store(swept, cli, tmp_path):
    out, ds = swept
    result = cli("plot", out, tmp_path / "figs")
    assert result.returncode == 0, result.stderr
    import matplotlib.image

    written = sorted(p.name for p in (tmp_path / "figs").iterdir())
    bands = ["rope_bands_vs_step.png"] if "rope_bands.groups" in ds else []  # where measure records bands
    assert written == ["grid_operator_cos.png", "grid_pairs_pa_mean_cos_mean.png"] + bands + [
        "rope_profile_vs_step.png", "statistics_vs_step.png", "symmetry_vs_step.png"]  # Llama's: RoPE, a profile
    assert ds["rope_profile.norm_ratio"].dims == ("run", "delta", "layer", "head")
    assert ds["symmetry.per_head"].dims == ("run", "layer", "head") and ds["symmetry.z_per_layer"].dims == ("run", "layer")
    assert matplotlib.image.imread(tmp_path / "figs" / "symmetry_vs_step.png").std() > 0.05  # drawn, not blank
    height, width, _ = matplotlib.image.imread(tmp_path / "figs" / "statistics_vs_step.png").shape
    assert (width, height) == (round(6.4 * 2 * 150), round(5.2 * 1.6 * 150))
    not_a_store = cli("plot", tmp_path / "figs", tmp_path / "more")
    assert not_a_store.returncode == 2 and "a Zarr store written by qkalign sweep" in not_a_store.stderr


def test_hub_revisions_are_swept_with_their_commits(checkpoints, reference, tmp_path, monkeypatch):
    """A Hub repo id at three revisions (two cached, one missing) on a LocalCluster started by the sweep."""
    from qkalign.sweeps.task import measure_takes_revision

    hub = pytest.importorskip("qkalign.testing.hub", reason="needs Hub sources (measure with revision=)")
    assert measure_takes_revision()
    commits = {rev: hub.write_hub_snapshot(tmp_path / "hub", "org/run", rev, checkpoints[rev])
               for rev in ("step0", "step4000")}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the workers inherit these: the cache is all there is
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    summary = run_sweep(["org/run"], tmp_path / "out.zarr", revisions=["step0", "step4000", "step9"], workers=1,
                        progress=False)
    assert (summary.succeeded, summary.failed, summary.exit_code()) == (2, 1, 2)
    ds = xr.open_zarr(tmp_path / "out.zarr", chunks=None)
    assert list(ds["revision"].values) == ["step0", "step4000", "step9"] and set(ds["source"].values) == {"org/run"}
    for run, rev in enumerate(("step0", "step4000")):
        assert ds["commit"].values[run] == commits[rev]
        expected = {name: value for name, value in reference[rev].items() if not name.endswith("_path")}
        assert_run_equals(ds, run, expected)
    assert ds["status"].values[2] == "failed" and "step9" in ds["error"].values[2]


def test_a_local_cluster_shares_the_cores_between_its_workers():
    from qkalign.linalg.blas_threads import core_count
    from qkalign.sweeps.engine import cluster_client

    def _worker_threads():  # nested: pickled by value, so a worker does not import this test module
        from threadpoolctl import threadpool_info

        return os.environ.get("NUMBA_NUM_THREADS"), sorted({info["num_threads"] for info in threadpool_info()})

    before = dict(os.environ)
    with cluster_client(workers=2, quiet=True) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        per_worker = client.run(_worker_threads)
    threads = max(1, core_count() // 2)
    assert list(per_worker.values()) == [(str(threads), [threads])] * 2  # numba's and every BLAS's
    assert dict(os.environ) == before  # the nanny's pre-spawn variables do not stay in this process


def test_figures_follow_revisions_and_steps(reference, tmp_path):
    from qkalign.views.sweep_figures import run_table, statistic, step_of, write_sweep_figures

    assert [step_of(t) for t in ("step1000", "/ckpt/checkpoint-500", "global_step20", "main", "mystep5")] == \
        [1000, 500, 20, None, None]
    store = SweepStore(tmp_path / "s.zarr", {"topk": 16}, "test")
    keys = [("org/a", "step200"), ("org/a", "step100"), ("org/b", "step100"), ("org/b", "main")]
    for index in store.add_runs(keys)[:3]:
        store.write(index, Outcome("ok", variables=reference["step0" if index else "bigger"]))
    ds = xr.open_zarr(tmp_path / "s.zarr", chunks=None)
    runs = run_table(ds)  # the pending run is left out; by curve, then step
    assert [(r["curve"], r["step"], r["label"], r["index"]) for r in runs] == [
        ("org/a", 100, "a@step100", 1), ("org/a", 200, "a@step200", 0), ("org/b", 100, "b@step100", 2)]
    pa = reference["bigger"]["pairs.pa_mean_cos.mean"]
    assert statistic(ds, 0, "adjacent_pa_mean_cos") == pytest.approx(np.mean([pa[i, i + 1] for i in range(4)]),
                                                                      rel=1e-15)
    mean_cos, anchor = reference["step0"]["principal_angles.mean_cos"], int(reference["step0"]["meta.anchor"])
    assert statistic(ds, 1, "anchor_pa_mean_cos") == pytest.approx(np.delete(mean_cos, anchor).mean(), rel=1e-15)
    bands = ["rope_bands_vs_step.png"] if "rope_bands.groups" in reference["step0"] else []
    symmetry = ["symmetry_vs_step.png"] if "symmetry.mean" in reference["step0"] else []
    assert [p.name for p in write_sweep_figures(tmp_path / "s.zarr", tmp_path / "figs")] == [
        "statistics_vs_step.png", "grid_operator_cos.png", "grid_pairs_pa_mean_cos_mean.png",
        "rope_profile_vs_step.png"] + bands + symmetry  # Llama has RoPE: its profile (bands, symmetry where measured)


def with_bands(variables, seed, pairs=4):
    """``variables`` (flattened) with a hand-built ``rope_bands`` of their shape (qkalign.testing.fake_rope)
    in place of any measured one."""
    from qkalign.testing.fake_rope import fake_rope_bands

    L, H = int(variables["meta.num_layers"]), int(variables["meta.num_heads"])
    kept = {name: value for name, value in variables.items() if not name.startswith("rope_bands.")}
    return {**kept, **flatten({"rope_bands": fake_rope_bands(L, H, pairs, unrotated=pairs == 3, seed=seed)})}


def test_rotary_variables_and_figures_along_a_sweep(reference, tmp_path):
    """Two steps of one model, a larger model measured at fewer distances with other bands, and a run
    without RoPE: the rotary variables get their dimensions, each run is padded, the figures follow them."""
    from qkalign.views.sweep_figures import (
        band_groups,
        followed_deltas,
        group_value,
        profile_at,
        run_table,
        write_sweep_figures,
    )

    first, later = with_bands(reference["step0"], 1), with_bands(reference["step1000"], 2)
    bigger = with_bands(reference["bigger"], 3, pairs=3)  # other layers, heads, bands, and an unrotated group
    keep = [0, 2, 4]  # measured at three of the distances only
    bigger.update({name: value[keep] for name, value in bigger.items() if name.startswith("rope_profile.")})
    plain = {name: value for name, value in reference["step0"].items() if not name.startswith("rope_")}
    store = SweepStore(tmp_path / "s.zarr", {"topk": 16}, "test")
    runs = {"org/a@step100": first, "org/a@step200": later, "org/b@step100": bigger, "org/c@step100": plain}
    for index, variables in zip(store.add_runs([tuple(key.split("@")) for key in runs]), runs.values()):
        store.write(index, Outcome("ok", variables=variables))
    ds = xr.open_zarr(tmp_path / "s.zarr", chunks=None)
    assert ds["rope_profile.norm_ratio"].dims == ("run", "delta", "layer", "head")
    assert ds["rope_profile.to_anchor_per_layer"].dims == ("run", "delta", "layer")
    assert ds["rope_profile.deltas"].dims == ds["rope_profile.to_anchor"].dims == ("run", "delta")
    assert ds["rope_bands.share"].dims == ("run", "layer", "head", "band")
    assert ds["rope_bands.group_share"].dims == ("run", "layer", "group")
    assert ds["rope_bands.group_cos.to_anchor_per_layer"].dims == ("run", "group", "layer")
    assert ds["rope_bands.wavelengths"].dims == ("run", "band") and ds.sizes["band"] == 5 and ds.sizes["group"] == 4
    for index, variables in enumerate(runs.values()):
        assert_run_equals(ds, index, variables)  # each run as written, NaN beyond its own sizes
    deltas = [int(d) for d in first["rope_profile.deltas"]]
    table = run_table(ds)
    assert followed_deltas(ds, table) == [deltas[k] for k in keep]  # the distances every run with a profile has
    assert profile_at(ds, 2, "to_anchor", deltas[4]) == bigger["rope_profile.to_anchor"][2]
    assert np.isnan(profile_at(ds, 2, "to_anchor", deltas[1])) and np.isnan(profile_at(ds, 3, "adjacent", 0))
    assert band_groups(ds, table) == ["high", "mid", "low", "unrotated"]
    assert group_value(ds, 1, "mid", "share") == pytest.approx(later["rope_bands.group_share"][:, 1].mean(),
                                                               rel=1e-15)
    assert group_value(ds, 2, "unrotated", "to_anchor") == bigger["rope_bands.group_cos.to_anchor"][3]
    assert np.isnan(group_value(ds, 0, "unrotated", "share")) and np.isnan(group_value(ds, 3, "low", "share"))
    written = {p.name: p for p in write_sweep_figures(tmp_path / "s.zarr", tmp_path / "figs")}
    assert {"rope_profile_vs_step.png", "rope_bands_vs_step.png"} <= set(written)
    import matplotlib.image

    for name in ("rope_profile_vs_step.png", "rope_bands_vs_step.png"):
        assert matplotlib.image.imread(written[name]).std() > 0.05  # drawn, not blank

    only_plain = SweepStore(tmp_path / "p.zarr", {"topk": 16}, "test")
    only_plain.write(only_plain.add_runs([("org/c", "step1")])[0], Outcome("ok", variables=plain))
    names = [p.name for p in write_sweep_figures(tmp_path / "p.zarr", tmp_path / "pfigs")]
    assert "statistics_vs_step.png" in names and not {"rope_profile_vs_step.png", "rope_bands_vs_step.png"} & set(names)


def test_the_store_grows_a_dimension_and_pads_earlier_runs(tmp_path):
    store = SweepStore(tmp_path / "s.zarr", {"topk": 4}, "test")
    store.add_runs([("a", None), ("b", "step5")])
    small = Outcome("ok", variables={"operator_cos": np.eye(2), "verdict.label": "WEAK"})
    large = Outcome("ok", commit="abc", variables={"operator_cos": np.full((3, 3), 0.5), "verdict.label": "MEDIUM"})
    store.write(0, small)
    store.write(1, large)
    ds = xr.open_zarr(tmp_path / "s.zarr", chunks=None)
    expected = np.full((2, 3, 3), np.nan)
    expected[0, :2, :2] = np.eye(2)
    expected[1] = 0.5
    np.testing.assert_array_equal(ds["operator_cos"].values, expected)
    assert list(ds["verdict.label"].values) == ["WEAK", "MEDIUM"] and list(ds["commit"].values) == ["", "abc"]
    assert list(ds["revision"].values) == ["", "step5"] and ds["operator_cos"].dims == ("run", "layer", "layer2")
    assert store.runs() == {("a", None): (0, "ok", ""), ("b", "step5"): (1, "ok", "")}
    with pytest.raises(InputError, match="attrs.options"):
        SweepStore(tmp_path / "s.zarr", {"topk": 8}, "test")
    # a store from before --operator existed holds raw operators: it resumes as raw, not as another operator
    assert SweepStore(tmp_path / "s.zarr", {"topk": 4, "operator": "raw"}, "test").num_runs == 2
    with pytest.raises(InputError, match="attrs.options"):
        SweepStore(tmp_path / "s.zarr", {"topk": 4, "operator": "delta:4"}, "test")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    with pytest.raises(InputError, match="a new path or a store written by qkalign sweep"):
        SweepStore(tmp_path / "model", {"topk": 4}, "test")


def test_revisions_cross_every_source_and_reach_measure(monkeypatch, tmp_path):
    import qkalign.sweeps.run as run_module
    import qkalign.weights.measure as measure_module

    monkeypatch.setattr(run_module, "measure_takes_revision", lambda: False)
    with pytest.raises(InputError, match="--revisions"):
        planned_runs(["a"], ["step1"])
    monkeypatch.setattr(run_module, "measure_takes_revision", lambda: True)
    assert planned_runs(["a", "b"], ["r1", "r2", "r1"]) == [("a", "r1"), ("a", "r2"), ("b", "r1"), ("b", "r2")]
    (tmp_path / "revs.txt").write_text("step1000  # first\n\n# a comment\nstep2000\n")
    assert read_revisions(tmp_path / "revs.txt") == ["step1000", "step2000"]

    seen = {}

    def fake_measure(source, revision=None, **kwargs):
        seen.update(source=source, revision=revision, **kwargs)
        raise InputError(source, "revision", "a revision that exists", revision)

    monkeypatch.setattr(measure_module, "measure", fake_measure)
    options = {"topk": 4, "fold_norms": True, "precision": "float64", "anchor": 0, "backend": "numpy",
               "match_heads": False, "chance_seed": 1, "operator": "delta:8", "layer_symmetry": True,
               "symmetry_split": True}
    outcome = run_task("org/model", "step1000", options)
    assert seen == {"source": "org/model", "revision": "step1000", "topk": 4, "fold_norms": True,
                    "precision": "float64", "operator": "delta:8", "layer_symmetry": True, "symmetry_split": True,
                    "progress": False}
    assert outcome.status == "failed" and outcome.error_type == "InputError" and "step1000" in outcome.error


@pytest.mark.parametrize("failed, input_failures, code", [(0, 0, 0), (2, 2, 2), (2, 1, 1)])
def test_exit_code(failed, input_failures, code):
    assert SweepSummary("x.zarr", 3, failed, input_failures, 5, 0).exit_code() == code


def test_a_local_folder_is_one_run_whatever_the_spelling(tmp_path, monkeypatch):
    """`m`, `m/` and `./m` are one run, keyed by the real path; `m` from another folder is another."""
    for parent in ("a", "b"):
        (tmp_path / parent / "m").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a")
    runs = planned_runs(["m", "m/", "./m", "org/remote"], None)
    assert runs == [(str((tmp_path / "a" / "m").resolve()), None), ("org/remote", None)]
    monkeypatch.chdir(tmp_path / "b")
    assert planned_runs(["m"], None) == [(str((tmp_path / "b" / "m").resolve()), None)]


def test_a_store_interrupted_while_growing_is_repaired_on_reopening(tmp_path, monkeypatch):
    """Ctrl-C between two arrays' resizes leaves them of different lengths: reopening evens them out."""
    import zarr

    from qkalign.sweeps.task import default_options
    from qkalign.weights.synthetic import SyntheticSpec, make_qkdata

    small, large = (Outcome("ok", variables=flatten(analyze(make_qkdata(SyntheticSpec(layers, 2, 1, 4, 16, topk=3)),
                                                            backend="numpy").to_dict())) for layers in (5, 7))
    store = SweepStore(tmp_path / "s.zarr", default_options(), "x")
    store.add_runs([("a", None), ("b", None)])
    store.write(0, small)
    resize, calls = zarr.Array.resize, []

    def interrupted(array, shape):
        calls.append(shape)
        if len(calls) == 25:  # past the run dimension, within the layer ones: some arrays grown, others not
            raise KeyboardInterrupt
        return resize(array, shape)

    monkeypatch.setattr(zarr.Array, "resize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.write(1, large)
    monkeypatch.setattr(zarr.Array, "resize", resize)
    reopened = SweepStore(tmp_path / "s.zarr", default_options(), "x")
    reopened.write(1, large)
    ds = xr.open_zarr(tmp_path / "s.zarr").load()
    assert list(ds["status"].values) == ["ok", "ok"]
    np.testing.assert_array_equal(ds["meta.num_layers"].values, [5, 7])
