"""Names a package exports without importing their modules until first use.

``v2a --help`` must not pay for torch: a package whose public names live in torch-importing
modules lists them in ``_HOMES`` (``{module: (name, ...)}``) and lets :func:`lazy_exports` make
its module-level ``__getattr__`` and ``__dir__``. The first lookup of such a name imports its
module and keeps the value in the package's namespace, so later lookups are ordinary ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping


def home_of(homes: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    """``{name: module}`` of a ``{module: names}`` table."""
    return {name: module for module, names in homes.items() for name in names}


def lazy_exports(package: str, homes: Mapping[str, tuple[str, ...]],
                 namespace: MutableMapping[str, object], exported: list[str]
                 ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` (its ``globals()`` is ``namespace``,
    its ``__all__`` is ``exported``) for the names of ``homes``."""
    modules = home_of(homes)

    def __getattr__(name: str) -> object:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # the next lookup is an ordinary one
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exported})

    return __getattr__, __dir__
