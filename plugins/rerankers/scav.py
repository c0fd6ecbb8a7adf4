"""SCAV reranker: sequential contrastive audio-visual embeddings, to pick the best candidate.

SCAV (Tsiamas, Pascual, Yeh, Serrà, "Sequential Contrastive Audio-Visual Learning", arXiv
2407.05782) embeds a video's CLIP frame features and an audio clip's encoder features (BEATs in
the paper) into one space *without pooling over time*, and trains the two projectors
contrastively, with a distance between the two embedding sequences as the (negative)
similarity. MaskVAT uses it after sampling: of the B generated candidates the one nearest to the
video is kept. No official code is used here: each projector is a small transformer encoder
whose sizes are options (*assumed* defaults: 256 wide, 2 layers, 4 heads).

Pipeline, for ``b`` videos and ``n`` candidates each::

    video stream [b, t_v, video_dim] --projector--> [b, t_v, dim] ------------+
    candidates [b, n, c, s] --(all b*n in one batch)--> frozen audio encoder   +--> distance [b, n]
      --> [b*n, t_a, d_a] --projector--> [b*n, t_a, dim] ----------------------+
    score = -distance   (``select`` keeps the candidate at minimum distance)

Projector: a linear input projection, a sinusoidal embedding of each step's time in
*seconds* (so a 6.25 Hz BEATs sequence and an 8 Hz CLIP sequence share a time axis), a few pre-LN
transformer blocks (``torch.nn.functional.scaled_dot_product_attention``, padded steps masked
as keys), an output projection, and L2 normalisation per step (distances lie in [0, 2], and the
learnable temperature of the contrastive loss sets the scale).

Distances (``distance`` option), each between paired rows of two
:class:`~v2a.sequences.FeatureSequence` objects, symmetric, zero for identical sequences:

* ``interpolated_euclidean`` (the paper's best): both sequences are linearly resampled onto one
  time grid, at the faster of the two rates, over the time span they share; the distance is the
  mean over the grid steps (real in both) of the per-step L2 distance.
* ``dtw``: dynamic time warping on the matrix of per-step L2 distances (steps (1, 0), (0, 1),
  (1, 1)), divided by the number of cells on the optimal path; computed over anti-diagonals, so
  the Python loop has ``t_x + t_y − 1`` iterations whatever the batch size.
* ``cosine_mean``: one minus the cosine of the two mean-pooled sequences (a pooled baseline).

Candidates arrive at ``sample_rate``, which is the audio encoder's (16 kHz for BEATs): resampling
the codec's output to it is the caller's job, as for every :class:`~v2a.interfaces.Reranker`.
The audio encoder is frozen (its own ``weights`` option loads it; no gradient reaches it, and it
stays in eval mode); only the projectors and the temperature train, through
:meth:`Scav.contrastive_terms`. The ``weights`` option of SCAV names a file holding those trained
parameters (see :meth:`Scav.save_weights`).

Training: this plug-in also registers the training task ``reranker`` (:class:`ScavTrainingTask`,
``training.task: reranker``, as ``recipes/scav.yaml`` sets it), which trains the recipe's SCAV on
the cached features of its audio encoder and exports ``scav.safetensors``, the file ``weights``
takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from v2a import ComponentSpec, TrainingTaskSpec, hookimpl
from v2a.lazy import lazy_exports
from v2a.pretrained import nothing_to_download
from v2a.registry import component_option, default_registry
from v2a.weights import WeightsError

if TYPE_CHECKING:
    from v2a.recipe import Recipe

Distance = Literal["interpolated_euclidean", "dtw", "cosine_mean"]

#: The refusal of ``weights: pretrained``: nothing of SCAV's is published.
NOT_PUBLISHED = ("there is no published SCAV checkpoint to download; train one with "
                 "`v2a train recipes/scav.yaml` and set the reranker's weights to its path.")
#: The file a reranker training run exports (what the ``weights`` option takes).
WEIGHTS_FILE = "scav.safetensors"


# -- options ---------------------------------------------------------------------------------------


@dataclass
class ScavConfig:
    """Options of the ``scav`` reranker."""

    audio_encoder: dict = component_option("audio_encoder", "beats")
    """the frozen audio encoder that embeds the candidates, with its own weights"""
    video_stream: str = "clip"
    """the visual stream it reads (a name of the recipe's visual_encoders)"""
    video_dim: int = 512
    """that stream's width (CLIP ViT-B/32: 512)"""
    dim: int = 256
    """width of the common embedding space"""
    layers: int = 2
    """transformer blocks of each projector"""
    heads: int = 4
    """attention heads of each projector"""
    distance: Distance = "interpolated_euclidean"
    """how two embedding sequences are compared (see the plug-in's docs)"""
    weights: str = "none"
    """none (random) or the path of trained projectors (.safetensors)"""


def scav_properties(config: ScavConfig) -> dict:
    """The reranker attributes ``config`` gives, without building (see
    ``ComponentSpec.properties``): the stream it reads, and its audio encoder's sample rate
    where that encoder declares it."""
    audio = default_registry().properties_from("audio_encoder", config.audio_encoder)
    props: dict = {"video_streams": {config.video_stream: config.video_dim}}
    if "sample_rate" in audio:
        props["sample_rate"] = audio["sample_rate"]
    return props


def refuse_pretrained(weights: str) -> None:
    raise WeightsError(NOT_PUBLISHED)


def scav_pretrained_files(config: ScavConfig) -> list:
    """Nothing to download (see ``ComponentSpec.pretrained_files``): SCAV's projectors are
    trained with v2a, never published; ``weights: pretrained`` is refused as building refuses
    it. Its audio encoder is a component of its own and declares its own files."""
    return nothing_to_download(config.weights, refuse_pretrained)


def build_scav(config: ScavConfig):
    """The ``scav`` reranker of ``config`` (its module, and torch, imported on first use)."""
    from v2a_plugins.rerankers.scav_model import Scav  # deferred: torch
    return Scav(config)


def build_scav_task(recipe: Recipe):
    """The ``reranker`` training task of ``recipe`` (a :class:`ScavTrainingTask`)."""
    from v2a_plugins.rerankers.scav_model import ScavTrainingTask  # deferred: torch
    return ScavTrainingTask(recipe)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="reranker", name="scav", build=build_scav, config=ScavConfig, properties=scav_properties,
        pretrained_files=scav_pretrained_files,
        description="SCAV (Tsiamas et al. 2024): sequence embeddings, interpolated Euclidean",
    ))


@hookimpl
def v2a_register_training_tasks(register):
    register(TrainingTaskSpec(
        name="reranker", build=build_scav_task, exports={"reranker": WEIGHTS_FILE},
        description="SCAV's projectors by its contrastive loss, on the cached audio features",
    ))


#: The implementation's names, importable from here; imported from their module on first use.
_HOMES = {"v2a_plugins.rerankers.scav_model": (
    "DISTANCES", "INIT_TEMPERATURE", "MAX_PERIOD", "MIN_PERIOD", "MIN_TEMPERATURE", "Block",
    "MissingStreamError", "Scav", "ScavProjectors", "ScavTrainingTask", "SequenceProjector",
    "check_reranker_features", "common_grid", "cosine_mean", "dtw", "dtw_from_cost",
    "interpolated_euclidean", "masked_mean", "pairwise_cosine_mean", "pairwise_dtw",
    "pairwise_interpolated_euclidean", "time_embedding",
)}
__all__ = ["NOT_PUBLISHED", "WEIGHTS_FILE", "Distance", "ScavConfig", "build_scav",
           "build_scav_task", "refuse_pretrained", "scav_pretrained_files", "scav_properties",
           "v2a_register_components", "v2a_register_training_tasks",
           *_HOMES["v2a_plugins.rerankers.scav_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
