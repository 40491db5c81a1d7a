"""The seed script's section (d), restated as a function for timing (NOT part of qkalign).

Source: ``analyze_operator_alignment.py`` (the original research code, in ``../shared/seed``),
its loop "(d) Eigenspace principal angles": per (layer, head) one Householder QR of each
span's rows and an SVD of the k x k product; the printing is left out and the per-head
results are kept. The seed's top-1 overlap omitted the norms; kept as it was.
"""

import numpy as np


def seed_principal_angles(eig_dirs, anchor):
    """Mean and min principal cosine and top-1 overlap per (layer, head), as the seed's loop.

    eig_dirs: (L, H, k, n) float64 -> three (L, H) float64 arrays.
    """
    num_layers, num_heads = eig_dirs.shape[:2]
    mean_cos = np.empty((num_layers, num_heads))
    min_cos = np.empty((num_layers, num_heads))
    top1 = np.empty((num_layers, num_heads))
    for layer in range(num_layers):
        for h in range(num_heads):
            a = eig_dirs[layer, h]  # (topk, hidden)
            b = eig_dirs[anchor, h]
            qa, _ = np.linalg.qr(a.T)  # hidden x topk
            qb, _ = np.linalg.qr(b.T)
            s = np.linalg.svd(qa.T @ qb, compute_uv=False)
            mean_cos[layer, h] = s.mean()
            min_cos[layer, h] = s.min()
            top1[layer, h] = float((a[0] @ b[0]) ** 2)
    return mean_cos, min_cos, top1
