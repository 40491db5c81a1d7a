"""Dense linear algebra on one small (k x k) matrix, for use inside ``prange`` loops.

Hand-written, serial and allocation-light on purpose: numba's ``np.linalg`` calls
LAPACK/BLAS, which is multi-threaded (OpenBLAS) and must not run inside a
``prange`` (oversubscription, "OpenMP loop" warnings), and it compiles slowly.
Every function here is deterministic: the same input gives the same bits.
"""

import math

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy", inline="always")
def cholesky_upper(gram, r):
    """Upper-triangular ``R`` with ``R^T R = gram``; False if a pivot is not positive.

    gram: (k, k) symmetric, only the upper triangle is read; r: (k, k) output.
    """
    k = gram.shape[0]
    for i in range(k):
        for j in range(k):
            r[i, j] = 0.0
    for j in range(k):
        pivot = gram[j, j]
        for m in range(j):
            pivot -= r[m, j] * r[m, j]
        if not pivot > 0.0:  # also catches nan
            return False
        r[j, j] = math.sqrt(pivot)
        for i in range(j + 1, k):
            value = gram[j, i]
            for m in range(j):
                value -= r[m, j] * r[m, i]
            r[j, i] = value / r[j, j]
    return True


@njit(cache=True, error_model="numpy", inline="always")
def invert_upper(r, inv):
    """Inverse of a nonsingular upper-triangular ``r`` (k, k) into ``inv``, by back substitution."""
    k = r.shape[0]
    for i in range(k):
        for j in range(k):
            inv[i, j] = 0.0
    for j in range(k):
        inv[j, j] = 1.0 / r[j, j]
        for i in range(j - 1, -1, -1):
            value = 0.0
            for m in range(i + 1, j + 1):
                value += r[i, m] * inv[m, j]
            inv[i, j] = -value / r[i, i]


# Reassociation lets LLVM vectorise the length-k dot products and rotations; the
# results stay deterministic (the same instructions run for the same input).
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@njit(fastmath=FASTMATH, cache=True, error_model="numpy", inline="always")
def dot(x, y):
    """``x . y`` for 1-d arrays (float32 or float64), each product and the sum in float64, vectorised."""
    total = 0.0
    for m in range(x.shape[0]):
        total += np.float64(x[m]) * np.float64(y[m])
    return total


@njit(cache=True, error_model="numpy")
def _reflector(alpha, norm_sq):
    """``(beta, tau, scale)`` of the Householder reflector ``H = I - tau v v^T`` that maps
    ``x = (alpha, rest)`` with ``|rest|^2 = norm_sq > 0`` to ``beta e_1``: ``v = (1, rest * scale)``."""
    beta = -math.copysign(math.sqrt(alpha * alpha + norm_sq), alpha)
    return beta, (beta - alpha) / beta, 1.0 / (alpha - beta)


@njit(cache=True, error_model="numpy")
def bidiagonalize(a, diagonal, superdiagonal, work):
    """Householder reduction of a square ``a`` (k, k) to upper bidiagonal form; ``a`` is overwritten.

    ``a = U B V^T`` with ``U``, ``V`` orthogonal (not formed) and ``B`` upper bidiagonal:
    ``diagonal`` (k,) and ``superdiagonal`` (k - 1,) receive its entries (signs arbitrary).
    Reflectors alternate from the left (zeroing a column below the diagonal) and the right
    (zeroing a row right of the superdiagonal), as LAPACK's ``dgebd2``; ``work`` (k,) is scratch.
    """
    k = a.shape[0]
    for j in range(k):
        # Left reflector H = I - tau v v^T, v = (1, a[j+1:, j] / (alpha - beta)), H a[j:, j] = beta e_1.
        norm_sq = 0.0
        for r in range(j + 1, k):
            norm_sq += a[r, j] * a[r, j]
        alpha = a[j, j]
        if norm_sq == 0.0:
            diagonal[j] = alpha
        else:
            beta, tau, scale = _reflector(alpha, norm_sq)
            for r in range(j + 1, k):
                a[r, j] *= scale
            for c in range(j + 1, k):
                work[c] = a[j, c]
            for r in range(j + 1, k):  # work = a[j:, j+1:]^T v, a row at a time (contiguous)
                v = a[r, j]
                for c in range(j + 1, k):
                    work[c] += v * a[r, c]
            for c in range(j + 1, k):
                a[j, c] -= tau * work[c]
            for r in range(j + 1, k):
                tv = tau * a[r, j]
                for c in range(j + 1, k):
                    a[r, c] -= tv * work[c]
            diagonal[j] = beta
        if j >= k - 1:
            break
        # Right reflector on row j, columns j+1..k-1: H a[j, j+1:] = beta e_1.
        norm_sq = 0.0
        for c in range(j + 2, k):
            norm_sq += a[j, c] * a[j, c]
        alpha = a[j, j + 1]
        if norm_sq == 0.0:
            superdiagonal[j] = alpha
            continue
        beta, tau, scale = _reflector(alpha, norm_sq)
        for c in range(j + 2, k):
            a[j, c] *= scale
        for r in range(j + 1, k):
            s = a[r, j + 1]
            for c in range(j + 2, k):
                s += a[r, c] * a[j, c]
            s *= tau
            a[r, j + 1] -= s
            for c in range(j + 2, k):
                a[r, c] -= s * a[j, c]
        superdiagonal[j] = beta


#: dqds deflates the bottom of the qd array when its coupling is below ``(100 eps)^2`` times the
#: eigenvalue there (LAPACK's ``dlasq`` criterion: it keeps the singular value's relative accuracy).
DQDS_DEFLATION = (100.0 * 2.220446049250313e-16) ** 2
#: Transforms allowed per singular value before the rest are reported as nan. A guard against
#: looping forever, never reached in tests: 20,000 random, graded, clustered and rank-deficient
#: matrices up to 32 x 32 needed at most 22 per value (and ~5 on average).
DQDS_MAX_TRANSFORMS_PER_VALUE = 100


@njit(cache=True, error_model="numpy")
def dqds_squared_values(q, e, out):
    """Eigenvalues of ``B^T B`` for the upper bidiagonal ``B`` with squared entries ``q`` (k,) on the
    diagonal and ``e`` (k - 1,) above it, into ``out`` (k,) (in no particular order; ``q``, ``e`` are
    overwritten).

    The differential qd algorithm with shifts (Fernando & Parlett 1994): each transform maps the
    qd array of ``B^T B - S`` to that of ``B'^T B' - S - tau`` with only positive quantities, so
    every eigenvalue keeps high relative accuracy; the smallest converges at the bottom and is
    deflated (``S + q[n]``). A shift must stay below the smallest eigenvalue: it is the bottom
    2 x 2's smallest eigenvalue (an upper bound) shaded by 0.1 % and, after a transform turns
    negative, a quarter of it, then 0 (plain dqd, which cannot fail).
    """
    n = q.shape[0]
    new_q = np.empty(n)
    new_e = np.empty(max(n - 1, 1))
    total = 0.0  # the shifts applied so far
    hi = n - 1  # the active qd array is q[:hi + 1], e[:hi]
    transforms = 0
    last_min = -1.0  # smallest auxiliary d of the last transform, an upper bound of the next eigenvalue
    while hi >= 0:
        if transforms > DQDS_MAX_TRANSFORMS_PER_VALUE * n:
            for i in range(hi + 1):
                out[i] = np.nan
            return
        if hi == 0:
            out[0] = total + q[0]
            return
        if e[hi - 1] <= DQDS_DEFLATION * (total + q[hi]):
            out[hi] = total + q[hi]
            hi -= 1
            last_min = -1.0
            continue
        if hi == 1 or e[hi - 2] <= DQDS_DEFLATION * (total + q[hi - 1]):
            # a bottom 2 x 2 on its own, [[a, sqrt(a b)], [sqrt(a b), b + c]]: its two eigenvalues
            # directly, the small one as det / big (no cancellation)
            a, b, c = q[hi - 1], e[hi - 1], q[hi]
            big = 0.5 * ((a + b + c) + math.sqrt((a - c) * (a - c) + b * (b + 2.0 * (a + c))))
            out[hi - 1] = total + big
            out[hi] = total + (a * c / big if big > 0.0 else 0.0)
            hi -= 2
            last_min = -1.0
            continue
        tau, d, d_min, tries = _dqds_transform(q, e, new_q, new_e, hi, _dqds_shift(q, e, hi, last_min))
        transforms += tries
        new_q[hi] = d
        for i in range(hi + 1):
            q[i] = new_q[i]
        for i in range(hi):
            e[i] = new_e[i]
        total += tau
        last_min = d_min


@njit(cache=True, error_model="numpy")
def _dqds_shift(q, e, hi, last_min):
    """The shift of the next transform of the active qd array ``q[:hi + 1]``, ``e[:hi]`` (hi >= 2): the
    smallest eigenvalue of the bottom 2 x 2 of the tridiagonal ``B^T B`` (an upper bound of the
    smallest one), at most ``last_min`` when that is known (>= 0), shaded by 0.1 %."""
    a = q[hi - 1] + e[hi - 2]
    c = q[hi] + e[hi - 1]
    b_sq = q[hi - 1] * e[hi - 1]
    big = 0.5 * ((a + c) + math.sqrt((a - c) * (a - c) + 4.0 * b_sq))
    estimate = (a * c - b_sq) / big if big > 0.0 else 0.0
    if last_min >= 0.0:
        estimate = min(estimate, last_min)
    return max(estimate, 0.0) * 0.999


@njit(cache=True, error_model="numpy")
def _dqds_transform(q, e, new_q, new_e, hi, tau):
    """One shifted dqds transform of ``q[:hi + 1]``, ``e[:hi]`` into ``new_q[:hi]``, ``new_e[:hi]``.

    A shift that turns an auxiliary ``d`` negative (above the smallest eigenvalue) is retried at a
    quarter of itself, twice, then as 0 (plain dqd, which cannot fail). Returns ``(tau, d, d_min,
    tries)``: the shift used, the last and the smallest ``d``, and how many transforms it took.
    """
    failures = 0
    while True:  # not a counted loop: LLVM would unroll it into four copies of the transform
        d = q[0] - tau
        d_min = d
        for i in range(hi):
            if d < 0.0:
                break
            if e[i] == 0.0:  # a split: the blocks above and below are independent
                new_q[i] = d
                new_e[i] = 0.0
                d = q[i + 1] - tau
            else:
                q_hat = d + e[i]
                ratio = q[i + 1] / q_hat
                new_q[i] = q_hat
                new_e[i] = e[i] * ratio
                d = d * ratio - tau
            d_min = min(d_min, d)
        if d >= 0.0 and d_min >= 0.0:
            return tau, d, d_min, failures + 1
        failures += 1
        tau = 0.25 * tau if failures < 3 else 0.0


@njit(cache=True, error_model="numpy")
def singular_values(a, out):
    """Singular values of a square ``a`` (k, k), descending, into ``out`` (k,); ``a`` is overwritten.

    Householder bidiagonalisation (:func:`bidiagonalize`), then the squared singular values of the
    bidiagonal by dqds (:func:`dqds_squared_values`), LAPACK's ``dlasq1`` route without its
    refinements, and no LAPACK call. Chosen for accuracy on clustered cosines near 1 (about
    1 ulp against 40-digit arithmetic) and speed; the alternatives that were measured are in
    ``benchmarks/NOTES.md``.
    """
    k = a.shape[0]
    diagonal = np.empty(k)
    superdiagonal = np.empty(max(k - 1, 1))
    work = np.empty(k)
    bidiagonalize(a, diagonal, superdiagonal, work)
    # dqds works on squares: scale the largest entry to 1 first, so that nothing overflows and
    # only singular values below ~1e-154 of the largest (far below its rounding) underflow to 0
    largest = 0.0
    for i in range(k):
        largest = max(largest, abs(diagonal[i]))
    for i in range(k - 1):
        largest = max(largest, abs(superdiagonal[i]))
    if largest == 0.0:
        for i in range(k):
            out[i] = 0.0
        return
    for i in range(k):
        diagonal[i] = (diagonal[i] / largest) ** 2
    for i in range(k - 1):
        superdiagonal[i] = (superdiagonal[i] / largest) ** 2
    dqds_squared_values(diagonal, superdiagonal[:max(k - 1, 0)], out)
    for i in range(k):
        out[i] = math.sqrt(out[i]) * largest
    sort_descending(out)


@njit(cache=True, error_model="numpy")
def cholesky_qr_factor(gram, radius_limit, p):
    """``P`` (k, k) lower triangular with orthonormal rows ``P A``, from ``gram = A A^T``.

    One block of :func:`qkalign.linalg.cholesky_qr.cholesky_qr_factors`, for use inside kernels
    (``radius_limit`` is its ``GERSHGORIN_RADIUS_LIMIT``).

    With ``D`` scaling the rows to unit length and ``D A A^T D = R^T R`` (Cholesky),
    ``P = R^{-T} D``. Returns False (``p`` undefined) when the rows are too far from
    orthonormal for Cholesky-QR (a Gershgorin radius of ``D A A^T D`` above
    ``radius_limit``), or a row is zero, or the Gram is not finite.
    """
    k = gram.shape[0]
    scale = np.empty(k)
    for i in range(k):
        if not gram[i, i] > 0.0:
            return False
        scale[i] = 1.0 / math.sqrt(gram[i, i])
    unit = np.empty((k, k))
    for i in range(k):
        radius = 0.0
        for j in range(k):
            unit[i, j] = scale[i] * gram[i, j] * scale[j]
            if j != i:
                radius += abs(unit[i, j])
        if not radius <= radius_limit:
            return False
    r = np.empty((k, k))
    if not cholesky_upper(unit, r):
        return False
    inv = np.empty((k, k))
    invert_upper(r, inv)
    for i in range(k):
        for j in range(k):
            p[i, j] = inv[j, i] * scale[j]
    return True


@njit(cache=True, error_model="numpy", inline="always")
def lower_times_transpose(lower, x, out):
    """``out = lower @ x^T`` for a lower-triangular ``lower`` (k, k) and ``x`` (c, k).

    Applied twice it gives ``L1 @ X @ L2^T = lower_times_transpose(L1, lower_times_transpose(L2, X))``.
    """
    for i in range(lower.shape[0]):
        for j in range(x.shape[0]):
            value = 0.0
            for m in range(i + 1):
                value += lower[i, m] * x[j, m]
            out[i, j] = value


@njit(cache=True, error_model="numpy", inline="always")
def sort_descending(values):
    """In-place insertion sort, largest first (k is small)."""
    for i in range(1, values.shape[0]):
        value = values[i]
        j = i - 1
        while j >= 0 and values[j] < value:
            values[j + 1] = values[j]
            j -= 1
        values[j + 1] = value
