"""Head matching across layers: pair the heads of two layers by their best assignment.

Head indices are arbitrary between layers. For layers ``L`` and ``L'`` the similarity
of head ``h`` of ``L`` and head ``h'`` of ``L'`` is the mean squared principal cosine
of their top-k eigenvector spans, ``||Qa Qb^T||_F^2 / k`` for orthonormal rows ``Qa``,
``Qb`` (no SVD needed), and ``scipy.optimize.linear_sum_assignment`` finds the
permutation that maximises its sum. The statistics of the matched pairs are then
computed as for index-matched heads. Only statistics defined for any two heads can be
matched: the gram holds same-index pairs only, so the operator cosine is not among them.

How it is computed: each head's rows ``A`` (its stored eigenvectors, k x n) are
orthonormalised as ``Q = P A`` by Cholesky-QR from the k x k self-Gram (:func:`row_factors`;
Householder QR for rows far from orthonormal); the blocks ``M = Qa Qb^T`` of all head
pairs of two layers come from one GEMM ``(H k, n) x (n, H k)`` on all BLAS threads
(:func:`cross_blocks`), which also gives the similarities; the matched pairs' principal
cosines are the singular values of their blocks ``M``. The many small products and
factorisations run on one BLAS thread. Same numbers as the reference's Householder bases
and Knyazev-Argentati cosines to a few ulps.

A best assignment is selected to be large, so matched statistics exceed the
index-matched ones even for unrelated heads: :func:`matched_chance` gives the
level that selection alone reaches for random subspaces.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..linalg.binary_scaling import normalized_rows
from ..linalg.blas_threads import one_blas_thread
from ..linalg.cholesky_qr import cholesky_qr_factors
from .chance import bartlett_wishart_factor
from .reference import householder_rows


def row_factors(rows):
    """Cholesky-QR factors ``P`` with orthonormal rows ``P A``, per block: (..., k, n) -> (..., k, k), (...,) bool.

    :func:`qkalign.linalg.cholesky_qr.cholesky_qr_factors` of the blocks' Grams ``A A^T``: where
    ``ok`` is False (nearly dependent rows, a zero row) ``P`` is the identity and the
    block is for Householder QR (:func:`qkalign.stats.reference.householder_rows`).
    """
    k = rows.shape[-2]
    gram = np.empty(rows.shape[:-1] + (k,))
    with one_blas_thread():  # thousands of k x n x k products: one thread each is fastest
        for i, block in enumerate(rows):  # float32 rows widened a layer at a time, not all at once
            block = np.asarray(block, dtype=np.float64)
            gram[i] = block @ np.swapaxes(block, -1, -2)
    if not np.isfinite(gram).all():
        raise ValueError("eigenvector rows hold nan or inf")
    return cholesky_qr_factors(gram)


def orthonormal_rows(rows, factors, ok):
    """Orthonormal rows spanning each block of ``rows`` (..., k, n): ``P A`` where ``ok``, Householder elsewhere."""
    with one_blas_thread():
        out = factors @ rows
    if not ok.all():
        out[~ok] = householder_rows(rows[~ok])
    return out


def cross_blocks(rows_a, factors_a, ok_a, q_b):
    """``M = Qa Qb^T`` for every head of layer a against every head of layer b.

    rows_a (H, k, n) and their :func:`row_factors` (H, k, k), (H,); q_b (G, k, n) orthonormal
    rows -> (H, k, G, k), ``out[h, :, g, :]`` the k x k block of head h against head g.
    ``Qa = P_a A_a`` is not formed: ``M = P_a (A_a Qb^T)``, whose product ``(H k, n) x (n, G k)``
    is one large GEMM on all BLAS threads; heads of a that are not ``ok`` use Householder rows.
    """
    num_heads, k, hidden = rows_a.shape
    product = (rows_a.reshape(-1, hidden) @ q_b.reshape(-1, hidden).T).reshape(num_heads, k, -1)
    with one_blas_thread():
        out = factors_a @ product
    if not ok_a.all():
        out[~ok_a] = householder_rows(rows_a[~ok_a]) @ q_b.reshape(-1, hidden).T
    return out.reshape(num_heads, k, q_b.shape[0], k)


def head_similarity(cross):
    """Mean squared principal cosine ``||M||_F^2 / k`` of every head pair: (..., H, k, G, k) -> (..., H, G)."""
    return np.einsum("...hkgj,...hkgj->...hg", cross, cross) / cross.shape[-1]


def best_assignment(similarity):
    """Permutation ``perm`` maximising ``sum_h similarity[h, perm[h]]``: (H, H) -> (H,) int."""
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    return cols[np.argsort(rows)]


def matched_cosines(cross, perm):
    """Principal cosines (descending) of the pairs ``(h, perm[h])``: (H, k, G, k), (H,) -> (H, k).

    The singular values of the blocks ``M``, clipped to [0, 1]. The reference takes those
    with ``cos^2 >= 1/2`` as ``sqrt(1 - sin^2)`` of Knyazev-Argentati sines, for accurate
    small *angles*; the cosines themselves agree to a few ulps either way (an error ``e``
    in ``M`` moves a singular value by at most ``e``), as in ``qkalign.kernels.principal_angles``.
    """
    heads = np.arange(cross.shape[0])
    blocks = cross[heads, :, perm, :]  # (H, k, k)
    with one_blas_thread():  # H SVDs of k x k
        return np.clip(np.linalg.svd(blocks, compute_uv=False), 0.0, 1.0)


def _pair_statistics(data, cross, layer_a, layer_b, perm, k_values):
    """The matched statistics of layers a and b, heads ``(h, perm[h])``; a head matched with itself
    (the anchor against itself) gets the exact values of a self-comparison, 1."""
    heads = np.arange(data.num_heads)
    itself = (perm == heads) if layer_a == layer_b else np.zeros(data.num_heads, dtype=bool)
    cos = matched_cosines(cross, perm)
    cos[itself] = 1.0
    dirs = data.eig_dirs
    a0 = dirs[layer_a, heads, 0].astype(np.float64)
    b0 = dirs[layer_b, perm, 0].astype(np.float64)
    top1 = np.einsum("hn,hn->h", a0, b0) ** 2 / np.einsum("hn,hn->h", a0, a0) / np.einsum("hn,hn->h", b0, b0)
    top1[itself] = 1.0
    eig_a, eig_b = data.sym_eigs[layer_a, heads], data.sym_eigs[layer_b, perm]
    scaled_a, scaled_b = normalized_rows(eig_a), normalized_rows(eig_b)  # exact: norms in range at any scale
    spectral = {}
    for name, va, vb in (("spectral_cos", scaled_a, scaled_b), ("spectral_abs_cos", np.abs(scaled_a), np.abs(scaled_b))):
        per_head = np.einsum("hm,hm->h", va, vb) / np.linalg.norm(va, axis=1) / np.linalg.norm(vb, axis=1)
        per_head[itself] = 1.0
        spectral[name] = float(per_head.mean())
    same_sign = np.sign(eig_a) == np.sign(eig_b)
    return {
        "pa_mean_cos": float(cos.mean()),
        "pa_min_cos": float(cos.min(axis=1).mean()),
        "top1_overlap": float(top1.mean()),
        **spectral,
        "sign_agreement": [float(same_sign[:, :k].mean()) for k in k_values],
        "heads_moved": int((perm != heads).sum()),
    }


def match_heads(data, anchor, k_values):
    """Matched statistics to the anchor and between adjacent layers.

    Returns
    -------
    dict
        ``to_anchor`` and ``adjacent``: for each, ``assignment`` (n_pairs, H) (head h of
        the first layer is paired with head ``assignment[h]`` of the second) and the
        statistics pa_mean_cos, pa_min_cos, top1_overlap, spectral_cos, spectral_abs_cos
        (n_pairs,), sign_agreement (n_pairs, len(k_values)) and heads_moved (n_pairs,).
        ``adjacent`` pairs are (L, L+1).
    """
    dirs = data.eig_dirs
    factors, ok = row_factors(dirs)  # (L, H, k, k), (L, H): one batched k x k Gram per head
    anchor_rows = orthonormal_rows(dirs[anchor], factors[anchor], ok[anchor])
    out = {}
    for name, pairs in (("to_anchor", [(layer, anchor) for layer in range(data.num_layers)]),
                        ("adjacent", [(layer, layer + 1) for layer in range(data.num_layers - 1)])):
        stats, assignments = [], []
        for layer_a, layer_b in pairs:
            q_b = anchor_rows if layer_b == anchor else orthonormal_rows(dirs[layer_b], factors[layer_b], ok[layer_b])
            cross = cross_blocks(dirs[layer_a], factors[layer_a], ok[layer_a], q_b)
            perm = best_assignment(head_similarity(cross))
            assignments.append(perm)
            stats.append(_pair_statistics(data, cross, layer_a, layer_b, perm, k_values))
        block = {"assignment": np.array(assignments, dtype=int).reshape(len(pairs), data.num_heads)}
        for key in ("pa_mean_cos", "pa_min_cos", "top1_overlap", "spectral_cos", "spectral_abs_cos",
                    "sign_agreement", "heads_moved"):
            block[key] = np.array([row[key] for row in stats])
        out[name] = block
    return out


#: Layer pairs of random heads drawn by :func:`matched_chance` (recorded in the result's chance levels).
MATCHED_CHANCE_TRIALS = 20


def matched_chance(num_heads, hidden, k, trials=MATCHED_CHANCE_TRIALS, seed=0):
    """Mean principal cosine of best-matched pairs of *random* heads (selection bias alone).

    Draws ``trials`` pairs of layers of ``num_heads`` Haar-random k-subspaces of R^hidden,
    matches them as :func:`match_heads` does, and returns (mean, sd) over trials of the
    head-averaged matched mean principal cosine.

    The subspaces are the column blocks of a Gaussian ``Z`` (hidden x m), m = 2 H k. When
    ``hidden > m`` they are drawn in R^m instead: ``Z = O [B^T; 0]`` (QR) with ``O`` Haar,
    independent of ``B`` (lower triangular, the Bartlett factor of ``Z^T Z`` ~ Wishart_m(hidden)),
    and the common rotation ``O`` changes no similarity or cosine; so head i's subspace is
    the span of rows ``i k .. i k + k - 1`` of ``B`` (m^2 / 2 random numbers, not hidden m).
    """
    rng = np.random.default_rng(seed)
    dim = 2 * num_heads * k
    values = []
    for _ in range(trials):
        if hidden > dim:
            z_t = bartlett_wishart_factor(rng, dim, hidden, 1)[0]
        else:
            z_t = rng.standard_normal((dim, hidden))
        rows = z_t.reshape(2, num_heads, k, -1)
        factors, ok = row_factors(rows)
        q_b = orthonormal_rows(rows[1], factors[1], ok[1])
        # B is lower triangular: the first layer's rows vanish beyond column H k (when hidden > m).
        cols = num_heads * k if hidden > dim else z_t.shape[1]
        cross = cross_blocks(rows[0, ..., :cols], factors[0], ok[0], q_b[..., :cols])
        perm = best_assignment(head_similarity(cross))
        values.append(matched_cosines(cross, perm).mean())
    return float(np.mean(values)), float(np.std(values))
