"""Chance levels: what each statistic gives for *unrelated* operators of the input's exact shape.

"Unrelated" means independent random operators ``g = K^T Q`` with i.i.d. Gaussian
``K``, ``Q`` (d x n), and, for subspaces, independent Haar-random k-dimensional
subspaces of R^n. Each level has the mean and the standard deviation of *one
head's* value; a head-average over ``H`` independent heads has sd ``sd / sqrt(H)``.

Analytic where known:

- operator cosine: mean 0, sd ``1/n`` (``E<g1, g2>^2 = d^2 n^2``, ``E||g||^2 = d n^2``;
  exact to O(1/n) relative);
- scalar-rescale residual ``sqrt(1 - cos^2)``: mean ``1 - 1/(2 n^2)``;
- top-1 overlap ``cos^2`` of two random unit vectors ~ Beta(1/2, (n-1)/2):
  mean ``1/n``, sd ``sqrt(2 (n-1) / (n^2 (n+2)))``;
- mean squared principal cosine of two random k-subspaces: ``k / n``;
- fraction of positive eigenvalues over the full spectrum: exactly 1/2 when
  ``n >= 2 d`` (Sylvester's law of inertia: ``S = A^T J A`` has d positive and d
  negative eigenvalues).

Monte Carlo otherwise, with a fixed recorded seed:

- principal cosines: the cosines between ``span(e_1..e_k)`` and a Haar subspace
  ``span(Z)`` are the square roots of the eigenvalues of ``(W1 + W2)^{-1} W1`` with
  ``W1 = Z_top^T Z_top`` ~ Wishart_k(k) and ``W2 = Z_bot^T Z_bot`` ~ Wishart_k(n - k)
  (sampled by the Bartlett decomposition, O(k^3) per sample);
- spectra: ``S = (K^T Q + Q^T K)/2 = (U^T U - V^T V)/2`` with ``U = (K + Q)/sqrt(2)``,
  ``V = (K - Q)/sqrt(2)``, again i.i.d. Gaussian. Rotating R^n (right) and the rows of
  ``U`` and of ``V`` separately (left) keeps the spectrum; Golub-Kahan bidiagonalisation
  by such reflections brings ``U`` to ``[B_U, 0, 0]`` and then ``V`` to ``[G, B_V, 0]``,
  with independent entries (Dumitriu & Edelman 2002): ``B_U``, ``B_V`` lower bidiagonal
  d x d with chi entries (:func:`bidiagonal_gaussian_factor`, ``n`` and ``n - d`` degrees
  of freedom) and ``G`` d x d standard Gaussian. The nonzero spectrum of ``S`` is that of
  the 2d x 2d matrix ``(C_U^T C_U - C_V^T C_V)/2`` for the rows ``C_U = [B_U, 0]``,
  ``C_V = [G, B_V]``: d^2 + 4d random numbers and one 2d x 2d eigenvalue problem per
  sample. Pairs of independent samples give the spectral cosines and sign agreements.
  ``Q -> -Q`` is as likely as ``Q`` and negates the spectrum (same ``|lambda|`` order),
  so the statistics odd under the mirror have exact means (signed mass 0, positive
  fraction 1/2, sign agreement 1/2, spectral cosine 0). Those means are reported as the
  exact values, not as a sample mean (whose rounding noise, ~1e-19 where the value is 0,
  depends on the BLAS kernel), and their sds are the root-mean-square deviations of the
  draws from them: the sd of the ensemble of every draw and its mirror image (antithetic
  sampling), computed without the noisy mean. The ``|lambda|`` statistics are unchanged.

Each level says which of its numbers are exact by construction (``exact_mean``,
``exact_sd``): a symmetry or a closed form, rather than sampling or an approximation.

Sizes and standard errors: :data:`SPECTRA_SAMPLES`, :data:`SUBSPACE_SAMPLES`.
"""

from dataclasses import asdict, dataclass

import numpy as np

from ..linalg.blas_threads import on_cores
from . import DEFAULT_CHANCE_SEED

#: Default Monte Carlo sizes, for ~0.1 s at the Qwen3-4B shape (d 128, n 2560, k 16) on two
#: cores: a spectrum costs ~2.8 ms of one core (a 256 x 256 eigenvalue problem), a pair of
#: subspaces ~25 us. Standard errors of the means: none for sign_agreement, spectral_cos,
#: signed_mass and frac_positive_topk (the mirror images make their means exact); spectral_abs_cos
#: has ~ sd / 7 with 48 spectra (its pair mean's error is ~ 2 sigma_1 / sqrt(samples), sigma_1 ~
#: sd / 2 the sd of one draw's mean cosine to the others; its sd is ~3e-6 at this shape);
#: pa_mean_cos, pa_min_cos have sd / sqrt(500) ~ sd / 22. The sds are good to ~ 1 / sqrt(2 samples).
SPECTRA_SAMPLES = 48
SUBSPACE_SAMPLES = 500
DEFAULT_SEED = DEFAULT_CHANCE_SEED


@dataclass(frozen=True)
class ChanceLevel:
    """Mean and sd of one head's statistic for unrelated operators.

    ``mean`` and ``sd`` are floats, or lists (one per k) for the sign agreement.
    ``method`` is "analytic" or "monte-carlo"; ``seed`` and ``samples`` say how a
    Monte Carlo level was drawn (None for analytic ones). ``exact_mean`` / ``exact_sd``:
    the number holds by construction (a symmetry or a closed form), not to sampling
    error or an approximation's order.
    """

    mean: object
    sd: object
    method: str
    seed: object = None
    samples: object = None
    note: str = ""
    exact_mean: bool = False
    exact_sd: bool = False

    def to_dict(self):
        return asdict(self)


def symmetric_level(draws, center, **how):
    """The level of a statistic whose mean is ``center`` by symmetry: that mean, exactly, and the
    root-mean-square deviation of ``draws`` (any trailing axis) from it as the sd.

    draws: (samples,) -> float mean and sd; (samples, m) -> lists of m (the mean ``center`` each).
    Equals the sd of the ensemble of the draws and their mirror images, whose mean is ``center``.
    """
    sd = np.sqrt(np.mean((np.asarray(draws) - center) ** 2, axis=0))
    if sd.ndim == 0:
        return ChanceLevel(center, float(sd), exact_mean=True, **how)
    return ChanceLevel([center] * len(sd), [float(x) for x in sd], exact_mean=True, **how)


def bartlett_wishart_factor(rng, dim, dof, size):
    """Lower-triangular ``B`` with ``B B^T`` ~ Wishart_dim(dof, I): (size, dim, dim).

    Bartlett: ``B_ii = sqrt(chi2(dof - i))``, ``B_ij ~ N(0, 1)`` below the diagonal.
    Requires ``dof >= dim``.
    """
    b = np.zeros((size, dim, dim))
    below = np.tril_indices(dim, k=-1)
    b[:, below[0], below[1]] = rng.standard_normal((size, below[0].size))
    b[:, np.arange(dim), np.arange(dim)] = np.sqrt(rng.chisquare(dof - np.arange(dim), size=(size, dim)))
    return b


def bidiagonal_gaussian_factor(rng, dim, dof, size):
    """Golub-Kahan core of a dim x dof standard Gaussian ``X``: diagonals of ``B``, (size, dim) and (size, dim - 1).

    ``X = O [B, 0] P^T`` with ``O``, ``P`` orthogonal and ``B`` lower bidiagonal; by
    Householder reflections, each leaving the entries it has not yet touched i.i.d.
    Gaussian, ``B_ii = sqrt(chi2(dof - i))`` and ``B_{i+1,i} = sqrt(chi2(dim - 1 - i))``,
    all independent (Dumitriu & Edelman 2002, the beta = 1 Laguerre model); ``O`` and
    ``P`` depend on ``X`` only. Requires ``dof >= dim``.
    """
    diag = np.sqrt(rng.chisquare(dof - np.arange(dim), size=(size, dim)))
    sub = np.sqrt(rng.chisquare(dim - 1 - np.arange(dim - 1), size=(size, dim - 1)))
    return diag, sub


def random_principal_cosines(hidden, k, samples, rng):
    """Principal cosines (descending) between two independent Haar k-subspaces of R^hidden.

    Returns (samples, k) float64.
    """
    if k == hidden:
        return np.ones((samples, k))
    if hidden - k >= k:
        top = rng.standard_normal((samples, k, k))
        b = bartlett_wishart_factor(rng, k, hidden - k, samples)
        return on_cores(_cosines_from_factors, top, np.swapaxes(b, -1, -2))  # W2 = b b^T
    # too few spare dimensions for Bartlett: sample the basis directly (n is small here)
    z = rng.standard_normal((samples, hidden, k))
    return on_cores(_cosines_from_factors, z[:, :k], z[:, k:])


def _cosines_from_factors(top, bottom):
    """Cosines (descending) between ``span(e_1..e_k)`` and ``span(Z)``, given ``Z_top`` and a factor of ``Z_bot``.

    top (s, k, k) is ``Z_top``; bottom (s, m, k) any matrix with ``bottom^T bottom = Z_bot^T Z_bot``.
    The cosines are the square roots of the eigenvalues of ``R^-1 W1 R^-T`` with
    ``W1 = top^T top`` and ``R R^T = W1 + bottom^T bottom`` (Cholesky). -> (s, k).
    """
    w1 = np.swapaxes(top, -1, -2) @ top
    w2 = np.swapaxes(bottom, -1, -2) @ bottom
    r = np.linalg.cholesky(w1 + w2)
    x = np.linalg.solve(r, w1)
    m = np.linalg.solve(r, np.swapaxes(x, -1, -2))  # R^-1 W1 R^-T, symmetric
    cos_sq = np.linalg.eigvalsh((m + np.swapaxes(m, -1, -2)) / 2)[..., ::-1]
    return np.sqrt(np.clip(cos_sq, 0.0, 1.0))


def random_symmetric_spectra(head_dim, hidden, samples, rng, operator_scales=None):
    """Nonzero spectra of ``(g + g^T)/2`` for ``g = K^T Q``, K, Q i.i.d. Gaussian (d x n).

    Sorted by ``|lambda|`` descending, as the input's ``sym_eigs``: (samples, 2 d), or
    (samples, n) when ``n < 2 d``. The construction is in the module docstring.

    With ``operator_scales`` (m, d), the operators are ``g = K^T M Q`` of a rotated operator
    (:mod:`~qkalign.weights.rotary_operator`), each draw with the singular values ``σ`` of one of the m
    layers' ``M`` (picked uniformly: the layers' mix). ``M = U Σ V^T`` and ``U^T K``, ``V^T Q`` are again
    i.i.d. Gaussian, so only ``σ`` matters: with ``A = [K; Σ Q]``, ``A A^T = D W D`` for ``D = diag(1, σ)``
    and ``W = B B^T`` ~ Wishart_2d(n) (:func:`bartlett_wishart_factor`), and the nonzero spectrum of
    ``S = A^T J A`` is that of ``B^T D J D B = (B_K^T Σ B_Q + B_Q^T Σ B_K)/2`` (``B_K``, ``B_Q`` the first and
    last d rows of ``B``).
    """
    d = head_dim
    if operator_scales is not None:
        sigma = np.asarray(operator_scales, dtype=np.float64)[rng.integers(len(operator_scales), size=samples)]
        if hidden >= 2 * d:
            b = bartlett_wishart_factor(rng, 2 * d, hidden, samples)
            half = np.swapaxes(b[:, :d], -1, -2) @ (sigma[:, :, None] * b[:, d:])
            lam = np.linalg.eigvalsh((half + np.swapaxes(half, -1, -2)) / 2)
        else:
            k = rng.standard_normal((samples, d, hidden))
            q = rng.standard_normal((samples, d, hidden)) * sigma[:, :, None]
            lam = on_cores(_spectra_from_operators, k, q)
    elif hidden >= 2 * d:
        u_diag, u_sub = bidiagonal_gaussian_factor(rng, d, hidden, samples)
        v_diag, v_sub = bidiagonal_gaussian_factor(rng, d, hidden - d, samples)
        g = rng.standard_normal((samples, d, d))
        lam = on_cores(_spectra_from_factors, u_diag, u_sub, v_diag, v_sub, g)
    else:  # rank-deficient: form S in R^n directly (n is small here)
        k = rng.standard_normal((samples, d, hidden))
        q = rng.standard_normal((samples, d, hidden))
        lam = on_cores(_spectra_from_operators, k, q)
    order = np.argsort(-np.abs(lam), axis=-1, kind="stable")
    return np.take_along_axis(lam, order, axis=-1)[:, :2 * d]


def _spectra_from_factors(u_diag, u_sub, v_diag, v_sub, g):
    """Eigenvalues (ascending) of ``(C_U^T C_U - C_V^T C_V)/2``, ``C_U = [B_U, 0]``, ``C_V = [G, B_V]``.

    ``B_U``, ``B_V`` lower bidiagonal given by their diagonals (s, d) and subdiagonals (s, d - 1),
    g (s, d, d). The 2d x 2d matrix is
    ``[[B_U^T B_U - G^T G, -G^T B_V], [-B_V^T G, -B_V^T B_V]] / 2``; -> (s, 2 d).
    """
    samples, d, _ = g.shape
    g_t = np.swapaxes(g, -1, -2)
    gt_bv = g_t * v_diag[:, None, :]  # G^T B_V: column j is B_jj G^T e_j + B_{j+1,j} G^T e_{j+1}
    gt_bv[:, :, :-1] += g_t[:, :, 1:] * v_sub[:, None, :]
    m = np.zeros((samples, 2 * d, 2 * d))
    m[:, :d, :d] = -(g_t @ g)
    m[:, :d, d:] = -gt_bv
    m[:, d:, :d] = -np.swapaxes(gt_bv, -1, -2)
    # B^T B of a lower bidiagonal B is tridiagonal: diagonal B_ii^2 + B_{i+1,i}^2, off-diagonal B_{i+1,i} B_{i+1,i+1}.
    i, j = np.arange(d - 1), np.arange(1, d)
    for offset, sign, diag, sub in ((0, 1.0, u_diag, u_sub), (d, -1.0, v_diag, v_sub)):
        m[:, offset + np.arange(d), offset + np.arange(d)] += sign * diag**2
        m[:, offset + i, offset + i] += sign * sub**2
        m[:, offset + i, offset + j] += sign * sub * diag[:, 1:]
        m[:, offset + j, offset + i] += sign * sub * diag[:, 1:]
    return np.linalg.eigvalsh(m) / 2


def _spectra_from_operators(k, q):
    """Eigenvalues (ascending) of ``(K^T Q + Q^T K)/2`` formed in R^n: k, q (s, d, n) -> (s, n)."""
    cross = np.swapaxes(k, -1, -2) @ q
    return np.linalg.eigvalsh((cross + np.swapaxes(cross, -1, -2)) / 2)


def chance_levels(head_dim, hidden_size, topk, k_values, seed=DEFAULT_SEED,
                  spectra_samples=SPECTRA_SAMPLES, subspace_samples=SUBSPACE_SAMPLES, operator_scales=None):
    """Chance levels of every statistic for unrelated operators of this shape.

    Parameters
    ----------
    head_dim, hidden_size, topk : int
        ``d``, ``n`` and the number of eigenvectors per head ``k``.
    k_values : sequence of int
        The top-k values of the sign agreement.
    seed : int
        Seed of the Monte Carlo draws (recorded in each level).
    operator_scales : (m, d) array, optional
        Singular values of each layer's ``M`` for a rotated operator ``K^T M Q`` whose ``M`` is not a multiple
        of an orthogonal matrix (a window mean): the spectra are drawn for it
        (:func:`random_symmetric_spectra`). The other levels hold for any ``M``: the operator cosine's
        ``E<g1, g2>^2 = n^2 tr(M M^T)^2`` against ``E||g||^2 = n^2 tr(M M^T)`` keeps its sd ``1/n``, and
        ``K``, ``Q`` Gaussian keep the eigenvectors' spans Haar-distributed in R^n.

    Returns
    -------
    dict of str -> ChanceLevel
        operator_cos, resid_frac, top1_overlap, pa_mean_cos_sq, pa_mean_cos, pa_min_cos,
        sign_agreement, spectral_cos, spectral_abs_cos, signed_mass, frac_positive_topk,
        frac_positive.
    """
    rng = np.random.default_rng(seed)
    levels = analytic_levels(hidden_size, topk)
    levels.update(subspace_levels(hidden_size, topk, subspace_samples, rng, seed))
    levels.update(spectra_levels(head_dim, hidden_size, topk, k_values, spectra_samples, rng, seed, operator_scales))
    return levels


def analytic_levels(hidden_size, topk):
    """The levels known in closed form (module docstring): operator_cos, resid_frac, top1_overlap,
    pa_mean_cos_sq."""
    n, k = hidden_size, topk
    return {
        "operator_cos": ChanceLevel(0.0, 1.0 / n, "analytic", note="Gaussian factors; sd exact to O(1/n)",
                                    exact_mean=True),
        "resid_frac": ChanceLevel(1.0 - 0.5 / n**2, 1.0 / (np.sqrt(2.0) * n**2), "analytic",
                                  note="sqrt(1 - cos^2) with cos ~ N(0, 1/n^2)"),
        "top1_overlap": ChanceLevel(1.0 / n, float(np.sqrt(2.0 * (n - 1) / (n**2 * (n + 2)))), "analytic",
                                    note="cos^2 of two random unit vectors ~ Beta(1/2, (n-1)/2)",
                                    exact_mean=True, exact_sd=True),
        "pa_mean_cos_sq": ChanceLevel(k / n, None, "analytic", note="E[mean cos^2] of random k-subspaces = k/n",
                                      exact_mean=True),
    }


def subspace_levels(hidden_size, topk, samples, rng, seed):
    """pa_mean_cos and pa_min_cos from ``samples`` pairs of Haar k-subspaces drawn from ``rng``."""
    cos = random_principal_cosines(hidden_size, topk, samples, rng)
    mc = dict(method="monte-carlo", seed=seed, samples=samples, note="Haar k-subspaces (Bartlett)")
    return {"pa_mean_cos": ChanceLevel(float(cos.mean(axis=1).mean()), float(cos.mean(axis=1).std()), **mc),
            "pa_min_cos": ChanceLevel(float(cos.min(axis=1).mean()), float(cos.min(axis=1).std()), **mc)}


def spectra_levels(head_dim, hidden_size, topk, k_values, samples, rng, seed, operator_scales=None):
    """The levels of the spectrum statistics from ``samples`` random spectra and their mirror images.

    Pairs of distinct draws: (a, b) for i < j and, with the mirror, (a, -b); (-a, -b) and (-a, b)
    repeat them. All at once from N x N Gram matrices: with signs +-1 (no eigenvalue is 0, with
    probability 1) the top-k agreement is (1 + s_a . s_b / k) / 2, and the mirror turns it into
    1 minus itself and the spectral cosine into its negative: their means are exactly 1/2 and 0
    (:func:`symmetric_level`), and so are those of the positive fraction and the signed mass.
    """
    spectra = random_symmetric_spectra(head_dim, hidden_size, samples, rng, operator_scales)
    mc = dict(method="monte-carlo", seed=seed, samples=samples)
    if operator_scales is not None:
        mc["method"] = "monte-carlo, operators K^T M Q with the singular values of the input's M"
    i, j = np.triu_indices(samples, k=1)
    signs = np.sign(spectra)
    agree = np.stack([(1.0 + (signs[:, :kk] @ signs[:, :kk].T)[i, j] / kk) / 2 for kk in k_values], axis=1)
    levels = {"sign_agreement": symmetric_level(
        agree, 0.5, **mc, note="pairs of random spectra; the mean is 1/2 by the symmetry Q -> -Q")}
    unit = spectra / np.linalg.norm(spectra, axis=1, keepdims=True)
    levels["spectral_cos"] = symmetric_level((unit @ unit.T)[i, j], 0.0, **mc,
                                             note="pairs of random spectra; the mean is 0 by the symmetry Q -> -Q")
    abs_cos = (np.abs(unit) @ np.abs(unit).T)[i, j]  # |lambda|: the mirrored pairs repeat it
    levels["spectral_abs_cos"] = ChanceLevel(float(abs_cos.mean()), float(abs_cos.std()), **mc,
                                             note="pairs of random spectra")
    mass = spectra.sum(axis=1) / np.abs(spectra).sum(axis=1)
    levels["signed_mass"] = symmetric_level(mass, 0.0, **mc,
                                            note="random spectra; the mean is 0 by the symmetry Q -> -Q")
    levels["frac_positive_topk"] = symmetric_level(
        (spectra[:, :topk] > 0).mean(axis=1), 0.5, **mc,
        note=f"top-{topk} of random spectra; the mean is 1/2 by the symmetry Q -> -Q")
    if hidden_size >= 2 * head_dim:
        levels["frac_positive"] = ChanceLevel(0.5, 0.0, "analytic", exact_mean=True, exact_sd=True,
                                              note="Sylvester's law of inertia: d positive, d negative, "
                                                   "whatever the weights")
    else:  # S of rank n < 2 d: the count is not fixed, its mean is 1/2 by the symmetry
        levels["frac_positive"] = symmetric_level((spectra > 0).mean(axis=1), 0.5, **mc,
                                                  note="rank-deficient heads (n < 2 d); the mean is 1/2 by the "
                                                       "symmetry Q -> -Q")
    return levels


def z_score(observed, level, num_heads):
    """``(observed - mean) / (sd / sqrt(H))`` for a head-averaged statistic; nan when sd is 0 or unknown."""
    if level.sd is None or not np.all(np.asarray(level.sd) > 0):
        return np.full(np.shape(observed), np.nan) if np.ndim(observed) else float("nan")
    return (np.asarray(observed) - np.asarray(level.mean)) / (np.asarray(level.sd) / np.sqrt(num_heads))
