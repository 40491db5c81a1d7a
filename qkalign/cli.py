"""The ``qkalign`` command line: ``qkalign analyze [GRAMS.json | MODEL_DIR] ...``, ``qkalign measure``, ``qkalign plot``.

Bad input ends in one ``qkalign: error: ...`` line on stderr and exit code 2.
"""

import argparse
import sys
from importlib import resources
from pathlib import Path

from .analysis import analyze
from .backends import BACKEND_NAMES, DEFAULT_BACKEND
from .chance import DEFAULT_SEED
from .errors import InputError, QKAlignError
from .io import load, save
from .measurement import measure
from .report import format_report

EXIT_INPUT_ERROR = 2


def bundled_example_path():
    """Path of the example grams JSON shipped in ``qkalign/data``."""
    return resources.files("qkalign") / "data" / "example.json"


def _parser():
    ap = argparse.ArgumentParser(prog="qkalign", description="Inter-layer alignment of attention QK operators.")
    sub = ap.add_subparsers(dest="command", required=True)
    an = sub.add_parser("analyze", help="report how alike the QK operators of the layers are",
                        description="Analyse a grams JSON and its -eigdirs.pt (the bundled example when no file is given).")
    an.add_argument("grams", nargs="?", help="grams JSON, or a model folder to measure first (default: the bundled example)")
    an.add_argument("--eigdirs", help="eig-dirs .pt (default: the JSON's eigdirs_path, else <stem>-eigdirs.pt)")
    an.add_argument("--anchor", type=int, default=-1, help="anchor layer, Python indexing (-1 = last)")
    an.add_argument("--backend", default=DEFAULT_BACKEND, help="compute backend: " + " or ".join(BACKEND_NAMES))
    an.add_argument("--json", metavar="OUT", help="also write every number as JSON to OUT")
    an.add_argument("--plot", metavar="DIR", help="also write PNG figures into DIR")
    an.add_argument("--match-heads", action="store_true",
                    help="also pair the heads of two layers by their best assignment and report matched statistics")
    an.add_argument("--chance-seed", type=int, default=DEFAULT_SEED, help="seed of the Monte Carlo chance levels")
    pl = sub.add_parser("plot", help="write the figures of a --json result",
                        description="Write PNG heatmaps and to-anchor curves of a RESULT.json into DIR.")
    pl.add_argument("result", help="a JSON written by qkalign analyze --json")
    pl.add_argument("out_dir", help="folder for the PNG files (created if missing)")
    _add_measure_options(an, for_analyze=True)
    me = sub.add_parser("measure", help="compute the grams and eigen-directions from a model's safetensors weights",
                        description="Read a Hugging Face model folder (config.json + safetensors) and write "
                                    "PREFIX.json and PREFIX-eigdirs.pt for `qkalign analyze`.")
    me.add_argument("model_dir", help="Hugging Face model folder (config.json, model.safetensors or its index)")
    me.add_argument("-o", "--output", required=True, metavar="PREFIX",
                    help="output prefix: writes PREFIX.json and PREFIX-eigdirs.pt")
    _add_measure_options(me, for_analyze=False)
    return ap


# Defaults of the measure options; analyze takes them too, but only with a model folder.
MEASURE_DEFAULTS = {"topk": 16, "fold_norms": False, "precision": "float32", "quiet": False}


def _add_measure_options(parser, for_analyze):
    when = " (with a model folder)" if for_analyze else ""

    def default(key):
        return None if for_analyze else MEASURE_DEFAULTS[key]

    parser.add_argument("--topk", type=int, default=default("topk"),
                        help=f"eigen-directions kept per layer and head{when} (default 16)")
    parser.add_argument("--fold-norms", action="store_true", default=default("fold_norms"),
                        help=f"fold the input norm gain (and QK-norm gains) into W_Q, W_K{when}")
    parser.add_argument("--precision", choices=("float32", "float64"), default=default("precision"),
                        help=f"precision of the big products{when} (default float32; sums are float64)")
    parser.add_argument("--quiet", action="store_true", default=default("quiet"), help=f"no progress bar{when}")


def _measure_options(args):
    """The measure options of ``args`` as keyword arguments of :func:`qkalign.measure`."""
    opts = {key: MEASURE_DEFAULTS[key] if getattr(args, key) is None else getattr(args, key)
            for key in MEASURE_DEFAULTS}
    return dict(topk=opts["topk"], fold_norms=opts["fold_norms"], precision=opts["precision"],
                progress=not opts["quiet"])


def _measure(args):
    data = measure(args.model_dir, **_measure_options(args))
    try:
        json_path, pt_path = save(data, args.output)
    except OSError as exc:
        raise InputError(args.output, "-o", "a writable output prefix", exc.strerror or str(exc)) from None
    print(f"wrote {json_path} and {pt_path}")
    return 0


def _measured_input(args):
    """``(QKData, description)`` when ``analyze``'s input is a model folder, else None."""
    if args.grams is not None and Path(args.grams).is_dir():
        options = _measure_options(args)
        data = measure(args.grams, **options)
        folded = ", norms folded" if options["fold_norms"] else ""
        return data, f"model folder {args.grams} (measured: {data.extra['layout']}, {options['precision']}{folded})"
    for key in MEASURE_DEFAULTS:
        if getattr(args, key) not in (None, False):
            raise InputError(f"--{key.replace('_', '-')}", "", "a model folder as the input (the option applies "
                             "to measuring)", args.grams or "the bundled example")
    return None


def _analyze(args):
    measured = _measured_input(args)
    if measured is not None:
        data, description = measured
    elif args.grams is None:
        path = bundled_example_path()
        description = f"bundled example {path}"
    else:
        path, description = args.grams, None
    if measured is None:
        data = load(path, eigdirs=args.eigdirs)
    result = analyze(data, anchor=args.anchor, backend=args.backend, match_heads=args.match_heads,
                     chance_seed=args.chance_seed)
    if description is None:
        description = f"{data.json_path} + {data.eigdirs_path}"
    elif measured is None:
        description += f" + {data.eigdirs_path}"
    sys.stdout.write(format_report(result, description))
    if args.json:
        try:
            result.to_json(args.json, indent=1)
        except OSError as exc:
            raise InputError(args.json, "--json", "a writable file path", exc.strerror or str(exc)) from None
    if args.plot:
        _write_figures(result.to_dict(), args.plot)
    return 0


def _write_figures(result_dict, out_dir):
    from .plots import write_figures

    try:
        paths = write_figures(result_dict, out_dir)
    except OSError as exc:
        raise InputError(out_dir, "--plot", "a writable folder", exc.strerror or str(exc)) from None
    print(f"wrote {len(paths)} figures to {out_dir}", file=sys.stderr)


def _plot(args):
    import json

    try:
        with open(args.result, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise InputError(args.result, "", "an existing result JSON (qkalign analyze --json)", "no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(args.result, "", "a result JSON (qkalign analyze --json)", f"malformed JSON ({exc})") from None
    for key in ("meta", "to_anchor", "principal_angles"):
        if not isinstance(doc, dict) or key not in doc:
            raise InputError(args.result, key, "this key of a qkalign analyze --json result", "it missing")
    _write_figures(doc, args.out_dir)
    return 0


def main(argv=None):
    """Entry point of the ``qkalign`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "analyze":
            return _analyze(args)
        if args.command == "plot":
            return _plot(args)
        if args.command == "measure":
            return _measure(args)
    except QKAlignError as exc:
        print(f"qkalign: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    return 1


if __name__ == "__main__":
    sys.exit(main())
