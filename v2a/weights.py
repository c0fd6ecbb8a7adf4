"""Weights: where a component's parameters come from, loaded safely, saved atomically.

A component with pre-trained weights takes a ``weights`` option in its recipe:

* ``none``: random initialisation (tests, and anyone training from scratch);
* ``pretrained``: the library's own download-and-cache (DAC, open_clip, torchvision), which
  needs internet the first time;
* a file: a local path, a ``file://`` URL, an ``http://``/``https://`` URL that is downloaded
  once into v2a's cache (:mod:`v2a.downloads`), or ``hf://OWNER/REPO/PATH[@REVISION]``, a file
  on the Hugging Face Hub fetched into its cache (:mod:`v2a.hub`; an unpinned revision is
  warned about, naming the commit it resolved to); each optionally followed, after a space, by
  ``sha256:<64 hex digits>``, the SHA-256 the file's content must have (checked before anything
  is loaded; a URL without one is downloaded with a warning naming the SHA-256 it has).
  :func:`resolve_file` turns such a value into a local file, through one table of schemes.

A file is a ``.safetensors``, or a ``.pt``/``.pth``/``.ckpt`` that loads with
``torch.load(weights_only=True)``.

What a local file is comes from its first bytes, not its name (:func:`checkpoint_format`):
safetensors (an 8-byte header length, then a JSON header), a torch zip checkpoint (``PK\\x03\\x04``
holding ``*/data.pkl``), or a legacy torch pickle (pickle protocol 2 opening with torch's magic
number). Anything else is named for what it looks like (an image, a web page, a Git LFS pointer,
a plain pickle, ...) and never handed to an unpickler. A checkpoint that would run code when
unpickled is refused; a damaged one is called damaged; one whose tensors hold NaN or infinity is
refused naming the first such tensor (one pass of ``torch.isfinite`` over the tensors): such
weights only ever produce silence or noise. Every refusal is one sentence naming the file.
Parsing, resolving and sniffing need no torch (``v2a recipe check`` does them for every slot):
what loads, checks or saves tensors imports torch and safetensors itself.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import struct
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from v2a.downloads import cached_download, download, file_digest, is_sha256
from v2a.errors import UserError
from v2a.files import atomic_output
from v2a.hub import cached_hub_file, parse_hub_ref, verified_hub_file

if TYPE_CHECKING:
    from torch import Tensor, nn

NONE = "none"
PRETRAINED = "pretrained"

SAFETENSORS = "safetensors"
TORCH_ZIP = "torch zip"
TORCH_PICKLE = "torch pickle"
#: safetensors refuses headers above 100 MB; a length beyond that is no safetensors file
_MAX_SAFETENSORS_HEADER = 100_000_000
_SNIFF_BYTES = 4096


class WeightsError(UserError):
    """Weights that are missing, unreadable, unsafe or damaged."""


def is_random(weights: str | None) -> bool:
    return weights is None or weights.lower() == NONE


# -- where a weights file comes from ------------------------------------------------------------

#: how a weights value pins its file's content: ``LOCATION sha256:<64 hex digits>``
_PINNED = re.compile(r"(?P<location>.*\S)\s+(?i:sha256):(?P<sha256>\S*)", re.DOTALL)
_SCHEME = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
LOCAL_PATH = "path"


@dataclass(frozen=True, kw_only=True)
class WeightsSource:
    """A ``weights`` value that names a file: its ``location`` (a path or a URL), the
    ``sha256`` its content must have (None when not pinned), and the ``scheme`` that fetches
    it (:data:`LOCAL_PATH` for a path, else the URL's scheme, lower-case)."""

    location: str
    sha256: str | None
    scheme: str

    @property
    def is_local(self) -> bool:
        """Whether the file is on this machine (a path or a ``file://`` URL): nothing to fetch."""
        return _SCHEMES[self.scheme].fetch is None

    @property
    def file_name(self) -> str:
        """The name of the file (the last part of its path, whatever the scheme)."""
        if self.scheme == "hf":
            return PurePosixPath(parse_hub_ref(self.location, need_path=True).path).name
        if self.scheme == LOCAL_PATH:
            return Path(self.location).name
        return PurePosixPath(urlsplit(self.location).path).name

    def local_path(self) -> Path:
        """The path of a local file (:attr:`is_local`), ``~`` expanded."""
        if self.scheme == "file":
            return Path(url2pathname(urlsplit(self.location).path))
        return Path(self.location).expanduser()


@dataclass(frozen=True, kw_only=True)
class _Scheme:
    """How a kind of location becomes a local file: ``find`` gives the file when it is already
    here (no network) or None; ``fetch`` downloads it (None for local files: nothing to fetch);
    ``checks_pin`` says whether ``find`` and ``fetch`` only ever give a file of the pinned
    SHA-256 (else :func:`resolve_file` checks it); ``found_is_current`` whether a file ``find``
    gives is the one ``fetch`` would give (else :func:`resolve_file` always calls ``fetch``,
    which uses what is here when it can tell that it is current: an ``hf://`` branch may have
    moved since it was cached)."""

    find: Callable[[WeightsSource], Path | None]
    fetch: Callable[[WeightsSource, str], Path] | None
    checks_pin: bool
    found_is_current: bool = True


def _existing(source: WeightsSource) -> Path | None:
    path = source.local_path()
    return path if path.is_file() else None


def _cached_download(source: WeightsSource) -> Path | None:
    return cached_download(source.location, source.sha256)


def _download(source: WeightsSource, what: str) -> Path:
    return download(source.location, sha256=source.sha256, what=what)


def _cached_hub_file(source: WeightsSource) -> Path | None:
    return cached_hub_file(parse_hub_ref(source.location, need_path=True), sha256=source.sha256)


def _hub_file(source: WeightsSource, what: str) -> Path:
    return verified_hub_file(parse_hub_ref(source.location, need_path=True),
                             sha256=source.sha256, what=what)


_LOCAL = _Scheme(find=_existing, fetch=None, checks_pin=False)
_WEB = _Scheme(find=_cached_download, fetch=_download, checks_pin=True)
_HUB = _Scheme(find=_cached_hub_file, fetch=_hub_file, checks_pin=True, found_is_current=False)
#: every kind of location a weights value may name
_SCHEMES = {LOCAL_PATH: _LOCAL, "file": _LOCAL, "http": _WEB, "https": _WEB, "hf": _HUB}


def parse_weights(value: str) -> WeightsSource:
    """The file a ``weights`` value names: ``LOCATION`` or ``LOCATION sha256:<64 hex digits>``,
    where LOCATION is a path or a URL of a scheme v2a fetches (``http``, ``https``, ``file``,
    ``hf``). A malformed SHA-256, an unknown scheme or a ``file://`` URL of another host is a
    :class:`WeightsError`; a malformed ``hf://`` value a :class:`v2a.hub.HubRefError`."""
    location, sha256 = value.strip(), None
    pinned = _PINNED.fullmatch(location)
    if pinned:
        location, sha256 = pinned["location"], pinned["sha256"].lower()
        if not is_sha256(sha256):
            raise WeightsError(f"the sha256 in the weights value {value!r} is not 64 hexadecimal "
                               f"digits ({pinned['sha256']!r}); copy the whole SHA-256 of the file")
    scheme = _SCHEME.match(location)
    if scheme is None:
        return WeightsSource(location=location, sha256=sha256, scheme=LOCAL_PATH)
    name = scheme["scheme"].lower()
    if name not in _SCHEMES or name == LOCAL_PATH:
        known = ", ".join(f"{s}://" for s in _SCHEMES if s != LOCAL_PATH)
        raise WeightsError(f"the weights value {value!r} is a URL with the scheme {name}://, "
                           f"which v2a does not fetch; give a local path or a {known} URL")
    if name == "file" and urlsplit(location).netloc not in ("", "localhost"):
        raise WeightsError(f"the weights value {value!r} is a file:// URL on another host "
                           f"({urlsplit(location).netloc}); give a path on this machine")
    if name == "hf":
        location = str(parse_hub_ref(location, need_path=True))  # malformed: a HubRefError
    return WeightsSource(location=location, sha256=sha256, scheme=name)


def resolve_file(value: str, *, what: str, file: str | None = None, page: str | None = None,
                 hint: str = "") -> Path:
    """The local file a ``weights`` value names (:func:`parse_weights`), for ``what`` (a model,
    as messages name it): a local file as it is, a URL from the download cache or downloaded
    into it, an ``hf://`` file through huggingface_hub (:func:`v2a.hub.hub_file`, which
    records the commit); its content checked against the pinned SHA-256 before it is returned
    (a file of other content is refused, never returned). A missing
    local file is a :class:`WeightsError` saying to download ``file`` from ``page`` (when
    given), followed by ``hint``."""
    source = parse_weights(value)
    scheme = _SCHEMES[source.scheme]
    path = scheme.find(source) if scheme.found_is_current else None
    if path is None and scheme.fetch is not None:
        path = scheme.fetch(source, f"the weights file of {what}")
    if path is None:
        raise WeightsError(_missing(source, what=what, file=file, page=page, hint=hint))
    if source.sha256 is not None and not scheme.checks_pin:
        got = file_digest(path).removeprefix("sha256:")
        if got != source.sha256:
            raise WeightsError(
                f"the weights file {path} for {what} has SHA-256 {got}, not the pinned "
                f"{source.sha256}; give the file the sha256 belongs to, or correct the sha256")
    return path


def _missing(source: WeightsSource, *, what: str, file: str | None, page: str | None,
             hint: str) -> str:
    """The sentence refusing a local weights file that is not there."""
    path = source.local_path()
    if file and page:
        how = f"download {file} from {page} and give its path or URL"
    else:
        how = (f"give the path or URL of a downloaded checkpoint, '{PRETRAINED}' to download "
               "the published one")
    return (f"the weights file {source.location!r} for {what} does not exist (looked in "
            f"{path.absolute().parent}); {how}, or '{NONE}' for random weights."
            + (f" {hint}" if hint else ""))


def cached_file(value: str) -> Path | None:
    """The local file a ``weights`` value (one that names a file) stands for when it is here
    already, without any network: a local file that exists, or a URL's cached download; None
    otherwise. (A pinned local file's content is checked when it is loaded, not here.)"""
    source = parse_weights(value)
    return _SCHEMES[source.scheme].find(source)


def content_sha256(value: str, *, fetch: bool = False) -> str | None:
    """The SHA-256 (hex) of the content a ``weights`` value (one that names a file) stands for:
    the pinned one, else that of the local file or of the cached download; with ``fetch``, an
    unpinned URL not downloaded yet is downloaded first. None when there is no file to read."""
    source = parse_weights(value)
    if source.sha256 is not None:
        return source.sha256
    path = cached_file(value)
    if path is None and fetch and not source.is_local:
        path = resolve_file(value, what="a component")
    return None if path is None else file_digest(path).removeprefix("sha256:")


def downloaded_file(weights: str, *, model: str, file: str, page: str) -> Path:
    """The local checkpoint a ``weights`` option names for a model whose published weights no
    library downloads (``file``, from ``page``), through :func:`resolve_file`: ``pretrained``
    and a missing file are each refused with a :class:`WeightsError` saying where to get it."""
    if weights.strip().lower() == PRETRAINED:
        raise WeightsError(f"{model} weights are not downloaded automatically: download {file} "
                           f"from {page} and set weights to its local path, or to its URL "
                           "followed by sha256:<its SHA-256>.")
    return resolve_file(weights, what=model, file=file, page=page)


def state_dict_of(loaded: Any, where: str | Path, *, what: str, entry: str = "model"
                  ) -> dict[str, Tensor]:
    """The state dict a loaded checkpoint holds: its ``entry`` (the released files of many
    models keep the weights under ``"model"``), or the whole mapping when it is a bare state
    dict; a :class:`WeightsError` naming ``where`` when it holds no tensors where ``what``
    belongs."""
    import torch
    state = loaded.get(entry, loaded) if isinstance(loaded, Mapping) else loaded
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{where} does not hold a state dict of tensors where {what} belongs "
                           f"(a bare state dict, or one under {entry!r}).")
    return dict(state)


def local_file(weights: str, *, what: str, hint: str = "") -> Path:
    """The local file a ``weights`` option names (:func:`resolve_file`), or a
    :class:`WeightsError` saying what to do."""
    return resolve_file(weights, what=what, hint=hint)


# -- telling files apart by their first bytes ----------------------------------------------------

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive: unpack it first"),
    (b"BZh", "a bzip2 archive: unpack it first"),
    (b"\xfd7zXZ\x00", "an xz archive: unpack it first"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive: unpack it first"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive: unpack it first"),
    (b"\x7fELF", "a program (ELF)"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file, such as Keras or h5py weights"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"GGUF", "a GGUF model (llama.cpp)"),
    (b"RIFF", "a RIFF file: WAV audio or AVI video"),
    (b"ID3", "an MP3 file"),
    (b"OggS", "an Ogg file"),
    (b"fLaC", "a FLAC file"),
    (b"\x1a\x45\xdf\xa3", "a Matroska or WebM video"),
)


def _looks_like(head: bytes) -> str:
    """What ``head``, the first bytes of a file that is no checkpoint, looks like."""
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head[4:8] == b"ftyp":
        return "an MP4 or MOV video"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end is still text
        text = head[:exc.start].decode("utf-8") if exc.reason == "unexpected end of data" else None
    if text and all(c.isprintable() or c in "\t\r\n\f" for c in text):
        start = text.lstrip().lower()
        if start.startswith("version https://git-lfs"):
            return "a Git LFS pointer, not the file itself: fetch it with `git lfs pull`"
        if start.startswith(("<!doctype html", "<html")):
            return "a web page in HTML, such as an error page saved in place of the download"
        return "a text file"
    shown = " ".join(f"{b:02x}" for b in head[:8])
    return f"no format v2a knows: it starts with the bytes {shown}"


def _pickle_globals(stream: io.BufferedIOBase | io.BytesIO) -> tuple[list[str], bool]:
    """The functions and classes the next pickle in ``stream`` names (what unpickling it would
    call), read from its opcodes without unpickling anything, and whether the pickle is whole
    (it reaches its STOP opcode)."""
    names: list[str] = []
    strings: list[str] = []
    try:
        for opcode, arg, _ in pickletools.genops(stream):
            if opcode.name in ("GLOBAL", "INST"):
                names.append(".".join(str(arg).split(" ", 1)))
            elif opcode.name == "STACK_GLOBAL":
                names.append(".".join(strings[-2:]) if len(strings) >= 2 else "a global")
            elif isinstance(arg, str):
                strings.append(arg)
    except ValueError:  # the stream ends (or turns to garbage) before the pickle does
        return names, False
    return names, True


def _is_torch_pickle(head: bytes) -> bool:
    """Whether ``head`` opens with torch's legacy magic number (the first of its pickles)."""
    import torch
    try:
        return any(arg == torch.serialization.MAGIC_NUMBER
                   for _, arg, _ in pickletools.genops(io.BytesIO(head)))
    except ValueError:
        return False


def checkpoint_format(path: str | Path) -> str:
    """:data:`SAFETENSORS`, :data:`TORCH_ZIP` or :data:`TORCH_PICKLE`, from the file's first
    bytes; any other file is a :class:`WeightsError` saying what it looks like (a plain pickle
    that names functions is refused as code)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError as exc:
        raise WeightsError(f"{path} cannot be read ({exc.strerror or exc})") from None
    if size == 0:
        raise WeightsError(f"{path} is not a safetensors or torch checkpoint (it is empty: 0 bytes); "
                           "download or copy it again")
    if len(head) >= 9:
        (header_length,) = struct.unpack("<Q", head[:8])
        if header_length <= _MAX_SAFETENSORS_HEADER and head[8:9] == b"{":
            return SAFETENSORS  # (a file cut short is then reported as damaged)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            raise WeightsError(
                f"{path} is a damaged checkpoint: it starts as a zip archive (a torch checkpoint) "
                "but cannot be read as one (cut short or corrupted); download or copy it again"
            ) from None
        if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
            return TORCH_ZIP
        raise WeightsError(f"{path} is not a safetensors or torch checkpoint (it looks like a zip "
                           "archive of other files, such as a NumPy .npz)")
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        if _is_torch_pickle(head):
            return TORCH_PICKLE
        _refuse_plain_pickle(path)
    raise WeightsError(f"{path} is not a safetensors or torch checkpoint (it looks like "
                       f"{_looks_like(head)})")


def _refuse_plain_pickle(path: Path) -> None:
    """A pickle that ``pickle.dump`` wrote, not ``torch.save``: v2a never unpickles one."""
    with open(path, "rb") as f:
        called, _ = _pickle_globals(f)
    if called:
        raise WeightsError(
            f"{path} was refused: loading it would run code stored in the file (it calls "
            f"{called[0]}); convert it to safetensors or a weights-only checkpoint"
        )
    raise WeightsError(f"{path} is not a safetensors or torch checkpoint (it looks like a Python "
                       "pickle of plain data, with no tensors)")


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _refused_call(exc: pickle.UnpicklingError) -> str | None:
    """What torch's weights-only unpickler refused to call, from its message (without torch's
    advice), or None when the refusal was not about code (a damaged pickle)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", f"{exc.__context__ or ''}\n{exc}")
    match = re.search(r"GLOBAL ([\w.]+) was not an allowed global", text)
    if match:
        return f"it calls {match.group(1)}"
    match = re.search(r"(Unsupported class|Trying to call reduce for unrecognized function)"
                      r"\s*:?\s*([\w.<>]+)", text)
    if match:
        return f"it calls {match.group(2)}"
    return None


def _legacy_pickle_is_cut(path: Path) -> bool:
    """Whether one of the pickles a legacy torch file opens with (magic number, protocol, system
    info, the object) ends before its end."""
    with open(path, "rb") as f:
        return not all(_pickle_globals(f)[1] for _ in range(4))


def _torch_load(path: Path, fmt: str) -> Any:
    import torch
    try:
        with open(path, "rb") as f:  # a file object: torch must not guess the format from the name
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_call(exc)
        if refused is not None and not (fmt == TORCH_PICKLE and _legacy_pickle_is_cut(path)):
            raise WeightsError(
                f"{path} was refused: loading it would run code stored in the file ({refused}); "
                "convert it to safetensors or a weights-only checkpoint"
            ) from None
        if fmt == TORCH_PICKLE and _legacy_pickle_is_cut(path):
            raise WeightsError(f"{path} is a damaged torch checkpoint (it is cut short); download "
                               "or copy it again") from None
        raise WeightsError(
            f"{path} is a damaged or unsupported torch checkpoint (the weights-only loader cannot "
            f"read its pickle: {_first_line(exc.__context__ or exc)}); download or copy it again, "
            "or convert it to safetensors"
        ) from None
    except Exception as exc:
        raise WeightsError(f"{path} is a damaged torch checkpoint ({_first_line(exc)}); download "
                           "or copy it again") from None


# -- loading and checking ------------------------------------------------------------------------


def first_non_finite(data: Any, prefix: str = "") -> tuple[str, int, int] | None:
    """``(name, bad values, values)`` of the first floating-point tensor in ``data`` (a tensor,
    or mappings and sequences of them, names joined with ``.``) that holds NaN or infinity;
    None when all are finite."""
    import torch
    if isinstance(data, torch.Tensor):
        if not (data.is_floating_point() or data.is_complex()) or data.is_meta:
            return None
        values = data.float() if data.element_size() == 1 else data  # no isfinite for float8
        finite = torch.isfinite(values)
        if bool(finite.all()):
            return None
        return prefix or "the tensor", int((~finite).sum()), data.numel()
    if isinstance(data, Mapping):
        items = data.items()
    elif isinstance(data, (list, tuple)):
        items = enumerate(data)
    else:
        return None
    for key, value in items:
        found = first_non_finite(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


def check_finite(data: Any, path: str | Path) -> None:
    """A :class:`WeightsError` naming ``path`` and the first tensor of ``data`` that holds NaN or
    infinity (see :func:`first_non_finite`)."""
    found = first_non_finite(data)
    if found is not None:
        name, bad, total = found
        raise WeightsError(
            f"{path} holds NaN or infinite values in {name!r} ({bad} of {total}): these weights "
            "are damaged or come from a diverged run; use another checkpoint"
        )


def load_checkpoint(path: str | Path) -> Any:
    """Read a checkpoint without running code: safetensors, or a weights-only torch file (zip or
    legacy), told apart by content (see :func:`checkpoint_format`), with every tensor checked
    to be finite (:func:`check_finite`).

    Returns a ``{name: tensor}`` mapping for safetensors, or whatever plain containers of
    tensors and numbers the torch file holds.
    """
    path = Path(path)
    fmt = checkpoint_format(path)
    if fmt == SAFETENSORS:
        try:
            state = load_file(str(path))
        except Exception as exc:
            raise WeightsError(f"{path} is a damaged safetensors file ({_first_line(exc)}); "
                               "download or copy it again") from None
    else:
        state = _torch_load(path, fmt)
    check_finite(state, path)
    return state


def load_file(path: str) -> dict[str, Tensor]:
    """``safetensors.torch.load_file``: the one place v2a reads a safetensors file."""
    from safetensors.torch import load_file as read
    return read(path)


def save_file(tensors: dict[str, Tensor], path: str, metadata: dict | None = None) -> None:
    """``safetensors.torch.save_file``: the one place v2a writes a safetensors file."""
    from safetensors.torch import save_file as write
    write(tensors, path, metadata=metadata)


def write_safetensors(tensors: Mapping[str, Tensor], path: str | Path,
                      metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file``, except that a failure of the file system (no space, no
    permission, a read-only folder) is the :class:`OSError` it is, with its ``errno``, not a
    ``SafetensorError`` whose message holds it. It writes ``path`` itself: give it a temporary
    of :mod:`v2a.files` (:func:`save_state` does, to write a file atomically). The file keeps
    the permissions ``path`` had (the umask's, for a temporary of :mod:`v2a.files`), which
    safetensors, writing through a private temporary of its own, would narrow to the owner."""
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    try:
        save_file(dict(tensors), str(path), metadata=metadata)
        if mode is not None:
            os.chmod(path, mode)
    except Exception as exc:
        match = re.search(r"I/O error: .*\(os error (\d+)\)", str(exc))
        if match is None:
            raise
        code = int(match.group(1))
        raise OSError(code, os.strerror(code), str(path)) from None


def save_state(state: Mapping[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors atomically (:func:`v2a.files.atomic_output`)."""
    tensors = {k: v.detach().contiguous().clone().cpu() for k, v in state.items()}
    with atomic_output(path) as tmp:
        write_safetensors(tensors, tmp, metadata=metadata)


def load_into(module: nn.Module, state: Mapping[str, Tensor], path: str | Path, what: str) -> None:
    """Load ``state`` (as :func:`load_checkpoint` gives it: finite) strictly into ``module``, or
    a :class:`WeightsError` saying what differs."""
    own = module.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    wrong = sorted(k for k in own.keys() & state.keys() if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
        if wrong:
            k = wrong[0]
            problems.append(
                f"{len(wrong)} of another shape (e.g. {k!r}: {tuple(state[k].shape)} in the file, "
                f"{tuple(own[k].shape)} in the model)"
            )
        raise WeightsError(
            f"{path} does not fit {what}: its parameters are {', '.join(problems)}; check the "
            "model options match the checkpoint"
        )
    module.load_state_dict(state, strict=True)


def load_trained(module: nn.Module, weights: str | None, *, what: str) -> None:
    """Load the ``weights`` option of a trained component (a fuser, a generator) into ``module``:
    ``none`` keeps the random initialisation; a path is loaded strictly (the
    ``fuser.safetensors`` / ``generator.safetensors`` a training run exports)."""
    if is_random(weights):
        return
    if weights.lower() == PRETRAINED:
        raise WeightsError(
            f"{what} has no published weights; give the .safetensors file a training run exported "
            f"(`v2a train` writes <run>/fuser.safetensors and <run>/generator.safetensors) or 'none'"
        )
    path = local_file(weights, what=what, hint="A training run exports it (`v2a train`).")
    load_into(module, load_checkpoint(path), path, what)
