"""v2a: a plug-in framework for video-to-audio generation research.

The core defines the component interfaces (:mod:`v2a.interfaces`), the sequences they exchange
(:mod:`v2a.sequences`), the plug-in registry (:mod:`v2a.registry`), recipes
(:mod:`v2a.recipe`), the conformance kit (:mod:`v2a.testing`), the training tasks
(:mod:`v2a.tasks`) and the ``v2a`` command line. Concrete components live in plug-ins.
"""

from v2a.hookspecs import hookimpl
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

__version__ = "0.1.0"

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
