"""The error model of GGUF's block quantisation, for the tests and the benchmark of what it does to qkalign's numbers.

Model M: each weight's quantisation error is independent, mean 0 and uniform in ``+-s/2``, ``s`` the step
of its block (:func:`step_model`), so its variance is ``s^2 / 12``. From it: the expected operator error
(:func:`operator_error`), the first-order scatter of an operator cosine (:func:`cosine_scatter`) and the
scale of the symmetric part's error (:func:`symmetric_error_sigma`). The derivations are in
``tests/test_gguf_quantization.py``. :func:`realistic_weights` draws weights distributed roughly like real
attention weights (heavy tails, row and column scales, a drift across layers).
"""

import numpy as np

FP16 = 2.0**-11  # relative rounding of a float16 scale (half an ulp)
FP16_UP = 2.0**-10  # a scale rounded *up* to float16 (one ulp), as quantize_q4_k / quantize_q6_k do


def realistic_weights(rng, num_layers, rows, hidden, nu=6, drift=0.8, row_sd=0.3, col_sd=0.2, std=0.02):
    """(num_layers, rows, hidden) float32 weights distributed roughly like real attention weights.

    Student-t entries with ``nu`` = 6 times log-normal row and column scales, drifting across layers as an
    AR(1) process (correlation ``drift`` from one layer to the next, so that operators of nearby layers have
    cosines of 0.2-0.5, where a change of them is visible). A layer's kurtosis comes out 6-11 and its extremes
    11-27 sd, its row norms spread by 30 %, its column norms by 20 %; SmolLM2-135M's Q/K weights have kurtosis
    3.7-11, extremes of 11-18 sd, row norms spread by 20-40 % and column norms by 10-50 %.
    """
    def t_noise():
        return rng.standard_t(nu, (rows, hidden)) / np.sqrt(nu / (nu - 2))

    col = np.exp(col_sd * rng.standard_normal(hidden))
    z, out = t_noise(), np.empty((num_layers, rows, hidden))
    for layer in range(num_layers):
        if layer:
            z = drift * z + np.sqrt(1 - drift**2) * t_noise()
        out[layer] = std * z * np.exp(row_sd * rng.standard_normal(rows))[:, None] * col
    return out.astype(np.float32)


def step_model(w, qtype):
    """The step of each weight's block under ``qtype``, from the unquantised weights (the formats: tests/test_gguf_quantization.py).

    Parameters
    ----------
    w : array_like
        (..., n) float32 weights, blocks running along the last axis as GGUF stores rows.
    qtype : str
        "Q8_0", "Q5_0", "Q4_0", "Q4_1", "Q4_K" or "Q6_K".

    Returns
    -------
    step : numpy.ndarray
        Same shape as ``w``: the step M's variance ``step^2 / 12`` uses (for the K-quants, with half the
        scale rounding: its mean).
    bound : numpy.ndarray
        Same shape: the largest error the format's rounding allows, fp16 scale rounding included.
    """
    x = np.asarray(w, dtype=np.float64)
    shape = x.shape

    def spread(a, like):
        return np.broadcast_to(a, like.shape).reshape(shape)

    if qtype in ("Q8_0", "Q5_0", "Q4_0", "Q4_1"):
        b = x.reshape(*shape[:-1], -1, 32)
        hi, lo = b.max(-1, keepdims=True), b.min(-1, keepdims=True)
        amax = np.maximum(hi, -lo)
        if qtype == "Q8_0":  # codes -127..127 of max|x| / 127: the fp16 scale errs by <= 127 FP16 steps
            s = amax / 127
            return spread(s, b), spread(s / 2 + 127 * FP16 * s, b)
        if qtype in ("Q4_0", "Q5_0"):  # the signed extreme is code -c: values >= c - 1/2 steps the other way clip
            c = 8 if qtype == "Q4_0" else 16
            s = amax / c
            extreme = np.take_along_axis(b, np.abs(b).argmax(-1)[..., None], -1)
            clipped = b / (extreme / -c) >= c - 0.5
            return spread(s, b), (np.where(clipped, s, s / 2) + c * FP16 * s).reshape(shape)
        s = (hi - lo) / 15  # Q4_1: codes 0..15 above the block minimum, scale and minimum both fp16
        return spread(s, b), spread(s / 2 + FP16 * (15 * s + np.abs(lo)), b)
    if qtype == "Q4_K":  # super-blocks of 256: 8 sub-blocks of 32 with 6-bit scales and mins
        b = x.reshape(*shape[:-1], -1, 8, 32)
        hi, lift = np.maximum(b.max(-1), 0), np.maximum(-b.min(-1), 0)
        dmin = lift.max(-1, keepdims=True) / 63 * (1 + FP16_UP)  # the offset is lift rounded up to a dmin step
        need = (hi + lift + dmin) / 15
        d = need.max(-1, keepdims=True) / 63 * (1 + FP16_UP)  # the step is need rounded up to a d multiple
        mean_step = (hi + lift + dmin / 2) / 15 + d / 2
        return spread(mean_step[..., None], b), spread((need + d)[..., None] / 2, b)
    if qtype == "Q6_K":  # super-blocks of 256: 16 sub-blocks of 16, codes -32..31, 8-bit scales
        b = x.reshape(*shape[:-1], -1, 16, 16)
        need = np.abs(b).max(-1) / 31
        d = need.max(-1, keepdims=True) / 127 * (1 + FP16_UP)
        return spread((need + d / 2)[..., None], b), spread((need + d)[..., None] / 2, b)
    raise ValueError(qtype)


def operator_error(v_k, v_q, k, q):
    """M's ``sqrt(E ||dg||_F^2)`` of a head: ``v_k``, ``v_q`` (..., d, n) error variances of ``k``, ``q``."""
    row_k, row_q = v_k.sum(-1), v_q.sum(-1)
    return np.sqrt((row_k * (q**2).sum(-1) + row_q * (k**2).sum(-1) + row_k * row_q).sum(-1))


def linear_sd(v_k, v_q, k, q, t):
    """M's sd of ``<dK^T Q + K^T dQ, T>`` for one head and an (n, n) ``t``: the first-order change of any
    linear function of ``g``."""
    return np.sqrt((v_k * (q @ t.T) ** 2).sum() + (v_q * (k @ t) ** 2).sum())


def cosine_scatter(v_k, v_q, k, q, g, a, b):
    """M's first-order sd of the operator cosine of layers ``a`` and ``b`` of one head.

    ``d cos = <dg_a, u_b - cos u_a> / ||g_a|| + (a <-> b)`` with ``u = g / ||g||``; the layers' errors are
    independent. ``v_k``, ``v_q``, ``k``, ``q``: (L, d, n); ``g``: (L, n, n).
    """
    norm_a, norm_b = np.linalg.norm(g[a]), np.linalg.norm(g[b])
    u_a, u_b = g[a] / norm_a, g[b] / norm_b
    cos = np.sum(u_a * u_b)
    return np.hypot(linear_sd(v_k[a], v_q[a], k[a], q[a], (u_b - cos * u_a) / norm_a),
                    linear_sd(v_k[b], v_q[b], k[b], q[b], (u_a - cos * u_b) / norm_b))


def symmetric_error_sigma(v_k, v_q, k, q):
    """``sqrt(||E dS^2||_2)`` of one head under M, ``dS = sym(dK^T Q + K^T dQ)`` (its first-order part).

    For ``A = dX^T Y`` (``dX`` independent entries of variances ``V``): ``E[A A^T] = diag_i(sum_r V_ri ||Y_r||^2)``,
    ``E[A^T A] = Y^T diag_r(sum_i V_ri) Y``, ``E[A A] = (V o Y)^T Y``; ``sym(A)^2 = (AA + AA^T + A^TA + A^TA^T)/4``.
    ``K^T dQ`` is the transpose of ``dQ^T K``, of the same form; the cross terms have mean 0.
    """
    def part(v, y):
        aat = np.diag((v * (y**2).sum(-1, keepdims=True)).sum(0))
        ata = y.T @ (v.sum(-1)[:, None] * y)
        aa = (v * y).T @ y
        return (aa + aa.T + aat + ata) / 4

    return np.sqrt(np.linalg.eigvalsh(part(v_k, q) + part(v_q, k))[-1])


def principal_cosines(rows_a, rows_b):
    """Cosines of the principal angles between the spans of orthonormal rows (..., k, n), descending."""
    return np.linalg.svd(rows_a @ np.swapaxes(rows_b, -1, -2), compute_uv=False)
