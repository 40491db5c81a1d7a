"""The bundled example's report and JSON keys against stored copies: a change of layout or code
must not change what users read or parse.

``tests/data/example_report*.txt`` hold the report without its first line (which names the
install path); ``tests/data/example_json_keys.txt`` every key path of the ``--json`` output
with its shape. Regenerate them only for a deliberate change of the report or the JSON.

The text is compared exactly; each number within one unit of its last printed digit plus the
float64 rounding bound of the example's size (``qkalign.testing.reports``), since the last bits
of a sum depend on the BLAS kernel a CPU selects. That exact values print exactly is tested in
``tests/test_exact_values.py``.
"""

import json
import re
from pathlib import Path

import pytest

import qkalign
from qkalign.cli import bundled_example_path
from qkalign.testing.reports import compare_numbers, float64_tolerance, report_terms

DATA = Path(__file__).parent / "data"


def example_tolerance():
    """:func:`~qkalign.testing.reports.float64_tolerance` of the bundled example's shape."""
    data = qkalign.load(bundled_example_path())
    return float64_tolerance(report_terms(data.num_layers, data.num_heads, data.head_dim, data.hidden_size))


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
    compare_numbers(lines[1:], (DATA / stored).read_text().splitlines(), who=stored, tolerance=example_tolerance())
    if options:
        assert key_paths(json.loads(out.read_text())) == (DATA / "example_json_keys.txt").read_text().splitlines()


def test_the_comparison_catches_a_number_two_units_off():
    stored = (DATA / "example_report.txt").read_text().splitlines()
    i = next(i for i, line in enumerate(stored) if re.search(r"\d\.\d{4}\b", line))
    match = re.search(r"\d\.\d{4}\b", stored[i])
    bumped = f"{float(match.group()) + 2e-4:.4f}"
    changed = stored[:i] + [stored[i][:match.start()] + bumped + stored[i][match.end():]] + stored[i + 1:]
    tolerance = example_tolerance()
    assert 1e-12 < tolerance < 1e-9  # far below the report's 4 printed digits
    assert compare_numbers(stored, stored, tolerance=tolerance) > 900  # every number of the report
    with pytest.raises(AssertionError, match="vs theirs"):
        compare_numbers(changed, stored, tolerance=tolerance)


def test_the_tolerance_covers_rounding_and_nothing_a_reader_sees():
    """A value printed with more digits than float64 resolves matches within the rounding bound
    (the old golden's noise, 1.22e-19, against another kernel's 8.132e-20); two units of any
    printed digit do not."""
    from qkalign.testing.reports import same_printed_number

    tolerance = example_tolerance()
    assert same_printed_number("8.132e-20", "1.22e-19", tolerance)
    assert not same_printed_number("8.132e-20", "1.22e-19")  # without the bound: the old failure
    assert same_printed_number("0.02256", "0.02255", tolerance)  # one unit: a rounding tie
    for ours, theirs in (("0.02257", "0.02255"), ("4.318e-05", "4.316e-05"), ("+540.2", "+540.0"), ("nan", "0.5")):
        assert not same_printed_number(ours, theirs, tolerance), (ours, theirs)
