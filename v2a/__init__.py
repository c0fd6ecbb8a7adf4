"""v2a: a plug-in framework for video-to-audio generation research.

The core defines the component interfaces (:mod:`v2a.interfaces`), the sequences they exchange
(:mod:`v2a.sequences`), the plug-in registry (:mod:`v2a.registry`), recipes
(:mod:`v2a.recipe`), the conformance kit (:mod:`v2a.testing`), the training tasks
(:mod:`v2a.tasks`) and the ``v2a`` command line. Concrete components live in plug-ins.
"""

from typing import TYPE_CHECKING

from v2a.lazy import home_of, lazy_exports

from v2a.hookspecs import hookimpl

__version__ = "0.1.0"

#: Each public name and the module it lives in. The names are imported on first use (PEP 562
#: ``__getattr__``), so that ``import v2a`` costs no torch import: ``v2a --help``, a command's
#: ``--help`` and ``v2a recipe list`` never need torch (docs/performance.md, "Start-up").
_HOMES = {
    "v2a.interfaces": ("AudioClassifier", "AudioCodec", "AudioEncoder", "Component",
                       "ConditionFuser", "MaskedGenerator", "Reranker", "SyncClassifier",
                       "TextEncoder", "VisualEncoder"),
    "v2a.registry": ("ComponentSpec", "TrainingTaskSpec"),
    "v2a.sequences": ("Conditioning", "FeatureSequence", "TextFeatures"),
    "v2a.tasks": ("TrainingTask",),
}
_HOME_OF = home_of(_HOMES)

__all__ = [
    "AudioClassifier",
    "AudioCodec",
    "AudioEncoder",
    "Component",
    "ComponentSpec",
    "ConditionFuser",
    "Conditioning",
    "FeatureSequence",
    "MaskedGenerator",
    "Reranker",
    "SyncClassifier",
    "TextEncoder",
    "TextFeatures",
    "TrainingTask",
    "TrainingTaskSpec",
    "VisualEncoder",
    "hookimpl",
]


__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)


if TYPE_CHECKING:  # the same names, for type checkers (tests/test_startup.py keeps them equal)
    from v2a.interfaces import (
        AudioClassifier,
        AudioCodec,
        AudioEncoder,
        Component,
        ConditionFuser,
        MaskedGenerator,
        Reranker,
        SyncClassifier,
        TextEncoder,
        VisualEncoder,
    )
    from v2a.registry import ComponentSpec, TrainingTaskSpec
    from v2a.sequences import Conditioning, FeatureSequence, TextFeatures
    from v2a.tasks import TrainingTask
