"""Head matching finds a permutation of heads and reports the matched statistics."""

import numpy as np
import pytest

from qkalign.stats.head_matching import best_assignment, match_heads, matched_chance
from qkalign.weights.synthetic import SyntheticSpec, make_weights, qkdata_from_weights

PERM = np.array([2, 0, 3, 1])


@pytest.fixture(scope="module")
def permuted():
    """Layer 1 is layer 0 with its heads reordered by PERM (head h of layer 1 = head PERM[h] of layer 0)."""
    spec = SyntheticSpec(3, 4, 4, 3, 20, topk=3, drift=1.0, seed=4)
    w_q, w_k = make_weights(spec)
    w_q[1], w_k[1] = w_q[0, PERM], w_k[0, PERM]
    return qkdata_from_weights(w_q, w_k, spec.topk)


def test_matching_recovers_the_permutation(permuted):
    matched = match_heads(permuted, anchor=0, k_values=(2, 4))
    np.testing.assert_array_equal(matched["to_anchor"]["assignment"][1], PERM)
    np.testing.assert_array_equal(matched["to_anchor"]["assignment"][0], np.arange(4))
    assert matched["to_anchor"]["pa_mean_cos"][1] == pytest.approx(1.0, abs=1e-9)
    assert matched["to_anchor"]["spectral_cos"][1] == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(matched["to_anchor"]["sign_agreement"][1], [1.0, 1.0])
    assert matched["to_anchor"]["heads_moved"][1] == 4
    # Adjacent pair (0, 1) is the same permutation, seen from layer 0: its inverse.
    np.testing.assert_array_equal(PERM[matched["adjacent"]["assignment"][0]], np.arange(4))


def test_best_assignment_maximises_the_sum():
    sim = np.array([[0.1, 0.9, 0.0], [0.8, 0.7, 0.1], [0.0, 0.2, 0.3]])
    np.testing.assert_array_equal(best_assignment(sim), [1, 0, 2])


def test_selection_alone_raises_matched_similarity_above_index_chance():
    mean, sd = matched_chance(num_heads=8, hidden=40, k=3, trials=10, seed=1)
    # Index-matched chance for n = 40, k = 3 is ~0.17 (Haar); a best assignment over 8! pairs is higher.
    assert 0.2 < mean < 0.6 and sd > 0
