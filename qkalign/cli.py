"""The ``qkalign`` command line: ``qkalign analyze [GRAMS.json] ...``.

Bad input ends in one ``qkalign: error: ...`` line on stderr and exit code 2.
"""

import argparse
import sys
from importlib import resources

from .analysis import analyze
from .backends import BACKEND_NAMES, DEFAULT_BACKEND
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
    return ap


def _analyze(args):
    if args.grams is None:
        path = bundled_example_path()
        description = f"bundled example {path}"
    else:
        path, description = args.grams, None
    data = load(path, eigdirs=args.eigdirs)
    result = analyze(data, anchor=args.anchor, backend=args.backend)
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
    return 0


def main(argv=None):
    """Entry point of the ``qkalign`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "analyze":
            return _analyze(args)
    except QKAlignError as exc:
        print(f"qkalign: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    return 1


if __name__ == "__main__":
    sys.exit(main())
