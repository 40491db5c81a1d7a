"""FP8 block-scaled weights (DeepSeek-V3, Qwen3-FP8): ``w = q * s`` per block, dequantised exactly.

A weight ``W`` of shape ``(R, C)`` is stored as ``F8_E4M3`` values ``q`` (``W.fp8`` in
safetensors' dtype names) with a float32 tensor ``<name>_scale_inv`` of shape
``(ceil(R / br), ceil(C / bc))``: block ``(i, j)``, the rows ``i br:(i+1) br`` and columns
``j bc:(j+1) bc`` (smaller at the bottom and right edges), has ``W = q * s[i, j]``.
``(br, bc)`` is ``quantization_config.weight_block_size`` in config.json (``[128, 128]``).

Exactness: an E4M3 number has a 4-bit significand (3 stored bits), a float32 scale a
24-bit one, so ``q * s`` needs at most 28 significant bits, and its exponent lies within
``[2^-158, 2^137)``: the product is exact in float64 (53 bits), but not in general in
float32. :func:`dequantize` returns that exact float64 product; measure's float32 mode then
rounds it once, which gives the correctly rounded float32 product, the very number a float32
dequantiser (``q.float() * s``, DeepSeek's ``weight_dequant``) stores. So measuring an FP8
checkpoint equals measuring its dequantised twin stored in float32 (float32 mode) or in
float64 (float64 mode), value for value.

:class:`DequantizingFolder` is the FP8 part of the local and the remote folder (their dtype check and
their block reads), so both read FP8 by the same code: the block, then the scale rows covering it.
"""

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

#: safetensors' dtype name of the FP8 weights read here (torch.float8_e4m3fn).
FP8_DTYPE = "F8_E4M3"
#: Suffix of the block-scale tensor's name: ``q_proj.weight`` -> ``q_proj.weight_scale_inv``.
SCALE_SUFFIX = "_scale_inv"


def scale_name(name):
    """Name of the block scales of weight ``name``."""
    return name + SCALE_SUFFIX


@dataclass(frozen=True)
class BlockScaledFp8:
    """The block size ``(block_rows, block_cols)`` of an FP8 checkpoint's scales."""

    block_rows: int
    block_cols: int

    def scale_shape(self, shape):
        """``(ceil(R / br), ceil(C / bc))``: the scale grid of an ``(R, C)`` weight."""
        rows, cols = shape
        return -(-rows // self.block_rows), -(-cols // self.block_cols)

    def scale_index(self, start, stop, transposed):
        """Index into the scale grid of the blocks covering rows (or, ``transposed``, columns) ``start:stop``."""
        size = self.block_cols if transposed else self.block_rows
        covering = slice(start // size, -(-stop // size))
        return (slice(None), covering) if transposed else covering

    def dequantize(self, values, scales, start, transposed):
        """``values * s`` in float64, exact: ``values`` rows (or columns) from ``start`` on, ``scales`` their grid.

        Parameters
        ----------
        values : (r, c) float array
            The FP8 values (decoded to float32, exactly) of rows ``start:start + r`` of the weight
            (all columns), or with ``transposed`` its columns ``start:start + c`` (all rows).
        scales : float array
            The scale grid at :meth:`scale_index` of the same range.
        start : int
            First row (column) of ``values`` in the weight.
        transposed : bool
            ``values`` is a column range.

        Returns
        -------
        (r, c) float64 array
        """
        def block_of(count, offset, size):  # each row's (column's) block, counted from the first one read
            return (np.arange(offset, offset + count) // size) - offset // size

        row_offset, col_offset = (0, start) if transposed else (start, 0)
        rows = block_of(values.shape[0], row_offset, self.block_rows)
        cols = block_of(values.shape[1], col_offset, self.block_cols)
        return np.asarray(values, dtype=np.float64) * np.asarray(scales, dtype=np.float64)[rows][:, cols]

    def dequantize_source(self, values, read, source):
        """:meth:`dequantize` of the ``values`` a :class:`~qkalign.weights.layouts.BlockSource` names,
        before any transposition; ``read(name, index)`` reads a slice of a tensor (the scales)."""
        scales = read(scale_name(source.tensor), self.scale_index(source.start, source.stop, source.transposed))
        return self.dequantize(values, scales, source.start, source.transposed)


class DequantizingFolder:
    """The parts of a folder's ``check`` and ``read_block`` shared by the local and the remote folder:
    FP8 dequantisation and the finite-weight check.

    The folder provides ``names()``, ``shape_of(name)``, ``dtype_of(name)``, ``check(name, shape)`` and
    ``_read(name, index)`` (``index``: a row slice, or ``(slice(None), columns)``); ``fp8`` is the
    checkpoint's :class:`BlockScaledFp8` (set by ``measure`` from config.json), None when unquantised.
    """

    fp8 = None

    def _check_dtype(self, name, shape, dtype, readable, label):
        """Raise unless ``dtype`` is in ``readable`` or is FP8 with block scales of the right shape; return it.

        ``label``: the file named in errors.
        """
        if dtype == FP8_DTYPE:
            check_fp8_weight(self.fp8, self, name, shape, label)
        elif dtype not in readable:
            raise InputError(label, name, "dtype " + ", ".join(readable) + f" or {FP8_DTYPE} with block scales",
                             dtype)
        return dtype

    def _dequantized(self, block, source):
        """``block`` (the values a :class:`~qkalign.weights.layouts.BlockSource` names, before any
        transposition) dequantised exactly to float64 if FP8 (its scales read by ``_read``), else as is."""
        if self.dtype_of(source.tensor) == FP8_DTYPE:  # its scales checked by _check_dtype
            return self.fp8.dequantize_source(block, self._read, source)
        return block

    @staticmethod
    def _check_finite(block, source, label):
        """Raise unless every entry of ``block`` (the array ``source`` names, as read) is finite.

        ``label``: the file named in errors.
        """
        # min and max propagate NaN and keep inf: no boolean temporary of the block's size.
        if not (np.isfinite(block.min()) and np.isfinite(block.max())):
            where = "columns" if source.transposed else "rows"
            raise InputError(label, source.tensor, "finite weights", f"NaN or Inf in {where} {source.start}:"
                             f"{source.stop}")


def check_fp8_weight(fp8, folder, name, shape, source):
    """Raise unless FP8 weight ``name`` of ``shape`` comes with block scales of the right shape.

    ``fp8``: the checkpoint's :class:`BlockScaledFp8`, None when config.json has none;
    ``folder``: the tensors (``names()``, ``check(name, shape)``); ``source``: the file named in errors.
    """
    if len(shape) != 2:  # a norm gain stored as FP8: no checkpoint does that, and no block grid fits it
        raise InputError(source, name, "a float dtype (only 2-D weights are read as FP8 with block scales)",
                         f"{FP8_DTYPE} of shape {tuple(shape)}")
    scales = scale_name(name)
    if scales not in folder.names():
        per_channel = [n for n in (name[: -len("weight")] + "weight_scale", name + "_scale") if n in folder.names()]
        raise InputError(source, scales, "the FP8 block scales of this F8_E4M3 weight (block-scaled FP8, as "
                         "DeepSeek-V3 and Qwen3-FP8 ship)", f"per-tensor or per-channel scales {per_channel[0]}, "
                         "an FP8 format qkalign does not read" if per_channel else "no scale tensor")
    if fp8 is None:
        raise InputError(source, name, "the block size of its FP8 scales in config.json (quantization_config."
                         "weight_block_size)", "no quantization_config with quant_method 'fp8'")
    expected = fp8.scale_shape(shape)
    found = tuple(folder.shape_of(scales))
    if found != expected:
        raise InputError(source, scales, f"shape {expected} (ceil of {tuple(shape)} / weight_block_size "
                         f"{[fp8.block_rows, fp8.block_cols]})", f"{found}")
    folder.check(scales, expected)
