"""The ``qkalign`` command line: ``qkalign analyze [GRAMS.json] ...``.

Bad input ends in one ``qkalign: error: ...`` line on stderr and exit code 2.
"""

import argparse
import sys
from importlib import resources

from .analysis import analyze
from .backends import BACKEND_NAMES, DEFAULT_BACKEND
from .chance import DEFAULT_SEED
from .errors import InputError, QKAlignError
from .io import load
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
    an.add_argument("grams", nargs="?", help="grams JSON (default: the bundled example)")
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
    return ap


def _analyze(args):
    if args.grams is None:
        path = bundled_example_path()
        description = f"bundled example {path}"
    else:
        path, description = args.grams, None
    data = load(path, eigdirs=args.eigdirs)
    result = analyze(data, anchor=args.anchor, backend=args.backend, match_heads=args.match_heads,
                     chance_seed=args.chance_seed)
    if description is None:
        description = f"{data.json_path} + {data.eigdirs_path}"
    else:
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
    except QKAlignError as exc:
        print(f"qkalign: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    return 1


if __name__ == "__main__":
    sys.exit(main())
