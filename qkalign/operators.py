"""QK-operator quantities computed from the factors W_Q, W_K without forming g (hidden x hidden).

With ``Q``, ``K`` the (d, n) blocks of one head and ``g = K^T Q``:

- ``<g_L, g_L'>_F = sum((K_L K_L'^T) * (Q_L Q_L'^T))``, so one (L d) x (L d) Gram of the
  head's stacked Q blocks and one of its K blocks give ``gram[:, :, h]``;
- ``||W_K W_Q^T||_F^2 = ||K Q^T||_F^2`` (the seed's ``fro_sq``);
- the symmetric part ``S = (g + g^T)/2 = A^T J A`` with ``A = [K; Q]`` (2d x n) and
  ``J = [[0, I/2], [I/2, 0]]``. With ``A A^T = U diag(s) U^T`` and ``C = U diag(sqrt s)``,
  the nonzero eigenvalues of ``S`` are those of ``C^T J C = W Lambda W^T`` and its
  eigenvectors are ``A^T U diag(1/sqrt s) W`` (orthonormal).
"""

import numpy as np

# Eigenvalues of A A^T below this fraction of the largest are taken as exact zeros
# (tied Q and K, or hidden < 2 d): their directions carry no part of S.
_RANK_TOL = 1e-12


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
    s, u = np.linalg.eigh(a @ np.swapaxes(a, -1, -2))
    keep = s > _RANK_TOL * s[..., -1:]
    inv_sqrt = np.where(keep, 1.0 / np.sqrt(np.where(keep, s, 1.0)), 0.0)
    c = u * np.sqrt(np.where(keep, s, 0.0))[..., None, :]  # A A^T = C C^T
    j = np.zeros((2 * d, 2 * d))
    j[:d, d:] = j[d:, :d] = 0.5 * np.eye(d)
    lam, w = np.linalg.eigh(np.swapaxes(c, -1, -2) @ j @ c)
    order = np.argsort(-np.abs(lam), axis=-1, kind="stable")
    lam = np.take_along_axis(lam, order, axis=-1)
    w = np.take_along_axis(w, order[..., None, :], axis=-1)
    # Eigenvectors A^T U diag(1/sqrt s) W; columns of W on dropped directions give zero vectors.
    basis = np.swapaxes(a, -1, -2) @ (u * inv_sqrt[..., None, :])  # (..., n, 2d), orthonormal kept columns
    vecs = np.swapaxes(basis @ w[..., :, : min(topk, 2 * d)], -1, -2)
    if topk > 2 * d or not keep.all():
        vecs = _complete_rows(vecs, lam, topk)
    return lam, vecs


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
        kept = flat_vecs[i][nonzero]
        q, _ = np.linalg.qr(np.concatenate([kept, np.eye(n)], axis=0).T)
        flat_out[i, : len(kept)] = kept
        flat_out[i, len(kept):] = q[:, len(kept): topk].T
    return out
