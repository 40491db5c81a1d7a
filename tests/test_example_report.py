"""The bundled example's report and JSON keys against stored copies: a change of layout or code
must not change what users read or parse.

``tests/data/example_report*.txt`` hold the report without its first line (which names the
install path); ``tests/data/example_json_keys.txt`` every key path of the ``--json`` output
with its shape. Regenerate them only for a deliberate change of the report or the JSON.
"""

import json
import re
from pathlib import Path

import pytest

from qkalign.testing.reports import compare_numbers

DATA = Path(__file__).parent / "data"


def key_paths(value, path=""):
    """``"a.b list(36, 8) of float"``-style lines for every leaf of a JSON document."""
    if isinstance(value, dict):
        return [line for key, item in value.items() for line in key_paths(item, f"{path}.{key}" if path else key)]
    if isinstance(value, list):
        shape, item = [], value
        while isinstance(item, list):
            shape.append(len(item))
            item = item[0] if item else None
        return [f"{path} list{tuple(shape)} of {type(item).__name__}"]
    return [f"{path} {type(value).__name__}"]


@pytest.mark.parametrize("options, stored", [((), "example_report.txt"),
                                             (("--match-heads",), "example_report_match_heads.txt")])
def test_example_report_is_unchanged(cli, tmp_path, options, stored):
    out = tmp_path / "result.json"
    proc = cli("analyze", *options, "--json", out)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("qkalign analyze: input bundled example ")
    compare_numbers(lines[1:], (DATA / stored).read_text().splitlines(), who=stored)
    if options:
        assert key_paths(json.loads(out.read_text())) == (DATA / "example_json_keys.txt").read_text().splitlines()


def test_the_comparison_catches_a_number_two_units_off():
    stored = (DATA / "example_report.txt").read_text().splitlines()
    i = next(i for i, line in enumerate(stored) if re.search(r"\d\.\d{4}\b", line))
    match = re.search(r"\d\.\d{4}\b", stored[i])
    bumped = f"{float(match.group()) + 2e-4:.4f}"
    changed = stored[:i] + [stored[i][:match.start()] + bumped + stored[i][match.end():]] + stored[i + 1:]
    assert compare_numbers(stored, stored) > 900  # every number of the report
    with pytest.raises(AssertionError, match="vs theirs"):
        compare_numbers(changed, stored)
