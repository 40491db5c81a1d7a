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
- spectra: the nonzero eigenvalues of ``S = A^T J A`` (``A = [K; Q]``) are those of
  ``B^T J B`` with ``A A^T = B B^T`` ~ Wishart_2d(n), again by Bartlett; pairs of
  independent samples give the spectral cosines and sign agreements.
"""

from dataclasses import asdict, dataclass

import numpy as np

#: Default Monte Carlo sizes, chosen so that the Qwen3-4B shape (d 128, n 2560, k 16)
#: takes a fraction of a second; the standard error of a mean is ~ sd / sqrt(samples).
SPECTRA_SAMPLES = 48
SUBSPACE_SAMPLES = 4000
DEFAULT_SEED = 20261126


@dataclass(frozen=True)
class ChanceLevel:
    """Mean and sd of one head's statistic for unrelated operators.

    ``mean`` and ``sd`` are floats, or lists (one per k) for the sign agreement.
    ``method`` is "analytic" or "monte-carlo"; ``seed`` and ``samples`` say how a
    Monte Carlo level was drawn (None for analytic ones).
    """

    mean: object
    sd: object
    method: str
    seed: object = None
    samples: object = None
    note: str = ""

    def to_dict(self):
        return asdict(self)


def bartlett_wishart_factor(rng, dim, dof, size):
    """Lower-triangular ``B`` with ``B B^T`` ~ Wishart_dim(dof, I): (size, dim, dim).

    Bartlett: ``B_ii = sqrt(chi2(dof - i))``, ``B_ij ~ N(0, 1)`` below the diagonal.
    Requires ``dof >= dim``.
    """
    b = np.tril(rng.standard_normal((size, dim, dim)), k=-1)
    diag = np.sqrt(rng.chisquare(dof - np.arange(dim), size=(size, dim)))
    b[:, np.arange(dim), np.arange(dim)] = diag
    return b


def random_principal_cosines(hidden, k, samples, rng):
    """Principal cosines (descending) between two independent Haar k-subspaces of R^hidden.

    Returns (samples, k) float64.
    """
    if k == hidden:
        return np.ones((samples, k))
    if hidden - k >= k:
        top = rng.standard_normal((samples, k, k))
        w1 = np.swapaxes(top, -1, -2) @ top
        b = bartlett_wishart_factor(rng, k, hidden - k, samples)
        w2 = b @ np.swapaxes(b, -1, -2)
    else:  # too few spare dimensions for Bartlett: sample the basis directly (n is small here)
        z = rng.standard_normal((samples, hidden, k))
        w1 = np.swapaxes(z[:, :k], -1, -2) @ z[:, :k]
        w2 = np.swapaxes(z[:, k:], -1, -2) @ z[:, k:]
    r = np.linalg.cholesky(w1 + w2)
    x = np.linalg.solve(r, w1)
    m = np.linalg.solve(r, np.swapaxes(x, -1, -2))  # R^-1 W1 R^-T, symmetric
    cos_sq = np.linalg.eigvalsh((m + np.swapaxes(m, -1, -2)) / 2)[..., ::-1]
    return np.sqrt(np.clip(cos_sq, 0.0, 1.0))


def random_symmetric_spectra(head_dim, hidden, samples, rng):
    """Nonzero spectra of ``(g + g^T)/2`` for ``g = K^T Q``, K, Q i.i.d. Gaussian (d x n).

    Sorted by ``|lambda|`` descending, as the input's ``sym_eigs``: (samples, 2 d).
    """
    two_d = 2 * head_dim
    if hidden >= two_d:
        b = bartlett_wishart_factor(rng, two_d, hidden, samples)
    else:
        a = rng.standard_normal((samples, two_d, hidden))
        b = a  # B^T J B with B = A (2d x n): same nonzero spectrum, padded with zeros
    # B^T J B = (B_K^T B_Q + B_Q^T B_K) / 2 for the row blocks B_K = B[:d], B_Q = B[d:].
    cross = np.swapaxes(b[:, :head_dim], -1, -2) @ b[:, head_dim:]
    lam = np.linalg.eigvalsh((cross + np.swapaxes(cross, -1, -2)) / 2)
    order = np.argsort(-np.abs(lam), axis=-1, kind="stable")
    return np.take_along_axis(lam, order, axis=-1)[:, :two_d]


def _pairs(values):
    """Rows i < j of a (samples, ...) array as two aligned arrays."""
    i, j = np.triu_indices(values.shape[0], k=1)
    return values[i], values[j]


def chance_levels(head_dim, hidden_size, topk, k_values, seed=DEFAULT_SEED,
                  spectra_samples=SPECTRA_SAMPLES, subspace_samples=SUBSPACE_SAMPLES):
    """Chance levels of every statistic for unrelated operators of this shape.

    Parameters
    ----------
    head_dim, hidden_size, topk : int
        ``d``, ``n`` and the number of eigenvectors per head ``k``.
    k_values : sequence of int
        The top-k values of the sign agreement.
    seed : int
        Seed of the Monte Carlo draws (recorded in each level).

    Returns
    -------
    dict of str -> ChanceLevel
        operator_cos, resid_frac, top1_overlap, pa_mean_cos, pa_min_cos, pa_mean_cos_sq,
        sign_agreement, spectral_cos, spectral_abs_cos, signed_mass, frac_positive,
        frac_positive_topk.
    """
    n, d, k = hidden_size, head_dim, topk
    rng = np.random.default_rng(seed)
    levels = {
        "operator_cos": ChanceLevel(0.0, 1.0 / n, "analytic", note="Gaussian factors; sd exact to O(1/n)"),
        "resid_frac": ChanceLevel(1.0 - 0.5 / n**2, 1.0 / (np.sqrt(2.0) * n**2), "analytic",
                                  note="sqrt(1 - cos^2) with cos ~ N(0, 1/n^2)"),
        "top1_overlap": ChanceLevel(1.0 / n, float(np.sqrt(2.0 * (n - 1) / (n**2 * (n + 2)))), "analytic",
                                    note="cos^2 of two random unit vectors ~ Beta(1/2, (n-1)/2)"),
        "pa_mean_cos_sq": ChanceLevel(k / n, None, "analytic", note="E[mean cos^2] of random k-subspaces = k/n"),
    }
    cos = random_principal_cosines(n, k, subspace_samples, rng)
    mc = dict(method="monte-carlo", seed=seed, samples=subspace_samples)
    levels["pa_mean_cos"] = ChanceLevel(float(cos.mean(axis=1).mean()), float(cos.mean(axis=1).std()), **mc,
                                        note="Haar k-subspaces (Bartlett)")
    levels["pa_min_cos"] = ChanceLevel(float(cos.min(axis=1).mean()), float(cos.min(axis=1).std()), **mc,
                                       note="Haar k-subspaces (Bartlett)")

    spectra = random_symmetric_spectra(d, n, spectra_samples, rng)
    a, b = _pairs(spectra)
    mc = dict(method="monte-carlo", seed=seed, samples=spectra_samples)
    agree = [(np.sign(a[:, :kk]) == np.sign(b[:, :kk])).mean(axis=1) for kk in k_values]
    levels["sign_agreement"] = ChanceLevel([float(x.mean()) for x in agree], [float(x.std()) for x in agree], **mc,
                                           note="pairs of random spectra; the mean is 1/2 by the symmetry Q -> -Q")
    for name, v_a, v_b in (("spectral_cos", a, b), ("spectral_abs_cos", np.abs(a), np.abs(b))):
        c = np.einsum("sm,sm->s", v_a, v_b) / (np.linalg.norm(v_a, axis=1) * np.linalg.norm(v_b, axis=1))
        levels[name] = ChanceLevel(float(c.mean()), float(c.std()), **mc, note="pairs of random spectra")
    mass = spectra.sum(axis=1) / np.abs(spectra).sum(axis=1)
    levels["signed_mass"] = ChanceLevel(float(mass.mean()), float(mass.std()), **mc, note="random spectra")
    pos_k = (spectra[:, :k] > 0).mean(axis=1)
    levels["frac_positive_topk"] = ChanceLevel(float(pos_k.mean()), float(pos_k.std()), **mc,
                                               note=f"top-{k} of random spectra")
    full_rank = n >= 2 * d
    levels["frac_positive"] = ChanceLevel(0.5 if full_rank else float((spectra > 0).mean()), 0.0 if full_rank else None,
                                          "analytic" if full_rank else "monte-carlo",
                                          note="Sylvester's law of inertia: d positive, d negative, whatever the weights")
    return levels


def z_score(observed, level, num_heads):
    """``(observed - mean) / (sd / sqrt(H))`` for a head-averaged statistic; nan when sd is 0 or unknown."""
    if level.sd is None or not np.all(np.asarray(level.sd) > 0):
        return np.full(np.shape(observed), np.nan) if np.ndim(observed) else float("nan")
    return (np.asarray(observed) - np.asarray(level.mean)) / (np.asarray(level.sd) / np.sqrt(num_heads))
