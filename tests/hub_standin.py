"""A local stand-in for the Hugging Face Hub, for tests: a real HTTP server on 127.0.0.1 that the
real ``huggingface_hub`` client talks to through ``HF_ENDPOINT``. Nothing leaves the machine.

It answers what the client's download path asks for (read from huggingface_hub 2.4's
``file_download.py``, ``_snapshot_download.py``, ``hf_api.py`` and ``utils/_http.py``):

* ``HEAD``/``GET /{repo_id}/resolve/{revision}/{path}``: the file, with ``ETag`` and
  ``X-Linked-Etag`` (the SHA-256 of its content, as the Hub gives for files stored with LFS:
  the client names the cached blob after it), ``X-Repo-Commit`` (the commit the revision
  resolved to), ``Content-Length`` and ``X-Linked-Size``. Files are served directly, with no
  redirect to a CDN (the client only needs one for files stored elsewhere).
* ``GET /api/models/{repo_id}[/revision/{revision}]``: the repository's info (``id``, ``sha``,
  ``siblings``), and ``GET /api/models/{repo_id}/tree/{revision}``: its files (``path``,
  ``size``, ``oid``, ``lfs``), which ``snapshot_download`` lists.
* errors as the Hub sends them: an ``X-Error-Code`` header the client maps to an exception
  (``RepoNotFound`` with status 401, as the Hub answers for a repository that does not exist
  or is private and no valid token came; ``RevisionNotFound`` and ``EntryNotFound`` with 404).

A revision is a branch name or a full 40-hex commit sha. Every request is counted in
:attr:`HubStandin.requests` (``(method, path)``), so a test can assert that a resolution made
none.

The ``hub_standin`` fixture (import :func:`hub_standin_fixture` into a test module to use it)
starts one per test with a fresh ``HF_HOME`` under the test's
temporary folder. huggingface_hub reads its environment (``HF_ENDPOINT``, ``HF_HOME``,
``HF_HUB_OFFLINE``, ...) once, when it is imported, into ``huggingface_hub.constants``; the
fixture therefore sets the variables (for subprocesses) and also the constants they determine
in this process (:func:`use_hub_environment`), and puts both back after the test.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

import v2a.hub

#: what ``huggingface_hub`` puts in front of every LFS pointer it describes (its size in bytes)
_POINTER_SIZE = 134


def git_blob_id(data: bytes) -> str:
    """The git object id of a file's content (what the Hub calls a file's ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _Repo:
    """One repository: its commits (sha -> {path: content}), oldest first, and its branches."""

    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    token: str | None = None  # a private repository answers only requests bearing it

    def commit_of(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


class HubStandin:
    """The server and the repositories it holds (see the module's docstring)."""

    def __init__(self, *, monkeypatch: pytest.MonkeyPatch | None = None,
                 home: Path | None = None) -> None:
        self.monkeypatch, self.home = monkeypatch, home  # (the fixture's: see set_offline)
        self.repos: dict[str, _Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.write_tokens: set[str] = set()  # tokens that may create repos and commit (allow_writes)
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                standin._answer(self, body=False)

            def do_GET(self) -> None:
                standin._answer(self, body=True)

            def do_POST(self) -> None:  # uploads (v2a push): see "-- uploading" below
                standin._upload(self)

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """The URL ``HF_ENDPOINT`` is set to."""
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    # -- what a test puts on the Hub ------------------------------------------------------------

    def add_file(self, repo_id: str, path: str, data: bytes, *, branch: str = "main") -> str:
        """Commit ``data`` as ``path`` to ``branch`` of ``repo_id`` (both created when new): a new
        commit holding the branch's previous files plus this one. Returns the commit's sha."""
        with self._lock:
            repo = self.repos.setdefault(repo_id, _Repo())
            parent = repo.branches.get(branch)
            files = dict(repo.commits[parent]) if parent else {}
            files[path] = data
            sha = hashlib.sha1(json.dumps(
                [repo_id, parent, len(repo.commits), sorted((p, git_blob_id(d)) for p, d in files.items())]
            ).encode()).hexdigest()
            repo.commits[sha] = files
            repo.branches[branch] = sha
            return sha

    def commits(self, repo_id: str) -> list[str]:
        """The commit shas of ``repo_id``, oldest first."""
        return list(self.repos[repo_id].commits)

    def make_private(self, repo_id: str, *, token: str) -> None:
        """Answer requests for ``repo_id`` only when they bear ``token`` (``Authorization:
        Bearer <token>``), as the Hub does for a private repository."""
        self.repos[repo_id].token = token

    def stop(self) -> None:
        """Stop answering (the port then refuses connections: the Hub is unreachable)."""
        if self._thread.is_alive():
            self._http.shutdown()
            self._http.server_close()
            self._thread.join()

    def set_offline(self, offline: bool) -> None:
        """Set (``HF_HUB_OFFLINE=1``) or unset huggingface_hub's offline mode for the rest of
        the test (:func:`use_hub_environment`; needs the fixture's ``monkeypatch``)."""
        use_hub_environment(self.monkeypatch, HF_HUB_OFFLINE="1" if offline else None)

    def requests_since(self, count: int) -> list[tuple[str, str]]:
        """The requests made after the first ``count`` (``len(standin.requests)`` earlier)."""
        with self._lock:
            return self.requests[count:]

    # -- answering ------------------------------------------------------------------------------

    def _answer(self, handler: BaseHTTPRequestHandler, *, body: bool) -> None:
        path = urlsplit(handler.path).path
        with self._lock:
            self.requests.append((handler.command, path))
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[:2] == ["api", "models"]:  # the default branch's info
            self._api(handler, f"{parts[2]}/{parts[3]}", "revision", "main", "", body=body)
        elif len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] in (
                "revision", "tree"):
            repo_id, kind, revision = f"{parts[2]}/{parts[3]}", parts[4], unquote(parts[5])
            within = unquote("/".join(parts[6:]))
            self._api(handler, repo_id, kind, revision, within, body=body)
        elif len(parts) >= 5 and parts[2] == "resolve":
            repo_id, revision = f"{parts[0]}/{parts[1]}", unquote(parts[3])
            self._resolve(handler, repo_id, revision, unquote("/".join(parts[4:])), body=body)
        else:
            self._send(handler, 404, {}, b"no such route\n", body=body)

    def _commit(self, handler: BaseHTTPRequestHandler, repo_id: str, revision: str, *,
                body: bool) -> tuple[str, dict[str, bytes]] | None:
        """The commit ``revision`` names and its files, or None after sending the error."""
        repo = self.repos.get(repo_id)
        bearer = handler.headers.get("Authorization", "")
        if repo is None or (repo.token is not None and bearer != f"Bearer {repo.token}"):
            self._error(handler, 401, "RepoNotFound", "Repository not found", body=body)
            return None
        sha = repo.commit_of(revision)
        if sha is None:
            self._error(handler, 404, "RevisionNotFound", f"Invalid rev id: {revision}", body=body)
            return None
        return sha, repo.commits[sha]

    def _resolve(self, handler: BaseHTTPRequestHandler, repo_id: str, revision: str, path: str,
                 *, body: bool) -> None:
        found = self._commit(handler, repo_id, revision, body=body)
        if found is None:
            return
        sha, files = found
        if path not in files:
            self._error(handler, 404, "EntryNotFound", f"{path} does not exist on {revision}",
                        body=body, commit=sha)
            return
        data = files[path]
        digest = hashlib.sha256(data).hexdigest()
        headers = {"ETag": f'"{digest}"', "X-Linked-Etag": f'"{digest}"', "X-Repo-Commit": sha,
                   "X-Linked-Size": str(len(data)), "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        self._send(handler, 200, headers, data, body=body)

    def _api(self, handler: BaseHTTPRequestHandler, repo_id: str, kind: str, revision: str,
             within: str, *, body: bool) -> None:
        found = self._commit(handler, repo_id, revision, body=body)
        if found is None:
            return
        sha, files = found
        if kind == "revision":
            info = {"id": repo_id, "sha": sha, "private": self.repos[repo_id].token is not None,
                    "siblings": [{"rfilename": p} for p in sorted(files)]}
        else:
            prefix = f"{within}/" if within else ""
            info = [{"type": "file", "path": p, "size": len(d), "oid": git_blob_id(d),
                     "lfs": {"oid": hashlib.sha256(d).hexdigest(), "size": len(d),
                             "pointerSize": _POINTER_SIZE}}
                    for p, d in sorted(files.items()) if p.startswith(prefix)]
        self._send(handler, 200, {"Content-Type": "application/json", "X-Repo-Commit": sha},
                   json.dumps(info).encode(), body=body)

    def _error(self, handler: BaseHTTPRequestHandler, status: int, code: str, message: str, *,
               body: bool, commit: str | None = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message,
                   "Content-Type": "application/json"}
        if commit is not None:
            headers["X-Repo-Commit"] = commit
        self._send(handler, status, headers, json.dumps({"error": message}).encode(), body=body)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], data: bytes,
              *, body: bool) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    # -- uploading (v2a push) -------------------------------------------------------------------
    # What huggingface_hub 2.4's create_repo, create_branch and upload_folder send (hf_api.py,
    # _commit_api.py, _upload_pipeline.py): POST /api/repos/create; POST /api/validate-yaml (the
    # README's front matter); POST /api/models/{repo_id}/branch/{branch}; POST
    # /api/models/{repo_id}/preupload/{revision}, answered "regular" for every file so that its
    # content comes inline in the commit (no LFS or Xet upload); POST
    # /api/models/{repo_id}/commit/{revision}, an NDJSON body: a "header" line, then one "file"
    # (base64 content) or "deletedFile" line per operation. Writing needs a token of
    # allow_writes: none is a 401, another one a 403, as the Hub answers.

    def allow_writes(self, token: str) -> None:
        """Let requests bearing ``token`` create repositories and commit to them."""
        self.write_tokens.add(token)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of ``repo_id`` at ``revision`` (a branch or a commit)."""
        repo = self.repos[repo_id]
        return dict(repo.commits[repo.commit_of(revision)])

    def _upload(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        with self._lock:
            self.requests.append((handler.command, path))
        data = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        bearer = handler.headers.get("Authorization", "").removeprefix("Bearer ")
        if path == "/api/validate-yaml":
            return self._send(handler, 200, {"Content-Type": "application/json"},
                              json.dumps({"errors": [], "warnings": []}).encode(), body=True)
        if not bearer:
            return self._error(handler, 401, "", "Invalid credentials in Authorization header",
                               body=True)
        if bearer not in self.write_tokens:
            return self._error(handler, 403, "", "You don't have the rights to write to this "
                               "repository", body=True)
        parts = path.strip("/").split("/")
        if path == "/api/repos/create":
            return self._create_repo(handler, json.loads(data), bearer)
        if len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] in (
                "preupload", "commit", "branch"):
            repo_id, kind, revision = f"{parts[2]}/{parts[3]}", parts[4], unquote(parts[5])
            if repo_id not in self.repos:
                return self._error(handler, 404, "RepoNotFound", "Repository not found", body=True)
            if kind == "branch":
                return self._create_branch(handler, repo_id, revision)
            if kind == "preupload":
                return self._preupload(handler, repo_id, revision, json.loads(data))
            return self._receive_commit(handler, repo_id, revision, data)
        self._send(handler, 404, {}, b"no such route\n", body=True)

    def _create_repo(self, handler: BaseHTTPRequestHandler, payload: dict, token: str) -> None:
        repo_id = f"{payload['organization']}/{payload['name']}"
        with self._lock:
            if repo_id in self.repos:  # the Hub's 409 names the repository too
                return self._send(handler, 409, {"Content-Type": "application/json"}, json.dumps(
                    {"error": "You already created this model repo",
                     "url": f"{self.endpoint}/{repo_id}"}).encode(), body=True)
            self.repos[repo_id] = _Repo(
                token=token if payload.get("visibility") == "private" else None)
        # the Hub starts a repository with one commit holding its .gitattributes
        self.add_file(repo_id, ".gitattributes",
                      b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
        self._send(handler, 200, {"Content-Type": "application/json"},
                   json.dumps({"url": f"{self.endpoint}/{repo_id}"}).encode(), body=True)

    def _create_branch(self, handler: BaseHTTPRequestHandler, repo_id: str, branch: str) -> None:
        repo = self.repos[repo_id]
        with self._lock:
            if branch in repo.branches:
                return self._error(handler, 409, "", f"Branch {branch} already exists", body=True)
            repo.branches[branch] = repo.branches["main"]
        self._send(handler, 200, {"Content-Type": "application/json"}, b"{}", body=True)

    def _preupload(self, handler: BaseHTTPRequestHandler, repo_id: str, revision: str,
                   payload: dict) -> None:
        repo = self.repos[repo_id]
        sha = repo.commit_of(revision)
        current = repo.commits.get(sha, {}) if sha else {}
        answer = {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                             "oid": git_blob_id(current[f["path"]]) if f["path"] in current
                             else None} for f in payload["files"]]}
        self._send(handler, 200, {"Content-Type": "application/json"},
                   json.dumps(answer).encode(), body=True)

    def _receive_commit(self, handler: BaseHTTPRequestHandler, repo_id: str, branch: str,
                        data: bytes) -> None:
        repo = self.repos[repo_id]
        if branch not in repo.branches:
            return self._error(handler, 404, "RevisionNotFound", f"Invalid rev id: {branch}",
                               body=True)
        lines = [json.loads(line) for line in data.splitlines() if line.strip()]
        with self._lock:
            parent = repo.branches[branch]
            files = dict(repo.commits[parent])
            for line in lines:
                if line["key"] == "file":
                    files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
                elif line["key"] == "deletedFile":
                    files.pop(line["value"]["path"], None)
                elif line["key"] != "header":
                    return self._error(handler, 400, "", f"the stand-in takes no {line['key']} "
                                       "(it answers preupload with regular)", body=True)
            blobs = sorted((p, git_blob_id(d)) for p, d in files.items())
            sha = hashlib.sha1(json.dumps([repo_id, parent, len(repo.commits), blobs]).encode()
                               ).hexdigest()
            repo.commits[sha] = files
            repo.branches[branch] = sha
        self._send(handler, 200, {"Content-Type": "application/json"}, json.dumps(
            {"commitUrl": f"{self.endpoint}/{repo_id}/commit/{sha}", "commitOid": sha,
             "pullRequestUrl": None}).encode(), body=True)


def use_hub_environment(monkeypatch: pytest.MonkeyPatch, **variables: str | None) -> None:
    """Set (a str) or unset (None) environment variables of huggingface_hub, and the
    ``huggingface_hub.constants`` it derived from them when imported, in this process: the
    module's source is run afresh under the new environment and every constant that differs is
    set (through ``monkeypatch``, so the test's end puts it back)."""
    # imported first, so that what they read from the environment at import is this process's
    # own and is put back after the test (the module-level HfApi keeps the endpoint it began with)
    import huggingface_hub.constants
    import huggingface_hub.hf_api

    for name, value in variables.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    constants = huggingface_hub.constants
    spec = importlib.util.spec_from_file_location("_hub_constants_afresh", constants.__file__)
    fresh = types.ModuleType(spec.name)
    spec.loader.exec_module(fresh)
    for name, value in vars(fresh).items():
        if name.isupper() and getattr(constants, name, None) != value:
            monkeypatch.setattr(constants, name, value, raising=False)
    # the module-level client behind create_repo, upload_folder, ...
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", constants.ENDPOINT)


@pytest.fixture(name="hub_standin")
def hub_standin_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStandin]:
    """A :class:`HubStandin` that huggingface_hub talks to (``HF_ENDPOINT``), with its cache in
    a fresh ``HF_HOME`` (``tmp_path / "hf_home"``), no telemetry, no token and online
    (``HF_HUB_OFFLINE`` unset), and nothing resolved yet (:func:`v2a.hub.resolved_commits`).
    ``standin.set_offline(True)`` sets ``HF_HUB_OFFLINE=1``."""
    home = tmp_path / "hf_home"
    standin = HubStandin(monkeypatch=monkeypatch, home=home)
    monkeypatch.setattr(v2a.hub, "_RESOLVED", {})  # what this process resolved: this test's only
    monkeypatch.setattr(v2a.hub, "_WARNED", set())
    use_hub_environment(
        monkeypatch, HF_ENDPOINT=standin.endpoint, HF_HOME=str(home), HF_HUB_CACHE=None,
        HUGGINGFACE_HUB_CACHE=None, HF_HUB_OFFLINE=None, TRANSFORMERS_OFFLINE=None,
        HF_TOKEN=None, HUGGING_FACE_HUB_TOKEN=None, HF_TOKEN_PATH=None,
        HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_UPDATE_CHECK="1", NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1")
    try:
        yield standin
    finally:
        standin.stop()
