"""The evaluation's feature cache: each model's features of each file, computed once.

A feature is kept at ``ROOT/<model key>/<file sha256>-<samples>.safetensors`` (one tensor,
``features``): the model key (:func:`v2a.evaluate.provenance.model_key`) hashes the model's
plug-in, options, weights (by content) and the settings it read the file with (rate, channels);
the file counts by its content's SHA-256, and ``samples`` is how much of it (at that rate) was
encoded, since both sides of a pair are cut to their common length. So adding a metric or a
reference set computes only the features not already there. Files are written atomically
(:mod:`v2a.files`) and read back with safetensors; a file that cannot be read is computed again.
With no root (no ``-o``), nothing is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from v2a.cache.identity import file_digest
from v2a.weights import save_state

FEATURES = "features"


class FeatureStore:
    """Features by (model key, file, samples); ``computed`` and ``loaded`` count each model
    key's computations and cache hits (what a test reads)."""

    def __init__(self, *, root: Path | None):
        self.root = root
        self.computed: dict[str, int] = {}
        self.loaded: dict[str, int] = {}

    def path(self, key: str, source: Path, samples: int) -> Path | None:
        if self.root is None:
            return None
        return self.root / key / f"{file_digest(source).removeprefix('sha256:')}-{samples}.safetensors"

    def get(self, key: str, source: Path, samples: int, compute: Callable[[], Tensor]) -> Tensor:
        """The features of the first ``samples`` of ``source`` under the model ``key``: read
        from the cache, else computed by ``compute()`` and written there."""
        path = self.path(key, source, samples)
        if path is not None and path.is_file():
            try:
                features = load_file(str(path))[FEATURES]
            except (SafetensorError, OSError, KeyError):
                features = None
            if features is not None:
                self.loaded[key] = self.loaded.get(key, 0) + 1
                return features
        features = compute().detach().cpu().contiguous()
        self.computed[key] = self.computed.get(key, 0) + 1
        if path is not None:
            save_state({FEATURES: features}, path, metadata={"source": str(source),
                                                              "samples": str(samples)})
        return features
