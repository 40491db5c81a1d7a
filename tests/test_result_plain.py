"""``plain`` and ``unplain`` (a result to JSON's containers and back): the one-numpy-call paths give what the
leaf-by-leaf definition gives, on every kind of list a result or a hand-edited JSON may hold."""

import json
import math

import numpy as np
import pytest

from qkalign.stats.result import plain, unplain


@pytest.mark.parametrize("value, key, expected", [
    ([1, 2, 3], None, np.array([1, 2, 3], dtype=np.int64)),
    ([1, 2, 3], "k", [1, 2, 3]),  # values of k stay a list
    ([[1.5, 2], [3, 4]], None, np.array([[1.5, 2.0], [3.0, 4.0]])),
    ([1.0, None], None, np.array([1.0, np.nan])),
    ([[1, None], [None, 2]], "k", np.array([[1.0, np.nan], [np.nan, 2.0]])),
    ([], None, []),
    ([[]], None, [[]]),
    ([True, False], None, [True, False]),
    ([True, 2], None, [True, 2]),  # numpy would read integers; a bool keeps the list a list
    (["a", "b"], None, ["a", "b"]),
    ([[1, 2], [3]], None, [np.array([1, 2]), np.array([3])]),  # ragged: each row on its own
    ([{"a": [1.0, 2.0]}], None, [{"a": np.array([1.0, 2.0])}]),
    ("text", None, "text"),
])
def test_unplain(value, key, expected):
    got = unplain(value, key)
    assert type(got) is type(expected)
    if isinstance(expected, np.ndarray):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
    elif isinstance(expected, list) and expected and isinstance(expected[0], np.ndarray):
        assert all(np.array_equal(g, e) and g.dtype == e.dtype for g, e in zip(got, expected))
    elif isinstance(expected, list) and expected and isinstance(expected[0], dict):
        np.testing.assert_array_equal(got[0]["a"], expected[0]["a"])
    else:
        assert got == expected


@pytest.mark.parametrize("array", [
    np.array([[0.1, 2.0], [3.0, -4.5]]),
    np.array([1.0, np.nan, np.inf, -np.inf]),
    np.arange(6, dtype=np.int32).reshape(2, 3),
    np.array([True, False]),
    np.array([1.0, 2.0], dtype=np.float32),
    np.zeros(0),
])
def test_plain_arrays_as_json_values(array):
    """Each element as Python's float (or int, bool), non-finite as None: what ``float(x)`` per element gives."""
    expected = [None if isinstance(v, float) and not math.isfinite(v) else v for v in array.ravel().tolist()]
    got = plain(array)
    flat = np.array(got, dtype=object).ravel().tolist() if array.size else []
    assert flat == expected and np.shape(got) == array.shape
    assert all(type(g) is type(e) for g, e in zip(flat, expected))
    json.dumps(got, allow_nan=False)


def test_round_trip_of_a_cube_with_gaps():
    cube = np.random.default_rng(0).normal(size=(4, 4, 3))
    cube[1, 2, 0] = np.nan
    back = unplain(json.loads(json.dumps(plain({"per_head": cube})))["per_head"])
    np.testing.assert_array_equal(back, cube)
