"""``v2a push DIR --repo OWNER/NAME``: a model folder uploaded to the Hugging Face Hub with
``huggingface_hub`` (``create_repo(exist_ok=True)``, then ``upload_folder``), after
:func:`~v2a.export.folder.check_model_folder` has found it complete. Tokens are huggingface_hub's
(``HF_TOKEN``, ``hf auth login``), and so is the endpoint (``HF_ENDPOINT``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from v2a.export.folder import check_model_folder
from v2a.hub import EXTRA, HubError, parse_hub_ref


@dataclass(frozen=True, kw_only=True)
class Pushed:
    """A push's commit: the repository, the branch, the commit sha and its page."""

    repo_id: str
    revision: str
    commit: str
    url: str


def _library() -> ModuleType:
    try:
        import huggingface_hub  # deferred: an optional dependency (v2a[hub])
        import huggingface_hub.constants  # deferred: (the package imports it lazily)
        import huggingface_hub.errors  # deferred: (the package imports it lazily)
    except ImportError:
        raise HubError(f"v2a push needs huggingface_hub, which is not installed: install "
                       f"{EXTRA} (pip install '{EXTRA}')") from None
    return huggingface_hub


def _refusal(exc: Exception, repo_id: str, endpoint: str) -> HubError:
    """One sentence for a failed upload request."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status == 401:
        return HubError(f"the Hub ({endpoint}) did not accept the token for {repo_id}: log in "
                        "again with `hf auth login`, or set HF_TOKEN to a valid token")
    if status == 403:
        return HubError(f"the token may not write to {repo_id} on the Hub ({endpoint}): use a "
                        "token with write access to that owner (a 'write' or fine-grained token)")
    text = str(exc).strip().splitlines()
    reason = text[0] if text else type(exc).__name__
    if status is not None:
        return HubError(f"the Hub ({endpoint}) refused the push to {repo_id} with HTTP status "
                        f"{status}: {reason}")
    return HubError(f"the Hub ({endpoint}) could not be reached to push to {repo_id} ({reason}): "
                    "check the network (and HF_ENDPOINT)")


def push_folder(folder: str | Path, repo_id: str, *, private: bool = False,
                revision: str | None = None, message: str | None = None) -> Pushed:
    """Upload the model folder ``folder`` to the Hub model repository ``repo_id`` (created when
    new; ``private`` applies then), on branch ``revision`` (created from the default branch when
    new; default ``main``), as one commit with ``message``. The folder is checked first, and a
    missing token is refused, before anything is sent. Every failure is one sentence."""
    folder = Path(folder)
    ref = parse_hub_ref(f"hf://{repo_id}", need_path=False)
    if ref.path is not None or ref.revision is not None:
        raise HubError(f"--repo takes OWNER/NAME, not {repo_id!r}; give the branch with "
                       "--revision")
    check_model_folder(folder)
    hub = _library()
    endpoint = hub.constants.ENDPOINT
    if hub.get_token() is None:
        raise HubError("no Hugging Face token is set, and the Hub takes uploads only with one: "
                       "log in with `hf auth login`, or set HF_TOKEN to a token with write "
                       "access")
    api = hub.HfApi()
    branch = revision or "main"
    errors = (hub.errors.HfHubHTTPError, OSError)
    try:
        api.create_repo(ref.repo_id, private=private, exist_ok=True, repo_type="model")
        if branch != "main":
            api.create_branch(ref.repo_id, branch=branch, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=ref.repo_id, revision=branch,
                                 commit_message=message or f"v2a push {folder.name}")
    except errors as exc:
        raise _refusal(exc, ref.repo_id, endpoint) from None
    except Exception as exc:
        if type(exc).__module__.split(".")[0] in ("httpx", "httpcore"):  # the network
            raise _refusal(exc, ref.repo_id, endpoint) from None
        raise
    return Pushed(repo_id=ref.repo_id, revision=branch, commit=str(info.oid),
                  url=str(info.commit_url))
