"""Where a GGUF file keeps W_Q, W_K and the norm gains, per architecture, and how its rotary rows pair.

GGUF names tensors alike for every architecture (llama.cpp's ``gguf`` package maps each
checkpoint's names onto them): ``blk.{l}.attn_q.weight`` ``(H d, n)`` and ``blk.{l}.attn_k.weight``
``(H_kv d, n)``, or one fused ``blk.{l}.attn_qkv.weight`` with rows ``[Q (H d); K (H_kv d); V]``
(Phi-3 as stored; GPT-2's Conv1D transposed and GPT-NeoX's per-head ``[q; k; v]`` regrouped by the
converter); the gain of the norm in front of attention is ``blk.{l}.attn_norm.weight``, BERT's
inputs are normalised by ``token_embd_norm`` (layer 0) and the layer before's
``blk.{l-1}.layer_output_norm``; QK-norms are ``attn_q_norm`` / ``attn_k_norm``. Gemma's
``1 + w`` gains are stored with the 1 added (llama.cpp's ``convert_hf_to_gguf.py``: ``data_torch +
1`` for every ``norm.weight``), so no offset is added here. Shapes come from the metadata:
``{arch}.block_count``, ``.attention.head_count``, ``.attention.head_count_kv``,
``.embedding_length`` and ``.attention.key_length`` (head size; default ``n / H``).

Rotary pairing: transformers rotates dimension ``i`` with ``i + d_rot/2`` ("half-split",
``rotate_half``). For the architectures llama.cpp runs with its "normal" RoPE (llama, and so
Mistral, Granite, OLMo) the converter permuted each head's Q and K rows so that the pairs are
adjacent, ``(2i, 2i + 1)`` ("interleaved"): file row ``2i`` holds the checkpoint's row ``i`` and
file row ``2i + 1`` its row ``i + d_rot/2`` (:func:`half_split_rows` maps them back). The
others (Qwen2/3, Gemma, Phi-3, GPT-NeoX: llama.cpp's "neox" RoPE) keep the half-split order; GPT-2
and BERT have no RoPE. A common row permutation of a head's Q and K leaves every number of the
operator at relative distance 0 unchanged; rotary analyses need the pairing.
"""

import re
from dataclasses import dataclass

import numpy as np

from ..checks import is_integer, positive_int
from ..errors import InputError
from .gguf_reader import Shown, shown
from .layouts import BlockSource, GainSource, Layout, whole_gain

INTERLEAVED = "interleaved"
HALF_SPLIT = "half-split"
#: A layer's tensor name, ``blk.{l}.``: at most 9 digits (a longer run names no layer of any model).
_LAYER_NAME = re.compile(r"^blk\.(\d{1,9})\.")


@dataclass(frozen=True)
class Architecture:
    """What differs between the GGUF architectures measure reads.

    ``pairing``: the rotary pairing of the file's Q/K rows (None: no RoPE); ``input_norm``:
    ``"attn_norm"``, ``"bert"`` (post-norm: the previous layer's output norm) or None (OLMo's
    parameter-free LayerNorm, OLMo 2's norms after the block).
    """

    pairing: str = HALF_SPLIT
    input_norm: str = "attn_norm"


#: ``general.architecture`` values read, as llama.cpp defines them (``llama_model_rope_type``,
#: ``convert_hf_to_gguf.py``). Mistral's GGUF files say ``llama``.
ARCHITECTURES = {
    "llama": Architecture(INTERLEAVED),
    "granite": Architecture(INTERLEAVED),
    "olmo": Architecture(INTERLEAVED, input_norm=None),
    "olmo2": Architecture(HALF_SPLIT, input_norm=None),
    "qwen2": Architecture(),
    "qwen3": Architecture(),
    "gemma": Architecture(),
    "gemma2": Architecture(),
    "gemma3": Architecture(),
    "phi3": Architecture(),
    "gptneox": Architecture(),
    "gpt2": Architecture(None),
    "bert": Architecture(None, input_norm="bert"),
}


def half_split_rows(head_dim, rotary_dims, pairing):
    """Row order that puts a head's file rows in the half-split order of transformers' checkpoints.

    Returns ``p`` (head_dim,) int64 with ``block[p]`` the head's ``(d, n)`` block in half-split
    order: for interleaved files, half-split row ``i < d_rot/2`` is file row ``2i`` and row
    ``i + d_rot/2`` is file row ``2i + 1``; rows from ``d_rot`` on are not rotated and stay.
    """
    order = np.arange(head_dim)
    if pairing == INTERLEAVED:
        half = rotary_dims // 2
        order[:half] = 2 * np.arange(half)
        order[half:rotary_dims] = 2 * np.arange(half) + 1
    return order


def architecture_of(meta, source):
    """``(name, Architecture)`` from ``general.architecture``; one line for a missing or unsupported one."""
    name = meta.get("general.architecture")
    if not isinstance(name, str):
        raise InputError(source, "general.architecture", "the model's architecture in the GGUF metadata (a string)",
                         "it missing" if name is None else shown(name))
    if name not in ARCHITECTURES:
        raise InputError(source, "general.architecture", "one of the GGUF architectures measure reads: "
                         + ", ".join(sorted(ARCHITECTURES)), shown(name))
    return name, ARCHITECTURES[name]


def _quotable(meta):
    """``meta`` with each value that is no integer wrapped in :class:`~.gguf_reader.Shown`: a check refusing
    it quotes at most a line's worth of a hostile string or array."""
    return {key: value if value is None or is_integer(value) else Shown(value) for key, value in meta.items()}


class GGUFLayout(Layout):
    """The :class:`~qkalign.weights.layouts.Layout` of a GGUF file's tensors (names without a prefix).

    Parameters
    ----------
    arch : str
        ``general.architecture``.
    names : collection of str
        The file's tensor names: tells fused ``attn_qkv`` from ``attn_q`` / ``attn_k`` and which QK-norms exist.
    shape_of : callable
        ``shape_of(name)``: a tensor's shape, for the QK-norms' lengths (``d``: one gain shared by the
        heads, as Qwen3 and Gemma 3; ``heads d``: a gain per head, as OLMo 2).
    """

    def __init__(self, arch, names, shape_of):
        super().__init__(arch)
        self.arch = arch
        self.spec = ARCHITECTURES[arch]
        self.name = f"gguf {arch}"
        self.fused = "blk.0.attn_q.weight" not in names and "blk.0.attn_qkv.weight" in names
        self.probe = "blk.0.attn_qkv.weight" if self.fused else "blk.0.attn_q.weight"
        self.rotary = self.spec.pairing is not None
        self.layers_keys = (f"{arch}.block_count",)
        self.heads_keys = (f"{arch}.attention.head_count",)
        self.kv_heads_keys = (f"{arch}.attention.head_count_kv",)
        self.hidden_keys = (f"{arch}.embedding_length",)
        self.has_qk_norm = "blk.0.attn_q_norm.weight" in names and "blk.0.attn_k_norm.weight" in names
        # A 0-D gain has no length: the gain shape checked with --fold-norms refuses it.
        self.qk_norm_lengths = (tuple((shape_of(f"blk.0.{which}.weight") or (None,))[-1]
                                      for which in ("attn_q_norm", "attn_k_norm")) if self.has_qk_norm else None)

    def shape(self, meta, source):
        meta = dict(meta)
        for key in self.heads_keys + self.kv_heads_keys:
            if isinstance(meta.get(key), list) and meta[key]:  # per-layer head counts (OpenELM): one value only
                values = set(meta[key])  # numbers or strings: gguf reads no nested arrays
                if len(values) != 1:
                    raise InputError(source, key, "the same head count in every layer",
                                     shown(sorted(values, key=repr)))
                meta[key] = values.pop()
        return super().shape(_quotable(meta), source)

    def _head_dim(self, meta, source, num_heads, hidden):
        key = f"{self.arch}.attention.key_length"
        if meta.get(key) is not None:
            return positive_int(meta[key], source, key)
        return super()._head_dim({}, source, num_heads, hidden)

    def rotary_dims(self, meta, shape, source):
        """Rotated dimensions per head, ``{arch}.rope.dimension_count`` (default: all); None without RoPE."""
        if not self.rotary:
            return None
        key = f"{self.arch}.rope.dimension_count"
        meta = _quotable(meta)
        dims = positive_int(meta[key], source, key) if meta.get(key) is not None else shape.head_dim
        if dims > shape.head_dim or dims % 2:
            raise InputError(source, key, f"an even number of rotated dimensions <= the head size {shape.head_dim}",
                             dims)
        return dims

    def check_layers(self, names, shape, source):
        """Refuse tensors of layers at or past ``{arch}.block_count``: measure would leave them out without a
        word (a corrupt count, or one edited), and llama.cpp refuses a file with tensors it does not use."""
        beyond = max((int(match[1]) for match in map(_LAYER_NAME.match, names) if match), default=-1)
        if beyond >= shape.num_layers:
            raise InputError(source, self.layers_keys[0], f"the number of layers the tensors hold (blk.0 .. "
                             f"blk.{beyond})", shape.num_layers)

    def _attn(self, layer, what):
        return f"blk.{layer}.{what}.weight"

    def weight_shapes(self, shape, layer):
        n, d = shape.hidden_size, shape.head_dim
        if self.fused:
            return {self._attn(layer, "attn_qkv"): ((shape.num_heads + 2 * shape.num_kv_heads) * d, n)}
        return {self._attn(layer, "attn_q"): (shape.num_heads * d, n),
                self._attn(layer, "attn_k"): (shape.num_kv_heads * d, n)}

    def q_block(self, shape, layer, head):
        d = shape.head_dim
        return BlockSource(self._attn(layer, "attn_qkv" if self.fused else "attn_q"), head * d, (head + 1) * d)

    def k_block(self, shape, layer, kv_head):
        d = shape.head_dim
        if self.fused:
            start = (shape.num_heads + kv_head) * d
            return BlockSource(self._attn(layer, "attn_qkv"), start, start + d)
        return BlockSource(self._attn(layer, "attn_k"), kv_head * d, (kv_head + 1) * d)

    def input_gain(self, shape, layer):
        if self.spec.input_norm == "attn_norm":
            return whole_gain(self._attn(layer, "attn_norm"), shape.hidden_size)
        if self.spec.input_norm == "bert":
            name = "token_embd_norm.weight" if layer == 0 else self._attn(layer - 1, "layer_output_norm")
            return whole_gain(name, shape.hidden_size)
        return None

    def _qk_gain(self, shape, layer, which, head, heads, length):
        """A QK-norm gain: one ``(d,)`` gain shared by the heads or ``(heads d,)``, a slice per head."""
        if not self.has_qk_norm:
            return None
        d = shape.head_dim
        if length == d:
            return whole_gain(self._attn(layer, which), d)
        return GainSource(self._attn(layer, which), head * d, (head + 1) * d, heads * d)

    def q_gain(self, shape, layer, head):
        length = self.qk_norm_lengths[0] if self.has_qk_norm else None
        return self._qk_gain(shape, layer, "attn_q_norm", head, shape.num_heads, length)

    def k_gain(self, shape, layer, kv_head):
        length = self.qk_norm_lengths[1] if self.has_qk_norm else None
        return self._qk_gain(shape, layer, "attn_k_norm", kv_head, shape.num_kv_heads, length)

    def folded_gains(self):
        gemma = " (Gemma's 1 + w, stored with the 1 added by llama.cpp's converter)" if self.arch.startswith("gemma") \
            else ""
        labels = {"attn_norm": "attn_norm: W diag(w)" + gemma,
                  "bert": "input LayerNorm (token_embd_norm for layer 0, else layer_output_norm of the layer "
                          "before): W diag(w)"}
        out = [labels[self.spec.input_norm]] if self.spec.input_norm else []
        if self.has_qk_norm:
            out.append("attn_q_norm/attn_k_norm: diag(w) W")
        return out
