"""The numpy reference against independent float64 constructions: dense operators and scipy."""

import numpy as np
import pytest
import scipy.linalg

from qkalign import analyze
from qkalign.stats import reference
from qkalign.stats.analyze import layer_ranges, normalize_anchor
from qkalign.testing.dense import dense_operators, spectra_by_magnitude
from qkalign.weights.synthetic import SyntheticSpec, make_weights, qkdata_from_weights

SPEC = SyntheticSpec(5, 4, 2, 4, 20, topk=5, drift=0.3, seed=11)


@pytest.fixture(scope="module")
def dense():
    """Dense g = W_K^T W_Q of every (layer, head), (L, H, n, n) float64, the weights per query head,
    and the QKData from factors."""
    w_q, w_k = make_weights(SPEC)
    q = w_q.astype(np.float64)
    k = np.repeat(w_k.astype(np.float64), SPEC.num_heads // SPEC.num_kv_heads, axis=1)
    return dense_operators(w_q, w_k), q, k, qkdata_from_weights(w_q, w_k, SPEC.topk)


def test_gram_is_the_frobenius_product_of_dense_operators(dense):
    g, _, _, data = dense
    gram = np.einsum("lhij,mhij->lmh", g, g)
    np.testing.assert_allclose(data.gram, gram, rtol=1e-12, atol=0)


def test_fro_sq_is_the_seeds_wk_wq_transpose_norm(dense):
    _, q, k, data = dense
    expected = np.einsum("lhij->lh", np.einsum("lhdn,lhen->lhde", k, q) ** 2)
    np.testing.assert_allclose(data.fro_sq, expected, rtol=1e-12)


def test_sym_eigs_and_eig_dirs_match_dense_eigh(dense):
    g, _, _, data = dense
    lam, vec = spectra_by_magnitude(g)
    two_d = 2 * SPEC.head_dim
    scale = np.abs(lam[..., :1])
    np.testing.assert_allclose(data.sym_eigs, lam[..., :two_d], rtol=0, atol=1e-12 * scale.max())
    # Eigenvectors agree up to sign (the spectra here have no repeated |lambda|).
    dots = np.einsum("lhkn,lhnk->lhk", data.eig_dirs, vec[..., : SPEC.topk])
    np.testing.assert_allclose(np.abs(dots), 1.0, atol=1e-9)
    # Sylvester's law of inertia: d positive and d negative eigenvalues.
    assert np.all((data.sym_eigs > 0).sum(axis=-1) == SPEC.head_dim)


def test_cosine_rescale_and_residual_against_dense_least_squares(dense):
    g, _, _, data = dense
    anchor = 2
    result = analyze(data, anchor=anchor, backend="numpy")
    flat = g.reshape(g.shape[0], g.shape[1], -1)
    ga = flat[anchor]
    cos = np.einsum("lhx,hx->lh", flat, ga) / (np.linalg.norm(flat, axis=-1) * np.linalg.norm(ga, axis=-1))
    t = np.einsum("lhx,hx->lh", flat, ga) / np.einsum("hx,hx->h", ga, ga)
    resid = np.linalg.norm(flat - t[..., None] * ga[None], axis=-1) / np.linalg.norm(flat, axis=-1)
    np.testing.assert_allclose(result.operator_cos_per_head[:, anchor], cos, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(result.to_anchor["t_opt"], t.mean(axis=1), rtol=1e-12)
    # sqrt(1 - cos^2) from a gram cannot resolve residuals below ~sqrt(eps) = 1.5e-8 (at the anchor).
    np.testing.assert_allclose(result.rescale["mean_resid"], resid.mean(axis=1), rtol=1e-9, atol=3e-8)
    np.testing.assert_allclose(result.to_anchor["resid_frac"], np.sqrt(1 - cos.mean(axis=1) ** 2), rtol=1e-9, atol=3e-8)
    assert result.rescale["mean_resid"][anchor] < 3e-8


def test_principal_cosines_match_scipy_subspace_angles():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 2, 6, 30))  # not orthonormal: the reference orthonormalises
    got = reference.principal_cosines_to_anchor(a, anchor=1)
    for layer in range(3):
        for head in range(2):
            theta = scipy.linalg.subspace_angles(a[layer, head].T, a[1, head].T)
            np.testing.assert_allclose(got[layer, head], np.sort(np.cos(theta))[::-1], rtol=0, atol=1e-13)


def test_principal_cosines_of_nearly_coincident_subspaces_keep_their_sines():
    rng = np.random.default_rng(1)
    qa, _ = np.linalg.qr(rng.standard_normal((50, 4)))
    # Rotate span(qa) by tiny, known angles toward orthogonal directions.
    perp, _ = np.linalg.qr(rng.standard_normal((50, 4)) - qa @ (qa.T @ rng.standard_normal((50, 4))))
    perp -= qa @ (qa.T @ perp)
    perp, _ = np.linalg.qr(perp)
    angles = np.array([1e-9, 1e-7, 1e-5, 0.3])
    qb = qa * np.cos(angles) + perp * np.sin(angles)
    np.testing.assert_allclose(reference.principal_cosines(qa, qb), np.cos(angles), rtol=0, atol=2e-16)
    # Angles from the sines resolve 1e-9; arccos of svd(qa^T qb) would give 0 or ~1e-8 there.
    np.testing.assert_allclose(reference.principal_angles(qa, qb), angles, rtol=1e-6)


def test_top1_overlap_is_normalised():
    rng = np.random.default_rng(2)
    dirs = rng.standard_normal((2, 3, 2, 10))
    got = reference.top1_overlap(dirs, anchor=0)
    a, b = dirs[1, 2, 0], dirs[0, 2, 0]
    assert got[1, 2] == pytest.approx((a @ b) ** 2 / (a @ a) / (b @ b), rel=1e-13)
    np.testing.assert_allclose(got[0], 1.0, rtol=1e-13)


def test_sign_agreement_and_fraction_positive_against_a_loop():
    rng = np.random.default_rng(3)
    eigs = rng.standard_normal((4, 3, 8))
    eigs[1, 2, 3] = 0.0
    k_values = (2, 4, 8)
    got = reference.sign_agreement(eigs, 3, k_values)
    for i, k in enumerate(k_values):
        for layer in range(4):
            for head in range(3):
                same = [np.sign(eigs[layer, head, j]) == np.sign(eigs[3, head, j]) for j in range(k)]
                assert got[i, layer, head] == pytest.approx(sum(same) / k, abs=0)
    np.testing.assert_array_equal(reference.fraction_positive(eigs), [(eigs[l] > 0).mean() for l in range(4)])


@pytest.mark.parametrize("num_layers, expected", [
    (36, {"early": (0, 12), "mid": (12, 24), "late": (24, 36)}),
    (10, {"early": (0, 4), "mid": (4, 7), "late": (7, 10)}),
    (2, {"early": (0, 1), "mid": (1, 2), "late": (2, 2)}),
])
def test_layer_ranges_are_thirds(num_layers, expected):
    assert layer_ranges(num_layers) == expected


def test_anchor_follows_python_indexing():
    assert [normalize_anchor(a, 5) for a in (-1, -2, -5, 0, 4)] == [4, 3, 0, 0, 4]
    for bad in (5, -6, 1.0, True):
        with pytest.raises(ValueError, match="--anchor"):
            normalize_anchor(bad, 5)
