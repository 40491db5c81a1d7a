"""Dense linear algebra on one small (k x k) matrix, for use inside ``prange`` loops.

Hand-written, serial and allocation-light on purpose: numba's ``np.linalg`` calls
LAPACK/BLAS, which is multi-threaded (OpenBLAS) and must not run inside a
``prange`` (oversubscription, "OpenMP loop" warnings), and it compiles slowly.
Every function here is deterministic: the same input gives the same bits.
"""

import math

import numpy as np
from numba import njit

#: One-sided Jacobi stops when every pair of rows has ``|r_i . r_j| <= tol |r_i| |r_j|``.
JACOBI_TOLERANCE = 1e-15
#: Cyclic Jacobi converges quadratically; k <= a few hundred needs far fewer sweeps.
#: The bound only keeps non-finite input from looping forever.
JACOBI_MAX_SWEEPS = 60


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
    """``x . y`` for 1-d arrays, vectorised."""
    total = 0.0
    for m in range(x.shape[0]):
        total += x[m] * y[m]
    return total


@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def singular_values(a, out):
    """Singular values of ``a`` (k, n), descending, into ``out`` (k,); ``a`` is overwritten.

    One-sided (Hestenes) Jacobi on the rows: plane rotations make the rows
    mutually orthogonal, then the row norms are the singular values. It keeps
    high relative accuracy for small singular values (unlike eigenvalues of
    ``a a^T``) and needs no LAPACK. Pairs are visited in round-robin
    (tournament) order: the k/2 rotations of a round touch disjoint rows, so their
    inner products, then their angles, then the rotations are computed as three
    batches of independent operations (~15 % faster than one pair after another,
    same bits).
    """
    k = a.shape[0]
    players = k + k % 2  # an odd k gets a bye each round
    order = np.empty(players, dtype=np.int64)
    for slot in range(players):
        order[slot] = slot
    norm_sq = np.empty(k)
    half = players // 2
    first = np.empty(half, dtype=np.int64)
    second = np.empty(half, dtype=np.int64)
    gammas = np.empty(half)
    tangents = np.empty(half)
    for sweep in range(JACOBI_MAX_SWEEPS):
        for i in range(k):
            norm_sq[i] = dot(a[i], a[i])  # fresh each sweep: the updates below drift
        rotated = False
        for round_ in range(players - 1):
            # The rotations of a round touch disjoint rows, so all their inner products can be
            # taken first and all their angles next: independent operations the CPU overlaps
            # (one pair after another, each dot -> divide -> square root chain waits on the
            # last), and exactly the numbers the one-by-one order gives.
            for slot in range(half):
                i = min(order[slot], order[players - 1 - slot])
                j = max(order[slot], order[players - 1 - slot])
                first[slot] = i
                second[slot] = j
                gammas[slot] = dot(a[i], a[j]) if j < k else 0.0
            for slot in range(half):
                tangents[slot] = 0.0
                j = second[slot]
                if j >= k:
                    continue
                alpha = norm_sq[first[slot]]
                beta = norm_sq[j]
                gamma = gammas[slot]
                if not abs(gamma) > JACOBI_TOLERANCE * math.sqrt(alpha * beta):
                    continue
                # t = tan(theta) of the 2x2 symmetric Jacobi step on [[alpha, gamma], [gamma, beta]],
                # the smaller root, which keeps the rotation stable.
                zeta = (beta - alpha) / (2.0 * gamma)
                if abs(zeta) > 1e150:
                    tangents[slot] = 0.5 / zeta
                else:
                    tangents[slot] = math.copysign(1.0, zeta) / (abs(zeta) + math.sqrt(1.0 + zeta * zeta))
            for slot in range(half):
                t = tangents[slot]
                if t == 0.0:
                    continue
                rotated = True
                i = first[slot]
                j = second[slot]
                gamma = gammas[slot]
                c = 1.0 / math.sqrt(1.0 + t * t)
                s = c * t
                row_i = a[i]
                row_j = a[j]
                for m in range(row_i.shape[0]):
                    x = row_i[m]
                    y = row_j[m]
                    row_i[m] = c * x - s * y
                    row_j[m] = s * x + c * y
                norm_sq[i] = norm_sq[i] - t * gamma
                norm_sq[j] = norm_sq[j] + t * gamma
            # Next round: keep the first player, rotate the others by one place.
            last = order[players - 1]
            for slot in range(players - 1, 1, -1):
                order[slot] = order[slot - 1]
            order[1] = last
        if not rotated:
            break
    for i in range(k):
        out[i] = math.sqrt(dot(a[i], a[i]))
    sort_descending(out)


@njit(cache=True, error_model="numpy")
def cholesky_qr_factor(gram, radius_limit, p):
    """``P`` (k, k) lower triangular with orthonormal rows ``P A``, from ``gram = A A^T``.

    One block of :func:`qkalign.cholesky_qr.factors_from_grams`, for use inside kernels
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
