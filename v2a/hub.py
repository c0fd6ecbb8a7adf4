"""Files and folders on the Hugging Face Hub: ``hf://OWNER/REPO[/PATH][@REVISION]``.

A value such as ``hf://acme/v2a-tiny/fuser.safetensors@3f1c...`` names the file ``PATH`` of the
model repository ``OWNER/REPO`` at ``REVISION`` (a branch, a tag, or a full 40-hex commit sha;
without one, the repository's default branch). It is fetched with ``huggingface_hub`` (the
extra ``v2a[hub]``), so its cache (``HF_HOME``, ``HF_HUB_CACHE``), its offline mode
(``HF_HUB_OFFLINE=1``), its endpoint (``HF_ENDPOINT``) and its tokens (``HF_TOKEN``, ``hf auth
login``) all apply.

* Pinned to a commit, a file already in the cache is used with no network at all.
* Otherwise the Hub is asked which commit the revision is now (so a moved branch is noticed);
  the value gets a warning (once per process for each commit it resolves to) naming that
  commit and how to pin it. When the
  Hub cannot be reached (or ``HF_HUB_OFFLINE`` is set) the cached copy of the revision is used,
  saying so when the Hub was expected.
* Every failure is a :class:`HubError` of one sentence: no such repository (or a private one and
  no token), no such file, no such revision, offline and not cached, the Hub unreachable.

Every value resolved in this process is remembered with its commit (:func:`resolved_commits`),
so a run folder can record exactly which weights it used.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType

from v2a.downloads import file_digest
from v2a.errors import RecipeError, UserError
from v2a.files import write_text_atomic
from v2a.log import warn

PREFIX = "hf://"
#: the extra that installs huggingface_hub
EXTRA = "v2a[hub]"
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: a Hub repository name part (owner or name): letters, digits, ``-``, ``_`` and ``.``
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REF = re.compile(rf"(?i:hf)://(?P<owner>{_NAME})/(?P<name>{_NAME})(?:/(?P<path>[^@\s]+))?"
                  r"(?:@(?P<revision>[^@\s]+))?")
_RESOLVED: dict[str, str] = {}
_RECORDING: list[dict[str, str]] = []  # the open recording_commits() blocks, innermost last
#: the file of a run folder that records the commits of its hf:// values
COMMITS_RECORD = "hub.json"
_WARNED: set[tuple[str, str]] = set()  # (value, commit): a moved branch is said again


class HubError(UserError):
    """A file or repository on the Hub that cannot be had (exit code 1: a run-time problem)."""


class HubRefError(RecipeError):
    """A malformed ``hf://`` value (exit code 2, like any other recipe error)."""


@dataclass(frozen=True)
class HubRef:
    """``hf://OWNER/REPO[/PATH][@REVISION]``: ``repo_id`` is ``OWNER/REPO``; ``path`` the file
    (or folder) inside it, None for the whole repository; ``revision`` None for the default
    branch (unpinned)."""

    repo_id: str
    path: str | None
    revision: str | None

    def __str__(self) -> str:
        path = f"/{self.path}" if self.path else ""
        revision = f"@{self.revision}" if self.revision else ""
        return f"{PREFIX}{self.repo_id}{path}{revision}"

    @property
    def is_pinned(self) -> bool:
        """Whether the revision is a full commit sha (the content can never change)."""
        return self.revision is not None and bool(_COMMIT.fullmatch(self.revision))

    def pinned(self, commit: str) -> HubRef:
        """The same value pinned to ``commit``."""
        return HubRef(repo_id=self.repo_id, path=self.path, revision=commit)


def is_hub_value(value: str) -> bool:
    """Whether ``value`` is an ``hf://`` value (well formed or not)."""
    return value.strip().lower().startswith(PREFIX)


def parse_hub_ref(value: str, *, need_path: bool) -> HubRef:
    """The :class:`HubRef` ``value`` spells, or a :class:`HubRefError` saying what is wrong
    with it; with ``need_path``, a value naming a whole repository (no file) is refused."""
    text = value.strip()
    match = _REF.fullmatch(text)
    example = "hf://OWNER/REPO/FILE[@REVISION]" if need_path else "hf://OWNER/REPO[@REVISION]"
    if match is None:
        raise HubRefError(f"{value!r} is not a Hugging Face Hub value: write it as {example}, "
                          "where OWNER/REPO is the repository (letters, digits, '-', '_', '.')")
    path = match["path"]
    if path is not None:
        parts = path.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise HubRefError(f"the file path in {value!r} ({path!r}) has an empty, '.' or '..' "
                              "part; give the file's path inside the repository, such as "
                              "weights/model.safetensors")
    if need_path and path is None:
        raise HubRefError(f"{value!r} names a whole repository, not a file: add the file's path "
                          f"inside it ({example})")
    return HubRef(repo_id=f"{match['owner']}/{match['name']}", path=path,
                  revision=match["revision"])


def resolved_commits() -> dict[str, str]:
    """Every ``hf://`` value resolved in this process (as written) -> the commit it resolved to."""
    return dict(_RESOLVED)


@contextmanager
def recording_commits() -> Iterator[dict[str, str]]:
    """A dict that collects every ``hf://`` value resolved inside the block -> its commit."""
    commits: dict[str, str] = {}
    _RECORDING.append(commits)
    try:
        yield commits
    finally:
        _RECORDING.remove(commits)


def record_commits(folder: Path, commits: dict[str, str]) -> None:
    """Write ``<folder>/hub.json``, ``{"weights_commits": {value: commit}}``, the commits the
    ``hf://`` values of a run resolved to (nothing when it has none). An earlier record (a
    resumed run) is kept: its values stay, new ones are added, and a value that now resolves to
    another commit (a branch that moved) is warned about, the earlier commits kept under
    ``"earlier_commits"``."""
    path = Path(folder) / COMMITS_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    recorded = dict(record.get("weights_commits") or {})
    earlier = {k: list(v) for k, v in (record.get("earlier_commits") or {}).items()}
    for value, commit in commits.items():
        before = recorded.get(value)
        if before is not None and before != commit:
            warn(f"{value} resolved to commit {commit}, but this run began with commit {before} "
                 f"(it moved); pin {parse_hub_ref(value, need_path=False).pinned(before)} "
                 "to go on with the weights it began with")
            earlier.setdefault(value, []).append(before)
        recorded[value] = commit
    if not recorded:
        return
    record = {"weights_commits": recorded, **({"earlier_commits": earlier} if earlier else {})}
    write_text_atomic(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def _library() -> ModuleType:
    """huggingface_hub, or a :class:`HubError` saying to install it."""
    try:
        import huggingface_hub  # deferred: an optional dependency (v2a[hub])
        import huggingface_hub.constants  # deferred: (a lazy package: its submodules, too)
        import huggingface_hub.errors  # deferred: (as above)
    except ImportError:
        raise HubError(f"hf:// values need huggingface_hub, which is not installed: install "
                       f"{EXTRA} (pip install '{EXTRA}')") from None
    return huggingface_hub


def _cache_folder() -> str:
    return _library().constants.HF_HUB_CACHE


def _offline() -> bool:
    return bool(_library().constants.HF_HUB_OFFLINE)


def cached_hub_file(ref: HubRef, *, sha256: str | None = None) -> Path | None:
    """The file ``ref`` names in the Hugging Face cache, with no network, or None (not there,
    not of the content ``sha256`` pins when given, or huggingface_hub not installed). An
    unpinned value gives the copy of the commit its revision last resolved to."""
    try:
        hub = _library()
    except HubError:
        return None
    found = hub.try_to_load_from_cache(ref.repo_id, ref.path, revision=ref.revision or "main")
    if not isinstance(found, str) or (sha256 is not None and _sha256(Path(found)) != sha256):
        return None
    return Path(found)


def hub_file(ref: HubRef, *, what: str) -> tuple[Path, str]:
    """The local file ``ref`` names, downloaded into the Hugging Face cache when it is not there
    yet, and the commit it comes from (see the module's docstring for when the Hub is asked).
    ``what`` names the file in messages (e.g. "the weights file of the fuser")."""
    if ref.path is None:
        raise HubRefError(f"{ref} names a whole repository, not a file, for {what}")
    hub = _library()
    depth = len(PurePosixPath(ref.path).parts)
    if ref.is_pinned:
        try:
            found = hub.hf_hub_download(ref.repo_id, ref.path, revision=ref.revision,
                                        local_files_only=True)
        except hub.errors.LocalEntryNotFoundError:
            _check_reachable(ref, what)
            found = _ask_hub(ref, what, lambda: hub.hf_hub_download(ref.repo_id, ref.path,
                                                                    revision=ref.revision))
        path = Path(found)
        commit = _commit_of(path, depth=depth)
    else:
        reachable, unreachable = _look_up_revision(ref, what)
        path = Path(_ask_hub(ref, what, lambda: hub.hf_hub_download(
            ref.repo_id, ref.path, revision=ref.revision, local_files_only=not reachable),
            unreachable=unreachable))
        commit = _commit_of(path, depth=depth)
        _say_cached(ref, commit, unreachable)
    _remember(ref, commit)
    return path, commit


def verified_hub_file(ref: HubRef, *, sha256: str | None, what: str) -> Path:
    """:func:`hub_file`, refused (a :class:`HubError`, nothing returned) when ``sha256`` is given
    and the file's content has another. The Hugging Face cache keeps a file under the SHA-256
    the Hub gave for it: a copy whose content has another is damaged, removed and fetched again
    once; one that has it is the Hub's own file, kept in the cache (and never returned)."""
    path, commit = hub_file(ref, what=what)
    if sha256 is None or _sha256(path) == sha256:
        return path
    blob = path.resolve()
    if _SHA256.fullmatch(blob.name) and _sha256(path) != blob.name:  # damaged in the cache
        path.unlink()
        blob.unlink()
        path, commit = hub_file(ref, what=what)
    got = _sha256(path)
    if got == sha256:
        return path
    at = "" if ref.is_pinned else f" (commit {commit})"
    raise HubError(f"{ref}{at}, {what}, has SHA-256 {got}, not the pinned {sha256}; "
                   "nothing was loaded: pin the commit the sha256 belongs to "
                   "(hf://OWNER/REPO/FILE@COMMIT), or correct the sha256")


def _sha256(path: Path) -> str:
    return file_digest(path).removeprefix("sha256:")


def hub_snapshot(ref: HubRef, *, what: str, allow_patterns: list[str] | None = None
                 ) -> tuple[Path, str]:
    """A whole repository (a model folder) in the Hugging Face cache: the folder (the
    ``path`` inside it when ``ref`` has one) and the commit it comes from. ``allow_patterns``
    (fnmatch patterns of file paths) limits what is downloaded; a ``path`` alone limits it to
    that folder's files."""
    hub = _library()
    if allow_patterns is None and ref.path:
        allow_patterns = [f"{ref.path}/*"]

    def download(local_only: bool) -> str:
        return hub.snapshot_download(ref.repo_id, revision=ref.revision,
                                     allow_patterns=allow_patterns, local_files_only=local_only)

    if ref.is_pinned:
        try:
            found = download(True)
        except hub.errors.LocalEntryNotFoundError:
            _check_reachable(ref, what, whole_repo=True)
            found = _ask_hub(ref, what, lambda: download(False))
    else:
        reachable, unreachable = _look_up_revision(ref, what, whole_repo=True)
        found = _ask_hub(ref, what, lambda: download(not reachable), unreachable=unreachable)
    folder = Path(found)
    commit = _commit_of(folder / "_", depth=1)
    if not ref.is_pinned:
        _say_cached(ref, commit, unreachable)
    _remember(ref, commit)
    return (folder / ref.path if ref.path else folder), commit


# -- asking the Hub ------------------------------------------------------------------------------


def _look_up_revision(ref: HubRef, what: str, *, whole_repo: bool = False
                   ) -> tuple[bool, str | None]:
    """Ask the Hub about ``ref``'s revision as it is now (so that a moved branch is noticed, and
    a missing repository, revision or file is said before anything is downloaded):
    ``(True, None)`` when it answered; ``(False, None)`` when it is not to be asked
    (``HF_HUB_OFFLINE``); ``(False, reason)`` when it cannot be reached (the cache is then used,
    and :func:`_say_cached` says so)."""
    hub = _library()
    if _offline():
        return False, None

    def ask() -> None:
        if whole_repo:
            hub.HfApi().repo_info(ref.repo_id, revision=ref.revision)
        else:
            hub.get_hf_file_metadata(hub.hf_hub_url(ref.repo_id, ref.path, revision=ref.revision))

    try:
        _ask_hub(ref, what, ask, fall_back=False)
    except _Unreachable as exc:
        return False, exc.reason
    return True, None


def _check_reachable(ref: HubRef, what: str, *, whole_repo: bool = False) -> None:
    """A :class:`HubError` at once when the Hub is not to be asked or cannot be reached (what
    huggingface_hub would only find out after retrying for a while)."""
    reachable, unreachable = _look_up_revision(ref, what, whole_repo=whole_repo)
    if not reachable:
        raise _not_cached(ref, what, unreachable or "no connection")


def _say_cached(ref: HubRef, commit: str, unreachable: str | None) -> None:
    if unreachable is not None:
        warn(f"the Hub ({_library().constants.ENDPOINT}) could not be reached to check {ref} "
             f"({unreachable}); used the copy in the Hugging Face cache, from commit {commit}")


class _Unreachable(Exception):
    """The Hub could not be reached (``reason``: why, in a few words)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _network_errors(hub: ModuleType) -> tuple[type[BaseException], ...]:
    """What huggingface_hub raises when the Hub cannot be reached or does not answer as one."""
    errors: tuple[type[BaseException], ...] = (hub.errors.OfflineModeIsEnabled,
                                               hub.errors.FileMetadataError)
    for client in ("httpx2", "httpx"):  # huggingface_hub 2 uses httpx2, 1 httpx
        try:
            module = importlib.import_module(client)  # huggingface_hub's own HTTP client
        except ImportError:
            continue
        errors += (module.TransportError,)
    return errors


def _ask_hub(ref: HubRef, what: str, call, *, fall_back: bool = True,
             unreachable: str | None = None):
    """``call()``, with huggingface_hub's failures turned into one sentence each (a
    :class:`HubError`); with ``fall_back`` False, an unreachable Hub is an
    :class:`_Unreachable` for the caller to fall back on the cache. ``unreachable``: why the
    Hub could not be reached, when it was tried before and ``call`` looks in the cache only."""
    hub = _library()
    errors = hub.errors
    revision = f"revision {ref.revision!r}" if ref.revision else "its default branch"
    try:
        return call()
    except errors.GatedRepoError:
        raise HubError(f"the Hub repository {ref.repo_id} (for {what}) is gated: accept its "
                       "conditions on its page, then log in with `hf auth login` or set "
                       "HF_TOKEN") from None
    except errors.RepositoryNotFoundError:
        raise HubError(f"the Hub has no repository {ref.repo_id} that this machine may read "
                       f"({ref}, for {what}): check its name, or for a private repository log "
                       "in with `hf auth login` or set HF_TOKEN") from None
    except errors.RevisionNotFoundError:
        raise HubError(f"the Hub repository {ref.repo_id} has no {revision} ({ref}, for "
                       f"{what}): give one of its branches, tags or full commit shas") from None
    except errors.RemoteEntryNotFoundError:
        raise HubError(f"the Hub repository {ref.repo_id} has no file {ref.path!r} at "
                       f"{revision} ({ref}, for {what}): check the path inside the "
                       "repository") from None
    except errors.LocalEntryNotFoundError as exc:
        cause = exc.__cause__  # what kept huggingface_hub from the Hub, when it tried
        reason = unreachable or (_first_line(cause) if cause is not None else "no connection")
        raise _not_cached(ref, what, reason) from None
    except errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status is not None and status < 500:
            raise HubError(f"the Hub refused {ref} (for {what}) with HTTP status {status} "
                           f"({_first_line(exc)})") from None
        if fall_back:
            raise HubError(_unreachable_sentence(ref, what, _first_line(exc))) from None
        raise _Unreachable(_first_line(exc)) from None
    except _network_errors(hub) as exc:
        if fall_back:
            raise HubError(_unreachable_sentence(ref, what, _first_line(exc))) from None
        raise _Unreachable(_first_line(exc)) from None


def _not_cached(ref: HubRef, what: str, reason: str) -> HubError:
    """The error for a file that is not in the cache and cannot be fetched: offline
    (``HF_HUB_OFFLINE``), or the Hub unreachable (``reason``: why)."""
    if _offline():
        return HubError(f"{ref} (for {what}) is not in the Hugging Face cache ({_cache_folder()}) "
                        "and HF_HUB_OFFLINE is set: fetch it first with `v2a download RECIPE`, or "
                        "unset HF_HUB_OFFLINE")
    return HubError(_unreachable_sentence(ref, what, reason))


def _unreachable_sentence(ref: HubRef, what: str, reason: str) -> str:
    return (f"the Hub ({_library().constants.ENDPOINT}) could not be reached for {ref} (for "
            f"{what}: {reason}) and it is not in the Hugging Face cache: check the network (and "
            "HF_ENDPOINT), or fetch it where there is one with `v2a download RECIPE` and copy "
            "the cache (HF_HOME)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _commit_of(path: Path, *, depth: int) -> str:
    """The commit of a file huggingface_hub returned from its cache: the cache keeps it as
    ``<repo folder>/snapshots/<commit>/<path in the repo>`` (``depth`` parts)."""
    snapshot = path.parents[depth - 1]
    if snapshot.parent.name != "snapshots" or not _COMMIT.fullmatch(snapshot.name):
        raise RuntimeError(f"huggingface_hub returned {path}, which is not in a snapshot folder "
                           "of its cache (<repo>/snapshots/<commit>/...)")
    return snapshot.name


def _remember(ref: HubRef, commit: str) -> None:
    """Record the commit ``ref`` resolved to, and warn (once per value and commit) when it is
    unpinned."""
    _RESOLVED[str(ref)] = commit
    for commits in _RECORDING:
        commits[str(ref)] = commit
    if not ref.is_pinned and (str(ref), commit) not in _WARNED:
        _WARNED.add((str(ref), commit))
        warn(f"{ref} is not pinned: it resolved to commit {commit}; pin it with "
             f"{ref.pinned(commit)}")

