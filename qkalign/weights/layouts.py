"""Where each architecture keeps W_Q, W_K and its norm gains in a Hugging Face checkpoint.

A :class:`Layout` turns ``config.json`` into an :class:`AttentionShape` and names, for
layer ``l`` and head ``h``, the tensor slice holding that head's ``(d, n)`` block of
``W_Q`` (or ``W_K``) as a :class:`BlockSource`, and the norm gains that ``--fold-norms``
multiplies in as :class:`GainSource`. The weight-name prefix (``model.``, ``bert.``,
``transformer.``, ``model.language_model.``, ...) is found among the checkpoint's tensor
names, never assumed.

Supported (``LAYOUTS``): Llama-style ``q_proj``/``k_proj`` with grouped-query attention,
Phi-3's fused ``qkv_proj``, GPT-2's fused Conv1D ``c_attn`` (stored ``(in, out)``),
GPT-NeoX's ``query_key_value`` (q, k, v interleaved per head) and BERT's
``attention.self.query``/``key``.
"""

from dataclasses import dataclass

from ..checks import positive_int
from ..errors import InputError


@dataclass(frozen=True)
class AttentionShape:
    """``L`` layers, ``H`` query heads reading ``H_kv`` kv heads, head size ``d``, hidden size ``n``.

    Query head ``h`` reads kv head ``h // (H / H_kv)``.
    """

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int

    @property
    def group(self):
        """Query heads per kv head, ``H / H_kv``."""
        return self.num_heads // self.num_kv_heads


@dataclass(frozen=True)
class BlockSource:
    """One head's ``(d, n)`` block: rows ``start:stop`` of ``tensor`` (a Linear's ``(out, in)`` weight).

    With ``transposed`` the tensor is a Conv1D's ``(in, out)`` weight and the block is
    ``tensor[:, start:stop].T``.
    """

    tensor: str
    start: int
    stop: int
    transposed: bool = False


@dataclass(frozen=True)
class GainSource:
    """A norm gain ``offset + w[start:stop]`` with ``w`` the vector ``tensor`` of ``length``.

    Gemma's RMSNorm stores ``w`` with the gain ``1 + w`` (``offset = 1``); the others
    store the gain itself (``offset = 0``).
    """

    tensor: str
    start: int
    stop: int
    length: int
    offset: float = 0.0


def whole_gain(tensor, length, offset=0.0):
    """:class:`GainSource` using all of the vector ``tensor``."""
    return GainSource(tensor, 0, length, length, offset)


def _config_int(config, keys, source, default=None):
    """The first of ``keys`` present in ``config`` as a positive int (``default`` if none is)."""
    for key in keys:
        value = config.get(key)
        if value is not None:
            return positive_int(value, source, key)
    if default is not None:
        return default
    raise InputError(source, keys[0], "this key to be present", "it missing")


class Layout:
    """Base of the per-architecture layouts; subclasses name the tensors.

    Attributes
    ----------
    name : str
        Family name shown to users.
    model_types : tuple of str
        ``config.json`` ``model_type`` values of the family.
    probe : str
        Name of the layer-0 tensor holding W_Q, without the prefix: finds the prefix.
    prefix : str
        Set by :func:`find_prefix`.
    """

    name = ""
    model_types = ()
    probe = ""
    # config.json keys, the first one present wins (GPT-2 spells them differently).
    layers_keys = ("num_hidden_layers",)
    heads_keys = ("num_attention_heads",)
    hidden_keys = ("hidden_size",)
    kv_heads_keys = ()
    # Most pre-norm models: the norm in front of attention, and how --fold-norms describes it.
    input_norm = "layers.{layer}.input_layernorm.weight"
    input_norm_label = "input_layernorm"
    gain_offset = 0.0
    # Rotary position embeddings act between W_Q and W_K (GPT-2 and BERT add positions to the input).
    rotary = True

    def __init__(self, model_type):
        self.model_type = model_type
        self.prefix = ""

    def shape(self, config, source):
        """:class:`AttentionShape` from ``config`` (a dict read from ``source``)."""
        num_layers = _config_int(config, self.layers_keys, source)
        num_heads = _config_int(config, self.heads_keys, source)
        hidden = _config_int(config, self.hidden_keys, source)
        num_kv = _config_int(config, self.kv_heads_keys, source, default=num_heads) if self.kv_heads_keys else num_heads
        if num_heads % num_kv:
            raise InputError(source, self.kv_heads_keys[0], f"a divisor of {self.heads_keys[0]} = {num_heads}", num_kv)
        return AttentionShape(num_layers, num_heads, num_kv, self._head_dim(config, source, num_heads, hidden), hidden)

    def _head_dim(self, config, source, num_heads, hidden):
        if config.get("head_dim") is not None:  # Qwen3, Gemma: H d need not equal n
            return _config_int(config, ("head_dim",), source)
        if hidden % num_heads:
            raise InputError(source, self.hidden_keys[0], f"a multiple of {self.heads_keys[0]} = {num_heads}", hidden)
        return hidden // num_heads

    def probe_shape(self, shape):
        """Shape the probe tensor must have (tells the prefix apart when several match)."""
        return self.weight_shapes(shape, 0)[self.name_in(self.probe)]

    def weight_shapes(self, shape, layer):
        """``{tensor name: shape}`` of the Q/K weights of ``layer`` (checked before any compute)."""
        raise NotImplementedError

    def q_block(self, shape, layer, head):
        """:class:`BlockSource` of query head ``head`` in ``layer``."""
        raise NotImplementedError

    def k_block(self, shape, layer, kv_head):
        """:class:`BlockSource` of kv head ``kv_head`` in ``layer``."""
        raise NotImplementedError

    def input_gain(self, shape, layer):
        """:class:`GainSource` (length ``n``) of the norm feeding attention in ``layer``, or None."""
        name = self.input_norm.format(layer=layer)
        return whole_gain(self.name_in(name), shape.hidden_size, self.gain_offset)

    def q_gain(self, shape, layer, head):
        """:class:`GainSource` (length ``d``) of the QK-norm on query head ``head``, or None."""
        return None

    def k_gain(self, shape, layer, kv_head):
        """:class:`GainSource` (length ``d``) of the QK-norm on kv head ``kv_head``, or None."""
        return None

    def gain_shapes(self, shape, layer):
        """``{tensor name: shape}`` of the norm gains of ``layer`` that ``--fold-norms`` reads."""
        gains = (self.input_gain(shape, layer), self.q_gain(shape, layer, 0), self.k_gain(shape, layer, 0))
        return {g.tensor: (g.length,) for g in gains if g is not None}

    def folded_gains(self):
        """What ``--fold-norms`` multiplies in, in words (for the output metadata)."""
        plus = "1 + " if self.gain_offset else ""
        return [f"{self.input_norm_label}: W diag({plus}w)"]

    def name_in(self, name):
        """``name`` with the checkpoint's prefix."""
        return self.prefix + name


class SeparateProjections(Layout):
    """Separate Linear weights for W_Q ``(H d, n)`` and W_K ``(H_kv d, n)``, head ``h`` in rows ``h d:(h+1) d``."""

    def q_tensor(self, layer):
        """Name of W_Q in ``layer``."""
        raise NotImplementedError

    def k_tensor(self, layer):
        """Name of W_K in ``layer``."""
        raise NotImplementedError

    def weight_shapes(self, shape, layer):
        n, d = shape.hidden_size, shape.head_dim
        return {self.q_tensor(layer): (shape.num_heads * d, n), self.k_tensor(layer): (shape.num_kv_heads * d, n)}

    def q_block(self, shape, layer, head):
        d = shape.head_dim
        return BlockSource(self.q_tensor(layer), head * d, (head + 1) * d)

    def k_block(self, shape, layer, kv_head):
        d = shape.head_dim
        return BlockSource(self.k_tensor(layer), kv_head * d, (kv_head + 1) * d)


class LlamaLayout(SeparateProjections):
    """``layers.{l}.self_attn.q_proj/k_proj`` Linear weights, ``(H d, n)`` and ``(H_kv d, n)``."""

    name = "llama-style q_proj/k_proj"
    model_types = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text",
                   "olmo", "olmo2", "granite")
    probe = "layers.0.self_attn.q_proj.weight"
    kv_heads_keys = ("num_key_value_heads",)

    def __init__(self, model_type):
        super().__init__(model_type)
        # Gemma's RMSNorms scale by 1 + w.
        self.gain_offset = 1.0 if model_type.startswith("gemma") else 0.0
        # OLMo's LayerNorm has no parameters; OLMo2 normalises the block outputs, not its input.
        self.has_input_norm = model_type not in ("olmo", "olmo2")
        self.qk_norm = {"qwen3": "per_head", "gemma3": "per_head", "gemma3_text": "per_head",
                        "olmo2": "all_heads"}.get(model_type)

    def _attn(self, layer, what):
        return self.name_in(f"layers.{layer}.self_attn.{what}.weight")

    def q_tensor(self, layer):
        return self._attn(layer, "q_proj")

    def k_tensor(self, layer):
        return self._attn(layer, "k_proj")

    def input_gain(self, shape, layer):
        return super().input_gain(shape, layer) if self.has_input_norm else None

    def _qk_gain(self, shape, layer, which, head, heads):
        d = shape.head_dim
        if self.qk_norm == "per_head":  # one (d,) gain shared by all heads
            return whole_gain(self._attn(layer, which), d, self.gain_offset)
        if self.qk_norm == "all_heads":
            return GainSource(self._attn(layer, which), head * d, (head + 1) * d, heads * d, self.gain_offset)
        return None

    def q_gain(self, shape, layer, head):
        return self._qk_gain(shape, layer, "q_norm", head, shape.num_heads)

    def k_gain(self, shape, layer, kv_head):
        return self._qk_gain(shape, layer, "k_norm", kv_head, shape.num_kv_heads)

    def folded_gains(self):
        out = super().folded_gains() if self.has_input_norm else []
        plus = "1 + " if self.gain_offset else ""
        if self.qk_norm == "per_head":
            out.append(f"q_norm/k_norm (one gain shared by all heads): diag({plus}w) W")
        elif self.qk_norm == "all_heads":
            out.append(f"q_norm/k_norm (across all heads): diag({plus}w[rows of the head]) W")
        return out


class Phi3Layout(Layout):
    """Phi-3's fused ``qkv_proj``: rows ``[Q (H d); K (H_kv d); V (H_kv d)]``."""

    name = "phi-3 fused qkv_proj"
    model_types = ("phi3",)
    probe = "layers.0.self_attn.qkv_proj.weight"
    kv_heads_keys = ("num_key_value_heads",)

    def _fused(self, layer):
        return self.name_in(f"layers.{layer}.self_attn.qkv_proj.weight")

    def weight_shapes(self, shape, layer):
        rows = (shape.num_heads + 2 * shape.num_kv_heads) * shape.head_dim
        return {self._fused(layer): (rows, shape.hidden_size)}

    def q_block(self, shape, layer, head):
        d = shape.head_dim
        return BlockSource(self._fused(layer), head * d, (head + 1) * d)

    def k_block(self, shape, layer, kv_head):
        d = shape.head_dim
        start = (shape.num_heads + kv_head) * d
        return BlockSource(self._fused(layer), start, start + d)


class GPT2Layout(Layout):
    """GPT-2's ``h.{l}.attn.c_attn`` Conv1D, stored ``(n, 3 n)``: columns ``[Q | K | V]``."""

    name = "gpt-2 fused c_attn (Conv1D)"
    model_types = ("gpt2",)
    probe = "h.0.attn.c_attn.weight"
    layers_keys = ("n_layer", "num_hidden_layers")
    heads_keys = ("n_head", "num_attention_heads")
    hidden_keys = ("n_embd", "hidden_size")
    input_norm = "h.{layer}.ln_1.weight"
    input_norm_label = "ln_1"
    rotary = False

    def _fused(self, layer):
        return self.name_in(f"h.{layer}.attn.c_attn.weight")

    def weight_shapes(self, shape, layer):
        return {self._fused(layer): (shape.hidden_size, 3 * shape.hidden_size)}

    def q_block(self, shape, layer, head):
        d = shape.head_dim
        return BlockSource(self._fused(layer), head * d, (head + 1) * d, transposed=True)

    def k_block(self, shape, layer, kv_head):
        d, n = shape.head_dim, shape.hidden_size
        return BlockSource(self._fused(layer), n + kv_head * d, n + (kv_head + 1) * d, transposed=True)


class NeoXLayout(Layout):
    """GPT-NeoX's ``query_key_value``, ``(3 n, n)``: per head ``h`` the rows ``[q_h; k_h; v_h]``."""

    name = "gpt-neox fused query_key_value"
    model_types = ("gpt_neox",)
    probe = "layers.0.attention.query_key_value.weight"

    def _fused(self, layer):
        return self.name_in(f"layers.{layer}.attention.query_key_value.weight")

    def weight_shapes(self, shape, layer):
        return {self._fused(layer): (3 * shape.hidden_size, shape.hidden_size)}

    def q_block(self, shape, layer, head):
        d = shape.head_dim
        return BlockSource(self._fused(layer), 3 * head * d, (3 * head + 1) * d)

    def k_block(self, shape, layer, kv_head):
        d = shape.head_dim
        return BlockSource(self._fused(layer), (3 * kv_head + 1) * d, (3 * kv_head + 2) * d)


class BertLayout(SeparateProjections):
    """BERT's ``encoder.layer.{l}.attention.self.query/key``, ``(n, n)`` each.

    BERT normalises after each block, so the input of layer ``l``'s attention is the
    output LayerNorm of layer ``l - 1`` (the embeddings' LayerNorm for layer 0).
    """

    name = "bert attention.self.query/key"
    model_types = ("bert",)
    probe = "encoder.layer.0.attention.self.query.weight"
    input_norm_label = "input LayerNorm (embeddings.LayerNorm for layer 0, else output.LayerNorm of the layer before)"
    rotary = False

    def q_tensor(self, layer):
        return self.name_in(f"encoder.layer.{layer}.attention.self.query.weight")

    def k_tensor(self, layer):
        return self.name_in(f"encoder.layer.{layer}.attention.self.key.weight")

    def input_gain(self, shape, layer):
        name = "embeddings.LayerNorm.weight" if layer == 0 else f"encoder.layer.{layer - 1}.output.LayerNorm.weight"
        return whole_gain(self.name_in(name), shape.hidden_size)


LAYOUTS = (LlamaLayout, Phi3Layout, GPT2Layout, NeoXLayout, BertLayout)


def supported_model_types():
    """``"family (model_type, ...)"`` for every supported layout, for error messages and docs."""
    return "; ".join(f"{cls.name} ({', '.join(cls.model_types)})" for cls in LAYOUTS)


def text_config(config):
    """The language model's part of ``config``: Gemma 3's multimodal config nests it in ``text_config``."""
    if config.get("model_type") == "gemma3" and isinstance(config.get("text_config"), dict):
        return dict(config["text_config"], model_type=config["text_config"].get("model_type", "gemma3_text"))
    return config


def layout_for(config, source):
    """The :class:`Layout` for ``config["model_type"]`` (``config`` already through :func:`text_config`)."""
    model_type = config.get("model_type")
    for cls in LAYOUTS:
        if model_type in cls.model_types:
            return cls(model_type)
    raise InputError(source, "model_type", f"one of the supported layouts: {supported_model_types()}",
                     repr(model_type))


def find_prefix(layout, shape, names, shape_of, source):
    """Set ``layout.prefix``: the text before ``layout.probe`` in the checkpoint's tensor names.

    Several candidates (a vision tower also has ``layers.0.self_attn.q_proj``) are told
    apart by the probe tensor's shape; a unique match of the right shape wins.
    """
    probe = layout.probe
    candidates = sorted(name[: -len(probe)] for name in names
                        if name.endswith(probe) and (len(name) == len(probe) or name[-len(probe) - 1] == "."))
    if not candidates:
        raise InputError(source, "*" + probe, f"a tensor named [PREFIX]{probe} for model_type "
                         f"{layout.model_type!r} ({layout.name})", "no such tensor")
    expected = layout.probe_shape(shape)
    fitting = [p for p in candidates if tuple(shape_of(p + probe)) == expected]
    if len(fitting) == 1 or (len(candidates) == 1 and not fitting):
        # A single candidate of the wrong shape is reported by the shape check, naming the tensor.
        layout.prefix = (fitting or candidates)[0]
        return layout.prefix
    raise InputError(source, "*" + probe, f"one tensor [PREFIX]{probe} of shape {expected}",
                     f"{len(fitting)} of {len(candidates)} candidates fit: "
                     + ", ".join(p + probe for p in candidates))
