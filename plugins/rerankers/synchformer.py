"""Synchformer's synchronisation classifier as a v2a reranker (plug-in ``synchformer``).

Synchformer (Iashin, Xie, Rahtu, Zisserman 2024) predicts how far a clip's audio is shifted
against its video, as one of 21 offset classes from -2.0 to +2.0 s in 0.2 s steps, from a 4.8 s
window cut into 14 segments of 0.64 s every 0.32 s. Written from the paper and the public
description of its official implementation (v-iashin/Synchformer); no code is taken from it.
The visual tower is the ``synchformer`` visual encoder (its stream, one step per segment holding
8 vectors, is what this reranker reads); this module holds the other two parts:

* **Audio tower** (AST-style, per segment): the segment's 10240 samples at 16 kHz (mono: the
  channels are averaged) → a power mel spectrogram (FFT 1024, Hann window of 400, hop 160,
  centred with reflection, 128 HTK mel bands, no area normalisation) → ``log(x + 1e-6)`` → 65
  frames padded with zeros to 66 → ``(x + 4.2677393) / (2 * 4.5689974)`` (AST's AudioSet
  statistics) → 16 x 16 patches with stride 10 in both axes (12 frequency x 6 time patches), a
  CLS and a distillation token, learned positions, ``audio_depth`` pre-LN ViT layers, a final
  LayerNorm → the 12 frequency tokens of each of the 6 time steps aggregated by one transformer
  encoder layer with a CLS token (as the visual tower aggregates space): 6 vectors per segment.
* **Synchronisation module**: visual and audio vectors are linearly projected (``vproj``,
  ``aproj``), layer-normed per modality, laid out as ``[OFF, 14 x 8 visual, MOD, 14 x 6 audio]``
  (198 tokens) with a learned position embedding, passed through ``sync_depth`` pre-LN blocks
  (8 heads, MLP x 4) and a final LayerNorm; a linear head on the OFF token gives 21 logits.
* **Sign**: in Synchformer's own labels a positive offset means the audio track was cut that
  much *later* (the sound comes before its picture). v2a's :class:`~v2a.interfaces.
  SyncClassifier` counts positive as "the audio comes late", so :attr:`offsets` ascend from
  -2.0 to +2.0 in v2a's sense and :meth:`offset_logits` returns the official logits reversed.
* **Windows**: :meth:`offset_logits` reads one window of ``segments`` segments starting at the
  video stream's first segment (or ``window`` segments later); audio is taken from the same
  seconds (the stream's first segment begins ``7.5 / 25`` s before the time its step describes)
  and zero-padded when short, as the official data pipeline pads; the video stream is resampled
  onto the segment grid (3.125 Hz), its padded steps zeroed. :meth:`score` is
  ``-|offset|`` (the expected offset under the softmax, or the argmax class with
  ``score: argmax``), averaged over the first and last windows of the candidate, as DeSync
  scores a clip longer than one window.
* **Weights** (``weights``): ``"none"``, or the path of an official Synchformer checkpoint
  (``{"model": state_dict}``): its ``afeat_extractor.``, ``vproj.``, ``aproj.`` and
  ``transformer.`` entries are loaded (the visual encoder loads ``vfeat_extractor.`` from the
  same file). Key names are *inferred* from the official source, not checked against a
  downloaded file: ``afeat_extractor.ast.embeddings.{cls_token,distillation_token,
  position_embeddings [1, 74, 768],patch_embeddings.projection}``, ``afeat_extractor.ast.
  encoder.layer.{i}.{attention.attention.{query,key,value},attention.output.dense,
  intermediate.dense,output.dense,layernorm_before,layernorm_after}``, ``afeat_extractor.ast.
  layernorm``, ``afeat_extractor.freq_attn_agg.{cls_token,self_attn.…,linear1,linear2,norm1,
  norm2}``, ``transformer.{OFF_tok,MOD_tok,vis_in_lnorm,aud_in_lnorm,pos_emb_cfg.pos_emb
  [1, 198, 768],blocks.{i}.{ln1,ln2,attn.{key,query,value,proj},mlp.0,mlp.2},ln_f,off_head}``.
  ``"pretrained"`` is refused with where to get the file (nothing is downloaded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from v2a import ComponentSpec, hookimpl
from v2a.errors import UserError
from v2a.lazy import lazy_exports
from v2a_plugins.visual_encoders.synchformer import (
    SEGMENT_FRAMES,
    SEGMENT_STEP,
    TOKENS_PER_SEGMENT,
    synchformer_pretrained_files,
)

SAMPLE_RATE = 16000
#: The video rate Synchformer's segments are defined at, and their lengths in seconds/samples.
FPS = 25.0
SEGMENT_SECONDS, STEP_SECONDS = SEGMENT_FRAMES / FPS, SEGMENT_STEP / FPS  # 0.64 s, 0.32 s
SEGMENT_SAMPLES = round(SEGMENT_SECONDS * SAMPLE_RATE)  # 10240
STEP_SAMPLES = round(STEP_SECONDS * SAMPLE_RATE)  # 5120
#: From the time a visual step describes (its segment's centre) back to the segment's start.
CENTRE_TO_START = (SEGMENT_FRAMES - 1) / 2 / FPS
#: The spectrogram: FFT, window, hop; frames per segment after padding; AST's statistics.
N_FFT, WINDOW, HOP, SPEC_FRAMES = 1024, 400, 160, 66
LOG_FLOOR = 1e-6
AST_MEAN, AST_STD = -4.2677393, 4.5689974
#: AST patches and their stride (both axes).
PATCH, PATCH_STRIDE = 16, 10
#: The offset classes (v2a's sign: positive when the audio comes late).
NUM_OFFSETS, MAX_OFFSET = 21, 2.0

Score = Literal["expected", "argmax"]


@dataclass
class SynchformerSyncConfig:
    """Options of the ``synchformer`` reranker (defaults: the real sizes).

    ``weights``: ``"none"`` or an official checkpoint's path. ``video_stream``: the visual stream
    (recipe ``visual_encoders`` name) it reads, made by the ``synchformer`` visual encoder whose
    ``width`` is ``video_width`` (the stream is ``8 * video_width`` wide). ``segments``: segments
    per window (14: 4.8 s). ``mel_bins``, ``audio_width``/``audio_depth``/``audio_heads``: the
    AST (128, 768/12/12); ``sync_width``/``sync_depth``/``sync_heads``: the synchronisation
    module (768/3/8). ``score``: ``expected`` or ``argmax`` offset.
    """

    weights: str = "none"
    """none (random) or the path of an official Synchformer checkpoint"""
    video_stream: str = "synchformer"
    """the stream it reads, made by a synchformer visual encoder"""
    video_width: int = 768
    """that encoder's width (the stream is 8 * video_width wide)"""
    segments: int = 14
    """segments per window (14: 4.8 s)"""
    mel_bins: int = 128
    """mel bins of the audio spectrogram transformer's input"""
    audio_width: int = 768
    """width of the audio spectrogram transformer"""
    audio_depth: int = 12
    """blocks of the audio spectrogram transformer"""
    audio_heads: int = 12
    """attention heads of the audio spectrogram transformer"""
    sync_width: int = 768
    """width of the synchronisation module"""
    sync_depth: int = 3
    """blocks of the synchronisation module"""
    sync_heads: int = 8
    """attention heads of the synchronisation module"""
    score: Score = "expected"
    """score a candidate by the expected offset or by the most likely one"""

    def __post_init__(self) -> None:
        if self.segments < 1 or self.mel_bins < PATCH:
            raise UserError(
                f"the synchformer reranker needs segments >= 1 and mel_bins >= {PATCH}, got "
                f"{self.segments} and {self.mel_bins}."
            )
        for width, heads in ((self.audio_width, self.audio_heads), (self.sync_width, self.sync_heads)):
            if width % heads:
                raise UserError(
                    f"the synchformer reranker's widths must be multiples of their heads "
                    f"(got {width} and {heads})."
                )


def synchformer_sync_properties(config: SynchformerSyncConfig) -> dict:
    """The reranker's attributes, known without building it (``ComponentSpec.properties``)."""
    return {"sample_rate": SAMPLE_RATE,
            "video_streams": {config.video_stream: TOKENS_PER_SEGMENT * config.video_width}}


def build_synchformer(config: SynchformerSyncConfig):
    """The ``synchformer`` reranker of ``config`` (its module, and torch, imported on first use)."""
    from v2a_plugins.rerankers.synchformer_model import Synchformer  # deferred: torch
    return Synchformer(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="reranker", name="synchformer", build=build_synchformer, config=SynchformerSyncConfig,
        properties=synchformer_sync_properties, pretrained_files=synchformer_pretrained_files,
        description="Synchformer (Iashin et al. 2024): 21 offset classes, score -|offset|",
    ))


#: The implementation's names, importable from here; imported from their module on first use.
_HOMES = {"v2a_plugins.rerankers.synchformer_model": (
    "ASTLayer", "ASTTower", "SyncBlock", "SyncTransformer", "Synchformer",
    "audio_tokens_per_segment", "holder", "window_seconds", "window_starts",
)}
__all__ = ["AST_MEAN", "AST_STD", "CENTRE_TO_START", "FPS", "HOP", "LOG_FLOOR", "MAX_OFFSET",
           "NUM_OFFSETS", "N_FFT", "PATCH", "PATCH_STRIDE", "SAMPLE_RATE", "SEGMENT_SAMPLES",
           "SEGMENT_SECONDS", "SPEC_FRAMES", "STEP_SAMPLES", "STEP_SECONDS", "WINDOW", "Score",
           "SynchformerSyncConfig", "build_synchformer", "synchformer_sync_properties",
           "v2a_register_components", *_HOMES["v2a_plugins.rerankers.synchformer_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
