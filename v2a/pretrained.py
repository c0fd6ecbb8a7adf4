"""Published weights a plug-in's libraries download: what each file is, where it comes from, and
how to find it in (or fetch it into) that library's own cache.

A plug-in declares them with ``ComponentSpec.pretrained_files``: ``pretrained_files(config) ->
list[PretrainedFile]``, what building the component from ``config`` would download (``[]``
when it downloads nothing, e.g. ``weights: none``). ``v2a download`` reads these lists to fetch
everything a recipe needs ahead of time, and ``v2a download --check`` to tell, offline, what is
missing. Nothing here knows any particular model: the plug-ins fill in the facts, and the helpers
below cover the caches several libraries share (torch.hub's checkpoint folder, the Hugging Face
Hub's cache).

Building the list must not touch the network (it may import the plug-in's library, to read the
library's own record of its published files): ``find`` and ``fetch`` are called later, by the
command.
"""

from __future__ import annotations

import http.client
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from v2a.downloads import DownloadError, sha256_of_file
from v2a.weights import PRETRAINED, WeightsError, load_trained

#: A published checksum: a whole SHA-256, or the leading hex digits of one that a publisher
#: pins (torch.hub's ``name-<hex>.ext`` file names, open_clip's URLs), at least 8 digits.
_CHECKSUM = re.compile(r"[0-9a-f]{8,64}")


@dataclass(frozen=True, kw_only=True)
class PretrainedFile:
    """One published file a component's library downloads.

    Args:
        what: the file in words (``"DAC 44 kHz codec weights"``).
        source: where it comes from: a URL, a Hub ``repo/file``, a library's name for it
            (``"torchvision S3D_Weights.KINETICS400_V1"``).
        size: its size in bytes as the publisher's listing gives it (to that listing's
            precision: torchvision lists MiB to three decimals), else None.
        sha256: the SHA-256 (lower-case hex) its content must have, or the leading digits of it
            that the publisher pins (8 to 64 hex digits, see :func:`checksum_matches`); None
            when none is published.
        licence: the licence of the weights as far as one can tell (``"unknown"`` otherwise).
        find: ``find() -> Path | None``: the file in the library's own cache, or None; never
            uses the network. (A whole model a library loads from a folder is that folder.)
        fetch: ``fetch() -> Path``: the library's own download into its cache (with its
            progress bar, where it has one); returns the file. A failure is a
            :class:`v2a.errors.UserError` of one sentence.
    """

    what: str
    source: str
    size: int | None
    sha256: str | None
    licence: str
    find: Callable[[], Path | None]
    fetch: Callable[[], Path]

    def __post_init__(self) -> None:
        if self.sha256 is not None and not _CHECKSUM.fullmatch(self.sha256):
            raise ValueError(f"the sha256 of {self.what} must be 8 to 64 lower-case hex digits, "
                             f"got {self.sha256!r}")
        if self.size is not None and self.size < 0:
            raise ValueError(f"the size of {self.what} must not be negative, got {self.size}")


def checksum_matches(file: PretrainedFile, path: Path) -> tuple[bool | None, str]:
    """Whether the file at ``path`` has ``file``'s published checksum (a whole SHA-256 must be
    equal, a published prefix must begin it), with the SHA-256 it has; ``None`` when nothing
    is published to compare with (the SHA-256 is then still computed, to be shown)."""
    got = sha256_of_file(path)
    if file.sha256 is None:
        return None, got
    return got.startswith(file.sha256), got


# -- torch.hub's checkpoint folder ----------------------------------------------------------------


def torch_hub_folder() -> Path:
    """The folder ``torch.hub.load_state_dict_from_url`` keeps its downloads in
    (``<torch.hub.get_dir()>/checkpoints``: ``$TORCH_HOME/hub/checkpoints`` by default)."""
    import torch.hub  # declaring files needs no torch; finding them in torch.hub's folder does
    return Path(torch.hub.get_dir()) / "checkpoints"


def torch_hub_name_hash(url: str) -> str | None:
    """The SHA-256 prefix torch.hub checks a download by (``check_hash=True``): the hex digits
    after the last ``-`` of the URL's file name (``encodec_24khz-d7cc33bc.th`` → ``d7cc33bc``);
    None when the name carries none."""
    import torch.hub
    match = torch.hub.HASH_REGEX.search(os.path.basename(urlsplit(url).path))
    return match.group(1) if match and _CHECKSUM.fullmatch(match.group(1)) else None


def torch_hub_file(*, what: str, url: str, licence: str, check_hash: bool,
                   size: int | None = None, sha256: str | None = None,
                   source: str | None = None) -> PretrainedFile:
    """A file a plug-in loads with ``torch.hub.load_state_dict_from_url(url, check_hash=...)``:
    found in torch.hub's checkpoint folder under the URL's file name, fetched with torch.hub's
    own download (its progress bar). With ``check_hash`` the SHA-256 prefix in the file name is
    the published checksum (and torch.hub checks it too); ``sha256`` gives one otherwise."""
    name = os.path.basename(urlsplit(url).path)
    prefix = torch_hub_name_hash(url) if check_hash else None

    def find() -> Path | None:
        path = torch_hub_folder() / name
        return path if path.is_file() else None

    def fetch() -> Path:
        path = torch_hub_folder() / name
        if not path.is_file():
            import torch.hub
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix, progress=True)
            except (OSError, RuntimeError, http.client.HTTPException) as exc:
                # no network, a refused or cut transfer, or torch.hub's own hash check
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise DownloadError(f"torch.hub could not download {what} from {url} ({reason}); "
                                    "check the network, or download the file elsewhere and give "
                                    "its path as the weights option") from None
        return path

    return PretrainedFile(what=what, source=source or url, size=size, sha256=sha256 or prefix,
                          licence=licence, find=find, fetch=fetch)


# -- the Hugging Face Hub's cache -----------------------------------------------------------------


def hub_cached(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """``repo_id``'s ``filename`` in the Hugging Face Hub cache (``HF_HOME``/``HF_HUB_CACHE``),
    as ``huggingface_hub.try_to_load_from_cache`` finds it; None when it is not there (or when
    huggingface_hub is not installed); never uses the network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def hub_file(*, what: str, repo_id: str, filenames: Sequence[str], licence: str,
             fetch: Callable[[], Path], revision: str | None = None, size: int | None = None,
             sha256: str | None = None) -> PretrainedFile:
    """A file a plug-in's library takes from the Hugging Face Hub, found in the Hub cache under
    the first of ``filenames`` there (a library that prefers a ``.safetensors`` twin and falls
    back to a ``.bin`` lists both), fetched with ``fetch`` (the library's own download)."""
    names = tuple(filenames)
    if not names:
        raise ValueError(f"hub_file({what!r}) needs at least one file name")

    def find() -> Path | None:
        return next((p for n in names if (p := hub_cached(repo_id, n, revision)) is not None), None)

    shown = names[0] if len(names) == 1 else " or ".join(names)
    at = f"@{revision}" if revision else ""
    return PretrainedFile(what=what, source=f"Hugging Face Hub {repo_id}{at}: {shown}", size=size,
                          sha256=sha256, licence=licence, find=find, fetch=fetch)



def hub_model_folder(*, what: str, repo_id: str, licence: str, load: Callable[[], object],
                     weights_files: Sequence[str] = ("model.safetensors",
                                                     "model.safetensors.index.json",
                                                     "pytorch_model.bin"),
                     revision: str | None = None) -> PretrainedFile:
    """A whole model repository a library loads from the Hugging Face Hub with
    ``from_pretrained`` (its config, weights and tokenizer files): found as the Hub cache's
    snapshot folder when it holds ``config.json`` and one of ``weights_files`` (a tokenizer or
    a shard missing beside them shows only when the library loads the folder), fetched by
    ``load()``: the plug-in's own loading through the library's ``from_pretrained`` (with its
    progress bars), which downloads exactly the files the plug-in reads. Neither size nor
    checksum is known offline."""

    def find() -> Path | None:
        config = hub_cached(repo_id, "config.json", revision)
        if config is None:
            return None
        if not any(hub_cached(repo_id, name, revision) for name in weights_files):
            return None
        return config.parent

    def fetch() -> Path:
        load()
        found = find()
        if found is None:
            raise WeightsError(f"{what} was loaded, but it is not in the Hugging Face cache "
                               "(was it loaded from elsewhere?); check HF_HOME and HF_HUB_CACHE")
        return found

    at = f"@{revision}" if revision else ""
    return PretrainedFile(what=what, source=f"Hugging Face Hub {repo_id}{at} (the whole model)",
                          size=None, sha256=None, licence=licence, find=find, fetch=fetch)


def nothing_to_download(weights: str, refuse: Callable[[str], object]) -> list[PretrainedFile]:
    """``pretrained_files`` of a plug-in whose published weights no library downloads: ``[]``
    (a local file or ``none`` has nothing to fetch), except that ``weights: pretrained`` is
    refused as building refuses it: ``refuse(weights)`` is the plug-in's own check, which
    raises that :class:`v2a.weights.WeightsError`."""
    if weights.strip().lower() == PRETRAINED:
        refuse(weights)
        raise AssertionError(f"{refuse!r} accepted weights {weights!r}; it must refuse them")
    return []


def trained_with_v2a(what: str) -> Callable[[Any], list[PretrainedFile]]:
    """``pretrained_files`` of a component whose weights v2a itself trains (``v2a train``
    exports them): none is published, so no config downloads anything, and ``weights:
    pretrained`` is refused with :func:`v2a.weights.load_trained`'s sentence for ``what``, as
    building refuses it."""
    def declare(config: Any) -> list[PretrainedFile]:
        import torch
        return nothing_to_download(config.weights, lambda weights: load_trained(
            torch.nn.Module(), weights, what=what))  # it refuses `pretrained` before loading

    return declare
