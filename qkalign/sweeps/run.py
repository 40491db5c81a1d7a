"""A sweep from start to end: which runs are asked for, which the store already has, compute the rest."""

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .task import default_options, measure_takes_revision, run_task


@dataclass
class SweepSummary:
    """How a sweep went, over the runs it was asked for (computed now or found in the store).

    succeeded, failed : runs with status ok / failed; input_failures : failed on their input
    (``InputError``); computed : tasks run now; skipped : runs already ok in the store.
    """

    path: Path
    succeeded: int
    failed: int
    input_failures: int
    computed: int
    skipped: int

    def line(self):
        """The last line of ``qkalign sweep``."""
        return (f"qkalign sweep: {self.succeeded} runs succeeded, {self.failed} failed "
                f"({self.computed} computed now, {self.skipped} already in {self.path})")

    def exit_code(self):
        """0 when every run succeeded; 2 when every failure is a bad input (the CLI's input-error code); else 1."""
        if not self.failed:
            return 0
        return 2 if self.input_failures == self.failed else 1


def sweep_options(options):
    """Every option with its default filled in; unknown names and bad values raise."""
    from ..stats.backends import BACKEND_NAMES
    from ..weights import PRECISIONS
    from ..weights.rotary_operator import parse_operator

    defaults = default_options()
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(f"sweep() got unexpected options {unknown}; known: {sorted(defaults)}")
    merged = {**defaults, **{key: value for key, value in options.items() if value is not None}}
    if merged["precision"] not in PRECISIONS:
        raise InputError("--precision", "", " or ".join(PRECISIONS), repr(merged["precision"]))
    if merged["backend"] not in BACKEND_NAMES:
        raise InputError("--backend", "", " or ".join(BACKEND_NAMES), repr(merged["backend"]))
    merged["operator"] = parse_operator(merged["operator"]).name  # as the store records it
    return merged


def read_revisions(path):
    """The revisions listed in a text file, one a line; blank lines and ``#`` comments skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, "--revisions-from", "a readable text file of revisions, one a line",
                         getattr(exc, "strerror", None) or str(exc)) from None
    revisions = [line.split("#", 1)[0].strip() for line in lines]
    revisions = [r for r in revisions if r]
    if not revisions:
        raise InputError(path, "--revisions-from", "at least one revision", "none")
    return revisions


def planned_runs(sources, revisions):
    """``[(source, revision)]``: every source at every revision (None: as it is), duplicates dropped."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    # a local folder by its real path: `m`, `m/` and `./m` are one run, and `m` from another folder another
    sources = [os.path.realpath(source) if os.path.exists(source) else str(source) for source in sources]
    if not sources:
        raise InputError("SOURCE", "", "at least one model folder or source")
    revisions = [None] if not revisions else [None if r is None else str(r) for r in revisions]
    if any(r is not None for r in revisions) and not measure_takes_revision():
        raise InputError("--revisions", "", "sources with a history (this install's measure reads local "
                         "folders only, which have no revisions)", " ".join(r for r in revisions if r))
    return list(dict.fromkeys((source, revision) for source in sources for revision in revisions))


def run_sweep(sources, out, revisions=None, workers=None, scheduler=None, retries=None, progress=True,
              task=run_task, **options):
    """Compute the runs of ``sources`` x ``revisions`` that the store ``out`` lacks; a :class:`SweepSummary`.

    ``task`` is the function each Dask task runs (:func:`~qkalign.sweeps.task.run_task`).
    """
    import qkalign

    try:
        from .engine import DEFAULT_RETRIES, cluster_client, compute_runs
        from .store import SweepStore
    except ImportError as exc:
        raise InputError("qkalign sweep", "", 'the sweep extra installed: pip install "qkalign[sweep]"',
                         str(exc)) from None

    options = sweep_options(options)
    keys = planned_runs(sources, revisions)
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise InputError("--workers", "", "a positive integer", repr(workers))
    store = SweepStore(out, options, qkalign.__version__)
    existing = store.runs()
    todo_keys = [key for key in keys if existing.get(key, (None, ""))[1] != "ok"]
    new_keys = [key for key in todo_keys if key not in existing]
    new_index = dict(zip(new_keys, store.add_runs(new_keys)))
    todo = [(existing[key][0] if key in existing else new_index[key], *key) for key in todo_keys]
    computed = 0
    if todo:
        with cluster_client(workers, scheduler, tasks=len(todo), quiet=not progress) as client:
            computed = compute_runs(client, store, todo, options, retries=DEFAULT_RETRIES if retries is None
                                    else retries, progress=progress, task=task)
    runs = store.runs()
    statuses = [runs[key][1:] for key in keys]
    failed = [error_type for status, error_type in statuses if status != "ok"]
    return SweepSummary(store.path, len(keys) - len(failed), len(failed),
                        sum(error_type == "InputError" for error_type in failed), computed, len(keys) - len(todo))
