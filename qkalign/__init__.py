"""qkalign: are the attention QK operators of a transformer the same across layers?

``load`` reads the seed's grams JSON + eig-dirs ``.pt`` into a validated ``QKData``;
``analyze`` computes every number of the report (numpy reference or Numba kernels);
``measure`` computes a ``QKData`` from a Hugging Face model folder's safetensors weights.
"""

from .analysis import AnalysisResult, analyze
from .errors import InputError, QKAlignError
from .io import load, save
from .measurement import measure
from .qkdata import QKData

__all__ = ["AnalysisResult", "InputError", "QKAlignError", "QKData", "analyze", "load", "measure", "save"]
__version__ = "0.1.0"
