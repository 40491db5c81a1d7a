"""The numpy reference: the definition of every number qkalign reports.

Plain vectorised float64 numpy, written to be read. The Numba kernels in
``qkalign.kernels`` must agree with these functions (the comparison table in
``qkalign.testing.comparisons`` pairs each kernel with its function here).

Notation: ``L`` layers, ``H`` query heads, ``k`` eigenvectors kept per head,
``n`` hidden size, ``g_L^h`` the QK operator of layer ``L``, head ``h``.

Stored eigenvectors may be float32: every function computes with their float64 values
(exact), so the numbers do not depend on the storage precision's arithmetic.

What is exact by construction is returned exactly, not as the rounding of a computation:
every comparison of a layer with itself (cosines, overlaps, agreements) is 1, so the
residual ``sqrt(1 - cos^2)`` of a layer with itself is 0 (:func:`exact_self_comparisons`).
"""

import numpy as np

from ..linalg.binary_scaling import normalized_rows
from ..linalg.blas_threads import one_blas_thread

#: The seed's list of top-k values for the sign agreement (only those <= spectrum length are used).
SIGN_K_VALUES = (2, 4, 8, 16, 32, 64, 128, 256)


def exact_self_comparisons(pairs):
    """``pairs`` (L, L, ...) with each layer's comparison with itself set to exactly 1, in place.

    A cosine (or overlap) of an operator, subspace or spectrum with itself is 1 by construction;
    computed, it is 1 only to an ulp or two, and ``sqrt(1 - cos^2)`` turns that ulp into 1e-8.
    Returns ``pairs``.
    """
    layers = np.arange(pairs.shape[0])
    pairs[layers, layers] = 1.0
    return pairs


def operator_norms(gram):
    """Frobenius norms ``||g_L^h||_F = sqrt(gram[L, L, h])``.

    gram: (L, L, H) float64 -> (L, H) float64.
    """
    return np.sqrt(np.einsum("llh->lh", gram))


def operator_cos_per_head(gram):
    """Operator cosine ``cos[L, L', h] = gram[L, L', h] / (||g_L^h|| ||g_L'^h||)``.

    Normalised by the gram diagonal, not by the JSON's ``fro_sq`` (a different
    quantity, see the seed's NOTE); ``cos[L, L, h] = 1`` exactly (:func:`exact_self_comparisons`).
    gram: (L, L, H) -> (L, L, H) float64.
    """
    norms = operator_norms(gram)
    return exact_self_comparisons(gram / (norms[:, None, :] * norms[None, :, :]))


def adjacent_cos(cos):
    """Cosines of adjacent layers ``cos[L, L+1]``: (L, L) -> (L-1,)."""
    return np.diagonal(cos, offset=1).copy()


def rescale_to_anchor(gram, anchor):
    """Optimal scalar rescale of each layer onto the anchor and what it leaves.

    For one head, ``T = <g_L, g_a> / ||g_a||^2`` minimises ``||g_L - T g_a||_F``
    and leaves the fraction ``||g_L - T g_a|| / ||g_L|| = sqrt(1 - cos^2)``.

    Returns
    -------
    t_opt : (L,) float64
        ``mean_h gram[L, a, h] / gram[a, a, h]``.
    mean_cos : (L,) float64
        ``mean_h cos[L, a, h]`` (the anchor's column of the head-averaged cosine).
    mean_resid : (L,) float64
        ``mean_h sqrt(1 - cos[L, a, h]^2)``, the per-head residual fraction averaged.
    resid_of_mean_cos : (L,) float64
        ``sqrt(1 - mean_cos^2)``, the seed's "resid_frac" column of section (a).
    """
    cos_a = operator_cos_per_head(gram)[:, anchor, :]  # 1 at the anchor itself: residual exactly 0
    t_opt = (gram[:, anchor, :] / np.einsum("llh->lh", gram)[anchor]).mean(axis=1)
    mean_cos = cos_a.mean(axis=1)
    mean_resid = np.sqrt(np.clip(1.0 - cos_a**2, 0.0, 1.0)).mean(axis=1)
    resid_of_mean_cos = np.sqrt(np.maximum(1.0 - mean_cos**2, 0.0))
    return t_opt, mean_cos, mean_resid, resid_of_mean_cos


def sign_k_values(spectrum_length):
    """The seed's k values that fit in a spectrum of this length."""
    return tuple(k for k in SIGN_K_VALUES if k <= spectrum_length)


def sign_agreement(sym_eigs, anchor, k_values):
    """Fraction of the top-k eigenvalues whose sign equals the anchor's, per (k, L, h).

    ``agree[i, L, h] = mean_{j < k_i} [sign(lambda_j(L, h)) == sign(lambda_j(a, h))]``
    with eigenvalues in the stored order (``|lambda|`` descending) and ``sign(0) = 0``.
    sym_eigs: (L, H, m) -> (len(k_values), L, H) float64.
    """
    same = np.sign(sym_eigs) == np.sign(sym_eigs[anchor])[None]
    return np.stack([same[:, :, :k].mean(axis=2) for k in k_values])


def fraction_positive(sym_eigs):
    """Fraction of positive eigenvalues per layer over all heads: (L, H, m) -> (L,)."""
    return (sym_eigs > 0).mean(axis=(1, 2))


def _float64(values):
    """The stored values as float64 (exact for float32 storage)."""
    return np.asarray(values, dtype=np.float64)


def orthonormal_bases(eig_dirs):
    """Orthonormal bases of the row spans of ``eig_dirs``: (..., k, n) -> (..., n, k).

    Householder QR of each ``A^T``; stored eigenvectors need not be orthonormal
    (float16/bfloat16 storage rounds them).
    """
    # Thousands of small LAPACK calls: BLAS threads only oversubscribe the cores
    # (measured on 2 busy cores: 60 s with two OpenBLAS threads, 3.8 s with one).
    with one_blas_thread():
        q, _ = np.linalg.qr(np.swapaxes(_float64(eig_dirs), -1, -2))
    return q


def householder_rows(rows):
    """:func:`orthonormal_bases` as rows: (..., k, n) -> (..., k, n), orthonormal rows of the same spans."""
    return np.swapaxes(orthonormal_bases(rows), -1, -2)


def _cosines_and_sines(qa, qb):
    """Singular values of ``qa^T qb`` (cosines, descending) and of ``qb - qa qa^T qb`` (sines, ascending)."""
    with one_blas_thread():  # batched small products and SVDs, as in orthonormal_bases
        m = np.swapaxes(qa, -1, -2) @ qb
        cos = np.linalg.svd(m, compute_uv=False)
        sin_ascending = np.linalg.svd(qb - qa @ m, compute_uv=False)[..., ::-1]
    return cos, sin_ascending


def principal_angles(qa, qb):
    """Principal angles between ``span(qa)`` and ``span(qb)``, ascending (radians).

    Knyazev & Argentati (2002), as ``scipy.linalg.subspace_angles``: angles with
    ``cos^2 < 1/2`` from the cosines, the singular values of ``qa^T qb``; smaller
    ones from the sines, the singular values of ``qb - qa (qa^T qb)``, which keeps
    nearly coincident subspaces accurate (``arccos`` cannot resolve angles < 1e-8).

    qa, qb: (..., n, k) float64 with orthonormal columns -> (..., k) float64.
    """
    cos, sin_ascending = _cosines_and_sines(qa, qb)
    return np.where(cos**2 >= 0.5, np.arcsin(np.clip(sin_ascending, 0.0, 1.0)), np.arccos(np.clip(cos, 0.0, 1.0)))


def principal_cosines(qa, qb):
    """Cosines of :func:`principal_angles`, descending: (..., n, k) x 2 -> (..., k) in [0, 1].

    Where ``cos^2 >= 1/2`` they are ``sqrt(1 - sin^2)`` of the accurate sines, elsewhere
    the singular values of ``qa^T qb`` themselves (clipped to [0, 1] against rounding).
    """
    cos, sin_ascending = _cosines_and_sines(qa, qb)
    from_sines = np.sqrt(np.clip(1.0 - sin_ascending**2, 0.0, 1.0))
    return np.where(cos**2 >= 0.5, from_sines, np.clip(cos, 0.0, 1.0))


def top1_overlap(eig_dirs, anchor):
    """Squared cosine between each head's top eigenvector and the anchor's: (L, H, k, n) -> (L, H).

    ``(a_0 . b_0)^2 / (|a_0|^2 |b_0|^2)``; the seed left out the normalisation,
    which only matters for rows stored with rounding.
    """
    a0 = _float64(eig_dirs[:, :, 0, :])
    b0 = _float64(eig_dirs[anchor, :, 0, :])
    dots = np.einsum("lhn,hn->lh", a0, b0)
    overlap = dots**2 / (np.einsum("lhn,lhn->lh", a0, a0) * np.einsum("hn,hn->h", b0, b0)[None])
    overlap[anchor] = 1.0  # the anchor with itself (exact_self_comparisons)
    return overlap


def principal_cosines_to_anchor(eig_dirs, anchor):
    """Principal-angle cosines between every layer's top-k span and the anchor's, per head.

    eig_dirs: (L, H, k, n) -> (L, H, k) float64, descending along the last axis.
    """
    q = orthonormal_bases(eig_dirs)
    cos = principal_cosines(q, q[anchor][None])
    cos[anchor] = 1.0  # the anchor's span with itself (exact_self_comparisons)
    return cos


# All layer pairs: the same quantities with every layer as the reference layer.
# ``result[..., i, j, h]`` compares layer ``i`` with layer ``j``, so the to-anchor
# functions above are the slices ``[..., :, anchor, :]`` of these.


def sign_agreement_all_pairs(sym_eigs, k_values):
    """Top-k sign agreement between every pair of layers, per head.

    ``agree[q, i, j, h] = mean_{m < k_q} [sign(lambda_m(i, h)) == sign(lambda_m(j, h))]``.
    sym_eigs: (L, H, m) -> (len(k_values), L, L, H) float64.
    """
    signs = np.sign(sym_eigs)
    same = signs[:, None] == signs[None, :]  # (L, L, H, m)
    return np.stack([same[..., :k].mean(axis=-1) for k in k_values])


def top1_overlap_all_pairs(eig_dirs):
    """Squared cosine between the top eigenvectors of every pair of layers: (L, H, k, n) -> (L, L, H)."""
    top = _float64(eig_dirs[:, :, 0, :])
    dots = np.einsum("ihn,jhn->ijh", top, top)
    norm_sq = np.einsum("lhn,lhn->lh", top, top)
    return exact_self_comparisons(dots**2 / (norm_sq[:, None] * norm_sq[None]))


def principal_cosines_all_pairs(eig_dirs):
    """Principal-angle cosines between the top-k spans of every pair of layers, per head.

    ``cos[i, j, h]`` are the cosines between ``span(eig_dirs[i, h])`` and
    ``span(eig_dirs[j, h])``, descending. One batched call per layer ``i`` keeps
    the (L, H, n, k) residual of :func:`principal_cosines` in memory, not (L, L, H, n, k).
    eig_dirs: (L, H, k, n) -> (L, L, H, k) float64.
    """
    q = orthonormal_bases(eig_dirs)
    return exact_self_comparisons(np.stack([principal_cosines(q_i[None], q) for q_i in q]))


# Spectra of the symmetric parts: their shape and their signs.


def spectral_cos_all_pairs(sym_eigs, absolute=False):
    """Cosine between the |lambda|-sorted eigenvalue vectors of every two layers, per head.

    ``spectral_cos[L, L', h] = <lambda_L^h, lambda_L'^h> / (|lambda_L^h| |lambda_L'^h|)``,
    with ``lambda`` replaced by ``|lambda|`` when ``absolute`` (spectral *shape* only).
    Each spectrum is first scaled by a power of two (exact; the cosine does not depend on it)
    so that its squared norm cannot overflow or underflow, whatever the eigenvalues' scale.
    sym_eigs: (L, H, m) -> (L, L, H) float64.
    """
    v = normalized_rows(np.abs(sym_eigs) if absolute else sym_eigs)
    unit = v / np.linalg.norm(v, axis=-1, keepdims=True)
    return exact_self_comparisons(np.einsum("lhm,khm->lkh", unit, unit))


def signed_mass(sym_eigs):
    """Signed spectral mass ``sum(lambda) / sum(|lambda|) = tr(g) / ||spectrum||_1``: (L, H, m) -> (L, H).

    Computed on each spectrum scaled by a power of two (exact) that keeps the sums in range.
    """
    v = normalized_rows(sym_eigs)
    return v.sum(axis=-1) / np.abs(v).sum(axis=-1)


def fraction_positive_topk(sym_eigs, k):
    """Fraction of positive eigenvalues among the top-k (|lambda| order): (L, H, m) -> (L, H)."""
    return (sym_eigs[..., :k] > 0).mean(axis=-1)
