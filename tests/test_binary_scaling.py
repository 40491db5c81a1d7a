"""Power-of-two scaling: the bits ``np.ldexp`` gives, across each float format's whole range."""

import numpy as np
import pytest

from qkalign.linalg.binary_scaling import max_exponent, normalize_in_place, scale_in_place


def exponents_across(dtype):
    """Scalings from below the smallest subnormal power of two to beyond twice the largest."""
    info = np.finfo(dtype)
    tiny = info.minexp - info.nmant
    return sorted({*range(tiny - 3, tiny + 30), *range(-30, 30), *range(info.maxexp - 30, 2 * info.maxexp + 3),
                   -info.maxexp - 1, -info.maxexp, info.minexp - 1})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_in_place_gives_the_bits_of_ldexp(dtype):
    info = np.finfo(dtype)
    rng = np.random.default_rng(0)
    for magnitude in (info.minexp - info.nmant, info.minexp - 2, -3, 0, 5, info.maxexp - 2):
        x = (rng.standard_normal(300) * 2.0 ** magnitude).astype(dtype)
        x[:4] = [0.0, -0.0, info.smallest_subnormal, -info.max]
        for k in exponents_across(dtype):
            with np.errstate(over="ignore", under="ignore"):
                expected = np.ldexp(x, k)
                scaled = x.copy()
                scale_in_place(scaled, k)
            np.testing.assert_array_equal(scaled.view(f"u{info.bits // 8}"), expected.view(f"u{info.bits // 8}"))


@pytest.mark.parametrize("values, exponent", [([-3.0, 2.0], 2), ([0.0, -0.0], 0), ([1.0, np.nan], 0),
                                              ([np.inf, 2.0], 0), ([-np.inf], 0), ([0.75, -0.25], 0)])
def test_max_exponent_of_the_largest_magnitude(values, exponent):
    for dtype in (np.float32, np.float64):
        assert max_exponent(np.array(values, dtype=dtype)) == exponent


def test_normalize_in_place_puts_the_largest_entry_in_half_to_one():
    values = np.array([[3e-40, -7e-39], [1e-41, 0.0]], dtype=np.float32)  # subnormal float32
    exponent = normalize_in_place(values)
    assert 0.5 <= np.abs(values).max() < 1
    np.testing.assert_array_equal(np.ldexp(values, exponent), np.array([[3e-40, -7e-39], [1e-41, 0.0]], np.float32))
    rows = np.array([[1e300, -3e300], [2.0, 0.5]])
    np.testing.assert_array_equal(max_exponent(rows, axis=-1, keepdims=True), [[999], [2]])
