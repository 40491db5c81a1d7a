"""QK-operator quantities computed from the factors W_Q, W_K without forming g (hidden x hidden).

With ``Q``, ``K`` the (d, n) blocks of one head and ``g = K^T Q``:

- ``<g_L, g_L'>_F = sum((K_L K_L'^T) * (Q_L Q_L'^T))``, so one (L d) x (L d) Gram of the
  head's stacked Q blocks and one of its K blocks give ``gram[:, :, h]``;
- ``||W_K W_Q^T||_F^2 = ||K Q^T||_F^2`` (the seed's ``fro_sq``);
- the symmetric part ``S = (g + g^T)/2 = A^T J A`` with ``A = [K; Q]`` (2d x n) and
  ``J = [[0, I/2], [I/2, 0]]``. With ``A A^T = U diag(s) U^T`` and ``C = U diag(sqrt s)``,
  the nonzero eigenvalues of ``S`` are those of ``C^T J C = W Lambda W^T`` and its
  eigenvectors are ``A^T U diag(1/sqrt s) W`` (orthonormal). When ``A A^T`` has full
  rank its Cholesky factor ``C = L`` does the same job more cheaply, with eigenvectors
  ``A^T L^{-T} W`` (:func:`symmetric_part_eigen_from_gram`); by Sylvester's law of inertia
  ``L^T J L`` then has exactly ``d`` positive and ``d`` negative eigenvalues.
"""

from typing import NamedTuple

import numpy as np

from ..linalg.cholesky import lower_cholesky
from ..linalg.leading_eigen import leading_eigenpairs
from ..linalg.syrk import syrk_lower

#: ``A A^T`` counts as rank-deficient (tied Q and K, hidden < 2 d) where an eigenvalue or a
#: squared Cholesky pivot is below this fraction of the largest: a few hundred times the
#: relative rounding of ``A A^T`` when its products are computed in that precision.
RANK_TOL = {"float32": 1e-5, "float64": 1e-12}


def layer_gram_from_blocks(qq, kk, num_layers, head_dim):
    """Block sums ``gram[L, L'] = sum_ij qq[L d + i, L' d + j] kk[L d + i, L' d + j]``.

    qq, kk: (L d, L d) Grams of a head's stacked Q and K blocks -> (L, L) float64.
    """
    prod = np.asarray(qq, dtype=np.float64) * np.asarray(kk, dtype=np.float64)
    return prod.reshape(num_layers, head_dim, num_layers, head_dim).sum(axis=(1, 3))


def stacked_gram(blocks):
    """``X X^T`` for ``X`` the (L, d, n) blocks stacked to (L d, n): the SYRK of one head."""
    x = blocks.reshape(-1, blocks.shape[-1])
    return x @ x.T


def stacked_gram_lower(blocks):
    """:func:`stacked_gram` filled only where measure reads it: (L, d, n) float32/64 -> (L d, L d).

    The lower triangle by one SYRK (:func:`~qkalign.linalg.syrk.syrk_lower`, no mirrored copy
    of the whole triangle), then each diagonal (d, d) block mirrored whole; the rest of the
    upper triangle is zero.
    """
    num_layers, d, n = blocks.shape
    gram = syrk_lower(blocks.reshape(num_layers * d, n))
    upper = np.triu_indices(d, 1)
    for layer in range(num_layers):
        block = gram[layer * d:(layer + 1) * d, layer * d:(layer + 1) * d]
        block[upper] = block.T[upper]
    return gram


def symmetric_part_eigen(k_block, q_block, topk):
    """Nonzero spectrum and top-|lambda| eigenvectors of ``S = (K^T Q + Q^T K)/2``.

    Parameters
    ----------
    k_block, q_block : (..., d, n) float64
    topk : int
        Eigenvectors to return, ``<= n``; beyond the rank of ``S`` they span null directions.

    Returns
    -------
    eigvals : (..., 2 d) float64
        Eigenvalues of ``S`` on ``span(A^T)``, sorted by ``|lambda|`` descending (zeros
        where ``A`` is rank-deficient).
    eigvecs : (..., topk, n) float64
        Orthonormal eigenvectors as rows, in the order of ``eigvals``.
    """
    d = k_block.shape[-2]
    a = np.concatenate([k_block, q_block], axis=-2)  # (..., 2d, n)
    c, inverse_factor, keep = _factor_from_eigh(*np.linalg.eigh(a @ np.swapaxes(a, -1, -2)), RANK_TOL["float64"])
    j = np.zeros((2 * d, 2 * d))
    j[:d, d:] = j[d:, :d] = 0.5 * np.eye(d)
    lam, w = _by_magnitude(*np.linalg.eigh(np.swapaxes(c, -1, -2) @ j @ c))
    # S vanishes off span(A^T): the eigenvalues past the rank are exact zeros, not eigh's rounding.
    lam[np.arange(2 * d) >= keep.sum(axis=-1, keepdims=True)] = 0.0
    # Eigenvectors A^T U diag(1/sqrt s) W; columns of W on dropped directions give zero vectors.
    basis = np.swapaxes(a, -1, -2) @ inverse_factor  # (..., n, 2d), orthonormal kept columns
    vecs = np.swapaxes(basis @ w[..., :, : min(topk, 2 * d)], -1, -2)
    if topk > 2 * d or not keep.all():
        vecs = _complete_rows(vecs, lam, topk)
    return lam, vecs


def _factor_from_eigh(s, u, rank_tol):
    """Factors of ``G = A A^T = U diag(s) U^T`` (..., m, m), dropping ``s <= rank_tol * max(s)``.

    Returns ``C = U diag(sqrt s)`` with ``G = C C^T``, ``U diag(1/sqrt s)`` on the kept
    directions (0 on the dropped ones), and the kept mask (..., m).
    """
    keep = s > rank_tol * s[..., -1:]
    c = u * np.sqrt(np.where(keep, s, 0.0))[..., None, :]
    inverse_factor = u * np.where(keep, 1.0 / np.sqrt(np.where(keep, s, 1.0)), 0.0)[..., None, :]
    return c, inverse_factor, keep


def _by_magnitude(lam, w, columns=None):
    """Eigenpairs (..., m), (..., m, m) reordered by ``|lambda|`` descending (stable).

    With ``columns``, only that many leading eigenvectors are returned.
    """
    order = np.argsort(-np.abs(lam), axis=-1, kind="stable")
    return np.take_along_axis(lam, order, axis=-1), np.take_along_axis(w, order[..., None, :columns], axis=-1)


def _complete_rows(vecs, lam, topk):
    """Replace the null-space rows (zero eigenvalue or beyond 2 d) by an orthonormal completion.

    S is zero on the orthogonal complement of span(A^T), so any orthonormal
    completion is a valid set of eigenvectors there; QR of the kept rows padded
    with the identity gives a deterministic one.
    """
    n = vecs.shape[-1]
    out = np.empty(vecs.shape[:-2] + (topk, n))
    flat_vecs = vecs.reshape(-1, vecs.shape[-2], n)
    flat_lam = lam.reshape(-1, lam.shape[-1])
    flat_out = out.reshape(-1, topk, n)
    for i in range(flat_vecs.shape[0]):
        nonzero = np.abs(flat_lam[i, : flat_vecs.shape[1]]) > 0
        nonzero &= np.einsum("kn,kn->k", flat_vecs[i], flat_vecs[i]) > 0.5
        kept = orthonormalized_rows(flat_vecs[i][nonzero])
        q, _ = np.linalg.qr(np.concatenate([kept, np.eye(n)], axis=0).T)
        flat_out[i, : len(kept)] = kept
        flat_out[i, len(kept):] = q[:, len(kept): topk].T
    return out


def symmetric_part_eigen_from_gram(k_block, q_block, a_gram, topk, rank_tol=RANK_TOL["float64"], j_map=None):
    """:func:`symmetric_part_eigen` given ``G = A A^T`` for ``A = [K; Q]``.

    ``G`` comes from Grams computed anyway (its diagonal blocks ``K K^T``, ``Q Q^T`` sit in the
    stacked Grams, ``K Q^T`` is needed for ``fro_sq``), so no (2d x n) product is redone here.
    The steps: factor ``G = C C^T`` (:func:`_gram_factors`: Cholesky where ``G`` has full rank,
    else an eigen-decomposition that drops the null directions, whose eigenvalues are then
    exactly 0); the eigenpairs ``C^T J C = W Lambda W^T`` in float64, every eigenvalue and the
    ``topk`` leading eigenvectors (:func:`_j_form`, :func:`~qkalign.linalg.leading_eigen.leading_eigenpairs`);
    the eigenvectors ``A^T C^{-T} W`` (:func:`_eigenvector_coefficients`, :func:`_eigenvector_rows`).

    Parameters
    ----------
    k_block, q_block : (..., d, n) float32 or float64
        ``K`` and ``Q``; the eigenvectors are formed in their precision.
    a_gram : (..., 2d, 2d) float64
        ``A A^T``.
    topk : int
        ``<= n``.
    rank_tol : float
        ``G`` is rank-deficient where a squared Cholesky pivot (or an eigenvalue) is at most
        ``rank_tol`` times the largest diagonal entry (eigenvalue): set it above the
        relative rounding error of ``G``.
    j_map : (..., d, d) float64, optional
        ``M`` of a rotated operator ``K^T M Q`` (:mod:`~qkalign.weights.rotary_operator`): its symmetric part is
        ``A^T J' A`` with ``J' = [[0, M/2], [M^T/2, 0]]``, so ``C^T J' C`` replaces ``C^T J C`` (the Q rows of ``C``
        mapped by ``M``) and the eigenvectors are ``A^T C^{-T} W`` as before: the factor of ``A A^T`` stays that
        of the unrotated blocks, whatever ``M`` shrinks.

    Returns
    -------
    eigvals : (..., 2 d) float64, sorted by ``|lambda|`` descending
    eigvecs : (..., topk, n) float64, orthonormal rows
    """
    two_d = a_gram.shape[-1]
    batch = a_gram.shape[:-2]
    factors = _gram_factors(np.asarray(a_gram, dtype=np.float64).reshape((-1, two_d, two_d)), rank_tol)
    j_map = None if j_map is None else np.reshape(j_map, (-1, two_d // 2, two_d // 2))
    lam, w = leading_eigenpairs(_j_form(factors, j_map), min(topk, two_d))
    coef = _eigenvector_coefficients(factors, lam, w)
    k, q = (np.asarray(x).reshape((-1,) + x.shape[-2:]) for x in (k_block, q_block))
    vecs = _eigenvector_rows(k, q, coef, factors.full)
    lam = lam.reshape(batch + (two_d,))
    vecs = vecs.reshape(batch + vecs.shape[-2:])
    if topk > two_d or not factors.full.all():
        vecs = _complete_rows(vecs, lam, topk)
    return lam, vecs


class _GramFactors(NamedTuple):
    """``G = C C^T`` for a batch of (2d, 2d) Grams, as :func:`_gram_factors` returns them."""

    c: np.ndarray  # (b, 2d, 2d): lower triangular (Cholesky) where full, U diag(sqrt s) elsewhere
    full: np.ndarray  # (b,) bool: G has full rank (a Cholesky factor)
    rank: np.ndarray  # (b,) int: directions kept
    inverse: dict  # item -> U diag(1/sqrt s) (2d, 2d) on the kept directions, 0 elsewhere: rank-deficient items


def _gram_factors(g, rank_tol):
    """Factors ``G = C C^T`` of the (b, 2d, 2d) float64 Grams ``g``.

    The Cholesky factor ``L`` where every squared pivot exceeds ``rank_tol`` times the largest
    diagonal entry; elsewhere ``C = U diag(sqrt s)`` from ``G = U diag(s) U^T`` with the
    eigenvalues ``s <= rank_tol max(s)`` dropped (:func:`_factor_from_eigh`).
    """
    c, full = _cholesky_where_full_rank(g, rank_tol)
    rank = np.full(len(g), g.shape[-1])
    inverse = {}
    for i in np.flatnonzero(~full):
        c[i], inverse[i], keep = _factor_from_eigh(*np.linalg.eigh(g[i]), rank_tol)
        rank[i] = keep.sum()
    return _GramFactors(c, full, rank, inverse)


def _j_form(factors, j_map=None):
    """``C^T J C = (P + P^T)/2`` with ``P = C_K^T C_Q`` (``C_K``, ``C_Q`` the first and last d rows of C): (b, 2d, 2d).

    Its nonzero eigenvalues are those of ``S``. For a Cholesky factor ``C = [[L11, 0], [L21, L22]]``,
    ``P = [[L11^T L21, L11^T L22], [0, 0]]``: two (d, d) products instead of one (2d, d) x (d, 2d),
    and a zero lower-right block of ``C^T J C``. With ``j_map`` (b, d, d), ``M``: ``C^T J' C`` for
    ``J' = [[0, M/2], [M^T/2, 0]]``, i.e. ``C_Q`` replaced by ``M C_Q``.
    """
    c = factors.c
    d = c.shape[-1] // 2
    c_q = c[:, d:] if j_map is None else j_map @ c[:, d:]
    out = np.empty_like(c)
    l11_t = np.swapaxes(c[:, :d, :d], -1, -2)
    corner = l11_t @ c_q[:, :, :d]
    out[:, :d, :d] = 0.5 * (corner + np.swapaxes(corner, -1, -2))
    out[:, :d, d:] = 0.5 * (l11_t @ c_q[:, :, d:])
    out[:, d:, :d] = np.swapaxes(out[:, :d, d:], -1, -2)
    out[:, d:, d:] = 0.0
    for i in np.flatnonzero(~factors.full):  # C = U diag(sqrt s) is not triangular
        half = c[i, :d].T @ c_q[i]
        out[i] = 0.5 * (half + half.T)
    return out


def _eigenvector_coefficients(factors, lam, w):
    """``coef`` (b, 2d, m) such that the eigenvectors of ``S`` are ``A^T coef``.

    ``C^{-T} W`` for a Cholesky factor (a triangular solve), ``U diag(1/sqrt s) W`` for an
    eigen-factor, whose eigenvalues ``lam`` (b, 2d) beyond the rank of ``G`` are set to exact
    zeros (in place: ``S`` vanishes off ``span(A^T)``). w: (b, 2d, m) eigenvectors of ``C^T J C``.
    """
    from scipy.linalg import solve_triangular  # only measure needs scipy: imported here

    coef = np.empty(w.shape)
    for i in range(len(w)):
        if factors.full[i]:
            coef[i] = solve_triangular(factors.c[i], w[i], lower=True, trans="T")
        else:
            lam[i, factors.rank[i]:] = 0.0
            coef[i] = factors.inverse[i] @ w[i]
    return coef


def _eigenvector_rows(k, q, coef, full):
    """Eigenvectors of ``S`` as rows, ``(A^T coef)^T = coef_K^T K + coef_Q^T Q``: (b, m, n) float64.

    k, q: (b, d, n) float32 or float64, the precision of the (m, d) x (d, n) products; coef:
    (b, 2d, m). In float32 the rows are orthonormal only to ~eps cond(G): those of the full-rank
    items (``full`` (b,) bool) are orthonormalised in float64 (:func:`orthonormalized_rows`); the
    others are completed by :func:`_complete_rows`.
    """
    d = k.shape[-2]
    coef_t = np.swapaxes(coef, -1, -2).astype(k.dtype)
    vecs = (coef_t[..., :d] @ k).astype(np.float64)
    vecs += coef_t[..., d:] @ q
    if full.all():  # the usual case: no copy of the rows picked
        return orthonormalized_rows(vecs)
    vecs[full] = orthonormalized_rows(vecs[full])
    return vecs


def orthonormalized_rows(rows):
    """The orthonormal rows nearest to ``rows`` (Loewdin): ``(V V^T)^{-1/2} V``, (..., m, n) -> (..., m, n).

    For rows that are orthonormal up to rounding (eigenvectors formed in float32) this
    corrects the rounding symmetrically, moving no row more than the others and keeping
    each row's span as far as rounding allows.
    """
    gram = rows @ np.swapaxes(rows, -1, -2)
    s, u = np.linalg.eigh(gram)
    inverse_sqrt = (u / np.sqrt(s)[..., None, :]) @ np.swapaxes(u, -1, -2)
    return inverse_sqrt @ rows


def _cholesky_where_full_rank(g, rank_tol):
    """Lower Cholesky factors (b, m, m) of the (b, m, m) Grams ``g``, and (b,) bool: False where ``g`` is
    (near) singular, i.e. not positive definite or with a squared pivot at most ``rank_tol`` times its
    largest diagonal entry."""
    c, full = lower_cholesky(g)
    pivots_sq = np.einsum("bii->bi", c) ** 2
    scale = np.einsum("bii->bi", g).max(axis=-1)
    return c, full & (pivots_sq.min(axis=-1) > rank_tol * scale)
