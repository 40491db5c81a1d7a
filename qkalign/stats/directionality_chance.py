"""The chance level of Saponati et al.'s directionality score ``d`` of a layer's whole operator.

``W = K^T M Q~`` (n x n, :mod:`qkalign.weights.layer_symmetry`) for unrelated i.i.d. Gaussian factors of the
model's shapes: ``K``, ``Q~`` (r x n, ``r = H_kv d``; ``Q~`` sums each kv group's G Gaussian query blocks, a scaled
Gaussian, and ``d`` does not see a scale of ``W``), ``M`` the rotated operator's (d x d) matrix on every kv block
(absent: the identity). ``M = U Σ V^T`` with ``U^T K`` and ``V^T Q~`` Gaussian again, so ``W ~ K^T Σ Q~`` with
``Σ`` the r singular values (``M``'s d, once per kv block).

**Mean.** 0 exactly: ``W`` and ``W^T`` have the same law and swap ``R`` and ``C``.

**Sd, by Monte Carlo on the row and column norms.** Given ``Q~``, ``W``'s rows ``k_i^T Σ Q~`` are i.i.d. over i
with squared norms ``k_i^T A k_i ~ sum_j a_j z_j^2`` (``a`` the eigenvalues of ``A = Σ Q~ Q~^T Σ``, z i.i.d.
N(0, 1)); given ``K``, the columns likewise with the eigenvalues ``b`` of ``Σ K K^T Σ``. The construction:

1. ``a`` and ``b``: the spectra of independent Gaussian Grams (:data:`SPECTRUM_PAIRS` pairs; without ``Σ`` the
   Golub-Kahan bidiagonal core of :func:`~qkalign.stats.chance.bidiagonal_gaussian_factor`, a tridiagonal
   eigenvalue problem; with it a Bartlett factor);
2. the distribution of ``sum_j a_j z_j^2``, exactly (to the grid's resolution), from its characteristic function
   ``prod_j (1 - 2 i a_j t)^(-1/2)`` by one FFT (:func:`weighted_chi_square_quantiles`);
3. per draw, n row norms and n column norms through its quantile table at standard normal points (from the terms
   themselves where the FFT cannot resolve the law: few or very unequal ``a``), and ``d`` from them exactly as
   measure computes it (:func:`~qkalign.weights.layer_symmetry.directionality`).

**The approximation.** Rows and columns share ``K`` and ``Q~``: in ``W`` the two sets of norms are dependent (their
squares have the same sum ``||W||^2``; a long ``k_i`` lengthens row i and raises ``K K^T`` along ``k_i``). Here they
are drawn independently, each from its exact conditional law given an independent spectrum. Checked against brute
force (``W = K^T M Q~`` formed from Gaussian factors with a Haar-rotated ``M`` per kv block, the norms and ``d``
computed as measure does) at n 64..512, r 8..128 (GQA-shaped, r > n, unequal singular values of ``M``): with 4000
draws each the ratio of the sds is 0.986..1.028, every difference within 1.8 standard errors; with 12000-20000
draws at three of them 0.994, 1.005 and 1.014 (n 64, r 8: 2.1 standard errors, the largest dependence found).
tests/test_directionality_chance.py repeats five of these at 2000 draws, within 4 standard errors.

Cost: ``SPECTRUM_PAIRS`` pairs of spectra (tridiagonal eigenvalue problems of size min(r, n) without ``Σ``, dense
ones of size r with it) and FFTs of ``GRID_POINTS``, then ``2 n`` table look-ups per draw; no n x n matrix.
Deterministic: one seeded stream for the spectra, one per block of draws, whatever the number of threads.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.linalg import eigvalsh_tridiagonal
from scipy.special import ndtr

from ..errors import InputError
from ..linalg.blas_threads import core_count, one_blas_thread
from . import DEFAULT_CHANCE_SEED
from .chance import bartlett_wishart_factor, bidiagonal_gaussian_factor

#: Monte Carlo draws of ``d``: the sd to ~ 1 / sqrt(2 * 2000) ~ 1.6 % (one standard error).
DIRECTIONALITY_SAMPLES = 2000
#: Independent (rows, columns) spectrum pairs the blocks of draws cycle through, per distinct ``M``; the spectra of
#: n x r Gaussian Grams concentrate (relative fluctuations ~ 1 / sqrt(n r) of their linear statistics), so a few
#: suffice.
SPECTRUM_PAIRS = 2
#: Points of the grid on which the density of a squared norm is computed (mean - 12 sd .. mean + 40 sd).
GRID_POINTS = 1 << 14
#: Its quantile table: at ``Phi(g)`` for this many ``g`` evenly over [-TABLE_RANGE, TABLE_RANGE] (a draw beyond,
#: probability 2.6e-12, is taken at the end).
TABLE_POINTS = 4097
TABLE_RANGE = 7.0
#: Draws per block of the vectorised norms, one block per thread task: (250, n) float64 arrays, small enough to stay
#: in the cache at n of a few thousand.
BLOCK = 250
#: ``d``'s threshold: mean + this many (unbiased) standard deviations, as measure's.
NUM_STD = 2


def directionality_chance(hidden_size, num_kv_heads, head_dim, operator_scales=None, seed=DEFAULT_CHANCE_SEED,
                          samples=DIRECTIONALITY_SAMPLES):
    """``{"mean", "sd", "method", "seed", "samples", "note", "exact_mean", "exact_sd"}`` of one layer's ``d`` for
    unrelated operators ``K^T M Q~`` of this shape (module docstring).

    operator_scales: (m, d) singular values of each layer's ``M`` (None: ``M`` a scaled rotation or absent). The
    blocks of draws take the layers' in turn, evenly spread over them (block b: layer ``b m // blocks``), each
    distinct row with its own spectrum pairs: the level pools the layers (as :func:`symmetry_chance
    <qkalign.stats.symmetry.symmetry_chance>` does), weighted by how many have each ``M``.
    """
    n, r = int(hidden_size), int(num_kv_heads) * int(head_dim)
    if n < 3 or r < 1:
        raise InputError("directionality chance", "shape", "hidden_size >= 3 and H_kv * head_dim >= 1",
                         f"n {hidden_size}, r {r}")
    blocks = -(-samples // BLOCK)
    # one stream for the spectra and one per block of draws: the same numbers whatever the threads
    streams = np.random.SeedSequence(seed).spawn(blocks + 1)
    rng = np.random.default_rng(streams[0])
    scales = None if operator_scales is None else np.asarray(operator_scales, dtype=np.float64)
    rows_of_scales = [None] if scales is None else [row.tobytes() for row in scales]
    # block b's M: layer b m // blocks; its spectrum pair: one of SPECTRUM_PAIRS per distinct M, drawn in block order
    keys = [(rows_of_scales[b * len(rows_of_scales) // blocks], b % SPECTRUM_PAIRS) for b in range(blocks)]
    laws = {}
    with one_blas_thread():  # a dense r x r eigenvalue problem gains little from threads and loses much to a busy core
        for key in keys:
            if key not in laws:
                sigma = None if key[0] is None else np.tile(np.frombuffer(key[0]), int(num_kv_heads))
                laws[key] = [_norm_law(gram_spectrum(rng, r, n, sigma)) for _ in range(2)]

    def block(b):
        size, stream = min(BLOCK, samples - b * BLOCK), np.random.default_rng(streams[b + 1])
        rows, columns = (np.sqrt(_squared_norms(law, stream, (size, n))) for law in laws[keys[b]])
        return _directionality(rows, columns)

    with ThreadPoolExecutor(core_count()) as pool:  # numpy's loops release the GIL
        draws = np.concatenate(list(pool.map(block, range(blocks))))
    return {"mean": 0.0, "sd": float(np.sqrt(np.mean(draws ** 2))), "method": "monte-carlo",
            "seed": seed, "samples": samples,
            "note": "mean 0 by W <-> W^T; sd from row and column norms drawn from their exact laws given "
                    "independent Gaussian spectra (rows and columns taken independent; checked against brute force)",
            "exact_mean": True, "exact_sd": False}


def gram_spectrum(rng, r, n, sigma=None):
    """The nonzero eigenvalues (min(r, n),) of ``Σ G G^T Σ`` for an r x n standard Gaussian ``G``, ``Σ = diag(sigma)``
    (None: the identity)."""
    m, dof = min(r, n), max(r, n)
    if sigma is None:
        diag, sub = bidiagonal_gaussian_factor(rng, m, dof, 1)
        diag, sub = diag[0], sub[0]
        # B B^T for the lower bidiagonal B: (B B^T)_ii = d_i^2 + s_{i-1}^2, (B B^T)_{i,i-1} = s_{i-1} d_{i-1}
        main = diag ** 2
        main[1:] += sub ** 2
        return np.clip(eigvalsh_tridiagonal(main, sub * diag[:-1]), 0.0, None)
    if r <= n:
        factor = sigma[:, None] * bartlett_wishart_factor(rng, r, n, 1)[0]  # Σ L with L L^T ~ G G^T
        return np.clip(np.linalg.eigvalsh(factor @ factor.T), 0.0, None)
    g = sigma[:, None] * rng.standard_normal((r, n))
    return np.clip(np.linalg.eigvalsh(g.T @ g), 0.0, None)


def weighted_chi_square_quantiles(weights, points=GRID_POINTS):
    """``x`` (TABLE_POINTS,): the quantiles of ``X = sum_j w_j z_j^2`` (z i.i.d. N(0, 1), w >= 0) at the levels
    ``Phi(g)`` of a uniform grid of ``g`` over [-TABLE_RANGE, TABLE_RANGE] (Phi the normal distribution function): a
    draw of X is the table at a standard normal ``g``, linearly interpolated (X is near normal, so ``x(g)`` is
    smooth).

    The density of X is the inverse Fourier transform of ``phi(t) = prod_j (1 - 2 i w_j t)^(-1/2)``, by one FFT on
    ``points`` over [max(0, mean - 12 sd), mean + 40 sd] (its period the span, beyond which X has mass < 1e-12);
    ``phi`` is evaluated only where ``|phi| > e^-40``; None where ``|phi|`` is not below that by the grid's
    Nyquist frequency (few or very unequal weights: the density's tails would be lost to truncation). The upper
    quantiles come from the survival function summed from the top, so that tail keeps its relative precision.
    """
    w = np.asarray(weights, dtype=np.float64)
    mean, sd = w.sum(), np.sqrt(2.0 * (w ** 2).sum())
    low, high = max(0.0, mean - 12.0 * sd), mean + 40.0 * sd
    step = (high - low) / points
    t = 2.0 * np.pi * np.arange(points // 2 + 1) / (points * step)
    # |phi(t)| decreases in t: past the first probed t where it is below e^-40 every term is negligible
    probes = np.unique(np.concatenate([[0], 2 ** np.arange(int(np.log2(len(t) - 1)) + 1), [len(t) - 1]]))
    small = np.array([-0.25 * np.log1p((2.0 * w * t[i]) ** 2).sum() < -40.0 for i in probes])
    if not small.any():  # phi not negligible at the grid's Nyquist frequency: the density would alias
        return None
    cut = probes[np.argmax(small)] + 1
    log_phi = -0.5 * np.log1p(-2j * np.outer(t[:cut], w)).sum(axis=1)
    coefficients = np.zeros(len(t), dtype=np.complex128)
    coefficients[:cut] = np.conj(np.exp(log_phi - 1j * t[:cut] * low))
    density = np.clip(np.fft.irfft(coefficients, points) / step, 0.0, None)
    mass = (density[1:] + density[:-1]) / 2.0 * step
    mass /= mass.sum()
    cdf, sf = np.cumsum(mass), np.cumsum(mass[::-1])[::-1]  # at the cells' right and left ends
    g = np.linspace(-TABLE_RANGE, TABLE_RANGE, TABLE_POINTS)
    lower = g <= 0
    quantiles = np.empty(TABLE_POINTS)
    edges = low + step * np.arange(1, points)
    quantiles[lower] = _increasing_interp(ndtr(g[lower]), cdf, edges)
    quantiles[~lower] = _increasing_interp(-ndtr(-g[~lower]), -sf, edges - step)
    return quantiles


def _increasing_interp(level, table, values):
    """``values`` at ``level`` along the non-decreasing ``table`` (its flat stretches dropped)."""
    keep = np.concatenate([[True], np.diff(table) > 0])
    return np.interp(level, table[keep], values[keep])


def _norm_law(spectrum):
    """``("quantiles", table)`` of ``X = sum_j a_j z_j^2`` (:func:`weighted_chi_square_quantiles`), or
    ``("terms", a)`` where the table cannot be made (X is then drawn from its terms)."""
    quantiles = weighted_chi_square_quantiles(spectrum)
    return ("terms", spectrum) if quantiles is None else ("quantiles", quantiles)


def _squared_norms(law, rng, shape):
    """Draws of ``X = sum_j a_j z_j^2`` from its :func:`_norm_law`: the quantile table at standard normal ``g``,
    linearly interpolated; or the terms themselves."""
    kind, values = law
    if kind == "terms":
        return rng.standard_normal(shape + (len(values),)) ** 2 @ values
    # in place: this is most of the level's time
    position = rng.standard_normal(shape)
    np.clip(position, -TABLE_RANGE, TABLE_RANGE, out=position)
    position += TABLE_RANGE
    position *= (TABLE_POINTS - 1) / (2 * TABLE_RANGE)
    index = position.astype(np.intp)
    np.minimum(index, TABLE_POINTS - 2, out=index)
    position -= index  # the fraction of the way to the next point
    low, high = values[index], values[index + 1]
    high -= low
    high *= position
    high += low
    return high


def _directionality(row_norms, column_norms):
    """``d`` of each draw from its (draws, n) row and column norms (overwritten), as
    :func:`~qkalign.weights.layer_symmetry.directionality` computes it for one."""
    def excess(norms):
        threshold = norms.mean(axis=1, keepdims=True) + NUM_STD * norms.std(axis=1, ddof=1, keepdims=True)
        norms -= threshold
        np.maximum(norms, 0.0, out=norms)
        return norms.sum(axis=1)

    rows, columns = excess(row_norms), excess(column_norms)
    total = rows + columns
    return np.divide(rows - columns, total, out=np.zeros_like(total), where=total > 0)
