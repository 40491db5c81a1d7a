"""Models in a local Ollama store: ``ollama:NAME[:TAG]`` resolved to the GGUF file of its weights.

Ollama keeps what it pulls in one store folder, ``$OLLAMA_MODELS`` or else ``~/.ollama/models``
(its ``envconfig.Models``; the Linux service's store is ``/usr/share/ollama/.ollama/models``)::

    STORE/manifests/HOST/NAMESPACE/MODEL/TAG    JSON, OCI-like: {"schemaVersion": 2, "layers": [...]}
    STORE/blobs/sha256-HEX                      the bytes of each layer, named by its digest

A name ``llama3.2`` means ``registry.ollama.ai/library/llama3.2:latest``; ``user/model`` names the
namespace and ``hf.co/owner/repo`` all three parts. The weights are the one layer of media type
``application/vnd.ollama.image.model``: a GGUF file without an extension, which
:func:`~qkalign.weights.gguf_reader.is_gguf_file` recognises by its magic bytes. Its other layers (template, system prompt,
parameters, licence, LoRA adapters, a vision projector) are not the language model's weights.

Name parts must pass Ollama's own rules (``types/model/name.go``): ASCII letters, digits, ``_``,
``-`` and ``.`` (no ``.`` in a namespace, a ``:`` port in a host), not starting with ``-`` or
``.``. So every part is one plain path component: no ``..``, ``/``, ``\\`` or absolute path can
leave the manifests folder, and a digest must be 64 hexadecimal digits before it names a blob.
Every failure is one :class:`~qkalign.errors.InputError` line.
"""

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from ..checks import file_kind, read_json_object
from ..errors import InputError
from .gguf_reader import GGUF_MAGIC, mode_and_magic

OLLAMA_PREFIX = "ollama:"
#: The environment variable that moves Ollama's store.
STORE_VARIABLE = "OLLAMA_MODELS"
#: The media type of the layer holding a model's GGUF weights.
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
NAME_FORM = f"{OLLAMA_PREFIX}[HOST/][NAMESPACE/]MODEL[:TAG]"

# Per part: the characters allowed after the first (a letter, digit or "_") and the longest part,
# as Ollama's isValidPart and isValidLen have them.
_PART_RULES = {"host": ("_-.:", 350), "namespace": ("_-", 80), "model": ("_-.", 80), "tag": ("_-.", 80)}
_PART_PATTERNS = {kind: re.compile(f"[A-Za-z0-9_][A-Za-z0-9{re.escape(extra)}]{{0,{longest - 1}}}")
                  for kind, (extra, longest) in _PART_RULES.items()}
# Ollama's BlobsPath accepts "sha256:" and "sha256-" (its blob names use "-"), hexadecimal of either case.
_DIGEST = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")
# Entries shown in an error line that lists what the store holds.
_LISTED = 8


@dataclass(frozen=True)
class OllamaModel:
    """A model of the local Ollama store, resolved to the GGUF blob of its weights.

    Attributes
    ----------
    given : str
        The source as given, ``ollama:NAME[:TAG]``.
    name : str
        The full name without the tag, ``HOST/NAMESPACE/MODEL`` (``registry.ollama.ai/library/llama3.2``).
    tag : str
        The tag (``latest`` when none was given).
    manifest : Path
        The manifest read, ``STORE/manifests/HOST/NAMESPACE/MODEL/TAG``.
    blob : Path
        The GGUF file of the model layer, ``STORE/blobs/sha256-HEX``.
    digest : str
        The model layer's digest, ``sha256:HEX``.
    store : Path
        The store folder.
    """

    given: str
    name: str
    tag: str
    manifest: Path
    blob: Path
    digest: str
    store: Path

    @property
    def display(self):
        """The shortest name Ollama shows for this model (``ollama list``): ``llama3.2:latest``, ``user/m:v1``."""
        host, namespace, model = self.name.split("/")
        return _display(host, namespace, model, self.tag)


def is_ollama_source(text):
    """Whether ``text`` is a string naming a model of the Ollama store, ``ollama:NAME[:TAG]``."""
    return isinstance(text, str) and text.startswith(OLLAMA_PREFIX)


def ollama_store():
    """The folder of the local Ollama store: ``$OLLAMA_MODELS``, else ``~/.ollama/models``.

    The variable is read as Ollama reads it (``envconfig.Var``): spaces, then quotes around it
    dropped; left empty it counts as unset. Whether the folder exists is not checked here.
    """
    return _store_and_origin()[0]


def parse_ollama_name(text):
    """The ``(host, namespace, model, tag)`` that ``ollama:NAME[:TAG]`` names, defaults filled in.

    As in Ollama's ``ParseNameBare``, the tag is after the last ``:`` when no ``/`` follows it, so a
    host may carry a port (``localhost:5000/ns/model``).

    Parameters
    ----------
    text : str
        ``ollama:NAME[:TAG]``.

    Returns
    -------
    tuple of str
        ``(host, namespace, model, tag)``, each a single plain path component.

    Raises
    ------
    InputError
        ``text`` is not ``ollama:`` followed by a valid name: a part is empty or breaks Ollama's rules.
    """
    if not is_ollama_source(text):
        raise InputError(repr(text)[:120], "", f"an Ollama model source, {NAME_FORM}")
    rest = text[len(OLLAMA_PREFIX):]
    if not rest:
        raise InputError(text, "name", f"a model name after {OLLAMA_PREFIX} ({NAME_FORM}, e.g. ollama:llama3.2:1b)",
                         "nothing")
    name, tag = rest, DEFAULT_TAG
    if rest.rfind(":") > rest.rfind("/"):
        name, _, tag = rest.rpartition(":")
    parts = name.split("/")
    if len(parts) > 3:
        raise InputError(text, "name", f"at most three parts split by '/' ({NAME_FORM})", f"{len(parts)} parts")
    host, namespace, model = [DEFAULT_HOST, DEFAULT_NAMESPACE][:3 - len(parts)] + parts
    for kind, part in (("host", host), ("namespace", namespace), ("model", model), ("tag", tag)):
        _check_part(text, kind, part)
    return host, namespace, model, tag


def resolve_ollama(text):
    """The model that ``ollama:NAME[:TAG]`` names in the local Ollama store, checked down to its GGUF blob.

    Parameters
    ----------
    text : str
        ``ollama:llama3.2``, ``ollama:llama3.2:1b``, ``ollama:user/model:v1``,
        ``ollama:hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M``, ...

    Returns
    -------
    OllamaModel

    Raises
    ------
    InputError
        One line for a malformed name, a missing store, manifest or blob, a manifest that is
        not JSON or has not exactly one model layer with a sha256 digest, a blob that is not GGUF.
    """
    host, namespace, model, tag = parse_ollama_name(text)
    store = _existing_store()
    manifest = store.joinpath("manifests", host, namespace, model, tag)
    if not _exists(manifest):
        raise _no_manifest(manifest, store, (host, namespace, model, tag))
    index, digest = _model_layer(manifest)
    blob = store / "blobs" / f"sha256-{digest[len('sha256:'):]}"
    _check_blob(blob, manifest, index, _display(host, namespace, model, tag))
    return OllamaModel(given=text, name=f"{host}/{namespace}/{model}", tag=tag, manifest=manifest,
                       blob=blob, digest=digest, store=store)


def _check_part(text, kind, part):
    """Raise unless ``part`` is a valid ``kind`` part of an Ollama name (so also one plain path component)."""
    extra, longest = _PART_RULES[kind]
    if _PART_PATTERNS[kind].fullmatch(part):
        return
    allowed = " ".join(extra)
    raise InputError(text, kind, f"a {kind} of 1 to {longest} ASCII letters, digits or {allowed}, "
                     f"the first a letter, digit or _ ({NAME_FORM})", repr(part)[:120] if part else "nothing")


def _store_and_origin():
    """The store folder and, for an error line, where that path came from."""
    value = os.environ.get(STORE_VARIABLE, "").strip().strip("\"'")
    if value:
        return Path(value), f"the path {STORE_VARIABLE} sets"
    return (Path(os.path.expanduser("~")) / ".ollama" / "models",
            f"the default, as {STORE_VARIABLE} is not set")


def _existing_store():
    """The store folder; one error line naming it (and how to set it) when it is not a folder."""
    store, origin = _store_and_origin()
    try:
        mode = os.stat(store).st_mode
    except (FileNotFoundError, NotADirectoryError):
        found = "no such directory"
    except OSError as exc:
        found = f"an unreadable path ({exc.strerror or exc})"
    else:
        if stat.S_ISDIR(mode):
            return store
        found = file_kind(mode)
    raise InputError(store, "", f"an Ollama model store, a folder holding manifests/ and blobs/ "
                     f"({STORE_VARIABLE} sets its path; Ollama's Linux service keeps it in "
                     f"/usr/share/ollama/.ollama/models)", f"{found} ({origin})")


def _exists(path):
    """False only when nothing is at ``path``: any other failure is left to the reader to report."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True
    return True


def _no_manifest(manifest, store, parts):
    """The error line for a name without a manifest: the tags the model has, else the models the store has."""
    host, namespace, model, tag = parts
    wanted = _display(host, namespace, model, tag)
    expected = f"the manifest of {wanted} (ollama pull {wanted} writes it)"
    tags = _names(manifest.parent, dirs=False)
    if tags:
        return InputError(manifest, "", expected, f"no such file; tags of {_display(host, namespace, model)} "
                          f"in the store: {_cut_list(tags)}")
    models = _store_models(store / "manifests")
    if models:
        return InputError(manifest, "", expected, f"no such file; models in the store: {_cut_list(models)}")
    return InputError(manifest, "", expected, f"no such file; the store {store} holds no models")


def _store_models(manifests):
    """Every ``HOST/NAMESPACE/MODEL/TAG`` file under ``manifests``, as Ollama lists them (``llama3.2:1b``)."""
    found = []
    for host in _names(manifests, dirs=True):
        for namespace in _names(manifests / host, dirs=True):
            for model in _names(manifests / host / namespace, dirs=True):
                found += [_display(host, namespace, model, tag)
                          for tag in _names(manifests / host / namespace / model, dirs=False)]
    return found


def _names(folder, dirs):
    """The sorted names of the folders (``dirs``) or files in ``folder``; an empty list when it cannot be listed."""
    try:
        with os.scandir(folder) as entries:
            return sorted(entry.name for entry in entries if (entry.is_dir() if dirs else entry.is_file()))
    except OSError:
        return []


def _display(host, namespace, model, tag=None):
    """The shortest form of a name, as Ollama's ``DisplayShortest``: the default host and namespace left out."""
    if host.lower() != DEFAULT_HOST:
        text = f"{host}/{namespace}/{model}"
    elif namespace.lower() != DEFAULT_NAMESPACE:
        text = f"{namespace}/{model}"
    else:
        text = model
    return text if tag is None else f"{text}:{tag}"


def _cut_list(items, limit=_LISTED):
    """``a, b, c`` with at most ``limit`` items (each cut at 100 characters) and a count of the rest."""
    shown = ", ".join(item[:100] for item in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _model_layer(manifest):
    """``(index, "sha256:HEX")`` of the one model layer of ``manifest``; an error line for anything else."""
    doc = read_json_object(manifest, "model manifest")
    layers = doc.get("layers")
    if not isinstance(layers, list) or not layers:
        found = "it missing" if "layers" not in doc else "an empty list" if layers == [] else type(layers).__name__
        raise InputError(manifest, "layers", "a non-empty list of layers", found)
    for index, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise InputError(manifest, f"layers[{index}]", "a JSON object (mediaType, digest, size)",
                             type(layer).__name__)
    models = [index for index, layer in enumerate(layers) if layer.get("mediaType") == MODEL_MEDIA_TYPE]
    if not models:
        # Parameters (safetensors-based models give each tensor's name and shape) would flood the line.
        kinds = sorted({str(layer.get("mediaType")).split(";")[0].strip() for layer in layers})
        raise InputError(manifest, "layers", f"a layer of mediaType {MODEL_MEDIA_TYPE} (GGUF weights)",
                         f"none; its layers' media types: {_cut_list(kinds)}")
    if len(models) > 1:
        raise InputError(manifest, "layers", f"one layer of mediaType {MODEL_MEDIA_TYPE}",
                         f"{len(models)}: " + _cut_list([f"layers[{index}]" for index in models]))
    index = models[0]
    return index, _digest(manifest, index, layers[index])


def _digest(manifest, index, layer):
    """The layer's digest as ``sha256:HEX``, once its 64 hexadecimal digits are checked: nothing else names a blob."""
    value = layer.get("digest")
    match = _DIGEST.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InputError(manifest, f"layers[{index}].digest", "sha256: followed by 64 hexadecimal digits",
                         "it missing" if "digest" not in layer else repr(value)[:120])
    return f"sha256:{match.group(1)}"


def _check_blob(blob, manifest, index, wanted):
    """Raise unless ``blob`` is a readable regular file starting with the GGUF magic bytes."""
    try:
        mode, head = mode_and_magic(blob)
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(blob, "", f"the blob of the model layer (layers[{index}]) of {manifest}",
                         f"no such file (ollama pull {wanted} downloads it again)") from None
    except OSError as exc:
        raise InputError(blob, "", "a readable model blob", exc.strerror or str(exc)) from None
    if head is None:
        raise InputError(blob, "", "a model blob (a regular file)", file_kind(mode))
    if head != GGUF_MAGIC:
        raise InputError(blob, "", f"a GGUF file (starting with {GGUF_MAGIC!r}) as the model layer of {wanted}",
                         f"first bytes {head!r}" if head else "an empty file")
