"""The comparison table: every Numba kernel next to its numpy reference and its inputs.

One row per backend function; the tests check each row's kernel against its
reference, and the benchmarks time both, so adding a kernel means adding a row.
Inputs come from :class:`Inputs`, either random (:func:`random_inputs`) or a
model's :class:`~qkalign.QKData` (:meth:`Inputs.from_qkdata`). Kernels of ``measure`` (not in the
backend) have rows too: their inputs, one head's stacked Grams, are :class:`StackedGrams`.
"""

import importlib
from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter

import numpy as np

from ..stats import reference
from ..stats.backends import get_backend
from ..stats.reference import householder_rows

#: Kinds of eigenvector rows :func:`random_inputs` makes.
EIG_DIRS_KINDS = (
    "orthonormal",  # exact orthonormal rows: the Cholesky-QR path
    "float16",  # orthonormal rows rounded to float16 (not orthonormal any more), as stored by some tools
    "gaussian",  # independent Gaussian rows: far from orthonormal, mostly the Householder path
    "near_anchor",  # every layer a tiny rotation of the anchor's span: cosines ~ 1 - 1e-10
    "equal_layers",  # every layer the same rows: all cosines 1
)


@dataclass(frozen=True)
class Inputs:
    """The arrays and parameters a backend function can take.

    gram: (L, L, H); sym_eigs: (L, H, m); eig_dirs: (L, H, k, n); anchor: int; k_values: tuple of int;
    stacked: one head's stacked Grams and a rotary profile (:class:`StackedGrams`, made on first use).
    """

    gram: np.ndarray
    sym_eigs: np.ndarray
    eig_dirs: np.ndarray
    anchor: int
    k_values: tuple
    stacked: "StackedGrams" = None

    @property
    def topk(self):
        """The top-k of ``fraction_positive_topk``: k of eig_dirs (L, H, k, n), at most the spectrum length."""
        return min(self.eig_dirs.shape[2], self.sym_eigs.shape[2])

    @classmethod
    def from_qkdata(cls, data, anchor=-1):
        """A model's arrays, with the seed's k values for its spectrum length, and random stacked
        Grams of its shape with a Qwen3-like rotary profile (and a Gemma 3-like mixed one)."""
        return cls(data.gram, data.sym_eigs, data.eig_dirs, anchor % data.num_layers,
                   reference.sign_k_values(data.sym_eigs.shape[2]),
                   StackedGrams(data.num_layers, data.head_dim, data.hidden_size, seed=0))


#: The distances of the rotary profile timed at a model's shape: 0, 1, 2, 4, ..., 8192.
PROFILE_DISTANCES = (0,) + tuple(2**i for i in range(14))


@dataclass(frozen=True)
class StackedGrams:
    """One head's stacked Grams ``QQ``, ``KK`` (L d, L d) of random K, Q blocks (L, d, n), with a
    rotary profile: the arguments ``qq, kk, num_layers, head_dim, cos, sin, first, second``; and the product
    ``qk = Q K^T`` (L d, L d) of the same blocks.

    The arrays are made on first use (seconds at the qwen3-4b shape). Each layer's blocks have unit
    Frobenius norm, so every rotary Gram entry is at most 1 and sums of its ~4 d^2 terms are defined
    to ~d^2 eps absolute. Grams as ``measure`` fills them (lower triangle and diagonal blocks), in
    ``dtype``; ``rotary_dims`` (None: all) of the head's dimensions rotate, paired half-split or
    interleaved, at transformers' frequencies ``rope_theta^(-2p / d_rot)``.

    The mixed profile (``kind_cos``, ``kind_sin``, ``layer_kinds``: the arguments with two layer kinds) is
    Gemma 3's layout: every ``global_period``-th layer global (kind 1, at ``rope_theta``, its tables
    times ``global_factor``, as an attention factor's ``s²``), the others local (kind 0, at ``local_theta``).
    The frequency bands (``rotary_bands``) average over the distances ``0 .. window-1``; with ``band_local_theta``
    the even layers are a second kind of layer (Gemma 3's local ones) rotating at ``band_local_theta^(-2p / d_rot)``
    with attention factor 1, the odd ones at ``rope_theta`` with ``band_attention_factor``.
    """

    num_layers: int
    head_dim: int
    hidden: int
    seed: int
    dtype: str = "float32"
    rotary_dims: int = None
    interleaved: bool = False
    distances: tuple = PROFILE_DISTANCES
    rope_theta: float = 1e6
    local_theta: float = 1e4
    global_period: int = 6
    global_factor: float = 1.0
    window: int = 40960  # Qwen3's context length
    band_local_theta: float = None
    band_attention_factor: float = 1.0

    @cached_property
    def _blocks(self):
        """(2, L, d, n) in ``dtype``: the Q blocks, then the K blocks, each layer's of unit Frobenius norm."""
        rng = np.random.default_rng(self.seed)
        blocks = rng.standard_normal((2, self.num_layers, self.head_dim, self.hidden))
        blocks /= np.linalg.norm(blocks, axis=(-2, -1), keepdims=True)
        return blocks.astype(self.dtype)

    @cached_property
    def _grams(self):
        from ..weights.factored_operator import stacked_gram_lower  # imports scipy: only when used

        return tuple(stacked_gram_lower(b) for b in self._blocks)

    @property
    def qq(self):
        return self._grams[0]

    @property
    def kk(self):
        return self._grams[1]

    @cached_property
    def qk(self):
        """``X = Q K^T`` (L d, L d) of the same blocks in ``dtype``, as ``measure --symmetry-split`` forms it."""
        from ..weights.symmetry_split import stacked_product

        return stacked_product(*self._blocks)

    @cached_property
    def _pairs(self):
        from ..weights.rotary_grams import rotary_pairs

        return rotary_pairs(self.head_dim, self.rotary_dims, self.interleaved)

    @property
    def first(self):
        return self._pairs[0]

    @property
    def second(self):
        return self._pairs[1]

    def _theta_tables(self, theta):
        from ..weights.rotary_grams import rotary_tables

        rotary_dims = 2 * len(self.first)
        inv_freq = theta ** (-np.arange(0, rotary_dims, 2) / max(rotary_dims, 1))
        return rotary_tables(self.distances, inv_freq)

    @cached_property
    def _tables(self):
        return self._theta_tables(self.rope_theta)

    @property
    def cos(self):
        return self._tables[0]

    @property
    def sin(self):
        return self._tables[1]

    @cached_property
    def _kind_tables(self):
        local, full = self._theta_tables(self.local_theta), self._tables
        return tuple(np.stack([local[i], self.global_factor * full[i]]) for i in range(2))

    @property
    def kind_cos(self):
        """(2, D, P): the local kind's table, then the global kind's."""
        return self._kind_tables[0]

    @property
    def kind_sin(self):
        return self._kind_tables[1]

    @property
    def layer_kinds(self):
        """(L,) int64: 1 for every ``global_period``-th layer (global), 0 for the others (local)."""
        return ((np.arange(self.num_layers) + 1) % self.global_period == 0).astype(np.int64)

    @cached_property
    def _inv_freqs(self):
        """(K, P): ``rope_theta``'s frequencies, then ``band_local_theta``'s where given."""
        rotary_dims = 2 * len(self.first)
        exponents = -np.arange(0, rotary_dims, 2) / max(rotary_dims, 1)
        thetas = (self.rope_theta,) if self.band_local_theta is None else (self.rope_theta, self.band_local_theta)
        return np.stack([theta ** exponents for theta in thetas])

    @property
    def band_layer_kinds(self):
        """(L,) int64: kind 1 (``band_local_theta``) for the even layers where given, else kind 0."""
        layers = np.arange(self.num_layers)
        return (layers % 2 == 0).astype(np.int64) if self.band_local_theta is not None else np.zeros_like(layers)

    @cached_property
    def _band_weights(self):
        from ..weights.rotary_bands import band_weights

        factors = [self.band_attention_factor, 1.0][:len(self._inv_freqs)]
        return band_weights(self._inv_freqs, factors, self.window)

    @property
    def band_products(self):
        return self._band_weights[0]

    @property
    def band_means(self):
        return self._band_weights[1]

    @property
    def group_of_pair(self):
        from ..weights.rotary_bands import band_group_of_pair

        return band_group_of_pair(self._inv_freqs, self.window)

    @property
    def num_groups(self):
        from ..weights.rotary_bands import BAND_GROUPS

        return len(BAND_GROUPS)


@dataclass(frozen=True)
class Comparison:
    """One backend function: ``name`` in both modules, and the :class:`Inputs` fields it takes.

    ``atol`` is an absolute floor under the relative tolerance for results that are
    squared cosines or cosines computed from dot products of length n: near 0 those
    are defined only to about ``n * eps`` absolute, in the reference as in the kernel.
    ``constants`` follow the fields as further positional arguments (a flag that selects
    a variant of the function, named by ``variant`` in test and benchmark ids). Fields may be
    dotted (``"stacked.qq"``). ``modules`` names the (reference, kernel) modules of a function
    outside the backend; by default they are ``qkalign.stats.reference`` and the numba backend.
    """

    name: str
    arguments: tuple
    atol: float = 0.0
    variant: str = ""
    constants: tuple = ()
    modules: tuple = ()

    @property
    def backend(self):
        """Whether the function is one of the backend's (``qkalign.stats.backends.BACKEND_FUNCTIONS``)."""
        return not self.modules

    @property
    def reference(self):
        module = importlib.import_module(self.modules[0]) if self.modules else reference
        return getattr(module, self.name)

    @property
    def kernel(self):
        module = importlib.import_module(self.modules[1]) if self.modules else get_backend("numba")
        return getattr(module, self.name)

    @property
    def label(self):
        """The row's name in tests and benchmarks: the function's, plus its variant."""
        return f"{self.name}-{self.variant}" if self.variant else self.name

    def args(self, inputs):
        """The positional arguments of this function for ``inputs``: its fields, then ``constants``."""
        return tuple(attrgetter(field)(inputs) for field in self.arguments) + self.constants


#: The arguments of ``rotary_layer_grams``, fields of :class:`StackedGrams`.
ROTARY_ARGUMENTS = ("qq", "kk", "num_layers", "head_dim", "cos", "sin", "first", "second")
#: Those of its mixed call: a table per layer kind, and the kind of every layer.
MIXED_ROTARY_ARGUMENTS = ("qq", "kk", "num_layers", "head_dim", "kind_cos", "kind_sin", "first", "second",
                          "layer_kinds")
#: The arguments of ``rotary_bands``, fields of :class:`StackedGrams`.
BAND_ARGUMENTS = ("qq", "kk", "num_layers", "head_dim", "band_products", "band_means", "group_of_pair",
                  "band_layer_kinds", "first", "second", "num_groups")
#: Relative tolerance of every kernel against its reference (float64).
RTOL = 1e-12
#: Absolute floor for cosines from dot products (see :class:`Comparison`).
DOT_ATOL = 1e-14

COMPARISONS = (
    Comparison("operator_cos_per_head", ("gram",)),
    Comparison("rescale_to_anchor", ("gram", "anchor")),
    Comparison("sign_agreement", ("sym_eigs", "anchor", "k_values")),
    Comparison("fraction_positive", ("sym_eigs",)),
    Comparison("principal_cosines_to_anchor", ("eig_dirs", "anchor"), atol=DOT_ATOL),
    Comparison("top1_overlap", ("eig_dirs", "anchor"), atol=DOT_ATOL),
    Comparison("sign_agreement_all_pairs", ("sym_eigs", "k_values")),
    Comparison("top1_overlap_all_pairs", ("eig_dirs",), atol=DOT_ATOL),
    Comparison("principal_cosines_all_pairs", ("eig_dirs",), atol=DOT_ATOL),
    Comparison("spectral_cos_all_pairs", ("sym_eigs",), atol=DOT_ATOL),
    Comparison("spectral_cos_all_pairs", ("sym_eigs",), atol=DOT_ATOL, variant="abs", constants=(True,)),
    # a ratio of sums of length m: near 0 its value is defined to ~m eps absolute
    Comparison("signed_mass", ("sym_eigs",), atol=DOT_ATOL),
    Comparison("fraction_positive_topk", ("sym_eigs", "topk")),
    # measure's rotary profile: sums of ~4 d^2 terms (d <= 10) of unit-norm blocks, near 0 defined to ~4 d^2 eps
    Comparison("rotary_layer_grams", tuple(f"stacked.{field}" for field in ROTARY_ARGUMENTS), atol=1e-13,
               modules=("qkalign.weights.rotary_grams", "qkalign.kernels.rotary_grams")),
    # and with two layer kinds (Gemma 3's local and global layers; tables scaled by at most 1)
    Comparison("rotary_layer_grams", tuple(f"stacked.{field}" for field in MIXED_ROTARY_ARGUMENTS), atol=1e-13,
               variant="mixed", modules=("qkalign.weights.rotary_grams", "qkalign.kernels.rotary_grams")),
    # measure's frequency bands: the same sums weighted by window means (at most s^4 = 2.1 here), ~4 d^2 eps near 0
    Comparison("rotary_bands", tuple(f"stacked.{field}" for field in BAND_ARGUMENTS), atol=1e-13,
               modules=("qkalign.weights.rotary_bands", "qkalign.kernels.rotary_bands")),
    # measure's <g_L, g_L'^T> (symmetry_split): sums of d^2 products of X = Q K^T entries, |T| <= 1 for unit-norm
    # blocks, near 0 defined to ~d^2 eps (d <= 10)
    Comparison("gram_transpose_from_product", ("stacked.qk", "stacked.num_layers", "stacked.head_dim"), atol=1e-13,
               modules=("qkalign.weights.symmetry_split", "qkalign.kernels.transpose_sums")),
    # measure's layer scores (layer_symmetry): ||W||^2, <W, W^T> and the squared row and column norms of a square W
    # (here X, (L d)^2 entries of size <= 1): running float64 sums of up to 3600 products, near 0 ~ 3600 eps absolute
    Comparison("operator_sums", ("stacked.qk",), atol=1e-12,
               modules=("qkalign.weights.layer_symmetry", "qkalign.kernels.layer_sums")),
    # by tiles of 7 (the reference by chunks of 7 rows): tiles that do not divide n
    Comparison("operator_sums", ("stacked.qk",), atol=1e-12, variant="tiles", constants=(7,),
               modules=("qkalign.weights.layer_symmetry", "qkalign.kernels.layer_sums")),
)


def random_inputs(num_layers, num_heads, topk, hidden, spectrum, seed, eig_dirs_kind="orthonormal",
                  head_scale_exponent=0.0, eig_dirs_dtype="float64"):
    """Random valid inputs of the given shape (values from ``numpy.random`` seeded with ``seed``).

    gram is a true Gram tensor (``gram[:, :, h] = V_h V_h^T``) with each head scaled by
    ``10**head_scale_exponent``; sym_eigs has random signs, some exact zeros (never a
    whole spectrum) and is sorted by ``|lambda|`` descending; eig_dirs is of ``eig_dirs_kind``
    (see :data:`EIG_DIRS_KINDS`), stored as ``eig_dirs_dtype`` (float32 as a file would hold it).
    The stacked Grams have L layers and n columns, their other parameters drawn from a generator of
    its own (:func:`_random_stacked_grams`), so the other arrays of a seed stay what they were.
    """
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((num_heads, num_layers, num_layers + 2)) * 10.0 ** head_scale_exponent
    gram = np.einsum("hli,hmi->lmh", vectors, vectors)
    eigs = rng.standard_normal((num_layers, num_heads, spectrum))
    zeros = rng.random(eigs.shape) < 0.05
    zeros[..., 0] = False  # no all-zero spectrum (QKData rejects them: no direction, no spectral cosine)
    eigs[zeros] = 0.0
    sym_eigs = np.take_along_axis(eigs, np.argsort(-np.abs(eigs), axis=-1, kind="stable"), axis=-1)
    anchor = int(rng.integers(-num_layers, num_layers))
    k_values = tuple(sorted(set(int(k) for k in rng.integers(1, spectrum + 1, size=3))))
    eig_dirs = _random_eig_dirs(rng, num_layers, num_heads, topk, hidden, anchor, eig_dirs_kind)
    return Inputs(gram, sym_eigs, eig_dirs.astype(eig_dirs_dtype), anchor, k_values,
                  _random_stacked_grams(num_layers, hidden, seed))


def _random_stacked_grams(num_layers, hidden, seed):
    """:class:`StackedGrams` with random d (1..10), d_rot (even, 0..d), pairing, precision, 1-5
    distances in -40..40 (0 among them half the time) and a mixed profile's local base, period
    (1..3) and global factor."""
    """:class:`StackedGrams` with random d (1..10), d_rot (even, 0..d), pairing, precision and 1-5
    distances in -40..40 (0 among them half the time); for the bands a window of 1 to 4096 distances, one or two
    kinds of layers and an attention factor of 1 or 1.2."""
    rng = np.random.default_rng([seed, 23])
    head_dim = int(rng.integers(1, 11))
    distances = rng.integers(-40, 41, size=int(rng.integers(1, 6)))
    if rng.random() < 0.5:
        distances[0] = 0
    return StackedGrams(num_layers, head_dim, hidden, seed=int(rng.integers(2**32)),
                        dtype=str(rng.choice(["float32", "float64"])),
                        rotary_dims=2 * int(rng.integers(0, head_dim // 2 + 1)), interleaved=bool(rng.random() < 0.5),
                        distances=tuple(int(x) for x in distances), rope_theta=float(rng.choice([10.0, 1e4])),
                        local_theta=float(rng.choice([3.0, 100.0])), global_period=int(rng.integers(1, 4)),
                        global_factor=float(rng.choice([1.0, 0.75])),
                        window=int(rng.choice([1, 7, 50, 4096])), band_local_theta=[None, 100.0][int(rng.integers(2))],
                        band_attention_factor=float(rng.choice([1.0, 1.2])))


def _orthonormal_rows(rng, shape):
    """Random orthonormal rows: (..., k, n) with k <= n."""
    return householder_rows(rng.standard_normal(shape))


def _random_eig_dirs(rng, num_layers, num_heads, topk, hidden, anchor, kind):
    shape = (num_layers, num_heads, topk, hidden)
    if kind == "gaussian":
        return rng.standard_normal(shape)
    if kind == "equal_layers":
        return np.broadcast_to(_orthonormal_rows(rng, shape[1:]), shape).copy()
    rows = _orthonormal_rows(rng, shape)
    if kind == "float16":
        return rows.astype(np.float16).astype(np.float64)
    if kind == "near_anchor":
        # Rotate the anchor's rows by ~1e-5 rad towards random directions: principal
        # angles ~1e-5, cosines ~1 - 5e-11 (exactly 1 when topk == hidden).
        base = rows[anchor]
        tilt = rng.standard_normal(shape) * 1e-5 / np.sqrt(hidden)
        return householder_rows(base[None] + tilt)
    return rows
