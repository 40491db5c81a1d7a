"""Sweeps: many models and training checkpoints, measured and analysed on Dask, into one Zarr store.

``qkalign.sweep(sources, out, revisions=...)`` runs one task per (source, revision) (measure +
analyze, :mod:`.task`) on a Dask cluster (:mod:`.engine`) and writes each result as it arrives
into one xarray Dataset in a Zarr store (:mod:`.store`, variables named after ``analyze``'s JSON
keys, :mod:`.variables`); a rerun computes only what the store lacks (:mod:`.run`).
Needs the ``sweep`` extra: ``pip install "qkalign[sweep]"`` (dask[distributed], xarray, zarr).
"""

import shutil
import tempfile


def sweep(sources, out=None, revisions=None, workers=None, scheduler=None, **options):
    """Measure and analyze every source at every revision on Dask; the results as one ``xarray.Dataset``.

    Parameters
    ----------
    sources : str, Path or sequence of them
        What :func:`qkalign.measure` reads (model folders; Hub ids and URLs where it reads them).
    out : str or Path, optional
        The Zarr store (``OUT.zarr``), created or resumed: runs already ``ok`` in it are not
        computed again. Without it the sweep runs in a temporary store and the result is in memory.
    revisions : sequence of str, optional
        Every source is measured at each revision (sources with a history only); default: as it is.
    workers : int, optional
        Worker processes of the local cluster (default min(cores, runs to compute)).
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://HOST:PORT``) to run on instead.
    **options
        measure's ``topk``, ``fold_norms``, ``precision``, ``operator``, ``symmetry_split`` and analyze's
        ``anchor``, ``backend``, ``match_heads``, ``chance_seed``; also ``retries`` (task retries, default 2) and
        ``progress`` (a progress bar on stderr, default True).

    Returns
    -------
    xarray.Dataset
        Dimension ``run`` (coordinates source, revision, commit; status, error, error_type,
        seconds) and one variable per leaf of ``analyze``'s JSON, e.g. ``operator_cos``
        (run, layer, layer2), padded with NaN; attrs ``qkalign_version``, ``options``.
    """
    from .run import run_sweep

    if out is not None:
        summary = run_sweep(sources, out, revisions, workers, scheduler, **options)
        return _open(summary.path)
    folder = tempfile.mkdtemp(prefix="qkalign-sweep-")
    try:
        summary = run_sweep(sources, f"{folder}/sweep.zarr", revisions, workers, scheduler, **options)
        return _open(summary.path).load()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _open(path):
    import xarray as xr

    return xr.open_zarr(str(path), consolidated=True, chunks=None)
