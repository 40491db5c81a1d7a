"""The chance level of Saponati et al.'s directionality ``d`` (qkalign.stats.directionality_chance): its sd against
brute force (``W = K^T M Q~`` formed from Gaussian factors), its tabulated norm laws against scipy's chi-square, and
its determinism."""

import numpy as np
import pytest
from scipy import stats
from scipy.special import ndtr

import qkalign.stats.directionality_chance as module
from qkalign.linalg.blas_threads import one_blas_thread
from qkalign.stats.directionality_chance import (
    TABLE_POINTS,
    TABLE_RANGE,
    directionality_chance,
    gram_spectrum,
    weighted_chi_square_quantiles,
)
from qkalign.weights.layer_symmetry import directionality

#: Brute-force draws per shape: each sd to ~1.6 % (one standard error).
DRAWS = 2000
#: A window mean's unequal singular values (``M`` of a rotated operator), largest 1.
WINDOW = np.abs(np.sinc(np.linspace(0, 3, 16)))


def brute_force_draws(n, kv_heads, head_dim, draws, rng, sigma=None, batch=50):
    """``d`` of ``W = K^T M Q~`` for i.i.d. Gaussian K, Q~ (r x n) and, with ``sigma``, a fresh ``M = U diag(sigma)
    V^T`` (Haar U, V) on every kv block, computed as measure computes it (Saponati's rows are W's columns)."""
    r = kv_heads * head_dim
    out = []
    with one_blas_thread():  # many small products: threads only contend
        for start in range(0, draws, batch):
            size = min(batch, draws - start)
            k, q = rng.standard_normal((2, size, r, n))
            if sigma is not None:
                u, v = (np.linalg.qr(rng.standard_normal((size, head_dim, head_dim)))[0] for _ in range(2))
                m = (u * sigma) @ np.swapaxes(v, -1, -2)
                q = (m[:, None] @ q.reshape(size, kv_heads, head_dim, n)).reshape(size, r, n)
            w = np.swapaxes(k, -1, -2) @ q
            rows, columns = np.sqrt((w * w).sum(axis=2)), np.sqrt((w * w).sum(axis=1))
            out += [directionality(c, row) for row, c in zip(rows, columns)]
    return np.array(out)


@pytest.mark.parametrize(("n", "kv_heads", "head_dim", "rotated"), [
    (64, 1, 8, False),     # r = 8: norms drawn from their terms
    (128, 4, 8, False),    # GQA-shaped, tabulated laws
    (64, 4, 32, False),    # r > n: the Gram's nonzero spectrum from the n x n side
    (256, 2, 32, False),
    (128, 2, 16, True),    # a rotated operator's unequal singular values
])
def test_sd_matches_brute_force(n, kv_heads, head_dim, rotated):
    sigma = WINDOW if rotated else None
    brute = brute_force_draws(n, kv_heads, head_dim, DRAWS, np.random.default_rng(n + kv_heads + head_dim), sigma)
    level = directionality_chance(n, kv_heads, head_dim, None if sigma is None else sigma[None, :], samples=DRAWS)
    assert level["mean"] == 0.0 and level["exact_mean"] and level["samples"] == DRAWS
    # the sd as the root mean square about the exact mean 0; its standard error from the draws' fourth moment
    # (delta method: se(sd) = se(mean d^2) / (2 sd)), the same relative error for the level's DRAWS draws
    second = np.mean(brute ** 2)
    sd = np.sqrt(second)
    se = np.sqrt((np.mean(brute ** 4) - second ** 2) / DRAWS) / (2 * sd)
    # 4 standard errors of the difference of two independent estimates (the approximation's bias is ~1 % at
    # these shapes: module docstring)
    assert abs(level["sd"] - sd) <= 4 * np.sqrt(2) * se, (level["sd"], sd, se)


@pytest.mark.parametrize("terms", [20, 300, 2000])
def test_tabulated_law_matches_the_chi_square(terms):
    """Equal weights w: X = w chi2(terms). The table's quantiles to one step of the density's grid (52 sd over
    GRID_POINTS: the cell the CDF is interpolated within) where scipy's levels are resolvable."""
    weight = 0.37
    quantiles = weighted_chi_square_quantiles(np.full(terms, weight))
    g = np.linspace(-TABLE_RANGE, TABLE_RANGE, TABLE_POINTS)
    exact = weight * np.where(g <= 0, stats.chi2.ppf(ndtr(g), terms), stats.chi2.isf(ndtr(-g), terms))
    sd = weight * np.sqrt(2 * terms)
    resolved = np.abs(g) <= 6
    assert np.all(np.abs(quantiles - exact)[resolved] <= 52 * sd / module.GRID_POINTS)
    assert np.all(np.diff(quantiles) >= 0)


def test_few_terms_are_drawn_from_their_terms():
    """Three equal weights: phi decays too slowly for the grid (None), and the law of the terms is used."""
    assert weighted_chi_square_quantiles(np.ones(3)) is None
    rng = np.random.default_rng(2)
    draws = module._squared_norms(module._norm_law(np.ones(3)), rng, (20000,))
    assert stats.kstest(draws, stats.chi2(3).cdf).pvalue > 1e-4


def test_gram_spectrum_against_dense():
    """The spectra's law: eigenvalue means of the bidiagonal and Bartlett constructions against dense Grams, each
    within 4.5 standard errors of the difference (160 comparisons)."""
    rng = np.random.default_rng(4)
    for r, n, sigma in ((12, 30, None), (40, 20, None), (12, 30, np.linspace(0.2, 1.0, 12)), (40, 20, np.ones(40))):
        ours = np.array([np.sort(gram_spectrum(rng, r, n, sigma)) for _ in range(600)])
        scale = np.ones(r) if sigma is None else sigma
        dense = np.array([np.sort(np.linalg.eigvalsh((lambda g: g @ g.T if r <= n else g.T @ g)(
            scale[:, None] * rng.standard_normal((r, n))))) for _ in range(600)])
        dense = dense[:, -min(r, n):]
        se = np.sqrt(ours.var(axis=0) / 600 + dense.var(axis=0) / 600)
        assert np.all(np.abs(ours.mean(axis=0) - dense.mean(axis=0)) <= 4.5 * se + 1e-12)


def test_layers_with_different_operators_are_pooled_by_their_counts():
    """Three layers with the window's M and one with M = I: the pooled variance is 3/4 and 1/4 of theirs (the 16
    blocks of 250 draws split 12 : 4), within 4 standard errors of the three estimates (~ sd / sqrt(2 N) each)."""
    samples = 4000
    window = WINDOW[None, :] / WINDOW.max()
    mixed = directionality_chance(128, 2, 16, np.vstack([window] * 3 + [np.ones((1, 16))]), samples=samples)["sd"]
    rotated = directionality_chance(128, 2, 16, window, samples=samples)["sd"]
    plain = directionality_chance(128, 2, 16, None, samples=samples)["sd"]
    expected = np.sqrt(0.75 * rotated ** 2 + 0.25 * plain ** 2)
    # se of expected by the delta method: (0.75 rotated se_r, 0.25 plain se_p) / expected, se_x = x / sqrt(2 N)
    se = np.hypot(mixed, np.hypot(0.75 * rotated ** 2, 0.25 * plain ** 2) / expected) / np.sqrt(2 * samples)
    assert abs(mixed - expected) <= 4 * se
    assert abs(rotated - plain) > 8 * se  # the two operators' levels differ: the pooling is seen


def test_deterministic_whatever_the_threads(monkeypatch):
    first = directionality_chance(96, 2, 16, samples=1200)
    assert directionality_chance(96, 2, 16, samples=1200) == first
    monkeypatch.setattr(module, "core_count", lambda: 1)
    assert directionality_chance(96, 2, 16, samples=1200) == first
    assert directionality_chance(96, 2, 16, samples=1200, seed=1)["sd"] != first["sd"]
