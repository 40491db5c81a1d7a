"""Where an analysis's numbers come from: the model, its revision, its stored format, what was measured and how.

``analyze`` keeps this in ``meta["provenance"]`` so that a result JSON (and the page made of it) says which weights it
describes without the grams JSON beside it.
"""

from collections import Counter

from .. import __version__

#: Keys of measure's record (``QKData.extra``) copied as they are, when present.
MEASURE_KEYS = ("model_dir", "source_kind", "source_format", "revision", "commit_hash", "model_type", "layout",
                "precision", "fold_norms", "rank_deficient_operators")


def provenance(data):
    """``{key: value}`` of plain JSON values describing where ``data`` (a :class:`~qkalign.QKData`) comes from.

    Always ``qkalign_version`` and ``measured_by`` (``"qkalign measure"``, or what made the grams JSON); from a
    measured model also its folder or URL, revision and commit, format, layout, precision of the products, the
    stored weight types (``weights``: each type with its tensor count, e.g. ``Q4_1 x 60, F32 x 2`` of a GGUF
    file) and, for a GGUF file, its recorded name and file type.
    """
    extra = data.extra or {}
    out = {"qkalign_version": __version__,
           "measured_by": str(extra.get("source") or "a grams JSON (not written by qkalign measure)")}
    out.update({key: extra[key] for key in MEASURE_KEYS if extra.get(key) is not None})
    types = extra.get("tensor_types")
    if isinstance(types, dict) and types:
        counts = Counter(str(t) for t in types.values())
        out["weights"] = ", ".join(f"{name} x {count}" for name, count in sorted(counts.items()))
    elif extra.get("checkpoint_dtypes"):
        out["weights"] = ", ".join(str(t) for t in extra["checkpoint_dtypes"])
    gguf = extra.get("gguf")
    if isinstance(gguf, dict):
        out.update({f"gguf_{key}": gguf[key] for key in ("name", "architecture", "file_type")
                    if gguf.get(key) is not None})
    return {key: value if isinstance(value, (bool, int, float)) else str(value)[:200] for key, value in out.items()}
