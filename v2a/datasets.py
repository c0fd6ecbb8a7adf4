"""What the trainer reads: map-style datasets of :class:`~v2a.items.ClipItem`.

:class:`CachedClips` reads the features of a cache ``v2a extract`` wrote (no video decoding);
:class:`LiveClips` decodes and encodes each clip on the fly. Pass :func:`v2a.items.collate`
to a DataLoader over either.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from v2a.cache import CacheReader, FeatureEncoder, decode_clip  # + the fork hook of decoding
from v2a.items import ClipItem, Skipped
from v2a.manifests import Clip, cache_dir_of, data_root, manifest_of, read_manifest
from v2a.recipe import Recipe


class CachedClips(Dataset):
    """The clips of a feature cache written by ``v2a extract`` (no video decoding).

    ``cache_dir``: the cache folder (None: the recipe's, see :func:`cache_dir_of`). The cache
    must have been extracted with the recipe's codec, visual encoders and audio encoder (same
    options, same weights files): otherwise a :class:`~v2a.cache.CacheMismatchError` names the
    first difference. An unfinished cache is refused unless ``allow_partial``; a damaged shard
    is a :class:`~v2a.cache.CacheError` naming it and the command that extracts it again, at
    start (its header) or when a clip is read (its checksum). ``split``: only the clips of that
    split (None: all; clips without one are ``train``).

    ``clips`` lists the clips in cache order; ``skipped`` the clips extraction could not use,
    with the reason. Items are :class:`ClipItem`; pass :func:`~v2a.items.collate` to a DataLoader.
    """

    def __init__(
        self,
        cache_dir: str | Path | None,
        recipe: Recipe,
        split: str | None = None,
        *,
        allow_partial: bool = False,
    ):
        self.reader = CacheReader(cache_dir if cache_dir is not None else cache_dir_of(recipe),
                                  recipe, allow_partial=allow_partial)
        self.entries = self.reader.entries.in_split(split)  # columns: see CacheEntries
        self.split = split

    @property
    def clips(self) -> list[Clip]:
        """Every clip, in cache order (a new list, built when asked for)."""
        return [self.entries.clip(i) for i in range(len(self.entries))]

    @property
    def skipped(self) -> list[Skipped]:
        return self.reader.skipped

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> ClipItem:
        return self.reader.item(self.entries[index])


class LiveClips(Dataset):
    """Clips decoded from their videos and encoded on the fly, item by item.

    The same items as :class:`CachedClips` over the same clips (up to float rounding), without
    a cache: for users without one and for benchmarks. ``manifest``: a manifest file or a list
    of :class:`Clip`; ``root``: where relative paths point (default: ``data.root``, else the
    manifest's folder). The recipe's components are built on first use in each process (so
    DataLoader workers each hold their own) on ``device``. A clip that cannot be used comes back
    as :class:`Skipped`.
    """

    def __init__(
        self,
        manifest: str | Path | Sequence[Clip] | None,
        recipe: Recipe,
        split: str | None = None,
        *,
        root: str | Path | None = None,
        device: str | torch.device = "cpu",
    ):
        if manifest is None:
            manifest = manifest_of(recipe)
        if isinstance(manifest, (str, Path)):
            if root is None:
                root = data_root(recipe, manifest)
            clips = read_manifest(manifest)
        else:
            clips = list(manifest)
            if root is None and recipe.data.root:
                root = Path(recipe.data.root).expanduser()
        self.clips = [c for c in clips if c.in_split(split)]
        self.root = None if root is None else Path(root)
        self.recipe = recipe
        self.device = device
        self.split = split
        self._encoder = None
        self._pid: int | None = None

    @property
    def encoder(self) -> FeatureEncoder:
        if self._encoder is None or self._pid != os.getpid():
            self._encoder = FeatureEncoder(self.recipe, device=self.device)
            self._pid = os.getpid()
        return self._encoder

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> ClipItem | Skipped:
        clip = self.clips[index]
        encoder = self.encoder
        decoded = decode_clip(clip, self.root, encoder.request)
        if isinstance(decoded, Skipped):
            return decoded
        return encoder.encode([decoded])[0]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_encoder"] = None  # rebuilt in the worker
        return state
