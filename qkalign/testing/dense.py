"""Dense float64 constructions: the operators ``g = W_K^T W_Q`` formed as n x n matrices.

qkalign never forms them (it works from the factors); tests check its numbers against
these slow, obvious computations.
"""

import numpy as np
from threadpoolctl import threadpool_limits


def dense_operators(w_q, w_k):
    """``g[L, h] = K^T Q`` for every layer and query head, head ``h`` reading kv head ``h // (H / H_kv)``.

    w_q: (L, H, d, n), w_k: (L, H_kv, d, n) -> (L, H, n, n) float64.
    """
    w_q = np.asarray(w_q, dtype=np.float64)
    w_k = np.repeat(np.asarray(w_k, dtype=np.float64), w_q.shape[1] // w_k.shape[1], axis=1)
    return np.einsum("lhdi,lhdj->lhij", w_k, w_q)


def spectra_by_magnitude(g):
    """Eigenpairs of the symmetric parts ``(g + g^T)/2``, sorted by ``|lambda|`` descending.

    g: (..., n, n) -> eigenvalues (..., n) and eigenvectors as columns (..., n, n).
    """
    lam, vec = np.linalg.eigh(0.5 * (g + np.swapaxes(g, -1, -2)))
    order = np.argsort(-np.abs(lam), axis=-1, kind="stable")
    return np.take_along_axis(lam, order, axis=-1), np.take_along_axis(vec, order[..., None, :], axis=-1)


def dense_truth(w_q, w_k, topk):
    """What ``measure`` computes, from dense float64 operators.

    Returns gram (L, L, H), fro_sq (L, H), sym_eigs (L, H, 2 d; zero-padded where n < 2 d) and
    the top-k eigenvectors as rows (L, H, topk, n), sorted by ``|lambda|`` descending.
    Single-threaded BLAS: multithreaded eigh of many small matrices crawls on a busy machine.
    """
    with threadpool_limits(1, user_api="blas"):
        num_layers, num_heads, head_dim, hidden = np.shape(w_q)
        g = dense_operators(w_q, w_k)
        gram = np.einsum("lhij,mhij->lmh", g, g)
        k = np.repeat(np.asarray(w_k, dtype=np.float64), num_heads // np.shape(w_k)[1], axis=1)
        fro_sq = np.einsum("lhab->lh", np.einsum("lhai,lhbi->lhab", k, np.asarray(w_q, dtype=np.float64)) ** 2)
        lam, vec = spectra_by_magnitude(g)
        sym_eigs = np.zeros((num_layers, num_heads, 2 * head_dim))
        m = min(2 * head_dim, hidden)
        sym_eigs[..., :m] = lam[..., :m]
        return gram, fro_sq, sym_eigs, np.swapaxes(vec[..., :topk], -1, -2)
