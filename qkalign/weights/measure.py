"""``measure``: a model's weights (a Hugging Face folder's safetensors, or a GGUF file) -> :class:`QKData`, on CPU.

For each kv head ``g`` and each query head ``h`` reading it, with ``K``, ``Q`` the
``(L, d, n)`` stacks of that head's blocks over all layers:

- ``KK = K K^T`` and ``QQ = Q Q^T``, ``(L d, L d)`` SYRKs (``KK`` shared by the group), give
  ``gram[L, L', h] = sum of the (L, L') block of KK * QQ`` (summed in float64);
- ``K_L Q_L^T`` (d x d per layer) gives ``fro_sq = ||K_L Q_L^T||_F^2`` and, with the diagonal
  blocks of ``KK`` and ``QQ``, ``G = A A^T`` for ``A = [K_L; Q_L]``, from which
  :func:`~qkalign.weights.factored_operator.symmetric_part_eigen_from_gram` gets the spectrum and
  eigenvectors of ``(g + g^T)/2``.

That is ``(H + H_kv) (L d)^2 n / 2`` multiply-adds in the SYRKs plus ``H L d^2 n`` for
``K Q^T`` and ``H L 2 d topk n`` for the eigenvectors (with ``symmetry_split``, ``H (L d)^2 n`` more for
``X = Q K^T``, :mod:`~qkalign.weights.symmetry_split`); no hidden x hidden matrix is formed.
Weights are read one head slice at a time. In ``float32`` mode the products (SYRKs,
``K Q^T``, the eigenvector rows) run in float32, while the sums over blocks, ``G``, its
Cholesky factor and the 2d x 2d eigen-problems are float64; ``float64`` mode is float64
throughout; the eigenvector rows are orthonormalised in float64 either way. Each layer's K and Q blocks are read scaled by exact powers of two that bring their
largest entries near 1, undone in float64: weights anywhere in the float32 range (huge, or near the
subnormal range) give the numbers of the same weights at unit scale. Weights are read as numpy
arrays (bfloat16 and FP8 decoded by :mod:`~qkalign.weights.safetensors_ranges`): no torch; numba
is imported on first use.
"""

import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from ..checks import int_in_range
from ..errors import InputError
from ..linalg.binary_scaling import max_exponent, normalize_in_place
from ..linalg.blas_threads import core_count, one_blas_thread
from ..memory import check_fits
from ..qkdata import QKData
from . import DEFAULT_PRECISION, DEFAULT_TOPK, PRECISIONS
from .factored_operator import RANK_TOL, stacked_gram_lower, symmetric_part_eigen_from_gram
from .layer_symmetry import LAYER_SCORES, LayerOperators
from .layouts import find_prefix, layout_for, text_config
from .model_folder import ModelFolder
from .quantization import checkpoint_quantization
from .rope import MAX_POSITIONS, rope_from_config, rope_record
from .rope_bands import band_plan, band_record
from .rope_profile import DEFAULT_CONTEXT, check_deltas, default_deltas, profile_plan, profile_record
from .rotary_operator import operator_plan, operator_record, parse_operator
from .sources import resolve_source
from .symmetry import rotated_transpose_inner, symmetry_record
from .symmetry_split import stacked_product, symmetry_split_record

BIASES_NOTE = "left out: the operator is W_K^T W_Q of the weights alone"
ROPE_NOTE = "left out: the operator at relative position 0 (no rotary embedding applied)"


def measure(model_dir, topk=DEFAULT_TOPK, fold_norms=False, precision=DEFAULT_PRECISION, progress=True,
            revision=None, deltas=None, operator="raw", layer_symmetry=False, symmetry_split=False):
    """Grams and eigen-directions of the QK operators of a Hugging Face model's weights.

    Parameters
    ----------
    model_dir : str or Path
        Folder with ``config.json`` and ``model.safetensors`` (or ``model.safetensors.index.json``
        and its shards), an fsspec URL of one (``https://``, ``s3://``, ``gs://``, ``file://``;
        read by byte ranges), a Hub repo id ``ORG/NAME``, a GGUF file (any split of a split set; also
        by URL or as ``ORG/NAME/FILE.gguf`` on the Hub, by byte ranges) or ``ollama:NAME[:TAG]`` (see
        :mod:`~qkalign.weights.sources`).
    topk : int
        Eigenvectors kept per layer and head, ``1 <= topk <= min(2 d, n)``.
    fold_norms : bool
        Multiply the input norm's gain into the columns of W_Q and W_K, and QK-norm gains
        (Qwen3, Gemma 3, OLMo2) into their rows (Gemma's gains are ``1 + w``).
    precision : {"float32", "float64"}
        Precision of the big products; sums over blocks and the 2d x 2d eigen-problems are
        float64 either way. float32 results agree with float64 to about 1e-7 relative.
    progress : bool
        Show a tqdm progress bar on stderr.
    revision : str, optional
        Branch, tag or commit of a Hub repo (default ``main``); only with a Hub repo id.
    deltas : sequence of int, optional
        Relative distances of the rotary profile ``rope_profile`` (:mod:`~qkalign.weights.rope_profile`);
        default 0 and the powers of two up to the model's context length; empty: no profile. The frequency
        bands ``rope_bands`` (:mod:`~qkalign.weights.rope_bands`) are recorded for every rotary model.
    operator : str or Operator
        What the Grams and eigen-directions describe (:mod:`~qkalign.weights.rotary_operator`): ``"raw"``
        (default, ``W_K^T W_Q``), ``"delta:D"`` (the rotary operator at distance D) or ``"window:W"`` (its mean over
        distances 0..W-1); rotated operators need a rotary model.
    layer_symmetry : bool
        Also score each layer's whole operator (its heads summed) as Saponati et al. do: symmetry and directionality
        (:mod:`~qkalign.weights.layer_symmetry`: n^2 H_kv d multiply-adds a layer, from the blocks the head tasks
        read, and ``L H_kv d n`` more numbers held; ``benchmarks/test_bench_measure.py`` times it). Each head's
        symmetry is always recorded.
    symmetry_split : bool
        Also record ``gram_transpose`` (L, L, H), ``<g_L, g_L'^T>`` of every head, which splits the cross-layer
        agreement into symmetric and skew parts (:mod:`~qkalign.weights.symmetry_split`): one more ``(L d)^2 n``
        product per query head.

    Returns
    -------
    QKData
        ``gram`` (L, L, H), ``fro_sq`` (L, H), ``eig_dirs`` (L, H, topk, n), ``sym_eigs``
        (L, H, 2 d); ``extra`` records the model (source, revision, commit), layout, precision,
        folded gains and what is left out (biases, RoPE).

    Raises
    ------
    InputError
        Missing or malformed config/weights, a missing tensor, a shape that disagrees with
        config.json, an unsupported layout or dtype, a bad ``topk`` or ``precision``.
    """
    if precision not in PRECISIONS:
        raise InputError("--precision", "", " or ".join(PRECISIONS), repr(precision))
    operator = parse_operator(operator)
    source = resolve_source(model_dir, revision)
    folder, layout, shape = open_model(source)
    check_topk(topk, shape)
    dtypes = check_tensors(layout, shape, folder, fold_norms)
    folder.rope = read_rope(folder, layout, shape)
    plan = profile_for(folder, layout, deltas)
    rotated = operator_plan(operator, folder.rope, source.config_label())
    bands = bands_for(folder, layout)
    check_fits(peak_bytes(shape, topk, precision, len(plan.deltas) if plan else 0, len(bands.groups) if bands else 0,
                          symmetry_split, layer_symmetry),
               source.config_label(), "", f"measuring {shape.num_layers} layers x {shape.num_heads} heads (head_dim "
               f"{shape.head_dim}, hidden_size {shape.hidden_size}, topk {topk})")
    arrays = compute_arrays(layout, shape, folder, fold_norms, topk, precision, progress, plan, rotated, bands,
                            layer_scores=layer_symmetry, symmetry_split=symmetry_split)
    extra = measure_metadata(source, layout, shape, folder, dtypes, precision, fold_norms, arrays)
    extra.update(derived_records(arrays, folder.rope, operator, rotated, plan, bands, deltas))
    return QKData(shape.num_layers, shape.num_heads, shape.head_dim, shape.hidden_size, **arrays,
                  json_path=str(folder.source), eigdirs_path=str(folder.source), extra=extra)


def derived_records(arrays, model_rope, operator, rotated, plan, bands, deltas=None):
    """The JSON records of what measure derives beyond the seed's arrays (the operator, the rotary profile and
    bands, the symmetry scores and split), popping their arrays from ``arrays`` (what :func:`compute_arrays` made
    with these plans)."""
    records = operator_record(operator, rotated)
    records.update(profile_record(plan, arrays.pop("rope_gram", None), model_rope, deltas,
                                  arrays.pop("rope_transpose_inner", None)))
    records.update(band_record(bands, arrays, model_rope))
    records.update(symmetry_record(arrays))
    records.update(symmetry_split_record(arrays))
    return records


def open_model(model_dir, revision=None):
    """``(ModelFolder or RemoteFolder, Layout, AttentionShape)`` of a model source (a folder, URL, Hub repo
    or :class:`~qkalign.weights.sources.ModelSource`), the layout's weight prefix found."""
    source = resolve_source(model_dir, revision)
    if source.format == "gguf":
        if source.gguf_path is None:  # a URL or a Hub file, by byte ranges
            from .remote_gguf import open_remote_gguf_model

            return open_remote_gguf_model(source)
        from .gguf_model import open_gguf_model

        return open_gguf_model(source)
    config_path = source.config_label()
    full_config = source.read_config()
    config = text_config(full_config)
    layout = layout_for(config, config_path)
    shape = layout.shape(config, config_path)
    folder = source.open_folder()
    # FP8 block size, or one line for an integer-quantised model (before a q_proj.weight is missed).
    folder.fp8 = checkpoint_quantization(full_config, config_path, folder.names(), folder.source)
    find_prefix(layout, shape, folder.names(), folder.shape_of, folder.source)
    folder.config, folder.config_path = config, config_path  # the RoPE is read from it once the tensors are checked
    return folder, layout, shape


def read_rope(folder, layout, shape):
    """The model's :class:`~qkalign.weights.rope.ModelRope` (None without RoPE): from a GGUF file's metadata, else
    from the config that ``open_model`` kept on ``folder``. Read after :func:`check_tensors`, so that the layer
    count it spans is one the tensors hold."""
    if not layout.rotary:
        return None
    if hasattr(folder, "read_rope"):
        return folder.read_rope(layout, shape)
    return rope_from_config(folder.config, layout.model_type, shape.head_dim, folder.config_path)


def profile_for(folder, layout, deltas):
    """The :class:`~qkalign.weights.rope_profile.ProfilePlan` of the distances ``deltas`` (None: the default grid;
    empty: no profile), None without one."""
    if deltas is not None and len(deltas) == 0:
        return None
    chosen = default_deltas(context_length(folder, layout)) if deltas is None else check_deltas(deltas)
    return profile_plan(folder.rope, chosen)


def bands_for(folder, layout):
    """The :class:`~qkalign.weights.rope_bands.BandPlan` over the model's context length; None without RoPE. Taken
    whatever the profile's distances: the bands cost ~20 ms per head at qwen3-4b (module docstring of
    :mod:`~qkalign.kernels.rotary_bands`)."""
    return band_plan(folder.rope, context_length(folder, layout))


def context_length(folder, layout):
    """The model's context length: ``max_position_embeddings`` (``n_positions``) of its config, else transformers'
    default for its model type (:data:`~qkalign.weights.rope.MAX_POSITIONS`), a GGUF file's
    ``{arch}.context_length``; :data:`~qkalign.weights.rope_profile.DEFAULT_CONTEXT` when none says."""
    config = getattr(folder, "config", None) or {}
    meta = getattr(folder, "metadata", None) or {}
    family_default = MAX_POSITIONS.get(layout.model_type) if config else None
    for value in (config.get("max_position_embeddings"), config.get("n_positions"), family_default,
                  meta.get(f"{getattr(layout, 'arch', '')}.context_length")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return DEFAULT_CONTEXT


def check_topk(topk, shape):
    """``topk`` fits the spectrum of ``(g + g^T)/2``: at most ``min(2 d, n)`` nonzero eigenvalues."""
    limit = min(2 * shape.head_dim, shape.hidden_size)
    return int_in_range(topk, 1, limit, "--topk", why=f"the spectrum of (g + g^T)/2 has at most "
                        f"min(2*head_dim, hidden_size) = {limit} nonzero eigenvalues")


def check_tensors(layout, shape, folder, fold_norms):
    """Every tensor that will be read exists with the shape config.json implies (before any compute).

    Returns ``{tensor name: its stored dtype}`` (``"BF16"``, ``"F8_E4M3"``, GGUF's ``"Q4_K"``, ...).
    """
    dtypes = {}
    for layer in range(shape.num_layers):
        expected = layout.weight_shapes(shape, layer)
        if fold_norms:
            expected.update(layout.gain_shapes(shape, layer))
        for name, tensor_shape in expected.items():
            dtypes[name] = folder.check(name, tensor_shape)
    return dtypes


#: Memory of the interpreter and numba's working sets (and torch's, when it holds the weights), added to
#: every estimate.
BASE_BYTES = 64 * 2**20


def peak_bytes(shape, topk, precision, num_deltas=0, num_band_groups=0, symmetry_split=False, layer_symmetry=False):
    """Estimated peak memory of :func:`measure` and writing its result, in bytes.

    :data:`BASE_BYTES`, the outputs (float64), per running task (one per core) one ``(L d, n)``
    stack, its ``(L d)^2`` Gram and the float64 ``[K_L; Q_L]`` rows and ``2d x 2d`` problems of
    its layers, two held kv heads, and the JSON's gram as Python floats (~56 bytes a number); the rotary
    profile's ``num_deltas`` and the bands' ``num_band_groups`` Grams likewise; with ``symmetry_split``, per task
    the ``(L d)^2`` product ``X`` and a mapped ``(L d, n)`` stack, and the ``gram_transpose`` output and JSON; with
    ``layer_symmetry`` (:class:`~qkalign.weights.layer_symmetry.LayerOperators`), every kv head's stack and the
    ``Q~`` sums, a finished query head's stack per queued task, and per running layer task ``W`` (n x n) and
    the layer's ``K`` (H_kv d, n).
    """
    L, H, d, n = shape.num_layers, shape.num_heads, shape.head_dim, shape.hidden_size
    item = np.dtype(precision).itemsize
    outputs = 8 * (L * L * H + L * H + L * H * 2 * d + L * H * topk * n)
    stack = item * ((L * d) ** 2 + L * d * n)
    per_task = stack + 8 * (L * L + L * topk * n + 3 * L * (2 * d) ** 2 + 2 * L * 2 * d * n)
    profile = (8 + 56) * num_deltas * L * L * H  # the rotary profile, and its JSON text
    bands = (8 + 56) * ((num_band_groups + 1) * L * L * H + L * H * (d // 2 + 2)) if num_band_groups else 0
    split = (8 + 56) * L * L * H if symmetry_split else 0
    per_task += stack if symmetry_split else 0
    layers = 0
    if layer_symmetry:
        head_stack, kv_width = item * L * d * n, shape.num_kv_heads * d
        per_task = max(per_task, item * (n * n + 2 * kv_width * n))  # a layer task runs once the head tasks are done
        layers = 2 * shape.num_kv_heads * head_stack + 2 * core_count() * head_stack
    return (BASE_BYTES + outputs + core_count() * per_task + 2 * stack + 56 * L * L * H + profile + bands + split
            + layers)


def measure_metadata(model_dir, layout, shape, folder, dtypes, precision, fold_norms, arrays):
    """``QKData.extra`` of a measured model: where it came from and what was folded in or left out."""
    biases = [name[: -len("weight")] + "bias" for name in layout.weight_shapes(shape, 0)]
    has_biases = any(b in folder.names() for b in biases)
    return {
        "source": "qkalign measure",
        "model_dir": str(getattr(model_dir, "given", model_dir)),
        **(model_dir.metadata() if hasattr(model_dir, "metadata") else {}),
        "model_type": layout.model_type,
        "layout": layout.name,
        "weight_prefix": layout.prefix,
        "num_kv_heads": shape.num_kv_heads,
        "checkpoint_dtypes": sorted(set(dtypes.values())),
        # Every tensor read and its stored type: a GGUF file mixes quantisation types (Q4_K, Q6_K, ...).
        "tensor_types": dict(dtypes),
        "precision": precision,
        "fold_norms": bool(fold_norms),
        "folded_gains": layout.folded_gains() if fold_norms else [],
        "biases": BIASES_NOTE + (" (the checkpoint has q/k biases)" if has_biases else " (the checkpoint has none)"),
        "rope": ROPE_NOTE if layout.rotary else "none: absolute position embeddings, not part of W_Q, W_K",
        **rotary_record(layout, folder),
        # θ_i of every layer as the model's RoPE initialisation gives them (None: no RoPE, or none known).
        "rope_parameters": rope_record(getattr(folder, "rope", None)),
        **(folder.describe() if hasattr(folder, "describe") else {}),
        # [K; Q] of numerical rank < 2 d in this precision (tied Q and K, n < 2 d, or ill-conditioned):
        # their missing eigenvalues are exact zeros.
        "rank_deficient_operators": int((arrays["sym_eigs"] == 0).any(axis=-1).sum()),
    }


def rotary_record(layout, folder):
    """How the stored Q/K rows of each head pair under RoPE, for rotary analyses (None: no RoPE).

    transformers' checkpoints pair row ``i`` with ``i + d_rot/2`` (``rotate_half``); llama.cpp's
    converter stores some architectures interleaved (:mod:`~qkalign.weights.gguf_layout`).
    """
    rope = getattr(folder, "rope", None) if layout.rotary else None
    if rope is None:
        return {"rotary_pairing": None, "rotary_dims": None}
    return {"rotary_pairing": rope.layer(0).pairing, "rotary_dims": rope.layer(0).rotary_dims}


def compute_arrays(layout, shape, folder, fold_norms, topk, precision, progress, plan=None, rotated=None, bands=None,
                   layer_scores=False, symmetry_split=False):
    """The arrays of :class:`QKData` (gram, fro_sq, sym_eigs, eig_dirs) from the model's weights.

    eig_dirs comes read-only: :class:`QKData` then keeps it without a copy (L H topk n float64,
    377 MB at qwen3-4b, copied on one core after the parallel work). With a
    :class:`~qkalign.weights.rope_profile.ProfilePlan`, also ``rope_gram`` (D, L, L, H) float64. With an
    :class:`~qkalign.weights.rotary_operator.OperatorPlan`, the arrays describe its operator ``K^T M Q``. With a
    :class:`~qkalign.weights.rope_bands.BandPlan`, ``rope_band_energy`` (L, H, P+1), ``rope_band_mean_energy``
    (L, H) and ``rope_band_gram`` (G+1, L, L, H) float64, of the weights' rotary operator whatever ``rotated``.
    With ``symmetry_split``, ``gram_transpose`` (L, L, H) float64 (:mod:`~qkalign.weights.symmetry_split`).
    """
    import scipy.linalg  # noqa: F401  (loaded before one_blas_thread, so that its limit covers scipy's BLAS)

    from ..kernels.block_sums import layer_gram_accumulated  # numba: imported when measuring

    reader = _HeadReader(layout, shape, folder, fold_norms, np.dtype(precision))
    rotary_grams = None
    if plan is not None or rotated is not None:
        from ..kernels.rotary_grams import rotary_layer_grams as rotary_grams
    rotary_bands = None
    if bands is not None:
        from ..kernels.rotary_bands import rotary_bands
    gram_transpose = None
    if symmetry_split:
        from ..kernels.transpose_sums import gram_transpose_from_product as gram_transpose
    layer_operators = None
    if layer_scores:  # the layers' whole operators (Saponati et al.'s per-layer scores), from the blocks read
        layer_operators = LayerOperators(shape, precision, None if rotated is None else rotated.maps)
    tasks = _HeadTasks(reader, shape, topk, precision, layer_gram_accumulated, plan, rotary_grams, rotated, bands,
                       rotary_bands, gram_transpose, layer_operators)
    torch = sys.modules.get("torch")  # loaded by the caller when torch tensors in memory are read
    if torch is None:
        arrays = tasks.run(progress)
    else:
        torch_threads = torch.get_num_threads()
        # torch then only copies slices to the CPU in worker threads; its multithreaded copies
        # of small slices are ten times slower on a busy machine.
        torch.set_num_threads(1)
        try:
            arrays = tasks.run(progress)
        finally:
            torch.set_num_threads(torch_threads)
    arrays["eig_dirs"].setflags(write=False)
    return arrays


@dataclass(frozen=True)
class _HeadReader:
    """Reads a head's ``(L, d, n)`` stack of blocks, norm gains folded in when asked.

    Each layer's block comes scaled by a power of two, ``2^-e[L]``, that puts its largest entry
    in [0.5, 1): float32 products of weights near the format's limits (huge, or near the
    subnormal range) would overflow or underflow. The scaling is exact, commutes with rounding
    and is undone in float64 (:meth:`_HeadTasks.query_task`). Each gain is scaled the same way
    before it is folded in, so that products of large or tiny gains stay in range too.
    """

    layout: object
    shape: object
    folder: ModelFolder
    fold_norms: bool
    dtype: np.dtype  # float32 or float64

    def query(self, head):
        """``(blocks, exponents)``: (L, d, n) float array, (L,) int64; the weights are ``blocks 2^exponents``."""
        return self._stack(self.layout.q_block, self.layout.q_gain, head)

    def key(self, kv_head):
        """As :meth:`query`, for a kv head."""
        return self._stack(self.layout.k_block, self.layout.k_gain, kv_head)

    def _stack(self, block_of, row_gain_of, head):
        shape = self.shape
        blocks = np.empty((shape.num_layers, shape.head_dim, shape.hidden_size), dtype=self.dtype)
        exponents = np.zeros(shape.num_layers, dtype=np.int64)
        for layer in range(shape.num_layers):
            exponents[layer] = self._read_into(blocks[layer], block_of, row_gain_of, layer, head)
        return blocks, exponents

    def layer_queries(self, layer):
        """``(blocks, exponents)`` of every query head of one layer: (H, d, n), (H,) int64."""
        return self._layer(self.layout.q_block, self.layout.q_gain, layer, self.shape.num_heads)

    def layer_keys(self, layer):
        """As :meth:`layer_queries`, for the kv heads: (H_kv, d, n), (H_kv,)."""
        return self._layer(self.layout.k_block, self.layout.k_gain, layer, self.shape.num_kv_heads)

    def _layer(self, block_of, row_gain_of, layer, count):
        shape = self.shape
        blocks = np.empty((count, shape.head_dim, shape.hidden_size), dtype=self.dtype)
        exponents = np.array([self._read_into(blocks[i], block_of, row_gain_of, layer, i) for i in range(count)],
                             dtype=np.int64)
        return blocks, exponents

    def _read_into(self, out, block_of, row_gain_of, layer, head):
        """Read head ``head``'s block of ``layer`` into ``out`` (d, n), scaled and with its gains folded in; returns
        its exponent (the weights are ``out 2^exponent``)."""
        shape = self.shape
        # Widening is exact; FP8's float64 products are rounded once to float32 (round to nearest even).
        block = self.folder.read_block(block_of(shape, layer, head))
        block, exponent = self._prescaled_wide(block)
        out[:] = block
        exponent += normalize_in_place(out)
        if self.fold_norms:
            column_gain = self.layout.input_gain(shape, layer)
            if column_gain is not None:  # W diag(gamma): the norm's output feeds W
                exponent += self._fold(out, column_gain)
            row_gain = row_gain_of(shape, layer, head)
            if row_gain is not None:  # diag(gamma) W: a QK-norm scales W's output
                exponent += self._fold(out, row_gain, rows=True)
            exponent += normalize_in_place(out)  # gains can move the largest entry
        return exponent

    def _prescaled_wide(self, block):
        """``(block, e)``: a float64 ``block`` read for float32 products, times ``2^-e`` when its largest entry
        lies outside float32's range (an F64 weight of 1e39), which rounded to float32 first would overflow
        (or flush to zero). ``e = 0`` and the block as read otherwise: those keep the bits of rounding first,
        then scaling."""
        if block.dtype.itemsize <= self.dtype.itemsize:
            return block, 0
        exponent = int(max_exponent(block))
        info = np.finfo(self.dtype)
        if info.minexp + 2 <= exponent <= info.maxexp - 2:
            return block, 0
        return np.ldexp(block, -exponent), exponent

    def _fold(self, block, source, rows=False):
        """Multiply ``block`` (d, n) by a gain (along its rows or columns) scaled to max in [0.5, 1);
        return the gain's exponent."""
        gain = self.folder.read_gain(source, self.dtype)
        exponent = normalize_in_place(gain)
        block *= gain[:, None] if rows else gain
        return exponent


class _HeadTasks:
    """The work of :func:`compute_arrays`, as tasks on one Python thread per core.

    Each task runs on single-threaded BLAS: one per kv head (read ``K``, ``K K^T``), then one
    per query head (read ``Q``, ``Q Q^T``, its gram column, ``K Q^T`` and the 2d x 2d
    eigen-problems of every layer). Multithreaded BLAS would spend its time synchronising on
    the many small matrices (up to a hundredfold on a busy machine), while independent
    single-threaded SYRKs keep its full rate. A kv head's task is queued one group ahead of
    the query heads that need it. With ``layer_operators``, the blocks read go into each layer's
    ``K`` and ``Q~`` as the tasks finish, then one task per layer forms its whole operator and
    sums it (:class:`~qkalign.weights.layer_symmetry.LayerOperators`). BLAS stays limited to one
    thread per call (process-wide) until the work is done.
    """

    def __init__(self, reader, shape, topk, precision, layer_gram, plan=None, rotary_grams=None, rotated=None,
                 bands=None, rotary_bands=None, gram_transpose=None, layer_operators=None):
        self.reader, self.shape, self.topk, self.precision = reader, shape, topk, precision
        self.layer_gram = layer_gram  # gram[L, L'] of one head from its stacked Grams (a numba kernel)
        self.plan, self.rotary_grams = plan, rotary_grams  # gram(Δ)[L, L'] likewise, with a ProfilePlan
        self.rotated = rotated  # the OperatorPlan of a rotated operator K^T M Q (None: raw)
        L, H, d, n = shape.num_layers, shape.num_heads, shape.head_dim, shape.hidden_size
        self.out = dict(gram=np.empty((L, L, H)), fro_sq=np.empty((L, H)), sym_eigs=np.empty((L, H, 2 * d)),
                        eig_dirs=np.empty((L, H, topk, n)), transpose_inner=np.empty((L, H)))
        if plan is not None:
            self.out["rope_gram"] = np.empty((len(plan.deltas), L, L, H))
            self.out["rope_transpose_inner"] = np.empty((len(plan.deltas), L, H))
        self.bands, self.rotary_bands = bands, rotary_bands  # the frequency bands likewise, with a BandPlan
        if bands is not None:
            self.out.update(rope_band_energy=np.empty((L, H, len(bands.first) + 1)),
                            rope_band_mean_energy=np.empty((L, H)),
                            rope_band_gram=np.empty((bands.num_groups + 1, L, L, H)))
        self.gram_transpose = gram_transpose  # <g_L, g_L'^T> of one head from X = (M Q) K^T (a numba kernel), or None
        if gram_transpose is not None:
            self.out["gram_transpose"] = np.empty((L, L, H))
        self.layer_operators = layer_operators  # gathers each layer's K and Q~ for its whole operator, or None
        if layer_operators is not None:
            self.out.update({name: np.empty(L) for name in LAYER_SCORES})

    def key_task(self, kv_head):
        k, k_exponents = self.reader.key(kv_head)
        if self.layer_operators is not None:
            self.layer_operators.add_keys(kv_head, k, k_exponents)
        return k, stacked_gram_lower(k), k_exponents

    def query_task(self, head, key_job):
        """One query head's arrays; returns ``(head, Q blocks, exponents)`` for the layers' operators (else None)."""
        k, kk, k_exponents = key_job.result()
        q, q_exponents = self.reader.query(head)
        qq = stacked_gram_lower(q)
        if self.rotated is None:
            gram = self.layer_gram(qq, kk, self.shape.num_layers, self.shape.head_dim)
        else:  # its one table row (c, s) of M
            gram = self._rotated_grams(qq, kk, self.rotated)[0]
        maps = None if self.rotated is None else self.rotated.maps
        fro_sq, sym_eigs, eig_dirs, transpose_inner, kq = _layer_work(k, q, kk, qq, self.topk, self.precision, maps)
        # The blocks were K_L 2^-ek[L] and Q_L 2^-eq[L], so the operator computed for layer L was
        # g_L 2^-e[L]: its gram entries scale by 2^-(e[L] + e[L']), fro_sq by 2^-2e[L], the spectrum
        # by 2^-e[L], and the eigenvectors not at all. ldexp undoes that exactly in float64.
        e = k_exponents + q_exponents
        with np.errstate(over="ignore"):  # refused just below
            fro_sq = np.ldexp(fro_sq, 2 * e)
        self._check_float64_range(head, np.diagonal(gram), e, fro_sq)
        out = self.out
        out["gram"][:, :, head] = np.ldexp(gram, e[:, None] + e[None, :])
        out["fro_sq"][:, head] = fro_sq
        out["transpose_inner"][:, head] = np.ldexp(transpose_inner, 2 * e)  # scales like ||g||^2
        out["sym_eigs"][:, head] = np.ldexp(sym_eigs, e[:, None])
        out["eig_dirs"][:, head] = eig_dirs
        if self.plan is not None:
            out["rope_gram"][..., head] = np.ldexp(self._profile(qq, kk), e[:, None] + e[None, :])
            p = self.plan  # each head's symmetry at every distance, from its (d, d) K Q^T
            out["rope_transpose_inner"][..., head] = np.ldexp(
                rotated_transpose_inner(kq, p.cos, p.sin, p.first, p.second, p.layer_kinds), 2 * e)
        if self.bands is not None:
            b = self.bands
            energy, mean_energy, group_gram = self.rotary_bands(
                qq, kk, self.shape.num_layers, self.shape.head_dim, b.products, b.means, b.group_of_pair,
                b.layer_kinds, b.first, b.second, b.num_groups)
            out["rope_band_energy"][:, head] = np.ldexp(energy, 2 * e[:, None])
            out["rope_band_mean_energy"][:, head] = np.ldexp(mean_energy, 2 * e)
            out["rope_band_gram"][..., head] = np.ldexp(group_gram, e[:, None] + e[None, :])
        if self.gram_transpose is not None:  # X[L, L'] carries 2^-(eq[L] + ek[L']): T[L, L'] carries 2^-(e[L] + e[L'])
            x = stacked_product(q, k, maps)
            transposed = self.gram_transpose(x, self.shape.num_layers, self.shape.head_dim)
            del x
            out["gram_transpose"][:, :, head] = np.ldexp(transposed, e[:, None] + e[None, :])
        return None if self.layer_operators is None else (head, q, q_exponents)

    def _profile(self, qq, kk):
        """gram(Δ) of one head (D, L, L) at the scaled blocks, from its stacked Grams."""
        return self._rotated_grams(qq, kk, self.plan)

    def _rotated_grams(self, qq, kk, plan):
        """The rotary kernel at the tables of ``plan`` (a profile or an operator): (D, L, L)."""
        return self.rotary_grams(qq, kk, self.shape.num_layers, self.shape.head_dim, plan.cos, plan.sin,
                                 plan.first, plan.second, layer_kinds=plan.layer_kinds)

    def _check_float64_range(self, head, scaled_norms_sq, exponents, fro_sq):
        """Refuse, with one line, an operator whose squared norm ``scaled_norms_sq 2^(2 exponents)``
        (L,) leaves float64's normal range (weights times folded gains beyond ~1e77 or below ~1e-77),
        or whose ``fro_sq`` (L,) overflows, rather than let it fail later as a non-finite or zero
        gram. The spectrum, at most ``||g||_F``, fits when the squared norm does."""
        with np.errstate(divide="ignore"):
            log2_norms_sq = np.log2(scaled_norms_sq) + 2 * exponents  # -inf for a zero head (refused later)
        bad = (log2_norms_sq >= 1024) | ((log2_norms_sq < -1022) & (scaled_norms_sq > 0)) | ~np.isfinite(fro_sq)
        if bad.any():
            layer = int(np.flatnonzero(bad)[0])
            raise InputError(self.reader.folder.source, f"layer {layer}, query head {head}",
                             "Q/K weights (times any folded gains) whose operator W_K^T W_Q has a squared "
                             "Frobenius norm within float64's range (2^-1022 to 2^1024)",
                             f"a squared norm of 2^{log2_norms_sq[layer]:.1f}")

    def run(self, progress):
        """Every task, a progress bar over query heads on stderr (then over layers, for the per-layer symmetry);
        returns the arrays."""
        shape, workers = self.shape, core_count()
        key_jobs, running = {}, deque()
        with one_blas_thread(), ThreadPoolExecutor(workers) as pool, \
                tqdm(total=shape.num_heads, desc="measure", unit="head", disable=not progress, file=sys.stderr) as bar:
            try:
                for kv_head in range(shape.num_kv_heads):
                    for ahead in (kv_head, kv_head + 1):
                        if ahead < shape.num_kv_heads and ahead not in key_jobs:
                            key_jobs[ahead] = pool.submit(self.key_task, ahead)
                    for head in range(kv_head * shape.group, (kv_head + 1) * shape.group):
                        running.append(pool.submit(self.query_task, head, key_jobs[kv_head]))
                        while len(running) > 2 * workers:  # bounds the memory held by queued heads
                            self._done(running.popleft().result())
                            bar.update()
                    del key_jobs[kv_head]  # its K K^T is freed once its query heads are done
                while running:
                    self._done(running.popleft().result())
                    bar.update()
                if self.layer_operators is not None:
                    # a bar of its own: the layers' products take seconds after the last head
                    bar.refresh()  # the heads' count as it ends (tqdm may not have drawn the last update)
                    bar.unit = "layer"
                    bar.set_description("measure: layer symmetry", refresh=False)
                    bar.reset(total=shape.num_layers)
                    self._layer_scores(pool, bar)
            except BaseException:
                pool.shutdown(cancel_futures=True)
                bar.leave = False  # the error line follows on a clean line
                raise
        return self.out

    def _done(self, query_result):
        """A query head's task is done: its blocks go into its group's Q~ here, on one thread in head order (the
        tasks finish in any order), so that the float32 sums do not depend on the timing."""
        if query_result is not None:
            self.layer_operators.add_queries(*query_result)

    def _layer_scores(self, pool, bar):
        """Each layer's whole-operator scores, one task per layer (every query head added)."""
        jobs = [pool.submit(self.layer_operators.layer_scores, layer) for layer in range(self.shape.num_layers)]
        for layer, job in enumerate(jobs):
            for name, value in zip(LAYER_SCORES, job.result()):
                self.out[name][layer] = value
            bar.update()


def _layer_work(k, q, kk, qq, topk, precision, maps=None):
    """``fro_sq``, ``sym_eigs``, ``eig_dirs``, ``transpose_inner`` of one head in every layer, and ``K Q^T`` (L, d, d).

    ``transpose_inner[L] = <g_L, g_L^T>_F = tr(g_L g_L) = tr((Q_L K_L^T)^2)`` (with ``M``: ``tr((M Q_L K_L^T)^2)``),
    from the (d, d) product ``K Q^T`` formed for ``fro_sq`` (:mod:`~qkalign.weights.symmetry`).

    k, q: (L, d, n) blocks; kk, qq: their (L d, L d) stacked Grams (diagonal blocks read); maps: (L, d, d)
    float64 ``M_L`` of a rotated operator ``K^T M Q`` (None: ``K^T Q``): ``fro_sq = ||K Q^T M^T||^2`` and the
    symmetric part ``A^T J' A`` with ``J' = [[0, M/2], [M^T/2, 0]]``, from the Gram of ``A = [K; Q]`` itself
    (a window mean's ``M`` nearly annihilates its fast pairs: ``M Q`` would look rank-deficient).
    """
    d = k.shape[1]
    kq = (k @ np.swapaxes(q, -1, -2)).astype(np.float64)  # (L, d, d): K_L Q_L^T
    a_gram = np.empty((len(k), 2 * d, 2 * d))  # A A^T with A = [K_L; Q_L]
    for layer in range(len(k)):  # the diagonal blocks of the stacked Grams, widened as they are copied
        rows = slice(layer * d, (layer + 1) * d)
        a_gram[layer, :d, :d] = kk[rows, rows]
        a_gram[layer, d:, d:] = qq[rows, rows]
    a_gram[:, :d, d:] = kq
    a_gram[:, d:, :d] = np.swapaxes(kq, -1, -2)
    sym_eigs, eig_dirs = symmetric_part_eigen_from_gram(k, q, a_gram, topk, RANK_TOL[precision], j_map=maps)
    raw_kq = kq
    if maps is not None:
        kq = kq @ np.swapaxes(maps, -1, -2)  # K (M Q)^T
    return np.einsum("lij,lij->l", kq, kq), sym_eigs, eig_dirs, np.einsum("lij,lji->l", kq, kq), raw_kq
