"""Spectral similarity and inertia-aware sign statistics against dense float64 operators."""

import numpy as np
import pytest

from qkalign.stats import reference
from qkalign.testing.dense import dense_operators, spectra_by_magnitude
from qkalign.weights.synthetic import SyntheticSpec, make_weights, qkdata_from_weights

SPEC = SyntheticSpec(4, 4, 2, 3, 16, topk=4, drift=0.4, seed=21)


@pytest.fixture(scope="module")
def dense():
    w_q, w_k = make_weights(SPEC)
    g = dense_operators(w_q, w_k)
    lam = spectra_by_magnitude(g)[0][..., : 2 * SPEC.head_dim]
    return g, lam, qkdata_from_weights(w_q, w_k, SPEC.topk)


@pytest.mark.parametrize("absolute", [False, True])
def test_spectral_cos_against_dense_spectra(dense, absolute):
    _, lam, data = dense
    v = np.abs(lam) if absolute else lam
    for a in range(SPEC.num_layers):
        for b in range(SPEC.num_layers):
            for h in range(SPEC.num_heads):
                expected = v[a, h] @ v[b, h] / np.linalg.norm(v[a, h]) / np.linalg.norm(v[b, h])
                got = reference.spectral_cos_all_pairs(data.sym_eigs, absolute=absolute)[a, b, h]
                assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_signed_mass_is_trace_over_spectral_l1(dense):
    g, lam, data = dense
    expected = np.trace(g, axis1=-2, axis2=-1) / np.abs(lam).sum(axis=-1)
    np.testing.assert_allclose(reference.signed_mass(data.sym_eigs), expected, rtol=1e-9, atol=1e-12)


def test_fraction_positive_topk_and_full_spectrum_check(dense):
    _, lam, data = dense
    np.testing.assert_array_equal(reference.fraction_positive_topk(data.sym_eigs, 4), (lam[..., :4] > 0).mean(-1))
    # Sylvester's law of inertia: the full-spectrum fraction is 1/2 for full-rank heads.
    np.testing.assert_array_equal(reference.fraction_positive(data.sym_eigs), 0.5)
