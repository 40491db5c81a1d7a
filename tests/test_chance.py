"""Chance levels against their analytic values and against direct Monte Carlo constructions."""

import numpy as np
import pytest

from qkalign.linalg.blas_threads import on_cores
from qkalign.stats.chance import chance_levels, random_principal_cosines, random_symmetric_spectra, z_score
from qkalign.testing.dense import dense_operators, spectra_by_magnitude

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
    return dense_operators(q[:, None], k[:, None])[:, 0]  # each sample a one-head layer


def test_operator_cos_sd_is_one_over_n(levels, gaussian_operators):
    g = gaussian_operators.reshape(300, 2, -1)
    cos = np.einsum("sx,sx->s", g[:, 0], g[:, 1]) / np.linalg.norm(g[:, 0], axis=1) / np.linalg.norm(g[:, 1], axis=1)
    assert abs(cos.mean() - levels["operator_cos"].mean) < 4 * levels["operator_cos"].sd / np.sqrt(300)
    resid = np.sqrt(1 - cos**2)  # the scalar-rescale residual's analytic level, 1 - 1/(2 n^2)
    assert abs(resid.mean() - levels["resid_frac"].mean) < 4 * resid.std() / np.sqrt(300)
    # sd of a sample sd from 300 draws is ~4%; the large-n formula is good to O(1/n) ~ 2%.
    assert cos.std() == pytest.approx(levels["operator_cos"].sd, rel=0.15)


def dense_spectra(operators, length):
    """Nonzero spectra of the symmetric parts by dense eigh, |lambda|-sorted: (s, n, n) -> (s, length)."""
    return spectra_by_magnitude(operators)[0][:, :length]


@pytest.fixture(scope="module")
def dense_lam(gaussian_operators):
    return dense_spectra(gaussian_operators, 2 * D)


def test_spectra_from_bidiagonal_factors_match_dense_eigh(levels, dense_lam):
    lam = dense_lam
    sampled = random_symmetric_spectra(D, N, 4000, np.random.default_rng(3))
    # Same distribution: compare the mean |lambda| profile (standard error ~ 2% here) and the
    # sorted signed spectrum, which sees the positive (U) and negative (V) sides apart.
    np.testing.assert_allclose(np.abs(sampled).mean(0), np.abs(lam).mean(0), rtol=0.06)
    np.testing.assert_allclose(np.sort(sampled, axis=1).mean(0), np.sort(lam, axis=1).mean(0), rtol=0.06)
    np.testing.assert_allclose(np.sort(sampled, axis=1).std(0), np.sort(lam, axis=1).std(0), rtol=0.1)
    # Sylvester: d positive and d negative in every sample.
    assert np.all((sampled > 0).sum(axis=1) == D) and np.all((lam > 0).sum(axis=1) == D)
    assert levels["frac_positive"].mean == (lam > 0).mean() and levels["frac_positive"].method == "analytic"


@pytest.mark.parametrize("d, n", [(3, 6), (4, 9), (4, 6)])
def test_spectra_at_and_below_n_equal_2d_match_dense_eigh(d, n):
    """n = 2d leaves B_V with d degrees of freedom; n < 2d takes the dense path."""
    rng = np.random.default_rng(8)
    g = dense_operators(rng.standard_normal((4000, 1, d, n)), rng.standard_normal((4000, 1, d, n)))[:, 0]
    lam = dense_spectra(g, 2 * d)
    sampled = random_symmetric_spectra(d, n, 4000, np.random.default_rng(9))
    assert sampled.shape == lam.shape == (4000, min(2 * d, n))
    np.testing.assert_allclose(np.sort(sampled, axis=1).mean(0), np.sort(lam, axis=1).mean(0), rtol=0.1, atol=0.05)


def test_spectral_levels_match_dense_sampling(levels, dense_lam):
    """Every spectrum-based level against the same statistic over pairs of densely formed operators."""
    lam = dense_lam
    i, j = np.triu_indices(len(lam), k=1)
    a, b = lam[i], lam[j]
    for q, kk in enumerate((2, 4, 8)):
        agree = (np.sign(a[:, :kk]) == np.sign(b[:, :kk])).mean(axis=1)
        assert levels["sign_agreement"].sd[q] == pytest.approx(agree.std(), rel=0.1)
    for name, x, y in (("spectral_cos", a, b), ("spectral_abs_cos", np.abs(a), np.abs(b))):
        c = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
        assert levels[name].mean == pytest.approx(c.mean(), abs=0.3 * c.std()), name
        # A pair statistic's sd from 400 (600) draws scatters by ~6% (|lambda| cosine, heavy-tailed).
        assert levels[name].sd == pytest.approx(c.std(), rel=0.2), name
    mass = lam.sum(1) / np.abs(lam).sum(1)
    assert levels["signed_mass"].sd == pytest.approx(mass.std(), rel=0.1)
    pos = (lam[:, :K] > 0).mean(1)
    assert levels["frac_positive_topk"].sd == pytest.approx(pos.std(), rel=0.1)


def test_mirrored_pair_statistics_are_those_of_all_pairs_of_draws_and_mirrors():
    """The Gram-matrix shortcut against the definition: every pair of distinct draws among
    the spectra and their mirror images, a draw never paired with its own mirror."""
    seed, samples, kv = 2, 30, (2, 4, 8)
    got = chance_levels(D, N, K, kv, seed=seed, spectra_samples=samples, subspace_samples=10)
    rng = np.random.default_rng(seed)
    random_principal_cosines(N, K, 10, rng)  # the draws chance_levels makes first
    spectra = random_symmetric_spectra(D, N, samples, rng)
    both = np.concatenate([spectra, -spectra])
    i, j = np.triu_indices(2 * samples, k=1)
    keep = j != i + samples
    a, b = both[i[keep]], both[j[keep]]
    for q, kk in enumerate(kv):
        agree = (np.sign(a[:, :kk]) == np.sign(b[:, :kk])).mean(axis=1)
        assert got["sign_agreement"].mean[q] == pytest.approx(agree.mean(), abs=1e-14)
        assert got["sign_agreement"].sd[q] == pytest.approx(agree.std(), abs=1e-14)
    for name, x, y in (("spectral_cos", a, b), ("spectral_abs_cos", np.abs(a), np.abs(b))):
        c = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
        assert got[name].mean == pytest.approx(c.mean(), abs=1e-14)
        assert got[name].sd == pytest.approx(c.std(), rel=1e-10)
    mass = both.sum(1) / np.abs(both).sum(1)
    assert got["signed_mass"].sd == pytest.approx(mass.std(), rel=1e-12) and abs(got["signed_mass"].mean) < 1e-15


def test_on_cores_gives_the_single_call_result():
    m = np.random.default_rng(1).standard_normal((7, 30, 30))
    m = m + np.swapaxes(m, -1, -2)
    chunked = on_cores(np.linalg.eigvalsh, m)
    # Bit for bit what each matrix gives alone (single-threaded BLAS either way), in order.
    one_by_one = on_cores(lambda x: np.concatenate([np.linalg.eigvalsh(y[None]) for y in x]), m)
    np.testing.assert_array_equal(chunked, one_by_one)
    np.testing.assert_allclose(chunked, np.linalg.eigvalsh(m), rtol=0, atol=1e-12)


def test_principal_cosines_mc_matches_direct_haar_sampling(levels):
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((20000, N, K)))
    direct = np.linalg.svd(q[:, :K, :], compute_uv=False)
    assert levels["pa_mean_cos"].mean == pytest.approx(direct.mean(), abs=3e-3)
    assert levels["pa_min_cos"].mean == pytest.approx(direct.min(axis=1).mean(), abs=3e-3)
    sampled = random_principal_cosines(N, K, 20000, np.random.default_rng(9))
    # The analytic E[mean cos^2] = k/n, within the Monte Carlo error.
    assert (sampled**2).mean() == pytest.approx(K / N, abs=4 * (sampled**2).mean(axis=1).std() / np.sqrt(20000))
    direct_sq = (direct**2).mean(axis=1)
    assert levels["pa_mean_cos_sq"].mean == pytest.approx(direct_sq.mean(), abs=4 * direct_sq.std() / np.sqrt(20000))


def test_top1_overlap_is_beta_half(levels):
    rng = np.random.default_rng(6)
    u = rng.standard_normal((50000, N))
    v = rng.standard_normal((50000, N))
    c2 = np.einsum("si,si->s", u, v) ** 2 / np.einsum("si,si->s", u, u) / np.einsum("si,si->s", v, v)
    assert c2.mean() == pytest.approx(levels["top1_overlap"].mean, rel=0.03)
    assert c2.std() == pytest.approx(levels["top1_overlap"].sd, rel=0.05)


def test_sign_agreement_chance_is_one_half(levels, dense_lam):
    # The level's mean is 1/2 by the symmetry Q -> -Q (mirror images make it exact); the claim
    # itself is checked on pairs of densely formed operators, which have no mirror images.
    sa = levels["sign_agreement"]
    assert len(sa.mean) == 3 and sa.method == "monte-carlo" and sa.seed == 7 and sa.samples == 400
    a, b = dense_lam[:300], dense_lam[300:]
    for q, kk in enumerate((2, 4, 8)):
        agree = (np.sign(a[:, :kk]) == np.sign(b[:, :kk])).mean(axis=1)
        assert abs(agree.mean() - sa.mean[q]) < 4 * agree.std() / np.sqrt(len(agree))


def test_levels_are_reproducible_from_their_seed():
    a = chance_levels(D, N, K, (2,), seed=1, spectra_samples=20, subspace_samples=50)
    b = chance_levels(D, N, K, (2,), seed=1, spectra_samples=20, subspace_samples=50)
    c = chance_levels(D, N, K, (2,), seed=2, spectra_samples=20, subspace_samples=50)
    assert {k: v.to_dict() for k, v in a.items()} == {k: v.to_dict() for k, v in b.items()}
    assert a["pa_mean_cos"].mean != c["pa_mean_cos"].mean and a["spectral_abs_cos"].sd != c["spectral_abs_cos"].sd


def test_z_score():
    level = chance_levels(D, N, K, (2,), spectra_samples=10, subspace_samples=10)["operator_cos"]
    assert z_score(0.5, level, 4) == pytest.approx(0.5 / (1 / N / 2))
    assert np.isnan(z_score(0.5, level.__class__(0.5, 0.0, "analytic"), 4))


def test_spectra_of_rotated_operators_match_direct_sampling():
    """The Wishart construction for ``g = K^T M Q`` against spectra of operators formed from Gaussian K, M Q,
    with M of unequal singular values (a window mean shrinks its high-frequency pairs) and with M = I."""
    from qkalign.stats.chance import _spectra_from_operators, random_symmetric_spectra

    d, n, samples = 4, 11, 4000
    rng = np.random.default_rng(5)
    sigma = np.array([[1.0, 1.0, 0.3, 0.05], [1.0, 0.5, 0.5, 0.1]])
    got = np.abs(random_symmetric_spectra(d, n, samples, rng, operator_scales=sigma))
    # direct: M = U diag(σ) V^T with random orthogonal U, V, one of the two layers per draw
    which = rng.integers(2, size=samples)
    u = np.linalg.qr(rng.standard_normal((samples, d, d)))[0]
    v = np.linalg.qr(rng.standard_normal((samples, d, d)))[0]
    m = u @ (sigma[which][:, :, None] * np.swapaxes(v, -1, -2))
    k, q = rng.standard_normal((2, samples, d, n))
    lam = _spectra_from_operators(k, m @ q)
    want = np.take_along_axis(lam, np.argsort(-np.abs(lam), axis=-1), axis=-1)[:, :2 * d]
    want = np.abs(want)
    # each mean |λ_i| of 4000 draws: within 5 standard errors of the two samples' difference
    se = np.sqrt(got.var(axis=0) / samples + want.var(axis=0) / samples)
    assert np.all(np.abs(got.mean(axis=0) - want.mean(axis=0)) <= 5 * se), (got.mean(0), want.mean(0), se)
    # and the shrunk operator's spectrum differs from M = I's far beyond that
    plain = np.abs(random_symmetric_spectra(d, n, samples, rng))
    spread = got.mean(axis=0)[-1] / got.mean(axis=0)[0]  # smallest over largest mean |λ|: ~0.013 here
    assert plain.mean(axis=0)[-1] / plain.mean(axis=0)[0] > 3 * spread  # ~0.06 for M = I
    # rank-deficient heads (n < 2 d) take the direct route with the same scales
    small = random_symmetric_spectra(d, 6, 10, rng, operator_scales=sigma)
    assert small.shape == (10, 6)
