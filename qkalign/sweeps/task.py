"""One task of a sweep, run on a Dask worker: measure a source at a revision, analyze it.

The task returns a plain, picklable :class:`Outcome`: the flattened variables
(:mod:`qkalign.sweeps.variables`) on success, or the one-line error of an
:class:`~qkalign.errors.InputError` (a broken checkpoint) as a failure. Any other exception
propagates to Dask, which retries the task (a lost worker is retried by the scheduler).
"""

import inspect
import time
from dataclasses import dataclass, field

from ..errors import InputError

#: The options of a sweep and their defaults: measure's, then analyze's.
MEASURE_OPTIONS = ("topk", "fold_norms", "precision", "operator", "layer_symmetry", "symmetry_split")
ANALYZE_OPTIONS = ("anchor", "backend", "match_heads", "chance_seed")

#: Keys of ``QKData.extra`` that name the commit a revision resolved to (Hub sources record ``commit_hash``).
COMMIT_KEYS = ("commit_hash", "commit")


@dataclass
class Outcome:
    """What one (source, revision) run gave.

    status : "ok" or "failed"; error : the one-line error ('' when ok); error_type : its
    exception's class name ("InputError" for a bad checkpoint); commit : the resolved commit
    ('' when unknown); seconds : the task's wall time on the worker; variables : {name: float64
    array or str} of the result (empty when failed).
    """

    status: str
    error: str = ""
    error_type: str = ""
    commit: str = ""
    seconds: float = 0.0
    variables: dict = field(default_factory=dict)


def default_options():
    """``{option: default}`` of every sweep option (measure's and analyze's)."""
    from ..stats.analyze import analyze
    from ..weights.measure import measure

    defaults = {}
    for function, names in ((measure, MEASURE_OPTIONS), (analyze, ANALYZE_OPTIONS)):
        parameters = inspect.signature(function).parameters
        defaults.update({name: parameters[name].default for name in names})
    return defaults


def measure_takes_revision():
    """Whether this install's ``measure`` accepts a ``revision`` (sources with history: Hub ids, URLs)."""
    from ..weights.measure import measure

    return "revision" in inspect.signature(measure).parameters


def run_task(source, revision, options):
    """Measure ``source`` at ``revision`` (None: as it is) and analyze it with ``options``; an :class:`Outcome`."""
    from ..stats.analyze import analyze
    from ..weights.measure import measure
    from .variables import flatten

    start = time.perf_counter()
    measure_kwargs = {name: options[name] for name in MEASURE_OPTIONS}
    if revision is not None:
        measure_kwargs["revision"] = revision
    try:
        data = measure(source, progress=False, **measure_kwargs)
        result = analyze(data, **{name: options[name] for name in ANALYZE_OPTIONS})
    except InputError as exc:
        return Outcome("failed", error=one_line(exc), error_type="InputError", seconds=time.perf_counter() - start)
    commit = next((str(data.extra[key]) for key in COMMIT_KEYS if data.extra.get(key)), "")
    return Outcome("ok", commit=commit, seconds=time.perf_counter() - start, variables=flatten(result.to_dict()))


def one_line(exc):
    """``exc`` as one line of text (the CLI's error line without its ``qkalign: error:`` prefix)."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, InputError) else f"{type(exc).__name__}: {text}"
