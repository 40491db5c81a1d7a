"""A fake Hugging Face Hub on disk or on 127.0.0.1, for tests of Hub sources without network.

- :func:`write_hub_snapshot` puts a model folder into a Hub cache the way ``huggingface_hub``
  lays it out: ``models--ORG--NAME/blobs/<sha256>``, ``snapshots/<commit>/<file>`` (symlinks to
  the blobs) and ``refs/<revision>`` holding the commit hash.
- :func:`hub_routes` are the URL routes of a :class:`~qkalign.testing.http_server.RangeServer`
  that answer like the Hub endpoint (``HF_ENDPOINT``): ``/api/models/ORG/NAME/revision/REV``
  (the commit of a revision, or the Hub's ``RevisionNotFound`` answer for the ``missing`` ones)
  and ``/ORG/NAME/resolve/COMMIT/FILE``, which for safetensors files redirects (302) to
  ``/cdn/COMMIT/FILE``, as the Hub sends large files to its CDN.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path


def commit_of(revision):
    """A 40-hex commit hash made from ``revision`` (deterministic, like a real one in form)."""
    return hashlib.sha1(revision.encode()).hexdigest()


def write_hub_snapshot(cache_dir, repo_id, revision, folder, commit=None):
    """Cache the files of ``folder`` as ``repo_id`` at ``revision``; returns the commit hash."""
    commit = commit or commit_of(revision)
    repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / "blobs").mkdir(exist_ok=True)
    for file in sorted(Path(folder).iterdir()):
        blob = repo_dir / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        if not blob.exists():
            shutil.copyfile(file, blob)
        link = snapshot / file.name
        if not link.exists():
            os.symlink(os.path.relpath(blob, snapshot), link)
    ref = repo_dir / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    return commit


def hub_routes(repo_id, revisions, missing=()):
    """Routes of a fake Hub endpoint serving ``revisions = {revision: (commit, folder)}`` of ``repo_id``;
    the revisions ``missing`` are answered as the Hub answers an unknown revision."""
    routes = {f"/api/models/{repo_id}/revision/{rev}": (404, {"X-Error-Code": "RevisionNotFound"},
                                                         b'{"error": "Invalid rev id"}') for rev in missing}
    for revision, (commit, folder) in revisions.items():
        info = json.dumps({"id": repo_id, "modelId": repo_id, "sha": commit, "private": False}).encode()
        for rev in (revision, commit):
            routes[f"/api/models/{repo_id}/revision/{rev}"] = info
        for file in Path(folder).iterdir():
            resolve = f"/{repo_id}/resolve/{commit}/{file.name}"
            if file.suffix == ".safetensors":
                routes[resolve] = (302, {"Location": f"/cdn/{commit}/{file.name}"}, b"")
                routes[f"/cdn/{commit}/{file.name}"] = file
            else:
                routes[resolve] = file
    return routes


def use_hub_endpoint(monkeypatch, constants, url):
    """Point huggingface_hub (its ``constants`` module) at ``url`` as HF_ENDPOINT would; its URL template is
    fixed at import, so both are patched (``monkeypatch``: pytest's, undone after the test)."""
    template = constants.HUGGINGFACE_CO_URL_TEMPLATE.replace(constants.ENDPOINT, url)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
