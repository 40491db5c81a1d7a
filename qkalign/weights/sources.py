"""Where a model's files are: a local folder, an fsspec URL of a folder, or a Hugging Face Hub repo.

:func:`resolve_source` turns the ``SOURCE`` of ``qkalign measure SOURCE [--revision REV]`` into a
:class:`ModelSource`:

- an existing local path, or a ``file://`` URL: the folder, read by
  :class:`~qkalign.weights.model_folder.ModelFolder` (memory-mapped);
- another URL (``https://``, ``s3://``, ``gs://``, any fsspec protocol): read by byte ranges
  (:class:`~qkalign.weights.remote_folder.RemoteFolder`);
- a GGUF file (llama.cpp, Ollama, LM Studio; recognised by its magic bytes, whatever its name, a
  split set by any of its splits), or a folder whose only weights are one GGUF model: read by
  :class:`~qkalign.weights.gguf_model.GGUFModel`;
- a URL whose path ends ``.gguf``, or ``ORG/NAME/FILE.gguf`` (a GGUF file of a Hub repo, which holds
  many quantisations: the file is named; it may be in a folder of the repo): read by range requests,
  only its header and the Q/K rows (:mod:`~qkalign.weights.remote_gguf`); from the Hub cache when
  every split is cached there;
- ``ollama:NAME[:TAG]``: the GGUF blob of that model in the local Ollama store
  (:mod:`~qkalign.weights.ollama`);
- ``ORG/NAME`` that is no local path: a Hub repo at ``revision`` (default ``main``), through
  ``huggingface_hub``'s conventions (``HF_HUB_CACHE``, ``HF_TOKEN``, ``HF_ENDPOINT``,
  ``HF_HUB_OFFLINE``). A snapshot in the local Hub cache holding the config and all safetensors
  weights is used without network (with ``HF_HUB_OFFLINE=1`` the cache is all there is);
  otherwise the revision is resolved to its commit on the Hub and the files at that commit
  are read by HTTP range requests.

fsspec and huggingface_hub are imported only for remote sources.
"""

import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlparse, urlsplit, urlunsplit

from ..checks import read_json_object
from ..errors import InputError, first_line
from .model_folder import CONFIG_NAME, INDEX_NAME, SINGLE_FILE_NAME, ModelFolder, read_config
from .ollama import OLLAMA_PREFIX

DEFAULT_REVISION = "main"
# The Hub's repo ids: ORG/NAME of letters, digits, '-', '_', '.' (huggingface_hub validates the rest).
HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# ORG/NAME/FILE.gguf, FILE a path in the repo (folders of names other than "." and "..").
HUB_GGUF_FILE = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)/"
                           r"(?P<file>(?:(?!\.\.?/)[^/\\\x00-\x1f]+/)*[^/\\\x00-\x1f]+\.gguf)$", re.IGNORECASE)
# What measure reads from a Hub snapshot.
HUB_FILES = [CONFIG_NAME, "*.safetensors", INDEX_NAME]
SOURCE_FORMS = ("a model folder, an fsspec URL of one (https://, s3://, gs://, file://) or of a GGUF file, a Hub repo "
                "id ORG/NAME or a GGUF file of one ORG/NAME/FILE.gguf")


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``SOURCE``: a local folder (``local_dir``) or remote files (``files``).

    ``given`` is the source as the user wrote it, ``kind`` one of ``"local"``, ``"url"``, ``"hub"``,
    ``"ollama"``; Hub sources have the ``revision`` asked for and the ``commit_hash`` it resolved to,
    and ``location`` says where the files were read (a folder, a URL, the Hub cache). A GGUF model
    has ``gguf_path`` (its file, or one split of it) and ``ollama`` (the
    :class:`~qkalign.weights.ollama.OllamaModel`) when it came from the Ollama store; a remote one
    ``gguf_file``, the file's name in ``files``.
    """

    given: str
    kind: str
    local_dir: Path = None
    files: object = field(default=None, repr=False)  # RemoteFiles
    revision: str = None
    commit_hash: str = None
    location: str = ""
    gguf_path: Path = None
    ollama: object = field(default=None, repr=False)
    gguf_file: str = None

    @property
    def format(self):
        """``"gguf"`` or ``"safetensors"``: how the weights are stored."""
        return "gguf" if self.gguf_path is not None or self.gguf_file is not None else "safetensors"

    def config_label(self):
        """Path or URL of ``config.json`` (a GGUF file: the file, which holds the metadata), for error lines."""
        if self.gguf_file is not None:
            return self.files.url_of(self.gguf_file)
        if self.gguf_path is not None:
            return self.given if self.kind == "ollama" else self.gguf_path
        return self.local_dir / CONFIG_NAME if self.local_dir is not None else self.files.url_of(CONFIG_NAME)

    def read_config(self):
        """``config.json`` as a dict."""
        if self.local_dir is not None:
            return read_config(self.local_dir)
        return self.files.read_json(CONFIG_NAME, "model config")

    def open_folder(self):
        """The checkpoint's tensors: a :class:`ModelFolder` or a :class:`RemoteFolder`."""
        if self.local_dir is not None:
            return ModelFolder(self.local_dir)
        from .remote_folder import RemoteFolder

        return RemoteFolder(self.files)

    def metadata(self):
        """What ``QKData.extra`` records of the source."""
        record = {"model_source": self.given, "source_kind": self.kind, "read_from": self.location,
                  "revision": self.revision, "commit_hash": self.commit_hash, "source_format": self.format}
        if self.ollama is not None:
            record["ollama"] = {"name": self.ollama.display, "digest": self.ollama.digest,
                                "manifest": str(self.ollama.manifest)}
        return record


def is_remote_source(text):
    """Whether ``text`` names a URL or a Hub repo id rather than a local path or a grams JSON."""
    text = str(text)
    if text.endswith(".json") or Path(text).exists():
        return False
    return "://" in text or HUB_REPO_ID.match(text) is not None or HUB_GGUF_FILE.match(text) is not None


def is_model_source(text):
    """Whether ``text`` names a model to measure (a folder, a GGUF file, ``ollama:``, a URL, a Hub repo)
    rather than a grams JSON."""
    from .gguf_reader import is_gguf_file
    from .ollama import is_ollama_source

    path = Path(str(text))
    return path.is_dir() or is_gguf_file(path) or is_ollama_source(str(text)) or is_remote_source(text)


def resolve_source(source, revision=None):
    """The :class:`ModelSource` that ``source`` (+ ``revision`` for a Hub repo) names."""
    if isinstance(source, ModelSource):
        return source
    text = str(source)
    if text.startswith(OLLAMA_PREFIX) and not Path(text).exists():
        resolved = _ollama_source(text)
    elif isinstance(source, Path) or Path(text).exists() or not is_remote_source(text):
        resolved = _local_source(text)
    elif "://" in text:
        resolved = _url_source(text)
    else:
        return _hub_source(text, revision or DEFAULT_REVISION)
    if revision is not None:
        raise InputError("--revision", "", "a Hub repo id ORG/NAME as the source (a revision is a Hub branch, tag "
                         "or commit)", text)
    return resolved


def _local_source(text):
    """A local folder, or a GGUF file (by its magic bytes), or a folder holding one GGUF model only."""
    from .gguf_reader import is_gguf_file

    path = Path(text)
    if is_gguf_file(path):
        return ModelSource(text, "local", gguf_path=path, location=text)
    if path.suffix.lower() == ".gguf" and path.is_file():
        from .gguf_reader import mode_and_magic

        raise InputError(path, "", "a GGUF file (its first 4 bytes b'GGUF')", repr(mode_and_magic(path)[1]))
    if path.is_dir() and not (path / CONFIG_NAME).exists():
        gguf_file = _only_gguf_model(path)
        if gguf_file is not None:
            return ModelSource(text, "local", gguf_path=gguf_file, location=str(gguf_file))
    return ModelSource(text, "local", local_dir=path, location=text)


def _only_gguf_model(folder):
    """The GGUF file of ``folder`` when it holds exactly one GGUF model (a single file or one split set);
    None when it holds none; one line naming them when it holds several."""
    from .gguf_model import SPLIT_NAME

    files = sorted(p for p in folder.glob("*.gguf") if p.is_file())
    models = {}
    for path in files:
        match = SPLIT_NAME.match(path.name)
        models.setdefault(match["stem"] if match else path.name, path)
    if len(models) > 1:
        raise InputError(folder, "", "config.json with safetensors weights, or one GGUF model (name the file to "
                         "measure)", f"{len(models)} GGUF models: " + ", ".join(p.name for p in models.values())[:300])
    return next(iter(models.values()), None)


def _ollama_source(text):
    from .ollama import resolve_ollama

    model = resolve_ollama(text)
    return ModelSource(text, "ollama", gguf_path=model.blob, ollama=model,
                       location=f"Ollama store {model.store} ({model.blob.name})")


def _url_source(url):
    parsed = urlparse(url)
    gguf = parsed.path.lower().endswith(".gguf")
    if parsed.scheme == "file":
        folder = Path(unquote(parsed.path))
        if gguf:
            return ModelSource(url, "url", gguf_path=folder, location=str(folder))
        return ModelSource(url, "url", local_dir=folder, location=str(folder))
    try:
        import fsspec
    except ImportError:
        raise InputError(url, "", "fsspec installed to read a URL (pip install fsspec[http])", "it missing") from None
    from .remote_files import RemoteFiles

    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:  # an unknown protocol, or its package (s3fs, gcsfs) missing
        raise InputError(url, "", "an fsspec URL whose filesystem is installed (s3:// needs s3fs, gs:// gcsfs, "
                         "https:// aiohttp)", first_line(exc)) from None
    if gguf:

        files, name = url_files(fs, root)
        return ModelSource(url, "url", files=files, gguf_file=name, location=url)
    root = root.rstrip("/")
    files = RemoteFiles(fs, lambda name: f"{root}/{name}" if name else root + "/")
    return ModelSource(url, "url", files=files, location=url)


def _hub_source(repo_id, revision):
    try:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    except ImportError:
        raise InputError(repo_id, "", "huggingface_hub installed to read a Hub repo (pip install huggingface_hub)",
                         "it missing") from None
    gguf = HUB_GGUF_FILE.match(repo_id)
    if gguf is not None:

        return hub_gguf_source(repo_id, gguf["repo"], gguf["file"], revision)
    try:
        snapshot = snapshot_download(repo_id, revision=revision, local_files_only=True, allow_patterns=HUB_FILES)
    except LocalEntryNotFoundError:
        snapshot = None
    except HFValidationError as exc:
        raise InputError(repo_id, "", f"{SOURCE_FORMS} (no such local path exists)", first_line(exc)) \
            from None
    if snapshot is not None and (constants.HF_HUB_OFFLINE or _complete(Path(snapshot))):
        return ModelSource(repo_id, "hub", local_dir=Path(snapshot), revision=revision,
                           commit_hash=Path(snapshot).name, location=f"local Hub cache {snapshot}")
    if constants.HF_HUB_OFFLINE:
        raise InputError(f"{repo_id}@{revision}", "--revision", f"a snapshot of this revision in the local Hub "
                         f"cache {constants.HF_HUB_CACHE} (HF_HUB_OFFLINE is set: no network)",
                         _cached_revisions(constants.HF_HUB_CACHE, repo_id))
    return _hub_remote_source(repo_id, revision)


def _complete(snapshot):
    """Whether a cached snapshot holds config.json and all safetensors weights (else they are read remotely)."""
    if not (snapshot / CONFIG_NAME).is_file():
        return False
    if (snapshot / INDEX_NAME).is_file():
        try:
            shards = read_json_object(snapshot / INDEX_NAME, "safetensors index").get("weight_map", {}).values()
            return all((snapshot / shard).is_file() for shard in set(shards))
        except (InputError, AttributeError, TypeError):
            return True  # ModelFolder names the fault
    return (snapshot / SINGLE_FILE_NAME).is_file()


def _cached_revisions(cache, repo_id):
    """``"cached revisions: main, step1"`` or ``"no cached snapshot of ORG/NAME"``."""
    from huggingface_hub.file_download import repo_folder_name

    repo_dir = Path(cache) / repo_folder_name(repo_id=repo_id, repo_type="model")
    refs = sorted(str(p.relative_to(repo_dir / "refs")) for p in (repo_dir / "refs").rglob("*") if p.is_file())
    snapshots = sorted(p.name for p in (repo_dir / "snapshots").glob("*") if p.is_dir())
    if not refs and not snapshots:
        return f"no cached snapshot of {repo_id}"
    return "cached revisions: " + ", ".join(refs + snapshots)


def _hub_remote_source(repo_id, revision):
    """The files of ``repo_id`` at the commit ``revision`` resolves to, read by HTTP range requests."""
    import fsspec
    from huggingface_hub import HfApi, hf_hub_url
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.utils import build_hf_headers

    from .remote_files import ACCESS_HINT, RemoteFiles, http_status, with_retries

    api = HfApi()
    label = f"{api.endpoint}/{repo_id}"
    no_repo = f"a Hub repo (no local folder {repo_id} exists either; {ACCESS_HINT})"

    def commit():
        try:
            return api.model_info(repo_id, revision=revision).sha
        except GatedRepoError:
            raise InputError(label, "", f"access to this gated model ({ACCESS_HINT})", "access denied") from None
        except RevisionNotFoundError:
            raise InputError(label, "--revision", "a branch, tag or commit of this repo",
                             f"{revision!r}: no such revision") from None
        except RepositoryNotFoundError:
            raise InputError(label, "", no_repo, "no such repo or no access") from None
        except HfHubHTTPError as exc:
            if http_status(exc) == 404:
                raise InputError(label, "", no_repo, "HTTP 404") from None
            raise

    sha = with_retries(commit, label, f"a reachable Hub ({api.endpoint}; HF_HUB_OFFLINE=1 reads only the "
                       "local cache)")
    try:
        fs = fsspec.filesystem("http", headers=build_hf_headers())
    except ImportError as exc:
        raise InputError(label, "", "aiohttp installed for HTTP range reads (pip install fsspec[http])",
                         first_line(exc)) from None
    files = RemoteFiles(fs, lambda name: hf_hub_url(repo_id, name, revision=sha, endpoint=api.endpoint),
                        redirect_fs=fsspec.filesystem("http"))
    return ModelSource(repo_id, "hub", files=files, revision=revision, commit_hash=sha, location=label)


# --- GGUF files by URL and on the Hub ----------------------------------------------------------------------


def url_files(fs, root):
    """``(RemoteFiles, name)``: the folder of the GGUF file at ``root`` on ``fs`` and the file's name in it.

    The other splits of a split set are its neighbours by name (``NAME-0000i-of-0000N.gguf``); an HTTP
    URL keeps its query (``?download=true``) for them.
    """
    from .remote_files import RemoteFiles, is_http_filesystem, plain_file_name

    if is_http_filesystem(fs):
        parts = urlsplit(root)
        folder, _, quoted = parts.path.rpartition("/")
        name = unquote(quoted)

        def url_of(other):
            return root if other == name else urlunsplit(parts._replace(path=f"{folder}/{quote(other)}"))
    else:
        folder, _, name = root.rpartition("/")

        def url_of(other):
            return f"{folder}/{other}" if folder else other
    if not plain_file_name(name):
        raise InputError(root, "", "a URL of a GGUF file NAME.gguf", repr(name))
    return RemoteFiles(fs, url_of), name


def hub_gguf_source(text, repo_id, filename, revision):
    """The :class:`~.sources.ModelSource` of the GGUF file ``filename`` (a path in the repo) of the Hub repo
    ``repo_id`` at ``revision``: the local Hub cache when it holds every split, else (unless HF_HUB_OFFLINE)
    range reads at the commit the revision resolves to."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise InputError(text, "", f"{SOURCE_FORMS} (no such local path exists)", first_line(exc)) from None
    folder, name = str(PurePosixPath(filename).parent).removeprefix("."), PurePosixPath(filename).name
    prefix = f"{folder}/" if folder else ""
    cached, missing = _cached_gguf(text, repo_id, prefix, name, revision)
    if cached is not None:
        commit = cached.parents[len(PurePosixPath(filename).parts) - 1].name
        return ModelSource(text, "hub", gguf_path=cached, revision=revision, commit_hash=commit,
                           location=f"local Hub cache {cached}")
    if constants.HF_HUB_OFFLINE:
        raise InputError(f"{repo_id}@{revision}", filename, f"this file in a snapshot of this revision in the local "
                         f"Hub cache {constants.HF_HUB_CACHE} (HF_HUB_OFFLINE is set: no network)",
                         f"{missing} not cached ({_cached_revisions(constants.HF_HUB_CACHE, repo_id)})")
    from .remote_files import RemoteFiles

    hub = _hub_remote_source(repo_id, revision)
    files = RemoteFiles(hub.files.fs, lambda other: hub.files.url_of(prefix + other), redirect_fs=hub.files.redirect_fs)
    return replace(hub, given=text, files=files, gguf_file=name, location=files.url_of(name))


def _cached_gguf(text, repo_id, prefix, name, revision):
    """``(the cached path of prefix + name at revision or None, what of its split set is not cached)``: the path
    only when every split of its set is cached."""
    from huggingface_hub import try_to_load_from_cache

    from .gguf_model import split_paths

    try:
        names = [p.name for p in split_paths(Path(name))]
    except InputError as exc:
        raise InputError(text, exc.field, exc.expected, exc.found) from None
    paths = [try_to_load_from_cache(repo_id, prefix + other, revision=revision) for other in names]
    missing = [other for other, path in zip(names, paths) if not isinstance(path, str)]
    if missing:
        return None, "it" if missing == [name] else f"{len(missing)} of its {len(names)} splits ({missing[0]}, ...)"
    return Path(paths[names.index(name)]), None
