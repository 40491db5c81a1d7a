"""The fast paths of head matching against the plain reference computation they replace.

``match_heads`` orthonormalises by Cholesky-QR (Householder QR where the rows are far from
orthonormal), forms the head-pair blocks from one GEMM per layer pair and takes principal
cosines as singular values of those blocks; ``matched_chance`` samples Haar subspaces in
R^(2 H k). Here the same numbers come from ``reference.orthonormal_bases`` and
``reference.principal_cosines`` (Knyazev-Argentati), head pair by head pair.
"""

from dataclasses import replace

import numpy as np
import pytest

from qkalign.stats import reference
from qkalign.stats.head_matching import best_assignment, match_heads, matched_chance, orthonormal_rows, row_factors
from qkalign.weights.synthetic import SyntheticSpec, make_qkdata

STAT_KEYS = ("pa_mean_cos", "pa_min_cos", "top1_overlap", "spectral_cos", "spectral_abs_cos", "sign_agreement",
             "heads_moved")


def reference_match(data, anchor, k_values):
    """The matching computed the plain way: Householder bases, SVD-free similarity loops, KA cosines."""
    bases = reference.orthonormal_bases(data.eig_dirs)  # (L, H, n, k)
    heads = np.arange(data.num_heads)
    out = {}
    for name, pairs in (("to_anchor", [(layer, anchor) for layer in range(data.num_layers)]),
                        ("adjacent", [(layer, layer + 1) for layer in range(data.num_layers - 1)])):
        rows = {key: [] for key in ("assignment",) + STAT_KEYS}
        for a, b in pairs:
            sim = np.array([[np.sum((bases[a, h].T @ bases[b, g]) ** 2) / data.topk for g in heads] for h in heads])
            perm = best_assignment(sim)
            cos = reference.principal_cosines(bases[a, heads], bases[b, perm])
            a0, b0 = data.eig_dirs[a, heads, 0], data.eig_dirs[b, perm, 0]
            top1 = (a0 * b0).sum(1) ** 2 / (a0 * a0).sum(1) / (b0 * b0).sum(1)
            ea, eb = data.sym_eigs[a, heads], data.sym_eigs[b, perm]

            def cosine(x, y):
                return ((x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)).mean()

            rows["assignment"].append(perm)
            rows["pa_mean_cos"].append(cos.mean())
            rows["pa_min_cos"].append(cos.min(axis=1).mean())
            rows["top1_overlap"].append(top1.mean())
            rows["spectral_cos"].append(cosine(ea, eb))
            rows["spectral_abs_cos"].append(cosine(np.abs(ea), np.abs(eb)))
            rows["sign_agreement"].append([(np.sign(ea[:, :k]) == np.sign(eb[:, :k])).mean() for k in k_values])
            rows["heads_moved"].append((perm != heads).sum())
        out[name] = {key: np.array(value) for key, value in rows.items()}
    return out


def assert_same_matching(got, expected):
    for block in ("to_anchor", "adjacent"):
        np.testing.assert_array_equal(got[block]["assignment"], expected[block]["assignment"])
        for key in STAT_KEYS:
            np.testing.assert_allclose(got[block][key], expected[block][key], rtol=0, atol=1e-12, err_msg=key)


@pytest.fixture(scope="module")
def data():
    return make_qkdata(SyntheticSpec(6, 6, 3, 8, 48, topk=5, drift=0.3, seed=12))


@pytest.fixture(scope="module")
def data_with_dependent_rows(data):
    """Some heads' rows made nearly dependent (cond ~1e3): Cholesky-QR must hand them to Householder."""
    dirs = data.eig_dirs.copy()
    rng = np.random.default_rng(0)
    for layer, head in ((0, 1), (2, 0), (5, 5), (5, 2)):
        block = dirs[layer, head]
        block[1:] = block[0] + 1e-3 * block[1:] + 1e-4 * rng.standard_normal(block[1:].shape)
    return replace(data, eig_dirs=dirs)


@pytest.mark.parametrize("anchor", [0, 5])
def test_match_heads_equals_the_reference_computation(data, anchor):
    assert row_factors(data.eig_dirs)[1].all()  # every head on the Cholesky-QR path
    assert_same_matching(match_heads(data, anchor, (2, 8, 16)), reference_match(data, anchor, (2, 8, 16)))


def test_householder_fallback_equals_the_reference_computation(data_with_dependent_rows):
    ok = row_factors(data_with_dependent_rows.eig_dirs)[1]
    assert ok.sum() == ok.size - 4 and not ok[0, 1] and not ok[5, 5]
    assert_same_matching(match_heads(data_with_dependent_rows, 5, (2, 4)),
                         reference_match(data_with_dependent_rows, 5, (2, 4)))


def test_orthonormal_rows_span_the_rows(data_with_dependent_rows):
    dirs = data_with_dependent_rows.eig_dirs
    factors, ok = row_factors(dirs)
    rows = orthonormal_rows(dirs, factors, ok)
    k = dirs.shape[2]
    np.testing.assert_allclose(rows @ np.swapaxes(rows, -1, -2), np.broadcast_to(np.eye(k), ok.shape + (k, k)),
                               atol=1e-14)
    bases = reference.orthonormal_bases(dirs)
    # Same subspaces: equal orthogonal projectors.
    np.testing.assert_allclose(np.swapaxes(rows, -1, -2) @ rows, bases @ np.swapaxes(bases, -1, -2), atol=1e-12)


def test_identical_layers_give_cosines_of_one(data):
    dirs = data.eig_dirs.copy()
    dirs[3] = dirs[5]
    matched = match_heads(replace(data, eig_dirs=dirs), 5, (2,))
    np.testing.assert_array_equal(matched["to_anchor"]["assignment"][3], np.arange(data.num_heads))
    assert matched["to_anchor"]["pa_min_cos"][3] == pytest.approx(1.0, abs=1e-14)


def test_matched_chance_in_reduced_dimension_matches_direct_haar_sampling():
    """hidden > 2 H k: subspaces drawn in R^(2 H k) (Bartlett) against Haar subspaces of R^hidden directly."""
    num_heads, hidden, k, trials = 4, 60, 3, 400
    mean, sd = matched_chance(num_heads, hidden, k, trials=trials, seed=3)
    rng = np.random.default_rng(4)
    direct = []
    for _ in range(trials):
        bases, _ = np.linalg.qr(rng.standard_normal((2, num_heads, hidden, k)))
        sim = np.einsum("hnk,gnj->hgkj", bases[0], bases[1]) ** 2
        perm = best_assignment(sim.sum(axis=(2, 3)) / k)
        direct.append(reference.principal_cosines(bases[0], bases[1, perm]).mean())
    # Two independent estimates of the same mean: within 4 standard errors of their difference.
    assert abs(mean - np.mean(direct)) < 4 * np.hypot(sd, np.std(direct)) / np.sqrt(trials)
    assert sd == pytest.approx(np.std(direct), rel=0.2)
