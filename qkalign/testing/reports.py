"""Comparing two printed reports number by number: the seed's with qkalign's, or a stored copy with a new run.

The text around the numbers is exact and is compared exactly. A printed number is the rounding
of a computed one, and two correct computations differ: BLAS kernels (chosen per CPU) and
thread counts sum in different orders. So two printed numbers match when they are within one
unit of the last printed digit (a value near a rounding tie prints either way) *plus* the
rounding bound of the computation (:func:`float64_tolerance`), which matters only for numbers
printed with more digits than the computation resolves (``%g`` of a tiny value). Values that
are exact by construction (a cosine of a layer with itself, a mean fixed by a symmetry) are
tested for exactness elsewhere, not here.
"""

import re

import numpy as np

#: A printed number: a decimal (optionally in e-notation), an integer, or nan.
NUMBER = re.compile(r"[-+]?(?:\d+\.\d+(?:e[-+]?\d+)?|nan|\d+)")

EPS64 = float(np.finfo(np.float64).eps)


def float64_tolerance(terms, factor=4.0):
    """Bound on how far two correct float64 computations of a report's number may lie apart, per unit of its size.

    Every number of the report is a normalised statistic (a cosine, a fraction, a mean of such)
    or a ratio of them, computed from sums of at most ``terms`` terms; a sum in any order is
    within ``terms * eps64`` of the exact one relative to its terms' magnitudes (Higham, ch. 4),
    and ``factor`` covers the few operations around the sums (normalisations, means, a square
    root). Two machines' results then differ by at most ``factor * terms * eps64`` times
    ``max(1, |value|)``.
    """
    return factor * terms * EPS64


def report_terms(num_layers, num_heads, head_dim, hidden_size):
    """The longest sum behind the report's numbers, for :func:`float64_tolerance`: a mean over
    ``L * H`` (layer, head) values, each from products of length ``max(n, 2 d)``."""
    return num_layers * num_heads * max(hidden_size, 2 * head_dim)


def same_printed_number(ours, theirs, tolerance=0.0):
    """Equal as printed, or apart by at most one unit of the last printed digit plus ``tolerance * max(1, |x|)``.

    One unit: a value within rounding of a printed tie prints either way. ``tolerance``: the
    computation's own rounding (:func:`float64_tolerance`).
    """
    if ours == theirs:
        return True
    if "nan" in (ours, theirs):
        return False
    mantissa, _, exponent = theirs.partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    unit = 10.0 ** (int(exponent) - decimals) if exponent else 10.0 ** -decimals
    return abs(float(ours) - float(theirs)) <= 1.0001 * unit + tolerance * max(1.0, abs(float(theirs)))


def compare_numbers(ours, theirs, who="theirs", tolerance=0.0):
    """Assert that two lists of report lines match: the same text with numbers masked, and every
    number matching by :func:`same_printed_number` with ``tolerance``. Returns how many numbers were compared."""
    assert len(ours) == len(theirs), f"{len(ours)} lines vs {len(theirs)} ({who})"
    compared = 0
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert NUMBER.sub("#", a) == NUMBER.sub("#", b), f"line {i}: {a!r} vs {who} {b!r}"
        for x, y in zip(NUMBER.findall(a), NUMBER.findall(b)):
            assert same_printed_number(x, y, tolerance), f"line {i}: {x} vs {who} {y} in {b!r}"
            compared += 1
    return compared
