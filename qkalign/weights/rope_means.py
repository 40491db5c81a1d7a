"""Averages of a rotation over a window of distances, in closed form (no sum over the window).

For an angle step ``θ`` and a window of ``W`` consecutive distances ``Δ = 0 .. W-1``, the Dirichlet sum

    (1/W) sum_Δ exp(i θ Δ) = exp(i θ (W-1)/2) sin(W θ/2) / (W sin(θ/2))      (1 where θ ≡ 0 mod 2π)

gives the mean cosine and the mean sine at once. ``θ`` is first reduced to ``(-π, π]`` (exact for integer
``Δ``), so that ``sin(θ/2)`` vanishes only where the mean is 1 and no float64 cancellation occurs for
any window up to 2^31. Means of products of two rotations (``cos θ_I Δ cos θ_J Δ`` and so on) are means of
the sum and difference angles: :func:`mean_products`.
"""

import numpy as np


def mean_cos_sin(theta, window):
    """``(mean cos(θ Δ), mean sin(θ Δ))`` over ``Δ = 0 .. window-1``, elementwise.

    theta: any shape, float64 angles per unit distance; window: int >= 1 -> two float64 arrays of theta's shape.
    """
    theta = np.asarray(theta, dtype=np.float64)
    reduced = theta - 2 * np.pi * np.round(theta / (2 * np.pi))
    half = reduced / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.sin(window * half) / (window * np.sin(half))
    ratio = np.where(half == 0, 1.0, ratio)
    phase = (window - 1) * half
    return ratio * np.cos(phase), ratio * np.sin(phase)


def mean_products(theta_i, theta_j, window):
    """Means over ``Δ = 0 .. window-1`` of ``c_i c_j``, ``c_i s_j``, ``s_i c_j``, ``s_i s_j`` with
    ``c_i = cos(θ_i Δ)``, ``s_i = sin(θ_i Δ)``: four float64 arrays of the broadcast shape of
    ``theta_i``, ``theta_j`` (e.g. (P, 1) and (1, P) -> (P, P))."""
    theta_i, theta_j = np.asarray(theta_i, dtype=np.float64), np.asarray(theta_j, dtype=np.float64)
    cos_minus, sin_minus = mean_cos_sin(theta_i - theta_j, window)
    cos_plus, sin_plus = mean_cos_sin(theta_i + theta_j, window)
    return ((cos_minus + cos_plus) / 2, (sin_plus - sin_minus) / 2,
            (sin_plus + sin_minus) / 2, (cos_minus - cos_plus) / 2)
