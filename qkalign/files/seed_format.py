"""A model's files: the seed's grams JSON (``PREFIX.json``) and its eigen-direction file.

The JSON holds ``num_layers``, ``num_heads``, ``head_dim``, ``hidden_size``, ``gram``
(L, L, H), ``fro_sq`` (L, H) and optionally ``eigdirs_path``; the eigen-direction file,
``PREFIX-eigdirs.safetensors`` (native) or the seed's ``PREFIX-eigdirs.pt``, holds
``eig_dirs`` (L, H, topk, hidden) and ``sym_eigs`` (L, H, 2*head_dim) (see
:mod:`qkalign.files.eigdirs`).
"""

import json
import uuid
from pathlib import Path

from ..checks import positive_int, read_json_object
from ..errors import InputError
from ..qkdata import SHAPE_FIELDS, QKData
from .eigdirs import FORMATS, RUN_ID, SUFFIXES, read_eigdirs, write_eigdirs, writer_module
from .outputs import atomic_paths, check_output_prefix

#: The keys every grams JSON has.
JSON_KEYS = SHAPE_FIELDS + ("gram", "fro_sq")


def default_eigdirs_path(json_path, file_format="pt"):
    """``<json stem>-eigdirs.pt`` (or ``.safetensors``) next to the JSON: the seed's default,
    without its string replace."""
    json_path = Path(json_path)
    return json_path.with_name(json_path.stem + SUFFIXES[file_format])


def resolve_eigdirs_path(json_path, declared=None, override=None):
    """Find the eigen-direction file that goes with ``json_path``.

    ``override`` (the ``--eigdirs`` option) wins; else the JSON's ``eigdirs_path``, a relative
    one looked up next to the JSON first and then in the current directory (where the seed
    looked); else ``<stem>-eigdirs.safetensors`` next to the JSON when it exists, else
    ``<stem>-eigdirs.pt``.
    """
    if override is not None:
        return Path(override)
    if declared is None:
        native = default_eigdirs_path(json_path, "safetensors")
        return native if native.exists() else default_eigdirs_path(json_path, "pt")
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
    for key in ("eigdirs_path", RUN_ID):
        if key in doc and not isinstance(doc[key], str):
            raise InputError(path, key, "a string", repr(doc[key])[:80])
    return doc


def check_same_run(json_path, doc, eigdirs_path, tensors):
    """A JSON that records its run id is read only with the eig-dirs file of the same run.

    (An interrupted or failed write, or files copied from two runs, would otherwise pair the
    numbers of two different models without a word.) Files without a run id (the seed's,
    earlier qkalign versions') are accepted as they are.
    """
    expected = doc.get(RUN_ID)
    if expected is not None and tensors[RUN_ID] != expected:
        found = f"run {tensors[RUN_ID]}" if tensors[RUN_ID] else "a file without a run id"
        raise InputError(eigdirs_path, RUN_ID, f"the eig-dirs file written with {Path(json_path).name} "
                         f"(run {expected})", f"{found}: a pair from two different runs")


def load(path, eigdirs=None):
    """Read a grams JSON and its eigen-direction file into a validated :class:`QKData`.

    Parameters
    ----------
    path : str or Path
        The grams JSON.
    eigdirs : str or Path, optional
        The ``.safetensors`` or ``.pt`` file; by default as :func:`resolve_eigdirs_path` finds it.

    Returns
    -------
    QKData
        gram, fro_sq and sym_eigs as float64; eig_dirs as stored (float32 or float64, memory-mapped
        from safetensors; float16/bfloat16 widened to float32).

    Raises
    ------
    InputError
        One line naming the file and the field for any unreadable or inconsistent input.
    """
    path = Path(path)
    doc = _read_grams_json(path)
    eigdirs_path = resolve_eigdirs_path(path, doc.get("eigdirs_path"), eigdirs)
    tensors = read_eigdirs(eigdirs_path)
    check_same_run(path, doc, eigdirs_path, tensors)
    extra = {k: v for k, v in doc.items() if k not in JSON_KEYS + ("eigdirs_path", RUN_ID)}
    return QKData(**{key: doc[key] for key in SHAPE_FIELDS}, gram=doc["gram"], fro_sq=doc["fro_sq"],
                  eig_dirs=tensors["eig_dirs"], sym_eigs=tensors["sym_eigs"],
                  json_path=str(path), eigdirs_path=str(eigdirs_path), extra=extra)


def save(data, prefix, eig_dirs_dtype="float32", file_format="safetensors"):
    """Write ``data`` as ``PREFIX.json`` and ``PREFIX-eigdirs.safetensors`` (or ``.pt``).

    No ``eigdirs_path`` key is written: readers (the seed included, for ``.pt``) then find
    the eigen-direction file next to the JSON whatever their current directory. A file of the
    other format at the same prefix (an earlier run's) is removed with the renames, so the pair is
    unambiguous; a folder, FIFO or device there, or a file that may not be removed, is refused
    before anything is written. Both files are written whole or not at all (temporary files renamed
    into place; a failure leaves the previous pair, and the other format's file, as they were) and
    hold the same new ``run_id``, which :func:`load` checks.

    Parameters
    ----------
    data : QKData
    prefix : str or Path
        Output path without extension.
    eig_dirs_dtype : {"float32", "float64", "float16", "bfloat16"}
        Storage type of the eigenvectors (``sym_eigs`` is always float64).
    file_format : {"safetensors", "pt"}
        ``"pt"`` writes the seed's format, which the seed's own script reads.

    Returns
    -------
    (Path, Path)
        The JSON and the eigen-direction file's paths.
    """
    if file_format not in FORMATS:
        raise InputError("--format", "", " or ".join(FORMATS), repr(file_format))
    json_path, eigdirs_path = output_paths(prefix, file_format)
    run_id = uuid.uuid4().hex
    doc = {key: getattr(data, key) for key in SHAPE_FIELDS}
    doc.update({k: v for k, v in data.extra.items() if k not in doc and k not in ("eigdirs_path", RUN_ID)})
    doc[RUN_ID] = run_id
    doc["gram"] = data.gram.tolist()
    doc["fro_sq"] = data.fro_sq.tolist()
    # an older run's file of the other format would be found first, or instead
    others = [default_eigdirs_path(json_path, other) for other in _other_formats(file_format)]
    with atomic_paths([eigdirs_path, json_path], remove=others) as (eigdirs_tmp, json_tmp):
        write_eigdirs(eigdirs_tmp, data.eig_dirs, data.sym_eigs, eig_dirs_dtype, run_id=run_id, fmt=file_format)
        with open(json_tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f)
    return json_path, eigdirs_path


def _other_formats(file_format):
    return [other for other in FORMATS if other != file_format]


def output_paths(prefix, file_format, option="-o"):
    """``(PREFIX.json, PREFIX-eigdirs.<format>)``, checked as writable (and, for a ``.pt``, torch as installed)
    before any work is done, with the other format's ``PREFIX-eigdirs.*`` that :func:`save` removes
    checked as removable."""
    json_path, eigdirs_path = check_output_prefix(prefix, option, (".json", SUFFIXES[file_format]),
                                                  removed=[SUFFIXES[f] for f in _other_formats(file_format)])
    writer_module(eigdirs_path, file_format)
    return json_path, eigdirs_path
