"""Head matching across layers: pair the heads of two layers by their best assignment.

Head indices are arbitrary between layers. For layers ``L`` and ``L'`` the similarity
of head ``h`` of ``L`` and head ``h'`` of ``L'`` is the mean squared principal cosine
of their top-k eigenvector spans, ``||Qa^T Qb||_F^2 / k`` (no SVD needed), and
``scipy.optimize.linear_sum_assignment`` finds the permutation that maximises its sum.
The statistics of the matched pairs are then computed as for index-matched heads.
Only statistics defined for any two heads can be matched: the gram holds same-index
pairs only, so the operator cosine is not among them.

A best assignment is selected to be large, so matched statistics exceed the
index-matched ones even for unrelated heads: :func:`matched_chance` gives the
level that selection alone reaches for random subspaces.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment
from threadpoolctl import threadpool_limits

from . import reference


def head_similarity(bases_a, bases_b):
    """Mean squared principal cosine between every head of one layer and every head of another.

    bases_a, bases_b: (H, n, k) orthonormal columns -> (H, H) float64 in [0, 1].
    """
    num_heads, hidden, k = bases_a.shape
    # One GEMM over all head pairs: (H k, n) x (n, H k), then the k x k blocks' squared norms.
    flat_a = np.swapaxes(bases_a, -1, -2).reshape(num_heads * k, hidden)
    flat_b = np.swapaxes(bases_b, -1, -2).reshape(-1, hidden)
    cross = (flat_a @ flat_b.T).reshape(num_heads, k, -1, k)
    return np.einsum("hkgj,hkgj->hg", cross, cross) / k


def best_assignment(similarity):
    """Permutation ``perm`` maximising ``sum_h similarity[h, perm[h]]``: (H, H) -> (H,) int."""
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    return cols[np.argsort(rows)]


def _pair_statistics(data, bases, layer_a, layer_b, perm, k_values):
    heads = np.arange(data.num_heads)
    cos = reference.principal_cosines(bases[layer_a, heads], bases[layer_b, perm])
    dirs = data.eig_dirs
    a0, b0 = dirs[layer_a, heads, 0], dirs[layer_b, perm, 0]
    top1 = np.einsum("hn,hn->h", a0, b0) ** 2 / np.einsum("hn,hn->h", a0, a0) / np.einsum("hn,hn->h", b0, b0)
    eig_a, eig_b = data.sym_eigs[layer_a, heads], data.sym_eigs[layer_b, perm]
    spectral = {}
    for name, va, vb in (("spectral_cos", eig_a, eig_b), ("spectral_abs_cos", np.abs(eig_a), np.abs(eig_b))):
        spectral[name] = float((np.einsum("hm,hm->h", va, vb) / np.linalg.norm(va, axis=1)
                                / np.linalg.norm(vb, axis=1)).mean())
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
    with threadpool_limits(1):  # thousands of small LAPACK calls: threads only oversubscribe the cores
        return _match_heads(data, anchor, k_values)


def _match_heads(data, anchor, k_values):
    bases = reference.orthonormal_bases(data.eig_dirs)
    out = {}
    for name, pairs in (("to_anchor", [(layer, anchor) for layer in range(data.num_layers)]),
                        ("adjacent", [(layer, layer + 1) for layer in range(data.num_layers - 1)])):
        rows, assignments = [], []
        for layer_a, layer_b in pairs:
            perm = best_assignment(head_similarity(bases[layer_a], bases[layer_b]))
            assignments.append(perm)
            rows.append(_pair_statistics(data, bases, layer_a, layer_b, perm, k_values))
        block = {"assignment": np.array(assignments, dtype=int).reshape(len(pairs), data.num_heads)}
        for key in ("pa_mean_cos", "pa_min_cos", "top1_overlap", "spectral_cos", "spectral_abs_cos",
                    "sign_agreement", "heads_moved"):
            block[key] = np.array([row[key] for row in rows])
        out[name] = block
    return out


def matched_chance(num_heads, hidden, k, trials=20, seed=0):
    """Mean principal cosine of best-matched pairs of *random* heads (selection bias alone).

    Draws ``trials`` pairs of layers of ``num_heads`` Haar-random k-subspaces of R^hidden,
    matches them as :func:`match_heads` does, and returns (mean, sd) over trials of the
    head-averaged matched mean principal cosine.
    """
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(trials):
        bases, _ = np.linalg.qr(rng.standard_normal((2, num_heads, hidden, k)))
        perm = best_assignment(head_similarity(bases[0], bases[1]))
        values.append(reference.principal_cosines(bases[0], bases[1, perm]).mean())
    return float(np.mean(values)), float(np.std(values))
