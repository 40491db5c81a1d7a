"""Comparing two printed reports number by number: the seed's with qkalign's, or a stored copy with a new run."""

import re

#: A printed number: a decimal (optionally in e-notation), an integer, or nan.
NUMBER = re.compile(r"[-+]?(?:\d+\.\d+(?:e[-+]?\d+)?|nan|\d+)")


def same_printed_number(ours, theirs):
    """Equal as printed, or one unit of the last printed digit apart.

    One unit: a value within rounding of a printed tie prints either way, and the last bits
    of a sum depend on the BLAS kernel a CPU selects.
    """
    if ours == theirs:
        return True
    mantissa, _, exponent = theirs.partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    unit = 10.0 ** (int(exponent) - decimals) if exponent else 10.0 ** -decimals
    return abs(float(ours) - float(theirs)) <= 1.0001 * unit


def compare_numbers(ours, theirs, who="theirs"):
    """Assert that two lists of report lines match: the same text with numbers masked, and every
    number equal as printed or one unit of its last digit apart. Returns how many numbers were compared."""
    assert len(ours) == len(theirs), f"{len(ours)} lines vs {len(theirs)} ({who})"
    compared = 0
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert NUMBER.sub("#", a) == NUMBER.sub("#", b), f"line {i}: {a!r} vs {who} {b!r}"
        for x, y in zip(NUMBER.findall(a), NUMBER.findall(b)):
            assert same_printed_number(x, y), f"line {i}: {x} vs {who} {y} in {b!r}"
            compared += 1
    return compared
