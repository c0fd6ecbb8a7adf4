"""Downloads: a file v2a fetches from a URL once, keeps in its cache, and checks by SHA-256.

The cache folder is ``$V2A_CACHE`` when set, else ``$XDG_CACHE_HOME/v2a``, else
``~/.cache/v2a`` (:func:`cache_folder`). A downloaded weights file is kept as

* ``<cache>/weights/<sha256>/<file name>`` when the SHA-256 its content must have was given
  (a pinned download), or
* ``<cache>/weights/url-<16 hex digits of the URL's SHA-256>/<file name>`` when it was not,

where the file name is the last part of the URL's path. Once there it is used as it is, with no
network (:func:`cached_download`).

A download (:func:`download`) is written to a temporary beside its final name
(:func:`v2a.files.atomic_output`) and hashed while it is written; it takes its final name only
when it is complete and, when pinned, when its SHA-256 is the pinned one. A file whose SHA-256
differs is removed, never kept, so whatever is in the cache under a SHA-256 has that SHA-256.
Two runs downloading the same file at once each write a temporary of their own, and whichever
renames last leaves one whole file. Every failure (a refused or cut-short transfer, no network,
another SHA-256) is a :class:`DownloadError` of one sentence naming the URL.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import urllib.error
import urllib.request
from os import environ
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from tqdm import tqdm

from v2a.errors import UserError
from v2a.files import atomic_output, remove_stale_temporaries
from v2a.log import warn

CACHE_ENV = "V2A_CACHE"
#: how long a connection may stay silent before the download counts as failed
TIMEOUT_SECONDS = 60
_BLOCK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DIGESTS: dict[tuple, str] = {}


class DownloadError(UserError):
    """A file that could not be downloaded, or whose content is not the one asked for."""


def cache_folder() -> Path:
    """Where v2a keeps what it downloads: ``$V2A_CACHE``, else ``$XDG_CACHE_HOME/v2a``, else
    ``~/.cache/v2a`` (it need not exist yet)."""
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV]).expanduser()
    if environ.get("XDG_CACHE_HOME"):
        return Path(environ["XDG_CACHE_HOME"]).expanduser() / "v2a"
    return Path("~/.cache/v2a").expanduser()


def is_sha256(text: str) -> bool:
    """Whether ``text`` is a SHA-256 as v2a writes it: 64 lower-case hexadecimal digits."""
    return bool(_SHA256.fullmatch(text))


def sha256_of_file(path: Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file (remembered per path, size and modification time, so a file
    is read once per process however often it is asked about)."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _DIGESTS:
        _DIGESTS[memo] = "sha256:" + sha256_of_file(path)
    return _DIGESTS[memo]


def file_name_of(url: str) -> str:
    """The name a download from ``url`` is kept under: the last part of its path, with any
    character other than letters, digits and ``._=+-`` made ``_`` (``download`` if none is
    left). It never starts with a dot, so it is never hidden nor taken for a temporary."""
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    name = re.sub(r"[^A-Za-z0-9._=+-]", "_", name).lstrip(".")
    return name or "download"


def cache_path(url: str, sha256: str | None) -> Path:
    """Where the download of ``url`` (pinned to ``sha256``, or not) is kept in the cache."""
    entry = sha256 or "url-" + hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return cache_folder() / "weights" / entry / file_name_of(url)


def cached_download(url: str, sha256: str | None = None) -> Path | None:
    """The cached download of ``url`` (pinned to ``sha256``, or not), or None when it has not
    been downloaded yet; never uses the network."""
    path = cache_path(url, sha256)
    return path if path.is_file() else None


def download(url: str, *, sha256: str | None = None, what: str = "the file") -> Path:
    """The local copy of ``url``: the cached one (:func:`cached_download`), else a fresh download
    into the cache with a progress bar, checked against ``sha256`` when given (a mismatch is a
    :class:`DownloadError` and leaves nothing in the cache). Without ``sha256`` a warning names
    the SHA-256 the download has and how to pin it. ``what`` names the file in messages."""
    found = cached_download(url, sha256)
    if found is not None:
        return found
    target = cache_path(url, sha256)
    got = download_to(url, target, sha256=sha256, what=what)
    if sha256 is None:
        warn(f"{what} was downloaded from {url} without a sha256 to check it by (its SHA-256 "
             f"is {got}); pin it by writing the weights value as '{url} sha256:{got}'")
    return target


def download_to(url: str, target: Path, *, sha256: str | None = None, what: str = "the file") -> str:
    """Download ``url`` to ``target`` (its folder is made) with a progress bar; returns the
    file's SHA-256. The file appears under its name only once it is whole and matches
    ``sha256`` when given (else a :class:`DownloadError`, and nothing is kept), so a download
    that is killed or cut leaves no partial file where a library would take it for the real one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent)  # what killed downloads left
    with atomic_output(target) as tmp:
        with open(tmp, "wb") as out:
            got = _fetch(url, out, what=what, name=target.name)
        if sha256 is not None and got != sha256:
            raise DownloadError(
                f"{what} downloaded from {url} has SHA-256 {got}, not the pinned {sha256}, so it "
                "was not kept; check the URL and the sha256 in the weights value")
    return got


def _unreachable(url: str, what: str, reason: str) -> DownloadError:
    return DownloadError(
        f"could not download {what} from {url} ({reason}); check the URL and the network, or "
        "download the file on a machine with internet and give its local path")


def _reason(exc: BaseException) -> str:
    """What went wrong with a transfer, in a few words."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"the server answered HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror
                   else exc.reason)
    if isinstance(exc, TimeoutError):
        return f"no answer for {TIMEOUT_SECONDS} s"
    return str(exc) or type(exc).__name__


def _fetch(url: str, out: BinaryIO, *, what: str, name: str) -> str:
    """Write what ``url`` serves to ``out``, with a progress bar; returns its SHA-256. A failure
    of the transfer is a :class:`DownloadError`; one of writing ``out`` stays the ``OSError``
    it is."""
    request = urllib.request.Request(url, headers={"User-Agent": "v2a"})
    h, received = hashlib.sha256(), 0
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _unreachable(url, what, _reason(exc)) from None
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
                  desc=f"downloading {name}", disable=None) as bar:
            while True:
                try:
                    block = response.read(_BLOCK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _unreachable(url, what, _reason(exc)) from None
                if not block:
                    break
                out.write(block)
                h.update(block)
                received += len(block)
                bar.update(len(block))
    if total is not None and received != total:
        raise _unreachable(url, what, f"the transfer was cut short: {received} of {total} bytes")
    return h.hexdigest()
