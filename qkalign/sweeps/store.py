"""The Zarr store of a sweep: one xarray Dataset, written one run at a time as results arrive.

Layout (Zarr format 2, readable by ``xarray.open_zarr(OUT)``):

- dimension ``run``: one entry per (source, revision), in the order they were first asked for;
  coordinates ``source``, ``revision`` ('' for none) and ``commit`` (the resolved commit, ''
  where unknown); per run ``status`` ("ok", "failed" or "pending"), ``error`` (the one-line
  error of a failed run, else ''), ``error_type`` (its exception's class, ``InputError`` for a
  broken checkpoint) and ``seconds`` (the task's wall time on its worker);
- one variable per leaf of ``analyze``'s JSON (:mod:`qkalign.sweeps.variables`), dimensions
  ``(run, ...)``; the other dimensions (``layer``, ``head``, ``k``, ...) are as long as the
  largest run needs, and a smaller run is padded with NaN (its own ``meta.num_layers``,
  ``meta.num_heads`` say how much is real);
- attributes ``qkalign_version`` and ``options`` (the JSON of the sweep's measure and analyze
  options; a store holds runs of one set of options only).

Why this design: the number of runs is known when a sweep starts, their shapes only when
each is measured. So the store is not preallocated to final shapes: a sweep first appends a
``pending`` row per new run (resizing ``run``), then each result is written into its own row
as it arrives. A result larger than any before grows that dimension in every array that has
it (``zarr.Array.resize`` keeps the data and fills the new cells with NaN). Every array is
chunked one run per chunk, so a row is written without reading or rewriting another run's
data. A row's ``status`` is written last: a process killed mid-write leaves a row that is
still ``pending``, which the next sweep recomputes (resume is keyed by source, revision and
the store's options). Only the client process writes; metadata is consolidated after every
change of shape, so readers see a consistent store between writes.
"""

import json
from pathlib import Path

import numpy as np
import xarray  # noqa: F401  (a missing sweep extra fails here, before any work)
import zarr

from ..errors import InputError
from .variables import dimensions_of

#: Per-run string variables; the first three are coordinates.
RUN_STRINGS = ("source", "revision", "commit", "status", "error", "error_type")
COORDINATES = "source revision commit"
STORE_FORMAT = 1


class SweepStore:
    """A sweep's Zarr store, opened for appending runs and writing their results.

    Parameters
    ----------
    path : str or Path
        The store's folder (``OUT.zarr``); created when missing.
    options : dict
        The sweep's options (JSON-serialisable). An existing store must have been written with
        the same options, else :class:`InputError`.
    version : str
        qkalign's version, recorded in the attributes.
    """

    def __init__(self, path, options, version):
        self.path = Path(path)
        self.options_text = json.dumps(options, sort_keys=True)
        if self.path.is_dir() and not (self.path / ".zgroup").exists() and any(self.path.iterdir()):
            raise InputError(self.path, "-o", "a new path or a store written by qkalign sweep",
                             "a folder with other files")
        try:
            self.group = zarr.open_group(str(self.path), mode="a", zarr_format=2, use_consolidated=False)
        except Exception as exc:  # not a Zarr v2 group, unreadable, not writable
            raise InputError(self.path, "", "a writable folder for a new sweep store, or an existing one",
                             f"{type(exc).__name__}: {exc}") from None
        attrs = self.group.attrs.asdict()
        if "options" not in attrs:
            if any(True for _ in self.group.array_keys()):
                raise InputError(self.path, "attrs.options", "a store written by qkalign sweep", "none")
            self.group.attrs.update({"qkalign_version": version, "options": self.options_text,
                                     "sweep_store_format": STORE_FORMAT, "coordinates": COORDINATES})
        elif not _same_options(attrs["options"], options):
            raise InputError(self.path, "attrs.options", f"the options of this sweep ({self.options_text}); "
                             "write runs with other options to another store", attrs["options"])
        else:
            self.group.attrs["qkalign_version"] = version
        self.arrays = {name: self.group[name] for name in self.group.array_keys()}
        self.sizes = {}
        for array in self.arrays.values():
            for dim, size in zip(array.attrs["_ARRAY_DIMENSIONS"], array.shape):
                self.sizes[dim] = max(size, self.sizes.get(dim, 0))
        self._repair_sizes()
        for name in RUN_STRINGS:
            if name not in self.arrays:
                self._create(name, ("run",), str)
        if "seconds" not in self.arrays:
            self._create("seconds", ("run",), np.float64)
        self._consolidate()

    def _repair_sizes(self):
        """Grow every array to its dimensions' largest size: a sweep interrupted while it grew a
        dimension leaves some arrays shorter (the new cells are NaN, or '' for strings)."""
        for array in self.arrays.values():
            shape = tuple(self.sizes[dim] for dim in array.attrs["_ARRAY_DIMENSIONS"])
            if shape != array.shape:
                rows = array.shape[0] if array.ndim else 0
                array.resize(shape)
                if array.dtype.kind not in "fc" and array.ndim and shape[0] > rows:
                    array[rows:] = ""

    @property
    def num_runs(self):
        return self.sizes.get("run", 0)

    def runs(self):
        """``{(source, revision or None): (index, status, error_type)}`` of every run in the store."""
        columns = [self.arrays[name][:] for name in ("source", "revision", "status", "error_type")]
        return {(str(s), str(r) or None): (i, str(st), str(t)) for i, (s, r, st, t) in enumerate(zip(*columns))}

    def add_runs(self, keys):
        """Append a ``pending`` row for each ``(source, revision)`` of ``keys``; returns their indices."""
        if not keys:
            return []
        start = self.num_runs
        self._grow("run", start + len(keys))
        rows = slice(start, start + len(keys))
        for name, array in self.arrays.items():
            if array.dtype.kind not in "fc":  # strings: written, so that xarray reads '' and not NaN
                array[rows] = [""] * len(keys)
        self.arrays["source"][rows] = [str(source) for source, _ in keys]
        self.arrays["revision"][rows] = ["" if revision is None else str(revision) for _, revision in keys]
        self.arrays["status"][rows] = ["pending"] * len(keys)
        self._consolidate()
        return list(range(start, start + len(keys)))

    def write(self, index, outcome):
        """Write ``outcome`` (:class:`~qkalign.sweeps.task.Outcome`) into row ``index``; its status last."""
        changed = False
        for name, value in outcome.variables.items():
            changed |= self._fit(name, value)
        if changed:
            self._consolidate()
        rows = [(array, self._padded(array, outcome.variables.get(name))) for name, array in self.arrays.items()
                if name not in RUN_STRINGS and name != "seconds"]
        rows += [(self.arrays["commit"], outcome.commit), (self.arrays["seconds"], outcome.seconds),
                 (self.arrays["error"], outcome.error), (self.arrays["error_type"], outcome.error_type)]
        _write_rows(rows, index)  # all at once: one array at a time costs ~2 ms each
        self.arrays["status"][index] = outcome.status

    # -- shapes ---------------------------------------------------------------------------------

    def _fit(self, name, value):
        """Create variable ``name`` or grow dimensions so that ``value`` fits; True if the metadata changed."""
        if isinstance(value, str):
            if name not in self.arrays:
                self._create(name, ("run",), str)
                if self.num_runs:
                    self.arrays[name][:] = [""] * self.num_runs
                return True
            return False
        dims = ("run",) + dimensions_of(name, value.ndim)
        changed = False
        for dim, size in zip(dims[1:], value.shape):
            if size > self.sizes.get(dim, 0):
                self._grow(dim, size)
                changed = True
        if name not in self.arrays:
            self._create(name, dims, np.float64)
            changed = True
        elif tuple(self.arrays[name].attrs["_ARRAY_DIMENSIONS"]) != dims:
            raise InputError(self.path, name, f"dimensions {dims}", tuple(self.arrays[name].attrs["_ARRAY_DIMENSIONS"]))
        return changed

    def _create(self, name, dims, dtype):
        shape = tuple(self.sizes.get(dim, 0) for dim in dims)
        for dim, size in zip(dims, shape):
            self.sizes[dim] = size
        chunks = (1,) + tuple(max(size, 1) for size in shape[1:])  # one run per chunk
        fill = None if dtype is str else np.nan
        self.arrays[name] = self.group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill,
                                                    attributes={"_ARRAY_DIMENSIONS": list(dims)})

    def _grow(self, dim, size):
        """Resize every array with dimension ``dim`` to ``size`` along it (new cells: NaN / fill)."""
        self.sizes[dim] = size
        for array in self.arrays.values():
            dims = array.attrs["_ARRAY_DIMENSIONS"]
            if dim in dims:
                array.resize(tuple(self.sizes[d] for d in dims))

    @staticmethod
    def _padded(array, value):
        """The row of ``array`` holding ``value`` (None: missing), padded with NaN or ''."""
        row_shape = array.shape[1:]
        if array.dtype.kind not in "fc":
            return "" if value is None else value
        row = np.full(row_shape, np.nan)
        if value is not None:
            row[tuple(slice(0, size) for size in value.shape)] = value
        return row

    def _consolidate(self):
        zarr.consolidate_metadata(str(self.path), zarr_format=2)


#: Options that sweeps gained after stores were first written, and the value an older store's runs had.
ADDED_OPTIONS = {"operator": "raw", "layer_symmetry": False, "symmetry_split": False}


def _same_options(stored_text, options):
    """Whether a store's recorded options (JSON text) are ``options``, an option it predates counting as its
    :data:`ADDED_OPTIONS` value (a store of raw operators resumes as ``--operator raw``)."""
    try:
        stored = json.loads(stored_text)
    except (TypeError, ValueError):
        return False
    if not isinstance(stored, dict):
        return False
    return {**{k: v for k, v in ADDED_OPTIONS.items() if k in options}, **stored} == json.loads(json.dumps(options))


def _write_rows(rows, index):
    """``array[index] = value`` for every ``(array, value)`` of ``rows``, concurrently on zarr's event loop."""
    import asyncio

    from zarr.core.sync import sync

    async def write_all():
        await asyncio.gather(*(array.async_array.setitem(index, value) for array, value in rows))

    sync(write_all())
