r"""The rotary position embedding (RoPE) of a model: the frequencies of each layer, from config.json or GGUF metadata.

A rotary model rotates each query and key by its position before their dot product. With ``d_rot``
rotated dimensions of a head grouped in ``d_rot/2`` pairs ``(a_i, b_i)``, the query of a token at
position ``m`` is turned by the angle ``m θ_i`` in the plane of pair ``i``,

    q'_a = q_a cos mθ_i − q_b sin mθ_i,        q'_b = q_b cos mθ_i + q_a sin mθ_i,

the key at position ``n`` likewise by ``n θ_i``, and the rotated dimensions of both are multiplied by
the attention factor ``s`` (yarn's mscale, longrope's factor; 1 otherwise: it multiplies cos and sin
alike, so no angle depends on it; the dimensions from ``d_rot`` on pass unrotated and unscaled). Since
``Rot(mθ)ᵀ Rot(nθ) = Rot((n − m)θ)``, the score is

    (W_K x_n)ᵀ S R(Δ) S (W_Q x_m) = x_nᵀ g(Δ) x_m,    g(Δ) = W_Kᵀ S R(Δ) S W_Q,    Δ = m − n,

with ``R(Δ)`` the rotation by ``Δ θ_i`` in each pair's plane (``R_aa = R_bb = cos Δθ_i``,
``R_ab = −sin Δθ_i``, ``R_ba = sin Δθ_i``), the identity on the dimensions from ``d_rot`` on, and
``S = diag(s, .., s, 1, .., 1)`` (``s`` on the ``d_rot`` rotated dimensions), so ``S R(Δ) S`` is ``s² R(Δ)``
on the rotated block (:meth:`RopeSpec.rotation`). The pairs are ``(i, i + d_rot/2)`` in transformers' checkpoints
("half-split", its ``rotate_half``) and ``(2i, 2i + 1)`` in the Q/K rows of llama-architecture GGUF
files ("interleaved": see :mod:`~qkalign.weights.gguf_layout`). The distance profile of a head
needs the ``θ_i`` exactly as the model's own RoPE initialisation computes them:

- ``default``: ``θ_i = base^(−2i/d_rot)``, ``i = 0 .. d_rot/2 − 1``;
- ``linear``: ``θ_i / factor``;
- ``dynamic`` (NTK): the default ``θ_i`` at the original length. transformers rescales the base
  only once a sequence grows past ``max_position_embeddings`` (its ``dynamic_rope_update``); at
  initialisation ``base · (factor · L/L − (factor − 1))^(d/(d−2)) = base``: no rescaling is recorded;
- ``yarn``: ``θ_i = (1 − e_i) θ_i/factor + e_i θ_i`` with ``e_i = 1 − clamp((i − lo)/(hi − lo), 0, 1)``,
  ``lo, hi`` the (floored, ceiled) dimensions at which ``beta_fast`` (32) and ``beta_slow`` (1)
  rotations fit in ``original_max_position_embeddings``, ``d · ln(L_orig/(2π β)) / (2 ln base)``;
  ``s = 0.1 ln(factor) + 1`` (or ``mscale``/``mscale_all_dim``'s ratio, or ``attention_factor``);
- ``longrope``: ``θ_i = base^(−2i/d_rot) / short_factor_i``, ``s = sqrt(1 + ln(factor)/ln(L_orig))``
  with ``factor = max_position_embeddings / L_orig`` unless given. transformers switches to
  ``long_factor`` for a sequence longer than ``L_orig`` (at each forward); the short factors are those
  of the original length and of the initialisation, and are recorded;
- ``llama3``: ``θ_i`` kept where its wavelength ``2π/θ_i`` is below ``L_orig / high_freq_factor``,
  divided by ``factor`` above ``L_orig / low_freq_factor``, in between ``(1 − t) θ_i/factor + t θ_i``
  with ``t = (L_orig/wavelength − low_freq_factor) / (high_freq_factor − low_freq_factor)``;
- ``proportional`` (Gemma 4): ``θ_i = base^(−2i/d)/factor`` over the whole head (``d = head_dim``)
  for the first ``int(partial_rotary_factor · d // 2)`` pairs, ``θ_i = 0`` (no rotation) for the rest.

**Precision.** The ``θ_i`` are computed in float64 from these formulas, not in transformers' float32:
they are the formula's values, which float32 rounds, and a bit-exact float32 copy would depend on the
``pow`` of the platform (torch's vectorised one against the C library's). transformers' buffers differ
from them by float32 rounding: the exponent ``2i/d`` rounded to float32 moves ``base^(2i/d)`` by up to
``ln(base) · 2^-24`` relatively and each later operation adds up to an ulp; yarn's and llama3's blends
weigh a rounded ramp by ``factor − 1``. tests/test_rope.py states the bound and checks it (measured: a
few ``2^-24``). Attention factors are Python floats in transformers too, and equal here.
"""

import math
from dataclasses import dataclass, replace

import numpy as np

from ..checks import is_integer, positive_int
from ..errors import InputError
from .gguf_layout import ARCHITECTURES, HALF_SPLIT, INTERLEAVED
from .gguf_reader import shown
from .layouts import text_config

#: The rope types of transformers' ``ROPE_INIT_FUNCTIONS`` (5.24), and its ``default``.
ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3", "proportional")
#: Model types without RoPE (positions are added to the input embeddings).
NO_ROPE = ("gpt2", "bert")
#: transformers 5.24's default ``max_position_embeddings`` per model type (its config classes), used when
#: config.json has none: yarn, longrope and llama3 fall back on it for the original length.
MAX_POSITIONS = {
    "llama": 2048, "mistral": 4096 * 32, "qwen2": 32768, "qwen3": 32768, "gemma": 8192, "gemma2": 8192,
    "gemma3_text": 131_072, "olmo": 2048, "olmo2": 2048, "granite": 2048, "phi3": 4096, "gpt_neox": 2048,
}
#: Families whose attention rotates part of each head (``q[..., :d_rot]``): the config key of the rotated
#: fraction when the rope dict has no ``partial_rotary_factor``, and its default. The others rotate the
#: whole head (``apply_rotary_pos_emb`` multiplies all of ``q`` by ``cos``).
PARTIAL_ROTARY = {"phi3": ("partial_rotary_factor", 1.0), "gpt_neox": ("rotary_pct", 0.25)}
#: Gemma 3's layer kinds (transformers' ``layer_types``) and the default base of each (``default_theta``).
GEMMA3_KINDS = {"sliding_attention": ("rope_local_base_freq", 10_000.0), "full_attention": ("rope_theta", 1e6)}
#: Gemma 3's default period: every 6th layer global (``sliding_window_pattern``; llama.cpp's ``set_swa_pattern(6)``).
GEMMA3_PATTERN = 6
#: llama.cpp's RoPE scaling types (``LLAMA_ROPE_SCALING_TYPES``).
GGUF_SCALING_TYPES = ("none", "linear", "yarn", "longrope")
#: The name of a model's only layer kind when every layer has the same RoPE.
ALL_LAYERS = "all"


@dataclass(frozen=True, eq=False)
class RopeSpec:
    """The RoPE of one kind of layer: ``θ_i``, which dimensions pair, the factor on cos and sin.

    Parameters
    ----------
    inv_freq : array_like
        ``(d_rot/2,)`` float64: ``θ_i`` (transformers' ``inv_freq[i]``), radians per position.
    rotary_dims : int
        ``d_rot``, even, at most ``head_dim``; dimensions from ``d_rot`` on are not rotated.
    pairing : str
        ``"half-split"`` (dimension ``i`` with ``i + d_rot/2``) or ``"interleaved"`` (``2i`` with ``2i + 1``).
    attention_factor : float
        ``s``, multiplying cos and sin alike (the rotated block of the score by ``s²``); no angle depends on it.
    rope_type : str
        One of :data:`ROPE_TYPES` (for a GGUF file, what its keys and tensors amount to).
    base : float
        The base of the default frequencies, ``θ_i = base^(−2i/d_rot)`` before any scaling.
    head_dim : int
        The head size ``d`` (default ``rotary_dims``).
    source : str
        The keys (and tensors) it was read from, short.
    """

    inv_freq: np.ndarray
    rotary_dims: int
    pairing: str = HALF_SPLIT
    attention_factor: float = 1.0
    rope_type: str = "default"
    base: float = 10_000.0
    head_dim: int = 0
    source: str = ""

    def __post_init__(self):
        inv = np.array(self.inv_freq, dtype=np.float64)  # a copy, made read-only: the spec is frozen
        inv.setflags(write=False)
        object.__setattr__(self, "inv_freq", inv)
        object.__setattr__(self, "head_dim", self.head_dim or self.rotary_dims)
        if not (is_integer(self.rotary_dims) and self.rotary_dims >= 2 and self.rotary_dims % 2 == 0
                and self.rotary_dims <= self.head_dim):
            raise ValueError(f"rotary_dims {self.rotary_dims!r}: expected an even number in 2..{self.head_dim}")
        object.__setattr__(self, "rotary_dims", int(self.rotary_dims))
        object.__setattr__(self, "head_dim", int(self.head_dim))
        object.__setattr__(self, "attention_factor", float(self.attention_factor))
        if inv.shape != (self.rotary_dims // 2,) or not np.all(np.isfinite(inv)) or np.any(inv < 0):
            raise ValueError(f"inv_freq of shape {inv.shape}: expected {self.rotary_dims // 2} finite values >= 0")
        if self.pairing not in (HALF_SPLIT, INTERLEAVED):
            raise ValueError(f"pairing {self.pairing!r}: expected {HALF_SPLIT!r} or {INTERLEAVED!r}")
        if not (math.isfinite(self.attention_factor) and self.attention_factor > 0):
            raise ValueError(f"attention_factor {self.attention_factor!r}: expected a finite number > 0")

    def __eq__(self, other):
        if not isinstance(other, RopeSpec):
            return NotImplemented
        return np.array_equal(self.inv_freq, other.inv_freq) and all(
            getattr(self, name) == getattr(other, name)
            for name in ("rotary_dims", "pairing", "attention_factor", "rope_type", "base", "head_dim", "source"))

    __hash__ = None  # equal specs hold equal arrays, which do not hash

    def pairs(self):
        """``(a, b)``, two ``(d_rot/2,)`` int64 arrays: pair ``i`` rotates dimensions ``a[i]`` and ``b[i]``."""
        from .rotary_grams import rotary_pairs

        return rotary_pairs(self.rotary_dims, self.rotary_dims, self.pairing == INTERLEAVED)

    def rotation(self, delta, scaled=False):
        """``R(Δ)``, ``(head_dim, head_dim)`` float64; with ``scaled``, ``S R(Δ) S`` (``s²`` on the rotated block).

        The score of a query at ``m`` and a key at ``n`` is ``kᵀ S R(m − n) S q`` (``q, k`` the unrotated head
        vectors): ``W_Kᵀ rotation(Δ, scaled=True) W_Q`` is the operator ``g(Δ)``.
        """
        angles = float(delta) * self.inv_freq
        cos, sin = np.cos(angles), np.sin(angles)
        if scaled:
            cos, sin = cos * self.attention_factor ** 2, sin * self.attention_factor ** 2
        from .rotary_grams import rotation_matrix

        return rotation_matrix(self.head_dim, *self.pairs(), cos, sin)


@dataclass(frozen=True)
class ModelRope:
    """A model's RoPE: one :class:`RopeSpec` per kind of layer, and the kind of every layer.

    ``specs`` maps each kind to its spec: ``{"all": spec}`` for a model whose layers all rotate alike,
    Gemma 3's ``{"sliding_attention": local, "full_attention": global}`` (transformers' layer type
    names; only the kinds some layer has). ``layer_kinds[l]`` is the kind of layer ``l``.
    """

    specs: dict
    layer_kinds: tuple

    def __post_init__(self):
        object.__setattr__(self, "specs", dict(self.specs))
        object.__setattr__(self, "layer_kinds", tuple(self.layer_kinds))
        if not self.layer_kinds or set(self.layer_kinds) != set(self.specs):
            raise ValueError(f"layer kinds {sorted(set(self.layer_kinds))}: expected those of the specs "
                             f"{sorted(self.specs)}, each used")

    @property
    def num_layers(self):
        return len(self.layer_kinds)

    @property
    def uniform(self):
        """Whether every layer has the same RoPE."""
        return len(self.specs) == 1

    def layer(self, index):
        """The :class:`RopeSpec` of layer ``index``."""
        return self.specs[self.layer_kinds[index]]


def uniform_rope(spec, num_layers):
    """:class:`ModelRope` of ``num_layers`` layers that all have ``spec``."""
    return ModelRope({ALL_LAYERS: spec}, (ALL_LAYERS,) * num_layers)


# ---------------------------------------------------------------------------------------------------------------
# The frequencies (float64 versions of transformers' ROPE_INIT_FUNCTIONS, modeling_rope_utils.py)


def default_inv_freq(base, dims):
    """``θ_i = base^(−2i/d)``, ``i = 0 .. d/2 − 1`` (each family's ``compute_default_rope_parameters``)."""
    return 1.0 / base ** (np.arange(0, dims, 2, dtype=np.float64) / dims)


def yarn_inv_freq(base, dims, factor, original, beta_fast=32.0, beta_slow=1.0, truncate=True, ext_factor=1.0):
    """YaRN's ``θ_i``: a ramp from extrapolated (``θ_i``, high frequencies) to interpolated (``θ_i / factor``).

    transformers' ``_compute_yarn_parameters`` (``ext_factor`` 1) and ggml's ``rope_yarn`` alike: the ramp
    ``1 − clamp((i − lo)/(hi − lo), 0, 1)`` is transformers' ``1 − linear_ramp_factor`` and ggml's
    ``rope_yarn_ramp`` (times ``ext_factor``), with ``lo, hi`` the correction dimensions of ``beta_fast``
    and ``beta_slow`` rotations in ``original`` positions, clamped to ``[0, d − 1]``.
    """
    def correction_dim(rotations):
        return dims * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dims - 1)
    if low == high:
        high += 0.001  # transformers' guard against a zero-width ramp (ggml: MAX(0.001, high - low))
    extrapolation = (1 - np.clip((np.arange(dims // 2) - low) / (high - low), 0, 1)) * ext_factor
    theta = default_inv_freq(base, dims)
    return theta / factor * (1 - extrapolation) + theta * extrapolation


def yarn_mscale(factor, mscale=1.0):
    """``0.1 · mscale · ln(factor) + 1`` (1 for ``factor <= 1``): transformers' ``get_mscale``."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def llama3_inv_freq(base, dims, factor, low_freq_factor, high_freq_factor, original):
    """Llama 3.1's ``θ_i`` (``_compute_llama3_parameters``): long wavelengths divided by ``factor``, short ones
    kept, a smooth blend between ``original / high_freq_factor`` and ``original / low_freq_factor``."""
    theta = default_inv_freq(base, dims)
    wavelength = 2 * math.pi / theta
    scaled = np.where(wavelength > original / low_freq_factor, theta / factor, theta)
    smooth = (original / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelength >= original / high_freq_factor) & (wavelength <= original / low_freq_factor)
    return np.where(medium, blended, scaled)


# ---------------------------------------------------------------------------------------------------------------
# config.json


@dataclass(frozen=True)
class _Read:
    """What one rope dict is read against: where it came from, the head, the lengths."""

    source: str
    field: str  # where the dict sits in config.json, for error lines
    model_type: str
    head_dim: int
    max_positions: int
    # A top-level original_max_position_embeddings: transformers' standardize_rope_params, run again by every
    # init function, lets it override the dict's (for yarn, longrope and llama3); None for Gemma 3's nested dicts.
    original: object = None
    keys: str = ""  # the config keys read, for RopeSpec.source
    # Where rope_theta and partial_rotary_factor came from when not from the dict (a top-level key), for error lines
    theta_field: str = ""
    partial_field: str = ""

    def where(self, key):
        """The config.json field of the standardised dict's ``key``."""
        moved = {"rope_theta": self.theta_field, "partial_rotary_factor": self.partial_field}.get(key)
        return moved or f"{self.field}.{key}"


def _number(value, source, field, what="a positive number", positive=True):
    """``value`` as a finite float (> 0 unless not ``positive``); else one error line."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or (positive and value <= 0):
        raise InputError(source, field, what, shown(value))
    return float(value)


def _param(params, key, read, default=None):
    """``params[key]`` as a positive number (``default`` when absent or null; required when that is None)."""
    value = params.get(key)
    if value is None:
        if default is None:
            raise InputError(read.source, f"{read.field}.{key}", "this key to be present", "it missing")
        return default
    return _number(value, read.source, f"{read.field}.{key}")


def _original(params, read):
    """``L_orig``: the top-level key (transformers' override), the dict's, else ``max_position_embeddings``."""
    if read.original is not None:
        return positive_int(read.original, read.source, "original_max_position_embeddings")
    value = params.get("original_max_position_embeddings")
    if value is None:
        return read.max_positions
    return positive_int(value, read.source, f"{read.field}.original_max_position_embeddings")


def _rotary_dims(params, read):
    """``d_rot = int(head_dim · partial_rotary_factor)`` for partially rotary families, else ``head_dim``."""
    fraction, field = params.get("partial_rotary_factor"), read.where("partial_rotary_factor")
    if read.model_type not in PARTIAL_ROTARY:
        if fraction not in (None, 1, 1.0):
            raise InputError(read.source, field, f"1 or absent (transformers' {read.model_type} attention rotates "
                             "the whole head)", shown(fraction))
        return read.head_dim
    fraction = _number(fraction, read.source, field, "a number in (0, 1]")
    dims = int(read.head_dim * fraction)
    if fraction > 1 or dims < 2 or dims % 2:
        raise InputError(read.source, field, f"a fraction of head_dim {read.head_dim} that rotates an even "
                         "number >= 2 of dimensions", shown(fraction))
    return dims


def _init_default(params, read, base, dims):
    return default_inv_freq(base, dims), 1.0


def _init_linear(params, read, base, dims):
    return default_inv_freq(base, dims) / _param(params, "factor", read), 1.0


def _init_dynamic(params, read, base, dims):
    _param(params, "factor", read)  # required, but at the original length the base is not rescaled
    return default_inv_freq(base, dims), 1.0


def _init_yarn(params, read, base, dims):
    original = _original(params, read)
    factor = params.get("factor")  # None: max_position_embeddings / L_orig (DeepSeek-V3)
    factor = read.max_positions / original if factor is None else _param(params, "factor", read)
    attention = params.get("attention_factor")
    if attention is not None:
        attention = _number(attention, read.source, f"{read.field}.attention_factor")
    elif params.get("mscale") and params.get("mscale_all_dim"):
        mscale, all_dim = (_param(params, key, read) for key in ("mscale", "mscale_all_dim"))
        attention = yarn_mscale(factor, mscale) / yarn_mscale(factor, all_dim)
    else:
        attention = yarn_mscale(factor)
    # transformers: `params.get("beta_fast") or 32`, so 0 (or null) means the default too
    beta_fast = _number(params.get("beta_fast") or 32, read.source, f"{read.field}.beta_fast")
    beta_slow = _number(params.get("beta_slow") or 1, read.source, f"{read.field}.beta_slow")
    truncate = params.get("truncate", True)
    if not isinstance(truncate, bool):
        raise InputError(read.source, f"{read.field}.truncate", "true or false", shown(truncate))
    return yarn_inv_freq(base, dims, factor, original, beta_fast, beta_slow, truncate), attention


def _init_longrope(params, read, base, dims):
    original = _original(params, read)
    short = params.get("short_factor")
    if not isinstance(short, list) or len(short) != dims // 2:
        raise InputError(read.source, f"{read.field}.short_factor", f"a list of {dims // 2} positive numbers "
                         "(one per rotary pair)", shown(short))
    short = np.array([_number(v, read.source, f"{read.field}.short_factor") for v in short])
    factor = params.get("factor")  # None: max_position_embeddings / L_orig (Phi-3)
    factor = read.max_positions / original if factor is None else _param(params, "factor", read)
    attention = params.get("attention_factor")
    if attention is not None:
        attention = _number(attention, read.source, f"{read.field}.attention_factor")
    else:
        attention = 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(original))
    return default_inv_freq(base, dims) / short, attention


def _init_llama3(params, read, base, dims):
    low, high = (_param(params, key, read) for key in ("low_freq_factor", "high_freq_factor"))
    if not low < high:
        raise InputError(read.source, f"{read.field}.high_freq_factor", f"a number > low_freq_factor {low}", high)
    factor = _param(params, "factor", read)
    return llama3_inv_freq(base, dims, factor, low, high, _original(params, read)), 1.0


_INIT = {"default": _init_default, "linear": _init_linear, "dynamic": _init_dynamic, "yarn": _init_yarn,
         "longrope": _init_longrope, "llama3": _init_llama3}


def _proportional(params, read, base):
    """Gemma 4's proportional RoPE: the whole head, ``θ_i = base^(−2i/d)/factor`` for the first
    ``int(partial_rotary_factor · d // 2)`` pairs, 0 for the others (``_compute_proportional_rope_parameters``)."""
    fraction, field = params.get("partial_rotary_factor"), read.where("partial_rotary_factor")
    fraction = 1.0 if fraction is None else _number(fraction, read.source, field, "a number in (0, 1]")
    if fraction > 1:
        raise InputError(read.source, field, "a number in (0, 1]", fraction)
    angles, d = int(fraction * read.head_dim // 2), read.head_dim
    factor = _param(params, "factor", read, default=1.0)
    inv = np.zeros(d // 2)
    inv[:angles] = 1.0 / base ** (np.arange(0, 2 * angles, 2, dtype=np.float64) / d) / factor
    return RopeSpec(inv, d, HALF_SPLIT, 1.0, "proportional", base, d, read.keys)


def _spec(params, read):
    """The :class:`RopeSpec` of one standardised rope dict (``rope_type`` and ``rope_theta`` filled in)."""
    rope_type = params["rope_type"]
    if not isinstance(rope_type, str) or rope_type not in ROPE_TYPES:
        raise InputError(read.source, f"{read.field}.rope_type", "one of the rope types of transformers' "
                         "ROPE_INIT_FUNCTIONS: " + ", ".join(ROPE_TYPES), shown(rope_type))
    base = _number(params["rope_theta"], read.source, read.where("rope_theta"))
    if rope_type == "proportional":
        return _proportional(params, read, base)
    dims = _rotary_dims(params, read)
    inv, attention = _INIT[rope_type](params, read, base, dims)
    return RopeSpec(inv, dims, HALF_SPLIT, float(attention), rope_type, base, read.head_dim, read.keys)


def _rope_dict(config, key, read, field=None):
    """A copy of ``config[key]`` (a dict, or {} when absent or empty); one line (naming ``field``, default
    ``key``) for anything else."""
    value = config.get(key)
    if value is None or value == {}:
        return {}
    if not isinstance(value, dict):
        raise InputError(read.source, field or key, "an object of RoPE parameters", shown(value))
    return dict(value)


def _set_type(params, read):
    """``rope_type`` from ``rope_type``, else the legacy ``type``, else default (``standardize_rope_params``)."""
    params.setdefault("rope_type", params.get("type", "default"))
    if read.model_type == "phi3" and params["rope_type"] in ("su", "yarn"):
        params["rope_type"] = "longrope"  # Phi3Config: backward compatibility of "su" and "yarn"
    if read.model_type == "phi3" and params["rope_type"] not in ("default", "longrope"):
        raise InputError(read.source, f"{read.field}.rope_type", "default or longrope (Phi3Config refuses "
                         "other rope types)", shown(params["rope_type"]))
    return params


def _flat_params(config, read):
    """The one rope dict of a model whose layers all rotate alike, standardised as transformers 5.24 does.

    ``rope_scaling`` (4.x spelling, with ``type`` or ``rope_type``) replaces ``rope_parameters``
    (``convert_rope_params_to_dict``); ``rope_theta`` and ``partial_rotary_factor`` at the top level fill in
    what the dict lacks (GPT-NeoX: ``rotary_emb_base`` and ``rotary_pct``, default 0.25; Phi-3's default 1).
    """
    field = "rope_scaling" if config.get("rope_scaling") else "rope_parameters"
    read = replace(read, field=field)
    params = _rope_dict(config, field, read)
    theta_key = "rotary_emb_base" if read.model_type == "gpt_neox" else "rope_theta"
    if params.get("rope_theta") is None:
        params["rope_theta"] = 10_000.0 if config.get(theta_key) is None else config[theta_key]
        read = replace(read, theta_field=theta_key)
    partial_key, partial_default = PARTIAL_ROTARY.get(read.model_type, ("partial_rotary_factor", None))
    if params.get("partial_rotary_factor") is None:
        fraction = config.get(partial_key)
        params["partial_rotary_factor"] = partial_default if fraction is None else fraction
        read = replace(read, partial_field=partial_key)
    used = [key for key in (field, theta_key, partial_key, "original_max_position_embeddings") if key in config]
    return _set_type(params, read), replace(read, keys=", ".join(used) or "defaults")


def _gemma3_layer_kinds(config, num_layers, source):
    """Gemma 3's kind of each layer: ``layer_types``, else local unless ``(l + 1) % sliding_window_pattern == 0``
    (Gemma3TextConfig.__post_init__: default pattern 6, so layers 5, 11, ... are global)."""
    kinds = config.get("layer_types")
    if kinds is not None:
        # "attention" is the legacy name of full_attention (transformers' remap_legacy_layer_types)
        kinds = [{"attention": "full_attention"}.get(k, k) if isinstance(k, str) else k for k in kinds] \
            if isinstance(kinds, list) else kinds
        if not isinstance(kinds, list) or len(kinds) != num_layers or not all(k in GEMMA3_KINDS for k in kinds):
            raise InputError(source, "layer_types", f"a list of {num_layers} layer types, each sliding_attention "
                             "or full_attention", shown(config.get("layer_types")))
        return tuple(kinds)
    pattern = config.get("sliding_window_pattern")
    pattern = GEMMA3_PATTERN if pattern is None else positive_int(pattern, source, "sliding_window_pattern")
    return tuple("sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(num_layers))


def _gemma3_params(config, kind, read):
    """Gemma 3's rope dict of layer ``kind`` (Gemma3TextConfig.convert_rope_params_to_dict): nested
    ``rope_parameters[kind]``, the legacy ``rope_scaling`` merged into the global one, bases from
    ``rope_theta`` (global, default 1e6) and ``rope_local_base_freq`` (local, default 1e4)."""
    nested = _rope_dict(config, "rope_parameters", read)
    flat = sorted(key for key in nested if key not in GEMMA3_KINDS)
    if flat:  # transformers would ignore them without a word and use its defaults
        raise InputError(read.source, "rope_parameters", "RoPE parameters keyed by layer type (sliding_attention, "
                         "full_attention), as Gemma 3 reads them", f"the flat keys {shown(flat)}")
    read = replace(read, field=f"rope_parameters.{kind}")
    params = _rope_dict(nested, kind, read, read.field) or {"rope_type": "default"}
    if kind == "full_attention" and config.get("rope_scaling"):
        params.update(_rope_dict(config, "rope_scaling", replace(read, field="rope_scaling")))
    theta_key, default = GEMMA3_KINDS[kind]
    if params.get("rope_theta") is None:
        params["rope_theta"] = default if config.get(theta_key) is None else config[theta_key]
        read = replace(read, theta_field=theta_key)
    read_keys = ("rope_parameters", "rope_scaling", theta_key) if kind == "full_attention" else (
        "rope_parameters", theta_key)
    used = [key for key in read_keys if key in config]
    return _set_type(params, read), replace(read, keys=", ".join(used) or "defaults")


def rope_from_config(config, model_type=None, head_dim=None, source="config.json"):
    """A model's RoPE from its ``config.json``, as transformers 5.24 initialises it; None without RoPE.

    Parameters
    ----------
    config : dict
        ``config.json`` as read (a multimodal Gemma 3 config: its ``text_config`` is read). Both spellings:
        transformers 4.x's ``rope_theta`` + ``rope_scaling`` (with ``type`` or ``rope_type``) and 5.x's
        ``rope_parameters`` (for Gemma 3 keyed by layer type).
    model_type : str, optional
        ``config["model_type"]`` by default: one of :data:`MAX_POSITIONS` (RoPE) or :data:`NO_ROPE`.
    head_dim : int, optional
        The attention's head size; default ``head_dim``, else ``hidden_size // num_attention_heads``.
    source : str
        The file, for error lines.

    Returns
    -------
    ModelRope or None
        Half-split pairing throughout (transformers' ``rotate_half``). Gemma 3: a local and a global kind
        (:func:`_gemma3_layer_kinds`); every other family one kind for all ``num_hidden_layers``.
    """
    config = text_config(config)
    model_type = config.get("model_type") if model_type is None else model_type
    if model_type == "gemma3":
        model_type = "gemma3_text"
    if model_type in NO_ROPE:
        return None
    if model_type not in MAX_POSITIONS:
        raise InputError(source, "model_type", "one of the model types whose RoPE is read: "
                         + ", ".join([*MAX_POSITIONS, *NO_ROPE]), shown(model_type))
    num_layers = positive_int(config.get("num_hidden_layers"), source, "num_hidden_layers")
    if head_dim is None:
        head_dim = config.get("head_dim") or positive_int(config.get("hidden_size"), source, "hidden_size") \
            // positive_int(config.get("num_attention_heads"), source, "num_attention_heads")
    head_dim = positive_int(head_dim, source, "head_dim")
    max_positions = config.get("max_position_embeddings")
    max_positions = MAX_POSITIONS[model_type] if max_positions is None else positive_int(
        max_positions, source, "max_position_embeddings")
    read = _Read(source, "", model_type, head_dim, max_positions)
    if model_type == "gemma3_text":
        kinds = _gemma3_layer_kinds(config, num_layers, source)
        return ModelRope({kind: _spec(*_gemma3_params(config, kind, read)) for kind in sorted(set(kinds))}, kinds)
    # Phi3Config always has original_max_position_embeddings (default 4096), which standardize_rope_params
    # puts in place of the dict's; other configs only when config.json has the key at the top level.
    original = config.get("original_max_position_embeddings", 4096 if model_type == "phi3" else None)
    return uniform_rope(_spec(*_flat_params(config, replace(read, original=original))), num_layers)


# ---------------------------------------------------------------------------------------------------------------
# GGUF metadata (llama.cpp; "llama-model.cpp:N" is src/llama-model.cpp of 20 Feb 2025, commit c392e509)


def _meta_number(meta, key, source, default, what="a positive number"):
    """``meta[key]`` as a positive float, ``default`` when absent."""
    value = meta.get(key)
    return default if value is None else _number(value, source, key, what)


def _freq_factors(values, name, dims, source):
    """A ``(d_rot/2,)`` tensor of per-frequency factors (``rope_freqs``, ``rope_factors_short``) as float64."""
    if values is None:
        return 1.0
    factors = np.asarray(values, dtype=np.float64)
    if factors.shape != (dims // 2,) or not np.all(np.isfinite(factors)) or np.any(factors <= 0):
        raise InputError(source, name, f"{dims // 2} positive factors (one per rotary pair)",
                         f"shape {factors.shape}" if factors.shape != (dims // 2,) else "a factor <= 0 or not finite")
    return factors


def _gguf_yarn(meta, arch, base, dims, factor, source):
    """YaRN's ``θ_i`` and mscale from ``{arch}.rope.scaling.*`` as llama.cpp runs them: the original length
    ``original_context_length``, else ``context_length`` (llama-model.cpp:451-452); ``beta_fast`` 32,
    ``beta_slow`` 1, ``ext_factor`` 1 for yarn (src/llama.cpp:9347-9350, 9636-9638), or the newer
    ``yarn_*`` keys; ``mscale = 1 + 0.1 ln(factor)`` when ``ext_factor != 0`` (ggml-cpu.c:9281-9287)."""
    key = f"{arch}.rope.scaling.original_context_length"
    original = meta.get(key) or meta.get(f"{arch}.context_length")  # 0 means not set (src/llama.cpp:9620-9622)
    original = positive_int(original, source, key if meta.get(key) is not None else f"{arch}.context_length")
    beta_fast = _meta_number(meta, f"{arch}.rope.scaling.yarn_beta_fast", source, 32.0)
    beta_slow = _meta_number(meta, f"{arch}.rope.scaling.yarn_beta_slow", source, 1.0)
    ext_key = f"{arch}.rope.scaling.yarn_ext_factor"
    ext = 1.0 if meta.get(ext_key) is None else _number(meta[ext_key], source, ext_key, "a number", positive=False)
    ext = 1.0 if ext < 0 else ext  # negative: "not set", 1 for yarn
    inv = yarn_inv_freq(base, dims, factor, original, beta_fast, beta_slow, True, ext)
    mscale = (1.0 + 0.1 * math.log(factor)) if ext != 0 else 1.0
    return inv, mscale * _meta_number(meta, f"{arch}.rope.scaling.yarn_attn_factor", source, 1.0)


def _gguf_spec(meta, arch, head_dim, dims, pairing, factors, source):
    """The RoPE of the (global) layers from ``{arch}.rope.*``; ``factors`` = ``(name, values)`` or None."""
    base = _meta_number(meta, f"{arch}.rope.freq_base", source, 10_000.0)  # llama-model.cpp:454-456
    kind = meta.get(f"{arch}.rope.scaling.type", "linear")  # llama-model.cpp:458-461: "linear" when absent
    if kind not in GGUF_SCALING_TYPES:
        raise InputError(source, f"{arch}.rope.scaling.type", "one of llama.cpp's scaling types: "
                         + ", ".join(GGUF_SCALING_TYPES), shown(kind))
    # The factor, or the older rope.scale_linear; 0 or absent: no scaling (llama-model.cpp:463-469); type none
    # never scales (src/llama.cpp:9632-9634).
    factor = meta.get(f"{arch}.rope.scaling.factor") or meta.get(f"{arch}.rope.scale_linear") or 1.0
    factor = 1.0 if kind == "none" else _number(factor, source, f"{arch}.rope.scaling.factor")
    # rope.scaling.attn_factor multiplies the cos/sin factor of every layer (src/llama.cpp:9640)
    attention = _meta_number(meta, f"{arch}.rope.scaling.attn_factor", source, 1.0)
    ff = _freq_factors(factors[1], factors[0], dims, source) if factors else 1.0
    if kind == "yarn":
        inv, mscale = _gguf_yarn(meta, arch, base, dims, factor, source)
        inv, attention = inv / ff, attention * mscale  # ggml divides θ by the factor before the ramp
    else:
        inv = default_inv_freq(base, dims) / ff / factor  # theta/ff * freq_scale (ggml_rope_cache_init)
    name = factors[0] if factors else ""
    rope_type = ("yarn" if kind == "yarn" else "longrope" if kind == "longrope" or name == "rope_factors_short.weight"
                 else "llama3" if name else "linear" if factor != 1 else "default")
    used = [k for k in meta if k.startswith(f"{arch}.rope.")] + ([name] if name else [])
    return RopeSpec(inv, dims, pairing, attention, rope_type, base, head_dim, ", ".join(sorted(used)) or "defaults")


def _gguf_gemma3(meta, global_spec, num_layers, source):
    """Gemma 3 in llama.cpp: local layers ``il % 6 < 5`` (``set_swa_pattern(6)``) with base 10000 and no scaling,
    global layers the file's base and scaling (later llama-model.cpp, ``case LLM_ARCH_GEMMA3``). Read here when
    present, though llama.cpp's Gemma 3 sets both itself: ``rope.freq_base_swa`` and
    ``attention.sliding_window_pattern`` (a period, or one flag per layer, true for sliding)."""
    base = _meta_number(meta, "gemma3.rope.freq_base_swa", source, 10_000.0)
    pattern_key = "gemma3.attention.sliding_window_pattern"
    pattern = meta.get(pattern_key)
    if isinstance(pattern, list):
        if len(pattern) != num_layers or not all(isinstance(v, (bool, int)) and v in (0, 1) for v in pattern):
            raise InputError(source, pattern_key, f"{num_layers} flags (true: a sliding-window layer)", shown(pattern))
        local = [bool(v) for v in pattern]
    else:
        period = GEMMA3_PATTERN if pattern is None else positive_int(pattern, source, pattern_key)
        local = [il % period < period - 1 for il in range(num_layers)]
    kinds = tuple("sliding_attention" if flag else "full_attention" for flag in local)
    dims = global_spec.rotary_dims
    attention = _meta_number(meta, "gemma3.rope.scaling.attn_factor", source, 1.0)  # every layer's
    local_spec = RopeSpec(default_inv_freq(base, dims), dims, global_spec.pairing, attention,
                          "default", base, global_spec.head_dim, "gemma3.rope.freq_base_swa"
                          if "gemma3.rope.freq_base_swa" in meta else "llama.cpp's local base 10000")
    specs = {"sliding_attention": local_spec, "full_attention": global_spec}
    return ModelRope({kind: specs[kind] for kind in set(kinds)}, kinds)


def rope_from_gguf(metadata, arch, head_dim, rotary_dims=None, pairing=None, *, rope_freqs=None,
                   rope_factors_short=None, source="GGUF"):
    """A GGUF model's RoPE as llama.cpp runs it at its training length; None without RoPE.

    Parameters
    ----------
    metadata : dict
        The file's metadata (:func:`~qkalign.weights.gguf_reader.metadata`).
    arch : str
        ``general.architecture``, one of :data:`~qkalign.weights.gguf_layout.ARCHITECTURES`.
    head_dim : int
        The head size (``{arch}.attention.key_length``, default ``n / H``).
    rotary_dims : int, optional
        ``d_rot``; default ``{arch}.rope.dimension_count``, else ``head_dim`` (llama-model.cpp:484-487).
    pairing : str, optional
        The Q/K rows' pairing; default the architecture's (interleaved for llama, granite, olmo).
    rope_freqs : array_like, optional
        The ``rope_freqs.weight`` tensor, if the file has one: ``θ_i / rope_freqs[i]``. The converter writes
        it for Llama 3 scaling (``LlamaModel.generate_extra_tensors``), so the spec says ``llama3``; llama.cpp
        reads it for llama and granite (llama-model.cpp:1536-1542).
    rope_factors_short : array_like, optional
        ``rope_factors_short.weight`` (Phi-3 longrope): ``θ_i / short[i]``. llama.cpp takes the long factors
        when the context per sequence exceeds ``original_context_length`` (src/llama.cpp:1292-1305); the short
        ones are those of the original length.
    source : str
        The file, for error lines.
    """
    spec = ARCHITECTURES.get(arch)
    if spec is None:
        raise InputError(source, "general.architecture", "one of the GGUF architectures measure reads: "
                         + ", ".join(sorted(ARCHITECTURES)), shown(arch))
    if spec.pairing is None:
        return None
    pairing = spec.pairing if pairing is None else pairing
    num_layers = positive_int(metadata.get(f"{arch}.block_count"), source, f"{arch}.block_count")
    head_dim = positive_int(head_dim, source, f"{arch}.attention.key_length")
    key = f"{arch}.rope.dimension_count"
    if rotary_dims is None:
        rotary_dims = head_dim if metadata.get(key) is None else positive_int(metadata[key], source, key)
    if not (is_integer(rotary_dims) and 2 <= rotary_dims <= head_dim and rotary_dims % 2 == 0):
        raise InputError(source, key, f"an even number of rotated dimensions <= the head size {head_dim}",
                         shown(rotary_dims))
    # llama.cpp takes rope_freqs before the long/short factors (src/llama.cpp:1296-1298)
    factors = ("rope_freqs.weight", rope_freqs) if rope_freqs is not None else (
        ("rope_factors_short.weight", rope_factors_short) if rope_factors_short is not None else None)
    global_spec = _gguf_spec(metadata, arch, head_dim, rotary_dims, pairing, factors, source)
    if arch == "gemma3":
        return _gguf_gemma3(metadata, global_spec, num_layers, source)
    return uniform_rope(global_spec, num_layers)


def rope_record(model_rope):
    """What the JSON records of a model's RoPE (``rope_parameters``): None without RoPE, else per layer kind
    its type, base, rotated dimensions, pairing, attention factor and ``inv_freq`` (θ_i), and the kind of
    every layer."""
    if model_rope is None:
        return None
    kinds = {kind: {"rope_type": spec.rope_type, "base": spec.base, "rotary_dims": spec.rotary_dims,
                    "pairing": spec.pairing, "attention_factor": spec.attention_factor, "source": spec.source,
                    "inv_freq": [float(x) for x in spec.inv_freq]}
             for kind, spec in model_rope.specs.items()}
    return {"kinds": kinds, "layer_kinds": list(model_rope.layer_kinds)}
