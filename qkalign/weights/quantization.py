"""A checkpoint's quantisation, from config.json's ``quantization_config`` and its tensor names.

qkalign measures the weights themselves: FP8 block-scaled checkpoints are dequantised
exactly (:mod:`qkalign.weights.fp8`); integer formats (GPTQ, AWQ, bitsandbytes, ...) store
packed integers whose dequantisation is a format of its own, and are refused with one line
that names the format, before any tensor is looked for.
"""

from ..errors import InputError
from .fp8 import BlockScaledFp8

NEEDED = "an unquantised (BF16, F16, F32 or F64) or FP8 block-scaled checkpoint"
ADVICE = "; measure the unquantised (or FP8) release of the model"
#: quant_method -> the format's name in messages (any other method is refused by its own name).
METHOD_NAMES = {"gptq": "GPTQ", "awq": "AWQ", "bitsandbytes": "bitsandbytes", "aqlm": "AQLM",
                "quanto": "Quanto", "eetq": "EETQ", "hqq": "HQQ", "exl2": "EXL2", "marlin": "Marlin",
                "compressed-tensors": "compressed-tensors", "fbgemm_fp8": "FBGEMM FP8 (per-channel scales)",
                "torchao": "torchao", "mxfp4": "MXFP4", "bitnet": "BitNet", "vptq": "VPTQ"}
# Tensor-name suffixes of integer formats, for checkpoints without a quantization_config.
NAME_SIGNS = ((".g_idx", "GPTQ (qweight/qzeros/scales/g_idx tensors)"),
              (".qweight", "GPTQ/AWQ-style integer weights (qweight/qzeros/scales tensors)"),
              (".absmax", "bitsandbytes 4-bit (absmax/quant_map tensors)"),
              (".quant_map", "bitsandbytes 4-bit (absmax/quant_map tensors)"),
              (".SCB", "bitsandbytes 8-bit (SCB tensors)"))


def checkpoint_quantization(config, config_source, names, names_source):
    """The FP8 block size of a checkpoint, None when unquantised; raises for any other quantisation.

    Parameters
    ----------
    config : dict
        config.json as read (a multimodal model's ``text_config`` is looked in too).
    config_source : str or Path
        config.json, named in errors about it.
    names : iterable of str
        The checkpoint's tensor names.
    names_source : str or Path
        Where the names come from (the weights' file or index), named when they show a format.

    Returns
    -------
    BlockScaledFp8 or None
    """
    settings = config.get("quantization_config")
    if settings is None and isinstance(config.get("text_config"), dict):
        settings = config["text_config"].get("quantization_config")
    if settings is not None:
        return _from_config(settings, config_source)
    found = _format_from_names(names)
    if found:
        raise InputError(names_source, "tensor names", NEEDED, found + ADVICE)
    return None


def _from_config(settings, source):
    field = "quantization_config"
    if not isinstance(settings, dict):
        raise InputError(source, field, "an object", type(settings).__name__)
    method = str(settings.get("quant_method", "")).lower()
    if method != "fp8":
        name = METHOD_NAMES.get(method, repr(settings.get("quant_method")))
        raise InputError(source, field, NEEDED, f"{name}{_details(method, settings)} (quant_method "
                         f"{settings.get('quant_method')!r})" + ADVICE)
    fmt = str(settings.get("fmt", "e4m3")).lower()
    if fmt != "e4m3":
        raise InputError(source, field + ".fmt", "'e4m3' (FP8 E4M3 weights)", repr(settings.get("fmt")))
    block = settings.get("weight_block_size")
    if block is None:
        raise InputError(source, field + ".weight_block_size", "the FP8 scale block size [rows, cols] (block-scaled "
                         "FP8; per-tensor or per-channel FP8 scales are not read)", "it missing" + ADVICE)
    if not (isinstance(block, list) and len(block) == 2
            and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):
        raise InputError(source, field + ".weight_block_size", "two positive integers [rows, cols]", repr(block))
    return BlockScaledFp8(*block)


def _details(method, settings):
    """``" 4-bit"``, ``" 4-bit nf4"``: what an integer format's config says about its bits."""
    if method == "bitsandbytes":
        if settings.get("load_in_4bit"):
            return f" 4-bit {settings.get('bnb_4bit_quant_type', '')}".rstrip()
        if settings.get("load_in_8bit"):
            return " 8-bit"
    bits = settings.get("bits", settings.get("w_bit"))
    return f" {bits}-bit" if isinstance(bits, int) else ""


def _format_from_names(names):
    """The integer format whose tensor names ``names`` holds, or None."""
    for suffix, label in NAME_SIGNS:
        if any(name.endswith(suffix) for name in names):
            return label
    return None
