"""Deterministic synthetic Q/K weights with a controllable inter-layer drift, and their exact inputs.

Each weight matrix follows a unit-variance AR(1) walk over layers,
``W_L = sqrt(1 - drift) W_{L-1} + sqrt(drift) Z_L`` with ``Z ~ N(0, 1/n)``,
scaled by ``1 + scale_growth * L``: ``drift = 0`` gives the same operator in every
layer (up to scale), ``drift = 1`` independent layers, and in between the operator
cosine decays roughly as ``(1 - drift)^|L - L'|``. Weights are float32 like a
checkpoint; everything derived from them is float64.

``qkalign synthetic PRESET -o PREFIX`` writes a preset's grams JSON and eigen-direction file.
"""

from dataclasses import asdict, dataclass, replace

import numpy as np

from ..qkdata import QKData
from . import DEFAULT_TOPK
from .factored_operator import layer_gram_from_blocks, stacked_gram, symmetric_part_eigen


@dataclass(frozen=True)
class SyntheticSpec:
    """Shape and randomness of a synthetic model.

    ``num_heads`` must be a multiple of ``num_kv_heads``; query head ``h`` reads kv head
    ``h // (num_heads // num_kv_heads)`` (grouped-query attention).
    """

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    topk: int = DEFAULT_TOPK
    drift: float = 0.1
    scale_growth: float = 0.02
    seed: int = 0

    def __post_init__(self):
        if min(self.num_layers, self.num_heads, self.num_kv_heads, self.head_dim, self.hidden_size, self.topk) < 1:
            raise ValueError(f"every size must be >= 1: {self}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if not 0.0 <= self.drift <= 1.0:
            raise ValueError(f"drift must lie in [0, 1], got {self.drift}")
        if self.topk > self.hidden_size:
            raise ValueError(f"topk {self.topk} exceeds hidden_size {self.hidden_size}")


PRESETS = {
    # The benchmark scale: Qwen3-4B's attention shape.
    "qwen3-4b": SyntheticSpec(36, 32, 8, 128, 2560, topk=16, drift=0.1),
    # The bundled example: 36 layers so every line of the seed's report is meaningful, small elsewhere.
    "example": SyntheticSpec(36, 8, 2, 16, 128, topk=8, drift=0.1),
    # A model shorter than the seed's fixed layer ranges (0-11 / 12-23 / 24+).
    "small": SyntheticSpec(10, 4, 2, 8, 48, topk=4, drift=0.2),
}


def make_weights(spec):
    """Q and K projection weights of every layer, per head.

    Returns
    -------
    w_q : (L, H, d, n) float32
    w_k : (L, H_kv, d, n) float32
    """
    rng = np.random.default_rng(spec.seed)
    keep, fresh = np.sqrt(1.0 - spec.drift), np.sqrt(spec.drift)
    out = []
    for heads in (spec.num_heads, spec.num_kv_heads):
        shape = (spec.num_layers, heads, spec.head_dim, spec.hidden_size)
        w = np.empty(shape, dtype=np.float32)
        current = rng.standard_normal(shape[1:]) / np.sqrt(spec.hidden_size)
        for layer in range(spec.num_layers):
            if layer:
                current = keep * current + fresh * rng.standard_normal(shape[1:]) / np.sqrt(spec.hidden_size)
            w[layer] = current * (1.0 + spec.scale_growth * layer)
        out.append(w)
    return out[0], out[1]


def qkdata_from_weights(w_q, w_k, topk, extra=None):
    """The seed's inputs computed exactly (float64) from per-head Q/K weights.

    Parameters
    ----------
    w_q : (L, H, d, n) array_like
    w_k : (L, H_kv, d, n) array_like, ``H`` a multiple of ``H_kv``
    topk : int

    Returns
    -------
    QKData
        gram (L, L, H), fro_sq (L, H), eig_dirs (L, H, topk, n), sym_eigs (L, H, 2 d).
    """
    num_layers, num_heads, head_dim, hidden = w_q.shape
    num_kv = w_k.shape[1]
    group = num_heads // num_kv
    gram = np.empty((num_layers, num_layers, num_heads))
    fro_sq = np.empty((num_layers, num_heads))
    sym_eigs = np.empty((num_layers, num_heads, 2 * head_dim))
    eig_dirs = np.empty((num_layers, num_heads, topk, hidden))
    kk_cache = {}
    for h in range(num_heads):
        kv = h // group
        q = np.asarray(w_q[:, h], dtype=np.float64)  # (L, d, n)
        k = np.asarray(w_k[:, kv], dtype=np.float64)
        if kv not in kk_cache:
            kk_cache = {kv: stacked_gram(k)}  # query heads of one kv head are adjacent: keep one
        gram[:, :, h] = layer_gram_from_blocks(stacked_gram(q), kk_cache[kv], num_layers, head_dim)
        fro_sq[:, h] = np.einsum("lij->l", (k @ np.swapaxes(q, -1, -2)) ** 2)
        sym_eigs[:, h], eig_dirs[:, h] = symmetric_part_eigen(k, q, topk)
    return QKData(num_layers, num_heads, head_dim, hidden, gram=gram, fro_sq=fro_sq,
                  eig_dirs=eig_dirs, sym_eigs=sym_eigs, json_path="<synthetic>", eigdirs_path="<synthetic>",
                  extra=dict(extra or {}, num_kv_heads=num_kv))


def make_qkdata(spec):
    """Weights from :func:`make_weights` turned into :class:`QKData` by :func:`qkdata_from_weights`."""
    w_q, w_k = make_weights(spec)
    return qkdata_from_weights(w_q, w_k, spec.topk, extra={"synthetic": asdict(spec)})


def peak_bytes(spec):
    """Estimated peak memory of :func:`make_qkdata` and writing its result, in bytes: the float64
    weights, the outputs, two ``(L d)^2`` stacked Grams and the JSON's gram as Python floats."""
    L, H, Hkv, d, n = spec.num_layers, spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.hidden_size
    return 8 * (L * (H + Hkv) * d * n + L * H * (spec.topk * n + 2 * d + 1) + 2 * (L * d) ** 2) + 64 * L * L * H


def spec_from_args(preset, **overrides):
    """A preset with some fields replaced (those given as not None)."""
    return replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
