"""Models in memory -> :class:`~qkalign.QKData`, with the numbers ``measure`` gives for the same weights.

- :func:`from_weights`: ``W_Q`` (L, H, d_model, d_head) and ``W_K`` (L, H_kv, d_model, d_head)
  numpy arrays or torch tensors in TransformerLens' convention;
- :func:`from_transformer_lens`: a TransformerLens model (``HookedTransformer`` or
  ``TransformerBridge``), duck-typed;
- :func:`from_state_dict`: a ``transformers`` model's state dict and config, through the
  layouts of :mod:`qkalign.weights.layouts` (FP8 and the quantisation refusals included).

All three run measure's compute (:func:`~qkalign.weights.measure.compute_arrays`) on a
:class:`StateDictTensors`, which reads tensors in memory the way
:class:`~qkalign.weights.model_folder.ModelFolder` reads a folder: one head block at a time,
moved to the CPU and widened as it is read, never copying a whole model.
"""

from collections.abc import Mapping

import numpy as np

from ..errors import InputError
from ..extras import import_torch
from ..qkdata import QKData
from . import DEFAULT_PRECISION, DEFAULT_TOPK, PRECISIONS
from .layouts import AttentionShape, BlockSource, Layout, find_prefix, layout_for, text_config
from .measure import (
    BIASES_NOTE,
    bands_for,
    check_tensors,
    check_topk,
    compute_arrays,
    derived_records,
    measure_metadata,
    profile_for,
    read_rope,
)
from .model_folder import ModelFolder
from .quantization import checkpoint_quantization
from .rotary_operator import operator_plan, parse_operator
from .symmetry import symmetry_record
from .symmetry_split import symmetry_split_record

# torch / numpy dtype -> safetensors' dtype name, which ModelFolder.check knows.
_DTYPE_NAMES = {"float32": "F32", "float64": "F64", "float16": "F16", "bfloat16": "BF16",
                "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}
#: The float dtypes of torch that numpy has no type for.
_NOT_IN_NUMPY = ("BF16", "F8_E4M3", "F8_E5M2")


class _InMemorySlice:
    """A tensor in memory with the interface of a safetensors slice: ``get_shape``, ``get_dtype``, ``[index]``."""

    def __init__(self, tensor):
        self.tensor = tensor

    def get_shape(self):
        return list(self.tensor.shape)

    def get_dtype(self):
        name = str(self.tensor.dtype).removeprefix("torch.")
        return _DTYPE_NAMES.get(name, name)

    def __getitem__(self, index):
        """The slice as a numpy array (a torch tensor's moved to the CPU; bfloat16 and FP8 as float32, exactly)."""
        if isinstance(self.tensor, np.ndarray):
            return self.tensor[index]
        part = self.tensor[index].detach().to("cpu")
        if self.get_dtype() in _NOT_IN_NUMPY:
            part = part.float()  # float32 holds each of their values
        return part.numpy()


class StateDictTensors(ModelFolder):
    """Tensors in a dict (torch tensors on any device, or numpy arrays), read like a model folder.

    Parameters
    ----------
    tensors : Mapping[str, tensor]
        Tensor name -> tensor, as in a safetensors file.
    source : str
        How errors name this collection (``"state_dict"``).
    """

    def __init__(self, tensors, source="state_dict"):
        if not isinstance(tensors, Mapping):
            raise InputError(source, "", "a mapping of tensor names to tensors", type(tensors).__name__)
        self.source = source
        self._tensors = tensors
        self._file_of = dict.fromkeys(tensors, source)

    def _slice(self, name):
        if name not in self._tensors:
            raise InputError(self.source, name, "this tensor to be present", "it missing")
        tensor = self._tensors[name]
        if not (hasattr(tensor, "shape") and hasattr(tensor, "dtype")):
            raise InputError(self.source, name, "a torch tensor or numpy array", type(tensor).__name__)
        return self.source, _InMemorySlice(tensor)


def from_state_dict(state_dict, config, *, topk=DEFAULT_TOPK, fold_norms=False, precision=DEFAULT_PRECISION,
                    progress=True, operator="raw", layer_symmetry=False, symmetry_split=False):
    """:func:`~qkalign.measure` of a ``transformers`` model in memory.

    Parameters
    ----------
    state_dict : Mapping[str, tensor]
        ``model.state_dict()`` (torch tensors on any device) or numpy arrays, named as in the
        model's safetensors files.
    config : dict or transformers.PretrainedConfig
        ``model.config`` (read through its ``to_dict()``) or config.json as a dict.
    topk, fold_norms, precision, progress, operator, layer_symmetry, symmetry_split
        As :func:`~qkalign.measure`.

    Returns
    -------
    QKData
        The numbers ``measure`` gives for the same weights saved as a folder.
    """
    _check_precision(precision)
    operator = parse_operator(operator)
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    if not isinstance(config, dict):
        raise InputError("config", "", "a dict or a transformers PretrainedConfig", type(config).__name__)
    tensors = StateDictTensors(state_dict)
    language_config = text_config(config)
    layout = layout_for(language_config, "config")
    shape = layout.shape(language_config, "config")
    tensors.fp8 = checkpoint_quantization(config, "config", tensors.names(), tensors.source)
    find_prefix(layout, shape, tensors.names(), tensors.shape_of, tensors.source)
    tensors.config, tensors.config_path = language_config, "config"
    check_topk(topk, shape)
    dtypes = check_tensors(layout, shape, tensors, fold_norms)
    tensors.rope = read_rope(tensors, layout, shape)
    plan, bands = profile_for(tensors, layout, None), bands_for(tensors, layout)
    rotated = operator_plan(operator, tensors.rope, "config")
    arrays = compute_arrays(layout, shape, tensors, fold_norms, topk, precision, progress, plan, rotated, bands,
                            layer_scores=layer_symmetry, symmetry_split=symmetry_split)
    extra = measure_metadata("<state_dict>", layout, shape, tensors, dtypes, precision, fold_norms, arrays)
    extra.update(derived_records(arrays, tensors.rope, operator, rotated, plan, bands))
    extra.update(model_source=extra["model_dir"], source_kind="memory", source_format="state_dict")
    extra["source"] = "qkalign.from_state_dict"
    return _qkdata(shape, arrays, "<state_dict>", extra)


class TransformerLensLayout(Layout):
    """Per-head tensors ``W_Q[l, h]`` and ``W_K[l, g]``, ``(d_model, d_head)`` each: the block is their transpose."""

    name = "TransformerLens W_Q/W_K (layers, heads, d_model, d_head)"
    rotary = None  # not known from the arrays

    def weight_shapes(self, shape, layer):
        n, d = shape.hidden_size, shape.head_dim
        names = [self.q_name(layer, h) for h in range(shape.num_heads)]
        names += [self.k_name(layer, g) for g in range(shape.num_kv_heads)]
        return dict.fromkeys(names, (n, d))

    @staticmethod
    def q_name(layer, head):
        return f"W_Q[{layer}, {head}]"

    @staticmethod
    def k_name(layer, kv_head):
        return f"W_K[{layer}, {kv_head}]"

    def q_block(self, shape, layer, head):
        return BlockSource(self.q_name(layer, head), 0, shape.head_dim, transposed=True)

    def k_block(self, shape, layer, kv_head):
        return BlockSource(self.k_name(layer, kv_head), 0, shape.head_dim, transposed=True)

    def input_gain(self, shape, layer):
        return None


def from_weights(W_Q, W_K, *, topk=DEFAULT_TOPK, precision=DEFAULT_PRECISION, progress=True, layer_symmetry=False,
                 symmetry_split=False):
    """Grams and eigen-directions of ``g = W_K^T W_Q`` from TransformerLens-convention weights.

    Parameters
    ----------
    W_Q : (L, H, d_model, d_head) numpy array or torch tensor
        ``W_Q[l, h]`` maps the residual stream to head ``h``'s queries (``x @ W_Q[l, h]``);
        a Hugging Face ``q_proj.weight`` holds its transpose in rows ``h d:(h+1) d``.
    W_K : (L, H_kv, d_model, d_head) numpy array or torch tensor
        ``H_kv`` divides ``H``; query head ``h`` reads key head ``h // (H / H_kv)``.
    topk, precision, progress, layer_symmetry, symmetry_split
        As :func:`~qkalign.measure`.

    Returns
    -------
    QKData
        The numbers ``measure`` gives for a folder holding the same weights; nothing is folded
        in (the arrays are the operators' factors as given).
    """
    _check_precision(precision)
    W_Q, W_K = _detached(W_Q), _detached(W_K)
    shape = _tl_shape(W_Q, W_K)
    tensors = {TransformerLensLayout.q_name(l, h): W_Q[l, h]
               for l in range(shape.num_layers) for h in range(shape.num_heads)}
    tensors.update({TransformerLensLayout.k_name(l, g): W_K[l, g]
                    for l in range(shape.num_layers) for g in range(shape.num_kv_heads)})
    tensors = StateDictTensors(tensors, "from_weights")
    layout = TransformerLensLayout("transformer_lens")
    check_topk(topk, shape)
    dtypes = check_tensors(layout, shape, tensors, False)
    arrays = compute_arrays(layout, shape, tensors, False, topk, precision, progress, layer_scores=layer_symmetry,
                            symmetry_split=symmetry_split)
    extra = {"source": "qkalign.from_weights", "layout": layout.name, "num_kv_heads": shape.num_kv_heads,
             "checkpoint_dtypes": sorted(set(dtypes.values())), "precision": precision, "fold_norms": False, "folded_gains": [],
             "biases": BIASES_NOTE, "rope": "not applied: the operator of W_Q, W_K as given",
             "rank_deficient_operators": int((arrays["sym_eigs"] == 0).any(axis=-1).sum())}
    extra.update(symmetry_record(arrays))
    extra.update(symmetry_split_record(arrays))
    return _qkdata(shape, arrays, "<from_weights>", extra)


def from_transformer_lens(model, *, topk=DEFAULT_TOPK, precision=DEFAULT_PRECISION, progress=True):
    """:func:`from_weights` of a TransformerLens model's ``W_Q`` and ``W_K``, as the model holds them.

    Duck-typed (transformer_lens is not imported): ``model.W_Q``, ``model.cfg`` with
    ``n_layers``, ``n_heads``, ``d_model``, ``d_head`` and optionally ``n_key_value_heads``.
    With grouped kv heads the grouped ``(L, H_kv, d_model, d_head)`` weights are read: a
    ``HookedTransformer`` (TransformerLens 2 and 3) keeps them in each
    ``model.blocks[l].attn._W_K`` (its ``W_K`` repeats them per query head, which gives the same
    numbers at more cost); a ``TransformerBridge`` returns them as ``model.W_K``; ``model._W_K``
    is used when a model has it.
    Whatever weight processing the model was loaded with (``fold_ln``, ...) is in the operators;
    see the README.
    """
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(model, "W_Q"):
        raise InputError("from_transformer_lens", "model", "a TransformerLens model (W_Q, W_K, cfg)",
                         type(model).__name__)
    W_Q, W_K = model.W_Q, _key_weights(model, cfg)
    expected = tuple(getattr(cfg, key, None) for key in ("n_layers", "n_heads", "d_model", "d_head"))
    if tuple(W_Q.shape) != expected:
        raise InputError("from_transformer_lens", "model.W_Q", f"shape (n_layers, n_heads, d_model, d_head) = "
                         f"{expected} from model.cfg", tuple(W_Q.shape))
    data = from_weights(W_Q, W_K, topk=topk, precision=precision, progress=progress)
    data.extra.update(source="qkalign.from_transformer_lens",
                      positional_embedding_type=str(getattr(cfg, "positional_embedding_type", "unknown")),
                      normalization_type=str(getattr(cfg, "normalization_type", "unknown")))
    if data.extra["positional_embedding_type"] == "rotary":
        data.extra["rope"] = "left out: the operator at relative position 0 (no rotary embedding applied)"
    return data


def _key_weights(model, cfg):
    """``(L, H_kv, d_model, d_head)`` key weights: the grouped ones when the model stores them."""
    num_kv = getattr(cfg, "n_key_value_heads", None)
    if num_kv is not None and num_kv != cfg.n_heads:
        if hasattr(model, "_W_K"):
            return model._W_K
        blocks = getattr(model, "blocks", None)
        if blocks is not None and all(hasattr(getattr(b, "attn", None), "_W_K") for b in blocks):
            grouped = [b.attn._W_K for b in blocks]
            if all(isinstance(w, np.ndarray) for w in grouped):
                return np.stack(grouped)
            return import_torch("from_transformer_lens", "to stack the grouped _W_K of a torch model").stack(grouped)
    return model.W_K


def _detached(array):
    """A torch tensor without its autograd graph (indexing it per head then builds none); numpy as is."""
    return array.detach() if hasattr(array, "detach") else array


def _tl_shape(W_Q, W_K):
    """:class:`AttentionShape` of TransformerLens-convention ``W_Q``, ``W_K``; one error line if they disagree."""
    for name, array in (("W_Q", W_Q), ("W_K", W_K)):
        if not (hasattr(array, "shape") and hasattr(array, "dtype")) or len(array.shape) != 4:
            found = tuple(array.shape) if hasattr(array, "shape") else type(array).__name__
            raise InputError("from_weights", name, "a (layers, heads, d_model, d_head) numpy array or torch tensor",
                             found)
    num_layers, num_heads, hidden, head_dim = (int(s) for s in W_Q.shape)
    num_kv = int(W_K.shape[1])
    if (W_K.shape[0], W_K.shape[2], W_K.shape[3]) != (num_layers, hidden, head_dim) or num_kv == 0 \
            or num_heads % num_kv:
        raise InputError("from_weights", "W_K", f"shape ({num_layers}, H_kv, {hidden}, {head_dim}) with H_kv "
                         f"dividing H = {num_heads} (W_Q is {tuple(W_Q.shape)})", tuple(W_K.shape))
    if min(num_layers, num_heads, hidden, head_dim) == 0:
        raise InputError("from_weights", "W_Q", "no empty dimension", tuple(W_Q.shape))
    return AttentionShape(num_layers, num_heads, num_kv, head_dim, hidden)


def _check_precision(precision):
    if precision not in PRECISIONS:
        raise InputError("precision", "", " or ".join(PRECISIONS), repr(precision))


def _qkdata(shape, arrays, source, extra):
    return QKData(shape.num_layers, shape.num_heads, shape.head_dim, shape.hidden_size, **arrays,
                  json_path=source, eigdirs_path=source, extra=extra)
