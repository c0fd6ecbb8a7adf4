"""The ``none`` reranker (:class:`KeepFirst`): no weights, no scoring; every candidate gets the
same score, so selection keeps the first one."""

from __future__ import annotations

from dataclasses import dataclass

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports


@dataclass
class KeepFirstConfig:
    sample_rate: int = 44100
    """Hz of the candidates it is given (it reads none of them)"""


def build_keep_first(config: KeepFirstConfig):
    """The ``none`` reranker of ``config`` (its module, and torch, imported on first use)."""
    from v2a_plugins.rerankers.keep_first_model import KeepFirst  # deferred: torch
    return KeepFirst(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="reranker", name="none", build=build_keep_first, config=KeepFirstConfig,
        properties=lambda config: {"sample_rate": config.sample_rate, "video_streams": {}},
        description="no reranking: keeps the first candidate",
    ))


#: The implementation's names, importable from here; imported from their module on first use.
_HOMES = {"v2a_plugins.rerankers.keep_first_model": ("KeepFirst",)}
__all__ = ["KeepFirstConfig", "build_keep_first", "v2a_register_components",
           *_HOMES["v2a_plugins.rerankers.keep_first_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
