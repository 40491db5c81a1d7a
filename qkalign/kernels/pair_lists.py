"""Lists of layer pairs ``(first[q], second[q])``: the pair kernels loop over these, so one
compiled kernel serves the comparison with an anchor layer and with every layer."""

import numpy as np


def to_anchor(num_layers, anchor):
    """Pairs ``(L, anchor)`` for ``L = 0..num_layers-1``: two (L,) int64 arrays."""
    return np.arange(num_layers), np.full(num_layers, anchor)


def all_ordered(num_layers):
    """Pairs ``(i, j)`` for all ``i, j`` in row-major order: two (L*L,) int64 arrays."""
    return np.divmod(np.arange(num_layers * num_layers), num_layers)


def all_unordered(num_layers):
    """Pairs ``(i, j)`` with ``i < j``: two (L (L - 1) / 2,) int64 arrays."""
    first, second = np.triu_indices(num_layers, k=1)
    return first.astype(np.int64), second.astype(np.int64)
