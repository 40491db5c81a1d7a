"""Exact rescaling by powers of two, so that products and squared norms stay inside the float range.

Multiplying by ``2^k`` changes only a number's exponent: it is exact unless the result leaves
the format's range, and it commutes with rounding. A computation on ``x 2^-e`` (values near 1)
scaled back by the matching power of two therefore gives the bits the computation gives on
``x`` whenever that neither overflows nor underflows, and a right answer when it would.
"""

import numpy as np


def max_exponent(values, axis=None, keepdims=False):
    """Binary exponent ``e`` of ``max |values|`` (``max |values| = m 2^e``, ``0.5 <= m < 1``), as int.

    0 where the maximum is 0, inf or nan (no rescaling then helps). values: any shape; with
    ``axis`` the maximum along it.
    """
    return np.frexp(np.max(np.abs(values), axis=axis, keepdims=keepdims))[1].astype(np.int64)


def normalize_in_place(values):
    """Scale ``values`` (a float numpy array) by ``2^-e`` so that ``max |values|`` lies in [0.5, 1); return ``e``."""
    exponent = int(max_exponent(values))
    if exponent:
        np.ldexp(values, -exponent, out=values)
    return exponent


def normalized_rows(values):
    """``values`` (..., m) with each row times the power of two that puts its ``max |.|`` in [0.5, 1).

    Rows that are all zero (or hold inf or nan) are left as they are. Returns a new float64 array.
    """
    values = np.asarray(values, dtype=np.float64)
    return np.ldexp(values, -max_exponent(values, axis=-1, keepdims=True))
