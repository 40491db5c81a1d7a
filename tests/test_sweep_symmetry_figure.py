"""The sweep figure of the symmetric/skew split along training (``symmetry_split_vs_step.png``): drawn where a store
holds ``symmetry_split.*``, its lines the store's values in step order, its chance bands the stored levels; also
into a FigureCollection."""

import numpy as np
import pytest

pytest.importorskip("xarray")
pytest.importorskip("zarr")

import xarray as xr  # noqa: E402

import qkalign.views.sweep_figures as figures  # noqa: E402
from qkalign.stats.analyze import analyze  # noqa: E402
from qkalign.sweeps.store import SweepStore  # noqa: E402
from qkalign.sweeps.task import Outcome  # noqa: E402
from qkalign.sweeps.variables import flatten  # noqa: E402
from qkalign.testing.model_folders import write_model  # noqa: E402
from qkalign.views.figure_files import FigureCollection  # noqa: E402
from qkalign.weights.measure import measure  # noqa: E402

#: Steps in store order (not sorted: the figure sorts them).
STEPS = (400, 100, 200)


@pytest.fixture(scope="module")
def split_store(tmp_path_factory):
    """(store path, {step: flattened result}): three checkpoints of a small Llama measured with the split."""
    root = tmp_path_factory.mktemp("split")
    store = SweepStore(root / "s.zarr", {"topk": 2, "symmetry_split": True}, "test")
    results = {}
    for index, step in zip(store.add_runs([("org/m", f"step{step}") for step in STEPS]), STEPS):
        model = write_model(root / f"step{step}", "llama", shape=(3, 2, 1, 8, 16), seed=step)
        data = measure(model.folder, topk=2, deltas=(), symmetry_split=True, progress=False)
        results[step] = flatten(analyze(data).to_dict())
        store.write(index, Outcome("ok", variables=results[step]))
    return root / "s.zarr", results


def drawn_axes(monkeypatch):
    """Patch the figure writer's ``_written`` to keep, per file name, the axes' lines and bands before closing."""
    seen = {}
    original = figures._written

    def keep(plt, fig, path):
        seen[str(path).rsplit("/", 1)[-1]] = [
            {"title": ax.get_title(), "lines": [(line.get_xdata(), line.get_ydata(), line.get_color())
                                               for line in ax.get_lines()],
             "bands": [collection.get_paths()[0].vertices for collection in ax.collections]}
            for ax in fig.axes]
        return original(plt, fig, path)

    monkeypatch.setattr(figures, "_written", keep)
    return seen


def test_split_figure_draws_the_stored_values(split_store, tmp_path, monkeypatch):
    store, results = split_store
    seen = drawn_axes(monkeypatch)
    written = figures.write_sweep_figures(store, tmp_path / "figs")
    assert "symmetry_split_vs_step.png" in [p.name for p in written]
    steps = sorted(STEPS)
    panels = seen["symmetry_split_vs_step.png"]
    for ax, (summary, _, _) in zip(panels, figures.SPLIT_PANELS):
        # one line per part (S in C0, A in C1) and the zero line, the parts' values in step order
        curves = {color: (xs, ys) for xs, ys, color in ax["lines"] if len(xs) == len(STEPS)}
        for p, part in enumerate(("S", "A")):
            xs, ys = curves[f"C{p}"]
            np.testing.assert_array_equal(xs, steps)
            np.testing.assert_array_equal(ys, [results[step][f"symmetry_split.{part}.{summary}"] for step in steps])
        # each part's band: the stored chance mean ±2 sd / sqrt(pairs), pairs from L = 3, H = 2
        pairs = 2 * 2 if summary != "offdiag" else 3 * 2
        for part, band in zip(("S", "A"), ax["bands"]):
            sd = results[steps[0]][f"symmetry_split.chance.{part}.sd"]
            assert results[steps[0]][f"symmetry_split.chance.{part}.mean"] == 0.0
            np.testing.assert_allclose(band[:, 1].max(), 2 * sd / np.sqrt(pairs), rtol=1e-12)
            np.testing.assert_allclose(band[:, 1].min(), -2 * sd / np.sqrt(pairs), rtol=1e-12)
    shares = {color: ys for xs, ys, color in panels[3]["lines"] if len(xs) == len(STEPS)}
    for c, (name, _) in enumerate(figures.SPLIT_SHARES):
        np.testing.assert_array_equal(shares[f"C{c}"], [results[step][f"symmetry_split.{name}"] for step in steps])
    frac_s = np.array([results[step]["symmetry_split.frac_S"] for step in steps])
    np.testing.assert_allclose(frac_s + shares["C1"], 1.0, rtol=0, atol=1e-12)  # the shares add up to one
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "figs" / "symmetry_split_vs_step.png").std() > 0.05


def test_split_figure_into_a_collection_and_only_where_measured(split_store, tmp_path):
    store, results = split_store
    collection = FigureCollection()
    figures.write_sweep_figures(store, collection)
    assert collection.figures["symmetry_split_vs_step.png"].lstrip().startswith("<svg")
    plain = SweepStore(tmp_path / "p.zarr", {"topk": 2}, "test")
    variables = {name: value for name, value in results[STEPS[0]].items() if not name.startswith("symmetry_split.")}
    plain.write(plain.add_runs([("org/m", "step1")])[0], Outcome("ok", variables=variables))
    names = [p.name for p in figures.write_sweep_figures(tmp_path / "p.zarr", tmp_path / "pfigs")]
    assert "statistics_vs_step.png" in names and "symmetry_split_vs_step.png" not in names
    ds = xr.open_zarr(store, chunks=None)
    assert figures.split_value(ds, 0, "S.adjacent") == results[STEPS[0]]["symmetry_split.S.adjacent"]
    assert np.isnan(figures.split_value(ds, 0, "S.nothing"))
