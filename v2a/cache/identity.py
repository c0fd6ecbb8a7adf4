"""What a recipe extracts, and the cache key (see :mod:`v2a.cache`).

The key is a hash of v2a's version, the window, and the resolved options of the codec, each
visual encoder (by stream name) and the audio encoder, where a weights file counts by its
content (SHA-256), never by its path or URL: the pinned SHA-256 of a value ``LOCATION
sha256:<hex>``, else the hash of the local file or of the URL's download (downloaded now if it
is not in the download cache yet; see :func:`v2a.weights.content_sha256`);
:func:`check_identity` refuses a cache whose key differs, with the first difference.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from v2a import __version__
from v2a.cache.errors import CacheMismatchError
from v2a.downloads import file_digest, sha256_of_file  # noqa: F401 (kept importable from here)
from v2a.features import extraction_slots
from v2a.manifests import Clip
from v2a.recipe import Recipe
from v2a.weights import content_sha256

CACHE_FORMAT = 1


def _fingerprint_weights(data: Any) -> Any:
    """``data`` with every ``weights`` value that names a file replaced by the SHA-256 of its
    content (:func:`v2a.weights.content_sha256`)."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            a_file = isinstance(value, str) and value.lower() not in ("none", "pretrained")
            if key == "weights" and a_file:
                digest = content_sha256(value, fetch=True)
                value = f"sha256:{digest}" if digest else f"missing file {value}"
            out[key] = _fingerprint_weights(value)
        return out
    if isinstance(data, list):
        return [_fingerprint_weights(v) for v in data]
    return data


def cache_identity(recipe: Recipe) -> dict[str, Any]:
    """What the cache key hashes: v2a's version, the window and the components (weights files by
    content)."""
    components = {slot: choice.as_data() for slot, choice in extraction_slots(recipe).items()}
    return {
        "format": CACHE_FORMAT,
        "v2a": __version__,
        "clip_seconds": recipe.data.clip_seconds,
        "components": _fingerprint_weights(components),
    }


def cache_key(identity: dict[str, Any]) -> str:
    """The cache key: 16 hex digits of the SHA-256 of ``identity`` (:func:`cache_identity`)."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def first_difference(old: Any, new: Any, prefix: str = "") -> str:
    """``"codec.n_codebooks: 4 in the cache, 9 now"`` for the first key where they differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                return f"{where} is new"
            if key not in new:
                return f"{where} is gone"
            found = first_difference(old[key], new[key], where)
            if found:
                return found
        return ""
    if old != new:
        if isinstance(old, str) and old.startswith("sha256:"):
            return f"{prefix}: the weights file's content changed"
        return f"{prefix}: {json.dumps(old)} in the cache, {json.dumps(new)} now"
    return ""


def manifest_fingerprint(clips: Sequence[Clip]) -> str:
    """16 hex digits hashing every field of every clip, in order: another manifest, another
    fingerprint (a clip without a caption hashes as before captions existed,
    :meth:`Clip.record`)."""
    h = hashlib.sha256()
    for clip in clips:
        h.update(json.dumps(list(clip.record().values())).encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


def check_identity(cache_dir: Path, meta: dict[str, Any], identity: dict[str, Any]) -> None:
    """Refuse, with a :class:`CacheMismatchError` naming the first difference, the cache in
    ``cache_dir`` (its ``cache.json`` as ``meta``) when it was extracted for another identity."""
    key = cache_key(identity)
    if meta.get("key") == key:
        return
    old = meta.get("identity", {})
    what = first_difference({k: v for k, v in old.items() if k != "components"},
                            {k: v for k, v in identity.items() if k != "components"})
    what = what or first_difference(old.get("components", {}), identity["components"])
    raise CacheMismatchError(
        f"the cache in {cache_dir} was extracted with other components or options "
        f"({what or 'its key differs'}); give another data.cache folder to extract a new one, "
        "or delete this one"
    )
