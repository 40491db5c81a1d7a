"""Chance levels against their analytic values and against direct Monte Carlo constructions."""

import numpy as np
import pytest

from qkalign.chance import chance_levels, random_principal_cosines, random_symmetric_spectra, z_score

N, D, K = 48, 4, 5


@pytest.fixture(scope="module")
def levels():
    return chance_levels(D, N, K, (2, 4, 8), seed=7, spectra_samples=400, subspace_samples=20000)


@pytest.fixture(scope="module")
def gaussian_operators():
    """Independent g = K^T Q with i.i.d. Gaussian K, Q (d x n), formed densely: (600, n, n)."""
    rng = np.random.default_rng(11)
    k = rng.standard_normal((600, D, N))
    q = rng.standard_normal((600, D, N))
    return np.einsum("sdi,sdj->sij", k, q)


def test_operator_cos_sd_is_one_over_n(levels, gaussian_operators):
    g = gaussian_operators.reshape(300, 2, -1)
    cos = np.einsum("sx,sx->s", g[:, 0], g[:, 1]) / np.linalg.norm(g[:, 0], axis=1) / np.linalg.norm(g[:, 1], axis=1)
    assert levels["operator_cos"].mean == 0.0
    assert abs(cos.mean()) < 4 * levels["operator_cos"].sd / np.sqrt(300)
    # sd of a sample sd from 300 draws is ~4%; the large-n formula is good to O(1/n) ~ 2%.
    assert cos.std() == pytest.approx(levels["operator_cos"].sd, rel=0.15)


def test_spectra_from_bartlett_match_dense_eigh(levels, gaussian_operators):
    sym = (gaussian_operators + np.swapaxes(gaussian_operators, -1, -2)) / 2
    lam = np.linalg.eigvalsh(sym)
    lam = np.take_along_axis(lam, np.argsort(-np.abs(lam), axis=-1), axis=-1)[:, : 2 * D]
    sampled = random_symmetric_spectra(D, N, 4000, np.random.default_rng(3))
    # Same distribution: compare the mean |lambda| profile (standard error ~ 2% here).
    np.testing.assert_allclose(np.abs(sampled).mean(0), np.abs(lam).mean(0), rtol=0.06)
    # Sylvester: d positive and d negative in every sample.
    assert np.all((sampled > 0).sum(axis=1) == D) and np.all((lam > 0).sum(axis=1) == D)
    assert levels["frac_positive"].mean == 0.5 and levels["frac_positive"].method == "analytic"


def test_principal_cosines_mc_matches_direct_haar_sampling(levels):
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((20000, N, K)))
    direct = np.linalg.svd(q[:, :K, :], compute_uv=False)
    assert levels["pa_mean_cos"].mean == pytest.approx(direct.mean(), abs=3e-3)
    assert levels["pa_min_cos"].mean == pytest.approx(direct.min(axis=1).mean(), abs=3e-3)
    sampled = random_principal_cosines(N, K, 20000, np.random.default_rng(9))
    # The analytic E[mean cos^2] = k/n, within the Monte Carlo error.
    assert (sampled**2).mean() == pytest.approx(K / N, abs=4 * (sampled**2).mean(axis=1).std() / np.sqrt(20000))
    assert levels["pa_mean_cos_sq"].mean == K / N


def test_top1_overlap_is_beta_half(levels):
    rng = np.random.default_rng(6)
    u = rng.standard_normal((50000, N))
    v = rng.standard_normal((50000, N))
    c2 = np.einsum("si,si->s", u, v) ** 2 / np.einsum("si,si->s", u, u) / np.einsum("si,si->s", v, v)
    assert c2.mean() == pytest.approx(levels["top1_overlap"].mean, rel=0.03)
    assert c2.std() == pytest.approx(levels["top1_overlap"].sd, rel=0.05)


def test_sign_agreement_chance_is_one_half(levels):
    sa = levels["sign_agreement"]
    assert len(sa.mean) == 3 and sa.method == "monte-carlo" and sa.seed == 7 and sa.samples == 400
    for mean, sd in zip(sa.mean, sa.sd):
        assert mean == pytest.approx(0.5, abs=0.03) and 0 < sd < 0.5


def test_levels_are_reproducible_from_their_seed():
    a = chance_levels(D, N, K, (2,), seed=1, spectra_samples=20, subspace_samples=50)
    b = chance_levels(D, N, K, (2,), seed=1, spectra_samples=20, subspace_samples=50)
    assert {k: v.to_dict() for k, v in a.items()} == {k: v.to_dict() for k, v in b.items()}


def test_z_score():
    level = chance_levels(D, N, K, (2,), spectra_samples=10, subspace_samples=10)["operator_cos"]
    assert z_score(0.5, level, 4) == pytest.approx(0.5 / (1 / N / 2))
    assert np.isnan(z_score(0.5, level.__class__(0.5, 0.0, "analytic"), 4))
