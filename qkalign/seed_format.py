"""Reading and writing the seed's input format: ``PREFIX.json`` + ``PREFIX-eigdirs.pt``.

The JSON holds ``num_layers``, ``num_heads``, ``head_dim``, ``hidden_size``,
``gram`` (L, L, H), ``fro_sq`` (L, H) and optionally ``eigdirs_path``; the ``.pt``
holds the tensors ``eig_dirs`` (L, H, topk, hidden) and ``sym_eigs`` (L, H, 2*head_dim).
"""

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np

from .checks import positive_int, read_json_object
from .errors import InputError
from .qkdata import SHAPE_FIELDS, QKData

#: The keys every grams JSON has.
JSON_KEYS = SHAPE_FIELDS + ("gram", "fro_sq")
_ACCEPTED_TENSOR_DTYPES = ("torch.float16", "torch.bfloat16", "torch.float32", "torch.float64")


def default_eigdirs_path(json_path):
    """``<json stem>-eigdirs.pt`` next to the JSON (the seed's default, without its string replace)."""
    json_path = Path(json_path)
    return json_path.with_name(json_path.stem + "-eigdirs.pt")


def resolve_eigdirs_path(json_path, declared=None, override=None):
    """Find the ``.pt`` file that goes with ``json_path``.

    ``override`` (the ``--eigdirs`` option) wins; else the JSON's ``eigdirs_path``,
    a relative one looked up next to the JSON first and then in the current
    directory (where the seed looked); else :func:`default_eigdirs_path`.
    """
    if override is not None:
        return Path(override)
    if declared is None:
        return default_eigdirs_path(json_path)
    declared = Path(declared)
    if declared.is_absolute():
        return declared
    beside_json = Path(json_path).parent / declared
    if beside_json.exists() or not declared.exists():
        return beside_json
    return declared


def _read_grams_json(path):
    """The grams JSON as a dict with every key of :data:`JSON_KEYS` checked for presence and type."""
    doc = read_json_object(path, "grams JSON", required=JSON_KEYS)
    for key in SHAPE_FIELDS:
        positive_int(doc[key], path, key)
    if "eigdirs_path" in doc and not isinstance(doc["eigdirs_path"], str):
        raise InputError(path, "eigdirs_path", "a string path", repr(doc["eigdirs_path"]))
    return doc


def _read_pt(path):
    import torch  # imported here: torch takes a second to import and only this file format needs it

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(path, "", "an existing eig-dirs .pt file", "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "", "an eig-dirs .pt file", "a directory") from None
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, "", "a .pt holding only tensors (loaded with weights_only=True; "
                         "pickled code is never run)", f"a pickled object that was refused ({first[:160]})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, "", "a readable torch .pt file", f"an unreadable file ({first[:160]})") from None
    if not isinstance(obj, dict):
        raise InputError(path, "", "a dict with the tensors eig_dirs and sym_eigs", type(obj).__name__)
    arrays = {}
    for key in ("eig_dirs", "sym_eigs"):
        if key not in obj:
            raise InputError(path, key, "this tensor to be present", "it missing")
        value = obj[key]
        if not isinstance(value, torch.Tensor) or str(value.dtype) not in _ACCEPTED_TENSOR_DTYPES:
            found = str(value.dtype) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InputError(path, key, "a float16, bfloat16, float32 or float64 tensor", found)
        arrays[key] = value.detach().to(torch.float64).numpy()
    return arrays


def load(path, eigdirs=None):
    """Read a grams JSON and its eig-dirs ``.pt`` into a validated :class:`QKData`.

    Parameters
    ----------
    path : str or Path
        The grams JSON.
    eigdirs : str or Path, optional
        The ``.pt`` file; by default as :func:`resolve_eigdirs_path` finds it.

    Returns
    -------
    QKData
        float64 arrays; float16/bfloat16/float32 tensors are widened.

    Raises
    ------
    InputError
        One line naming the file and the field for any unreadable or inconsistent input.
    """
    path = Path(path)
    doc = _read_grams_json(path)
    pt_path = resolve_eigdirs_path(path, doc.get("eigdirs_path"), eigdirs)
    tensors = _read_pt(pt_path)
    extra = {k: v for k, v in doc.items() if k not in JSON_KEYS + ("eigdirs_path",)}
    return QKData(**{key: doc[key] for key in SHAPE_FIELDS}, gram=doc["gram"], fro_sq=doc["fro_sq"],
                  eig_dirs=tensors["eig_dirs"], sym_eigs=tensors["sym_eigs"],
                  json_path=str(path), eigdirs_path=str(pt_path), extra=extra)


def save(data, prefix, eig_dirs_dtype="float32"):
    """Write ``data`` as ``PREFIX.json`` and ``PREFIX-eigdirs.pt`` in the seed's format.

    No ``eigdirs_path`` key is written: readers (the seed included) then find the
    ``.pt`` next to the JSON whatever their current directory.

    Parameters
    ----------
    data : QKData
    prefix : str or Path
        Output path without extension.
    eig_dirs_dtype : {"float32", "float64", "float16", "bfloat16"}
        Storage type of the eigenvectors (``sym_eigs`` is always float64).

    Returns
    -------
    (Path, Path)
        The JSON and the ``.pt`` paths.
    """
    import torch

    prefix = Path(prefix)
    json_path = prefix.with_name(prefix.name + ".json")
    pt_path = default_eigdirs_path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    doc = {key: getattr(data, key) for key in SHAPE_FIELDS}
    doc.update({k: v for k, v in data.extra.items() if k not in doc})
    doc["gram"] = data.gram.tolist()
    doc["fro_sq"] = data.fro_sq.tolist()
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    torch.save({"eig_dirs": torch.from_numpy(np.array(data.eig_dirs)).to(getattr(torch, eig_dirs_dtype)),
                "sym_eigs": torch.from_numpy(np.array(data.sym_eigs))}, pt_path)
    return json_path, pt_path
