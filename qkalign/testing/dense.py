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


#: Relative tolerance of measure's numbers against :func:`dense_truth`, per precision of its products: float32
#: products of n terms, then float64 sums and eigen-problems (measure's docstring: about 1e-7 relative).
TOL = {"float32": 1e-5, "float64": 1e-11}
#: 1 - |cos| allowed between measure's eigenvectors and the dense ones.
DIRECTION_TOL = 1e-6


def assert_matches_dense(data, w_q, w_k, precision, topk=None):
    """gram, fro_sq, sym_eigs within the precision's tolerance; top-k directions equal up to sign."""
    tol = TOL[precision]
    topk = topk or data.topk
    gram, fro_sq, sym_eigs, vecs = dense_truth(w_q, w_k, topk)
    norms = np.sqrt(np.einsum("llh->lh", gram))
    scale = norms[:, None, :] * norms[None, :, :]  # Cauchy-Schwarz bound of each entry
    assert np.abs(data.gram - gram).max() <= tol * scale.max()
    assert np.all(np.abs(data.gram - gram) <= tol * scale)
    np.testing.assert_allclose(data.fro_sq, fro_sq, rtol=tol, atol=0)
    top = np.abs(sym_eigs[..., :1])
    assert np.all(np.abs(data.sym_eigs - sym_eigs) <= tol * top), np.abs(data.sym_eigs - sym_eigs).max()
    cosines = np.abs(np.einsum("lhkn,lhkn->lhk", data.eig_dirs[:, :, :topk], vecs))
    assert cosines.min() >= 1 - DIRECTION_TOL, cosines.min()
    # Rows are orthonormalised in float64 whatever the precision: an entry of their k x k Gram
    # sums n products and the correction (V V^T)^{-1/2} V sums k rows, so a few (n + k) ulps.
    gram_of_rows = data.eig_dirs @ np.swapaxes(data.eig_dirs, -1, -2)
    atol = 4 * (data.hidden_size + data.topk) * np.finfo(np.float64).eps
    np.testing.assert_allclose(gram_of_rows, np.broadcast_to(np.eye(data.topk), gram_of_rows.shape), atol=atol)
