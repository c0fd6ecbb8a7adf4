"""Building on PyTorch's meta device: shapes and dtypes without memory or values.

A recipe's consistency checks read what a plug-in that declares nothing would build, and the
resource estimates size components, by building them here (:func:`build_on_meta`) with random
weights (:func:`v2a.recipe.config.untrained`), so that nothing is read, downloaded or allocated.
:func:`module_bytes` sizes what was built. This module knows nothing of recipes or plug-ins.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
from torch import nn

T = TypeVar("T")


class _FirstImportsOffMeta(importlib.abc.MetaPathFinder):
    """While a build runs on the meta device, a module imported for the first time runs its
    top-level code on the device that was the default before (``device``): a library that makes
    a module-level tensor at import (torchaudio's Kaldi ``EPSILON``, imported by DAC's
    dependencies) must not keep a meta tensor for the rest of the process."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def find_spec(self, name: str, path: Any,
                  target: Any = None) -> importlib.machinery.ModuleSpec | None:
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _LoaderOffMeta(spec.loader, self.device)
                return spec
        return None


class _LoaderOffMeta(importlib.abc.Loader):
    """``loader``, running the module's top-level code with ``device`` as the default device."""

    def __init__(self, loader: importlib.abc.Loader, device: torch.device) -> None:
        self.loader, self.device = loader, device

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__loader__ = self.loader  # the module keeps its own loader (resources, reloads)
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        with torch.device(self.device):  # device contexts nest: the meta one returns after
            self.loader.exec_module(module)


def build_on_meta(build: Callable[[], T]) -> T | None:
    """``build()`` with PyTorch's meta device as the default (shapes and dtypes, no memory, no
    values), or ``None`` when the plug-in cannot be built there (one that computes with real
    values while it builds). Modules imported for the first time meanwhile are imported on the
    usual device (:class:`_FirstImportsOffMeta`)."""
    finder = _FirstImportsOffMeta(torch.get_default_device())
    sys.meta_path.insert(0, finder)
    try:
        with torch.device("meta"):
            return build()
    except Exception:  # a plug-in that reads values or moves tensors while it builds
        return None
    finally:
        sys.meta_path.remove(finder)


def tensor_bytes(tensors: Iterable[Any]) -> int:
    """Bytes of ``tensors`` at their dtype (meta tensors included: their size, not their data)."""
    return sum(t.numel() * t.element_size() for t in tensors)


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers at their dtype."""
    return tensor_bytes(module.parameters()) + tensor_bytes(module.buffers())
