"""Input checks of the public kernel functions: the kernels themselves never raise."""

import operator

import numpy as np


def float_array(value, ndim, name, check_finite=True):
    """``value`` as a C-contiguous float64 array with ``ndim`` axes, each non-empty, all finite.

    ``check_finite=False`` skips the scan for large arrays whose kernels detect
    non-finite values on their own (from the Grams).
    """
    arr = np.ascontiguousarray(value, dtype=np.float64)
    if arr.ndim != ndim or 0 in arr.shape:
        raise ValueError(f"{name} must be a non-empty {ndim}-d array, got shape {arr.shape}")
    if check_finite and not np.isfinite(arr).all():
        raise ValueError(f"{name} holds nan or inf")
    return arr


def eig_dirs_array(value):
    """``eig_dirs`` as a C-contiguous (L, H, k, n) array with ``k <= n``: float32 or float64 as
    given (the kernels widen each entry and accumulate in float64), any other type as float64.

    Not copied when it is already contiguous (a memory-mapped file stays mapped), and not
    scanned for nan/inf (it is the largest input): the principal-angle functions find them in
    the Grams.
    """
    arr = np.asarray(value)
    arr = np.ascontiguousarray(arr, dtype=arr.dtype if arr.dtype in (np.float32, np.float64) else np.float64)
    if arr.ndim != 4 or 0 in arr.shape:
        raise ValueError(f"eig_dirs must be a non-empty 4-d array, got shape {arr.shape}")
    if arr.shape[2] > arr.shape[3]:
        raise ValueError(f"eig_dirs (L, H, k, n) needs k <= n, got shape {arr.shape}")
    return arr


def layer_index(anchor, num_layers):
    """Python-style layer index (-1 = last) to ``0..num_layers-1``; IndexError out of range."""
    try:
        index = operator.index(anchor)
    except TypeError:
        raise TypeError(f"anchor must be an integer, got {anchor!r}") from None
    if not -num_layers <= index < num_layers:
        raise IndexError(f"anchor {index} is out of range for {num_layers} layers")
    return index % num_layers


def _k_range_error(k_values, spectrum_length):
    return ValueError(f"k values must lie in 1..{spectrum_length} (the spectrum length), got {list(k_values)}")


def k_value(k, spectrum_length):
    """One k as an int in ``1..spectrum_length`` (as :func:`k_value_array`, without an array)."""
    value = operator.index(k)
    if not 1 <= value <= spectrum_length:
        raise _k_range_error([value], spectrum_length)
    return value


def k_value_array(k_values, spectrum_length):
    """The sign-agreement k values as an int64 array, each in ``1..spectrum_length``."""
    ks = np.array([operator.index(k) for k in k_values], dtype=np.int64)
    if ks.size and not ((ks >= 1) & (ks <= spectrum_length)).all():
        raise _k_range_error(ks.tolist(), spectrum_length)
    return ks
