"""The ``qkalign`` command line: ``analyze``, ``measure``, ``plot``, ``report``, ``synthetic``, ``convert`` and ``sweep``.

Bad input (a file, a value or an option) ends in one ``qkalign: error: ...`` line on stderr and
exit code 2; Ctrl-C in one ``qkalign: interrupted`` line and exit code 130. Output paths are
checked before the work starts, and outputs are written whole or not at all.
"""

import argparse
import os
import sys
from importlib import resources
from pathlib import Path

from . import __version__
from .errors import InputError, QKAlignError, UsageError, one_line
from .stats import DEFAULT_CHANCE_SEED
from .stats.backends import BACKEND_NAMES, DEFAULT_BACKEND
from .weights import DEFAULT_PRECISION, DEFAULT_TOPK, PRECISIONS

EXIT_INPUT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

# Defaults of the measure options; analyze takes them too, but only with a model folder.
MEASURE_DEFAULTS = {"topk": DEFAULT_TOPK, "fold_norms": False, "precision": DEFAULT_PRECISION, "quiet": False,
                    "revision": None, "deltas": None, "operator": "raw", "layer_symmetry": False,
                    "symmetry_split": False}


def bundled_example_path():
    """Path of the example grams JSON shipped in ``qkalign/data``."""
    return resources.files("qkalign") / "data" / "example.json"


class _OneLineParser(argparse.ArgumentParser):
    """argparse with its errors (an unknown option, ``--topk x``) as one ``qkalign: error:`` line."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _parser():
    ap = _OneLineParser(prog="qkalign", description="Inter-layer alignment of attention QK operators.")
    ap.add_argument("--version", action="version", version=f"qkalign {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    an = sub.add_parser("analyze", help="report how alike the QK operators of the layers are",
                        description="Analyse a grams JSON and its eigen-direction file (the bundled example "
                                    "when no file is given).")
    an.add_argument("grams", nargs="?", help="grams JSON, or a model to measure first: a folder, an fsspec URL of one, "
                                             "a Hub repo id ORG/NAME, a GGUF file or ollama:NAME[:TAG] (default: the "
                                             "bundled example)")
    an.add_argument("--eigdirs", help="eigen-direction file, .safetensors or .pt (default: the JSON's eigdirs_path, "
                                      "else <stem>-eigdirs.safetensors, else <stem>-eigdirs.pt)")
    an.add_argument("--anchor", type=int, default=-1, help="anchor layer, Python indexing (-1 = last)")
    an.add_argument("--backend", default=DEFAULT_BACKEND,
                    help="compute backend: " + ", ".join(BACKEND_NAMES) + " (default auto: the numpy reference for "
                         "small inputs, else the Numba kernels; the same numbers)")
    an.add_argument("--json", metavar="OUT", help="also write every number as JSON to OUT")
    an.add_argument("--plot", metavar="DIR", help="also write PNG figures into DIR")
    an.add_argument("--report", metavar="FILE.html", help="also write the report as one self-contained HTML page "
                                                          "(tables, verdicts, provenance and figures; opens offline)")
    an.add_argument("--match-heads", action="store_true",
                    help="also pair the heads of two layers by their best assignment and report matched statistics")
    an.add_argument("--chance-seed", type=int, default=DEFAULT_CHANCE_SEED, help="seed of the Monte Carlo chance levels")
    _add_measure_options(an, for_analyze=True)
    pl = sub.add_parser("plot", help="write the figures of a --json result or a sweep store",
                        description="Write PNG heatmaps and to-anchor curves of a RESULT.json into DIR (with RoPE, "
                                    "also the operator cosine and head norms against the distance and the frequency "
                                    "bands); of a sweep's OUT.zarr, the statistics against revision and a grid of "
                                    "heatmaps (with RoPE, the distance profile and band groups against revision).")
    pl.add_argument("result", help="a JSON written by qkalign analyze --json, or a store written by qkalign sweep")
    pl.add_argument("out_dir", help="folder for the PNG files (created if missing)")
    rp = sub.add_parser("report", help="write the HTML page of a --json result or a sweep store",
                        description="Write one self-contained HTML page (opens offline: figures inline, no script, no "
                                    "network request) of a RESULT.json written by qkalign analyze --json, or of a "
                                    "sweep's OUT.zarr (its runs and the statistics against revision).")
    rp.add_argument("result", help="a JSON written by qkalign analyze --json, or a store written by qkalign sweep")
    rp.add_argument("page", metavar="FILE.html", help="the page to write")
    me = sub.add_parser("measure", help="compute the grams and eigen-directions from a model's weights",
                        description="Read a Hugging Face model folder (config.json + safetensors) or a GGUF file and "
                                    "write PREFIX.json and PREFIX-eigdirs.safetensors for `qkalign analyze`.")
    me.add_argument("model_dir", metavar="SOURCE", help="Hugging Face model folder (config.json, model.safetensors or "
                    "its index), an fsspec URL of one (https://, s3://, gs://, file://), a Hub repo id ORG/NAME, "
                    "a GGUF file (any split of a split set; also by URL or as ORG/NAME/FILE.gguf on the Hub) or "
                    "ollama:NAME[:TAG] (the local Ollama store)")
    _add_output_options(me)
    _add_measure_options(me, for_analyze=False)
    sy = sub.add_parser("synthetic", help="write a synthetic model's grams and eigen-directions",
                        description="Write PREFIX.json and PREFIX-eigdirs.safetensors (or .pt) of a synthetic model "
                                    "preset (deterministic weights with a controllable inter-layer drift).")
    sy.add_argument("preset", choices=_preset_names())
    _add_output_options(sy)
    sy.add_argument("--num-layers", type=int, help="number of layers instead of the preset's")
    sy.add_argument("--drift", type=float, help="inter-layer drift in [0, 1] instead of the preset's")
    sy.add_argument("--seed", type=int, help="random seed instead of the preset's")
    co = sub.add_parser("convert", help="write a grams JSON's eigen-directions as safetensors",
                        description="Read GRAMS.json and its eigen-direction file (the seed's .pt) and write its "
                                    "eigen-directions as safetensors, the format qkalign maps without torch.")
    co.add_argument("grams", help="grams JSON")
    co.add_argument("--eigdirs", help="its eigen-direction file (default: found as analyze finds it)")
    co.add_argument("-o", "--output", metavar="PREFIX",
                    help="output prefix (default: the JSON's own, i.e. the safetensors file lands beside it)")
    _add_sweep_parser(sub)
    return ap


def _add_sweep_parser(sub):
    sw = sub.add_parser("sweep", help="measure and analyze many models or checkpoints on Dask, into one Zarr store",
                        description="Measure and analyze every SOURCE at every revision, one Dask task each, and "
                                    "write the results into one xarray Dataset in a Zarr store; a rerun computes "
                                    "only the runs the store lacks. Exit 0 when every run succeeded, 2 when the "
                                    "failed ones failed on their input, else 1.")
    sw.add_argument("sources", nargs="+", metavar="SOURCE", help="model folders (what qkalign measure reads)")
    sw.add_argument("-o", "--output", required=True, metavar="OUT.zarr", help="the Zarr store (created or resumed)")
    sw.add_argument("--revisions", nargs="+", metavar="REV", help="measure every source at each revision")
    sw.add_argument("--revisions-from", metavar="FILE", help="a file of revisions, one a line (# comments)")
    sw.add_argument("--workers", type=int, help="worker processes of the local cluster (default: one per core, "
                                                "at most one per run)")
    sw.add_argument("--scheduler", metavar="ADDRESS", help="run on the Dask cluster of this scheduler "
                                                           "(tcp://HOST:PORT) instead of a local one")
    sw.add_argument("--retries", type=int, help="times a task that raised is resubmitted (default 2)")
    sw.add_argument("--anchor", type=int, help="anchor layer, Python indexing (default -1)")
    sw.add_argument("--backend", choices=BACKEND_NAMES, help=f"compute backend (default {DEFAULT_BACKEND})")
    sw.add_argument("--match-heads", action="store_true", default=None, help="also match heads across layers")
    sw.add_argument("--chance-seed", type=int, help="seed of the Monte Carlo chance levels")
    sw.add_argument("--topk", type=int, help=f"eigen-directions kept per layer and head (default {DEFAULT_TOPK})")
    sw.add_argument("--fold-norms", action="store_true", default=None, help="fold the norm gains into W_Q, W_K")
    sw.add_argument("--operator", metavar="raw|delta:D|window:W", help="the operator measured (default raw)")
    sw.add_argument("--layer-symmetry", action="store_true", default=None,
                    help="also score each layer's whole operator (Saponati et al.'s symmetry and directionality)")
    sw.add_argument("--symmetry-split", action="store_true", default=None,
                    help="also split the cross-layer operator cosine into symmetric and skew parts")
    sw.add_argument("--precision", choices=PRECISIONS, help=f"precision of the big products (default "
                                                            f"{DEFAULT_PRECISION})")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_output_options(parser):
    from .files.eigdirs import FORMATS

    parser.add_argument("-o", "--output", required=True, metavar="PREFIX",
                        help="output prefix: writes PREFIX.json and PREFIX-eigdirs.safetensors (or .pt)")
    parser.add_argument("--format", choices=FORMATS, default=FORMATS[0],
                        help="eigen-direction file format: safetensors (default; read without torch) or pt "
                             "(the seed script's)")


def _preset_names():
    from .weights.synthetic import PRESETS

    return sorted(PRESETS)


def _add_measure_options(parser, for_analyze):
    when = " (with a model folder)" if for_analyze else ""

    def default(key):
        return None if for_analyze else MEASURE_DEFAULTS[key]

    parser.add_argument("--topk", type=int, default=default("topk"),
                        help=f"eigen-directions kept per layer and head{when} (default {DEFAULT_TOPK})")
    parser.add_argument("--fold-norms", action="store_true", default=default("fold_norms"),
                        help=f"fold the input norm gain (and QK-norm gains) into W_Q, W_K{when}")
    parser.add_argument("--precision", choices=PRECISIONS, default=default("precision"),
                        help=f"precision of the big products{when} (default {DEFAULT_PRECISION}; sums are float64)")
    parser.add_argument("--quiet", action="store_true", default=default("quiet"), help=f"no progress bar{when}")
    parser.add_argument("--revision", default=default("revision"),
                        help="branch, tag or commit of a Hub repo id (default main)")
    parser.add_argument("--operator", default=default("operator"), metavar="raw|delta:D|window:W",
                        help=f"the operator analysed{when}: raw W_K^T W_Q (default), the rotary operator g(D) at "
                             "distance D, or its mean over distances 0..W-1")
    parser.add_argument("--layer-symmetry", action="store_true", default=default("layer_symmetry"),
                        help=f"also score each layer's whole operator (heads summed) as Saponati et al.: symmetry and "
                             f"directionality{when} (about 1.2x measure's time)")
    parser.add_argument("--deltas", type=_distances, default=default("deltas"), metavar="D1,D2,...",
                        help=f"relative distances of the rotary profile rope_profile{when} (default 0 and the powers "
                             "of two up to the model's context length; none: no profile)")
    parser.add_argument("--symmetry-split", action="store_true", default=default("symmetry_split"),
                        help=f"also split the cross-layer operator cosine into symmetric and skew parts{when} (one more "
                             "(L d)^2 n product per query head: gram_transpose)")


def _measure_options(args):
    """The measure options of ``args`` as keyword arguments of :func:`qkalign.measure`."""
    opts = {key: MEASURE_DEFAULTS[key] if getattr(args, key) is None else getattr(args, key)
            for key in MEASURE_DEFAULTS}
    return dict(topk=opts["topk"], fold_norms=opts["fold_norms"], precision=opts["precision"],
                progress=not opts["quiet"], revision=opts["revision"], deltas=opts["deltas"],
                operator=opts["operator"], layer_symmetry=opts["layer_symmetry"],
                symmetry_split=opts["symmetry_split"])


def _distances(text):
    """``--deltas 0,1,16``: a list of ints (their range and count are checked by measure); ``none``: no profile."""
    if text.strip().lower() == "none":
        return []
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, found {text!r}") from None


def _save(data, prefix, file_format, eig_dirs_dtype="float32"):
    """Write ``data`` at ``prefix`` and say so; an unwritable prefix is an input error."""
    from .files.seed_format import save

    try:
        json_path, eigdirs_path = save(data, prefix, eig_dirs_dtype=eig_dirs_dtype, file_format=file_format)
    except OSError as exc:  # what the checks could not foresee: a full disk, a folder made there since
        where = f" ({exc.filename})" if exc.filename else ""
        raise InputError(prefix, "-o", "a writable output prefix", f"{exc.strerror or exc}{where}") from None
    print(f"wrote {json_path} and {eigdirs_path}")
    return 0


def _measure(args):
    from .files.seed_format import output_paths
    from .weights.measure import measure

    output_paths(args.output, args.format)
    return _save(measure(args.model_dir, **_measure_options(args)), args.output, args.format)


def _convert(args):
    """Without ``-o`` (or with the JSON's own prefix) the safetensors file is written beside the JSON,
    which, like its .pt, stays as it is. The stored precision is kept."""
    from .checks import read_json_object
    from .files.eigdirs import RUN_ID, write_eigdirs
    from .files.outputs import atomic_path, check_output_file
    from .files.seed_format import default_eigdirs_path, load, output_paths

    own_prefix = Path(args.grams).with_suffix("")
    if args.output is not None and Path(args.output).resolve() != own_prefix.resolve():
        output_paths(args.output, "safetensors")
        data = load(args.grams, eigdirs=args.eigdirs)
        return _save(data, args.output, "safetensors", eig_dirs_dtype=str(data.eig_dirs.dtype))
    data = load(args.grams, eigdirs=args.eigdirs)
    # the keys load() leaves out of QKData: a declared path would keep analyze on the old file,
    # and the run id links the JSON to the file written here
    doc = read_json_object(args.grams, "grams JSON")
    if doc.get("eigdirs_path") is not None:  # analyze would keep reading the file it names
        raise InputError(args.grams, "eigdirs_path", "no eigdirs_path key, or -o PREFIX to write a new pair",
                         repr(doc["eigdirs_path"]))
    target = check_output_file(default_eigdirs_path(args.grams, "safetensors"), "convert")
    try:
        with atomic_path(target) as tmp:
            write_eigdirs(tmp, data.eig_dirs, data.sym_eigs, eig_dirs_dtype=str(data.eig_dirs.dtype),
                          run_id=doc.get(RUN_ID), fmt="safetensors")
    except OSError as exc:
        raise InputError(target, "", "a writable file beside the JSON", exc.strerror or str(exc)) from None
    print(f"wrote {target}")
    return 0


def _synthetic(args):
    from .files.seed_format import output_paths
    from .memory import check_fits
    from .weights.synthetic import make_qkdata, peak_bytes, spec_from_args

    output_paths(args.output, args.format)
    try:
        spec = spec_from_args(args.preset, num_layers=args.num_layers, drift=args.drift, seed=args.seed)
    except ValueError as exc:
        raise InputError(args.preset, "", "a valid synthetic model", str(exc)) from None
    check_fits(peak_bytes(spec), "--num-layers" if args.num_layers is not None else args.preset, "",
               f"a synthetic model of {spec.num_layers} layers x {spec.num_heads} heads")
    return _save(make_qkdata(spec), args.output, args.format)


def _analysis_input(args):
    """``(QKData, description of the input)`` for ``analyze``: a measured model folder, a grams JSON or
    the bundled example."""
    from .files.seed_format import load
    from .weights.sources import is_model_source

    if args.grams is not None and is_model_source(args.grams):
        from .weights.measure import measure

        options = _measure_options(args)
        data = measure(args.grams, **options)
        folded = ", norms folded" if options["fold_norms"] else ""
        local = "model folder" if data.extra["source_format"] == "safetensors" else "GGUF model"
        what = f"{local} {args.grams}" if data.extra["source_kind"] == "local" else f"model {args.grams}"
        if data.extra["commit_hash"]:
            what += f" revision {data.extra['revision']} (commit {data.extra['commit_hash']})"
        operator = "" if data.extra["operator"] == "raw" else f", operator {data.extra['operator']}"
        return data, f"{what} (measured: {data.extra['layout']}, {options['precision']}{folded}{operator})"
    for key in MEASURE_DEFAULTS:
        if getattr(args, key) not in (None, False):
            raise InputError(f"--{key.replace('_', '-')}", "", "a model folder as the input (the option applies "
                             "to measuring)", args.grams or "the bundled example")
    if args.grams is None:
        path = bundled_example_path()
        data = load(path, eigdirs=args.eigdirs)
        return data, f"bundled example {path} + {data.eigdirs_path}"
    data = load(args.grams, eigdirs=args.eigdirs)
    return data, f"{data.json_path} + {data.eigdirs_path}"


def _analyze(args):
    from .checks import int_in_range
    from .files.outputs import check_output_file, check_output_folder
    from .stats.analyze import analyze
    from .views.analysis_figures import FIGURE_NAMES
    from .views.text_report import format_report

    if args.json is not None:  # an empty path is refused, not ignored
        check_output_file(args.json, "--json")
    if args.plot is not None:
        check_output_folder(args.plot, "--plot", files=FIGURE_NAMES)
    if args.report is not None:
        check_output_file(args.report, "--report")
    int_in_range(args.chance_seed, 0, 2**63 - 1, "--chance-seed")
    if args.report is not None:  # the page's drawing processes start up while the numbers are computed
        from .views.figure_jobs import start_workers

        start_workers()
    data, description = _analysis_input(args)
    result = analyze(data, anchor=args.anchor, backend=args.backend, match_heads=args.match_heads,
                     chance_seed=args.chance_seed, background_compile=True)
    sys.stdout.write(format_report(result, description))
    if args.json is not None:
        try:
            result.to_json(args.json, indent=1)
        except OSError as exc:
            raise InputError(args.json, "--json", "a writable file path", exc.strerror or str(exc)) from None
    if args.plot is not None:
        _write_figures(result.to_dict(), args.plot)
    if args.report is not None:
        from .views.html_page import write_html_page

        _write_page(write_html_page, result.to_dict(), args.report, "--report", args.json or "analyze",
                    report_text=format_report(result, description), workers=None)
    return 0


def _write_page(writer, result, path, field, *args, **kwargs):
    """``writer(result, path, ...)``, saying so; an unwritable path is an input error."""
    try:
        writer(result, path, *args, **kwargs)
    except OSError as exc:
        raise InputError(path, field, "a writable file path", exc.strerror or str(exc)) from None
    print(f"wrote {path}", file=sys.stderr)


def _write_figures(result_dict, out_dir, source="result"):
    from .views.analysis_figures import write_figures

    try:
        paths = write_figures(result_dict, out_dir, source)
    except OSError as exc:
        raise InputError(out_dir, "--plot", "a writable folder", exc.strerror or str(exc)) from None
    print(f"wrote {len(paths)} figures to {out_dir}", file=sys.stderr)


def _plot(args):
    from .checks import read_json_object
    from .files.outputs import check_output_folder
    from .views.analysis_figures import FIGURE_NAMES

    is_store = Path(args.result).is_dir()  # a sweep's Zarr store: its figures are named by its variables
    check_output_folder(args.out_dir, "out_dir", files=() if is_store else FIGURE_NAMES)
    if is_store:
        from .views.sweep_figures import write_sweep_figures

        try:
            paths = write_sweep_figures(args.result, args.out_dir)
        except OSError as exc:
            raise InputError(args.out_dir, "", "a writable folder", exc.strerror or str(exc)) from None
        print(f"wrote {len(paths)} figures to {args.out_dir}", file=sys.stderr)
        return 0
    doc = read_json_object(args.result, "result JSON (qkalign analyze --json)",
                           required=("meta", "to_anchor", "principal_angles"))
    _write_figures(doc, args.out_dir, args.result)
    return 0


def _report(args):
    from .checks import read_json_object
    from .files.outputs import check_output_file

    check_output_file(args.page, "FILE.html")
    if Path(args.result).is_dir():  # a sweep's Zarr store
        from .views.sweep_page import write_sweep_page

        _write_page(write_sweep_page, args.result, args.page, "FILE.html")
        return 0
    from .views.html_page import write_html_page

    doc = read_json_object(args.result, "result JSON (qkalign analyze --json)",
                           required=("meta", "to_anchor", "principal_angles"))
    _write_page(write_html_page, doc, args.page, "FILE.html", args.result, workers=None)
    return 0


def _sweep(args):
    from .sweeps.run import read_revisions, run_sweep

    revisions = list(args.revisions or [])
    if args.revisions_from:
        revisions += read_revisions(args.revisions_from)
    options = {key: getattr(args, key) for key in ("anchor", "backend", "match_heads", "chance_seed", "topk",
                                                   "fold_norms", "precision", "operator", "layer_symmetry",
                                                   "symmetry_split")}
    try:
        summary = run_sweep(args.sources, args.output, revisions or None, args.workers, args.scheduler,
                            retries=args.retries, progress=not args.quiet, **options)
    except KeyboardInterrupt:
        print(f"qkalign sweep: interrupted; the runs finished so far are in {args.output} "
              "(the same command computes the rest)", file=sys.stderr)
        return 130
    print(summary.line())
    return summary.exit_code()


COMMANDS = {"analyze": _analyze, "plot": _plot, "report": _report, "measure": _measure, "synthetic": _synthetic, "convert": _convert,
            "sweep": _sweep}


def main(argv=None):
    """Entry point of the ``qkalign`` command; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except QKAlignError as exc:
        print(f"qkalign: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("qkalign: interrupted (no output was left half-written)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout went away (`qkalign analyze | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
    except OSError as exc:  # the system refused a path the checks could not foresee (a name too long, ...)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"qkalign: error: {one_line(where)}{one_line(exc.strerror or exc)}", file=sys.stderr)
        return EXIT_INPUT_ERROR


if __name__ == "__main__":
    sys.exit(main())
