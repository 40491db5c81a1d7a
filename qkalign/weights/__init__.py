"""A model's weights -> :class:`~qkalign.QKData`: the grams and eigen-directions of its QK operators.

- ``model_folder``: a Hugging Face folder's ``config.json`` and safetensors tensors, read lazily;
- ``quantization``, ``fp8``: quantised checkpoints, refused or (FP8) dequantised exactly;
- ``in_memory``: arrays, TransformerLens models and state dicts, read like a folder;
- ``layouts``: where each architecture keeps W_Q, W_K and its norm gains;
- ``factored_operator``: the operator quantities from the factors, no hidden x hidden matrix;
- ``measure``: :func:`~qkalign.weights.measure.measure`, which puts them together;
- ``synthetic``: deterministic synthetic weights and their exact inputs.

The defaults below are those of ``measure``, the ``qkalign measure`` command and the
synthetic presets.
"""

#: Eigenvectors kept per layer and head.
DEFAULT_TOPK = 16
#: Precisions of measure's big products (sums are float64 either way).
PRECISIONS = ("float32", "float64")
DEFAULT_PRECISION = "float32"
