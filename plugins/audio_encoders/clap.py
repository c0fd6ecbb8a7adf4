"""LAION-CLAP: audio and text embedded in one 512-d space (the CLAP score of ``v2a evaluate``).

CLAP (Wu et al., "Large-scale Contrastive Language-Audio Pretraining with Feature Fusion and
Keyword-to-Caption Augmentation", ICASSP 2023) trains an audio tower (HTSAT, a Swin transformer
on a log-mel spectrogram) and a text tower (RoBERTa) so that a clip and its caption land close
together. The model here is ``transformers``' port of it (``ClapModel``, the optional extra
``v2a[clap]``); this module adds how v2a feeds it audio and reads its embeddings.

Audio, for a waveform ``[b, c, n]`` at 48 kHz::

    mono mix --(round to 16-bit and back, as LAION's own inference does)--> cut into windows
    of 10 s from 0 s (the last one shorter) --(the checkpoint's feature extractor: each window
    shorter than 10 s repeated to fill 10 s, then zero-padded; 64-band log-mel, hop 480)-->
    HTSAT --(projection, L2-normalised)--> [b, windows, dim]

``encode`` returns one step per 10 s window (``rate`` 0.1 per second, start 0 s): a clip of
up to 10 s has one embedding, the pooled clip embedding LAION-CLAP gives. Nothing is random:
LAION's own code crops a random 10 s of a longer clip, and its *fused* checkpoints pick random
crops too, so fused checkpoints (``laion/clap-htsat-fused``) are refused.

Text: :meth:`LaionClap.embed_text` tokenises with the checkpoint's RoBERTa tokenizer (at most
77 tokens, LAION's text length) and returns the L2-normalised text embeddings ``[m, dim]``.

Weights (``weights``):

* ``pretrained``: ``transformers`` downloads ``checkpoint`` from the Hugging Face hub (its own
  cache; nothing else downloads). The default checkpoint, ``laion/larger_clap_general``, is
  the port of LAION's ``music_speech_audioset_epoch_15_esc_89.98.pt`` (HTSAT-base), the
  checkpoint av-benchmark (the evaluation of MMAudio) computes its LAION-CLAP score with.
* a local folder in the layout ``save_pretrained`` writes (``config.json``, the weights, the
  tokenizer's and feature extractor's files), read offline; its ``config.json`` sets the
  architecture, and the size options below are not read.
* ``none``: random initialisation of the size the options give (the defaults are HTSAT-tiny and
  RoBERTa-base, the architecture of ``laion/clap-htsat-unfused``), with a byte-level tokenizer
  that has no merges (each UTF-8 byte is a token) and LAION-CLAP's front end (64 mel bands over
  50-14000 Hz). Built offline; for tests and smoke runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports
from v2a.pretrained import PretrainedFile, hub_model_folder
from v2a.schema import FieldError
from v2a.weights import PRETRAINED, is_random

SAMPLE_RATE = 48000
WINDOW_SECONDS = 10  # HTSAT reads 10 s (1001 mel frames); longer clips are cut into windows
DEFAULT_CHECKPOINT = "laion/larger_clap_general"
INSTALL = "pip install 'v2a[clap]'"


@dataclass
class LaionClapConfig:
    """Options of the ``clap`` audio encoder.

    ``weights``: ``"none"`` (random init of the size below), ``"pretrained"`` (``checkpoint``
    from the Hugging Face hub, downloaded by ``transformers``) or a local folder saved with
    ``save_pretrained``. ``checkpoint``: the hub name ``pretrained`` downloads.
    The size of a random init (read only with ``weights: none``): ``audio_width`` (HTSAT's
    patch embedding width, doubled at each of its stages), ``audio_depths`` (Swin blocks per
    stage), ``audio_heads`` (attention heads per stage), ``text_width``, ``text_layers``,
    ``text_heads`` (RoBERTa) and ``dim`` (the shared space's width).
    """

    weights: str = "none"
    """none (random, of the size below), pretrained (checkpoint, downloaded by transformers) or a
    folder saved with save_pretrained"""
    checkpoint: str = DEFAULT_CHECKPOINT
    """the Hugging Face hub name that weights: pretrained downloads"""
    audio_width: int = 96
    """random init: HTSAT's patch embedding width, doubled at each stage"""
    audio_depths: tuple[int, ...] = (2, 2, 6, 2)
    """random init: Swin blocks per HTSAT stage"""
    audio_heads: tuple[int, ...] = (4, 8, 16, 32)
    """random init: attention heads per HTSAT stage (one per entry of audio_depths)"""
    text_width: int = 768
    """random init: width of the RoBERTa text tower"""
    text_layers: int = 12
    """random init: layers of the RoBERTa text tower"""
    text_heads: int = 12
    """random init: attention heads of the text tower (must divide text_width)"""
    dim: int = 512
    """random init: width of the shared audio-text space"""

    def __post_init__(self) -> None:
        if len(self.audio_depths) != len(self.audio_heads) or not self.audio_depths:
            raise FieldError("audio_heads", f"needs one head count per stage of audio_depths "
                             f"{list(self.audio_depths)}, got {list(self.audio_heads)}")
        for name in ("audio_width", "text_width", "text_layers", "text_heads", "dim"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be at least 1, got {getattr(self, name)}")
        if self.text_width % self.text_heads:
            raise FieldError("text_heads", f"must divide text_width {self.text_width}, got "
                             f"{self.text_heads}")


def clap_properties(config: LaionClapConfig) -> dict:
    """The encoder's attributes known without building it (``ComponentSpec.properties``); a
    checkpoint's width is in its config, so ``dim`` is declared only for a random init."""
    known = {"sample_rate": SAMPLE_RATE, "rate": 1.0 / WINDOW_SECONDS}
    return {**known, "dim": config.dim} if is_random(config.weights) else known


def clap_pretrained_files(config: LaionClapConfig) -> list[PretrainedFile]:
    """What ``weights: pretrained`` downloads (see ``ComponentSpec.pretrained_files``): the
    ``checkpoint`` repository, as ``transformers``' ``from_pretrained`` fetches it into the Hub
    cache (the model, tokenizer and feature extractor files)."""
    if config.weights.strip().lower() != PRETRAINED:
        return []

    def load() -> object:
        from v2a_plugins.audio_encoders.clap_model import (  # deferred: torch, transformers
            trained_parts, transformers_module)

        return trained_parts(config, transformers_module())

    return [hub_model_folder(what=f"CLAP checkpoint {config.checkpoint}",
                             repo_id=config.checkpoint, load=load,
                             licence="unknown here (see the checkpoint's model card)")]


def build_clap(config: LaionClapConfig):
    """The encoder of ``config`` (``ComponentSpec.build``): the model module is imported here."""
    from v2a_plugins.audio_encoders.clap_model import LaionClap  # deferred: torch (the model)

    return LaionClap(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="audio_encoder", name="clap", build=build_clap, config=LaionClapConfig,
        properties=clap_properties, requires=("transformers",), install=INSTALL,
        pretrained_files=clap_pretrained_files,
        description="LAION-CLAP (Wu 2023, transformers' port): 512-d audio and text embeddings "
                    "at 48 kHz; needs v2a[clap]",
    ))


#: The implementation's public names, imported from
#: :mod:`v2a_plugins.audio_encoders.clap_model` on first use.
_HOMES = {"v2a_plugins.audio_encoders.clap_model": (
    "LaionClap", "ClapNotInstalledError", "transformers_module", "byte_tokenizer",
    "random_model", "trained_parts", "pooled", "WINDOW", "INT16_SCALE", "MAX_TEXT_TOKENS",
    "MEL_RANGE", "SPECIAL_TOKENS", "MASK_TOKEN",
)}
__all__ = ["LaionClapConfig", "SAMPLE_RATE", "WINDOW_SECONDS", "DEFAULT_CHECKPOINT", "INSTALL",
           "clap_properties", "clap_pretrained_files", "build_clap", "v2a_register_components",
           *_HOMES["v2a_plugins.audio_encoders.clap_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
