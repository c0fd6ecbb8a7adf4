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

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from v2a import AudioEncoder, ComponentSpec, FeatureSequence, hookimpl
from v2a.errors import UserError
from v2a.pretrained import PretrainedFile, hub_model_folder
from v2a.schema import FieldError
from v2a.weights import PRETRAINED, WeightsError, is_random

SAMPLE_RATE = 48000
WINDOW_SECONDS = 10  # HTSAT reads 10 s (1001 mel frames); longer clips are cut into windows
WINDOW = SAMPLE_RATE * WINDOW_SECONDS
INT16_SCALE = 32767.0  # LAION's inference rounds the waveform to 16-bit and back
MAX_TEXT_TOKENS = 77  # LAION-CLAP's text length
MEL_RANGE = (50, 14000)  # Hz: LAION-CLAP's mel bands (HTSAT's configuration)
DEFAULT_CHECKPOINT = "laion/larger_clap_general"
#: The byte-level tokenizer of ``weights: none``: special tokens, then the 256 byte symbols.
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
MASK_TOKEN = "<mask>"
INSTALL = "pip install 'v2a[clap]'"


class ClapNotInstalledError(UserError):
    """The ``clap`` plug-in is asked for without ``transformers``."""


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


def transformers_module() -> Any:
    """``transformers``, or a :class:`ClapNotInstalledError` saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise ClapNotInstalledError(
            f"the clap plug-in needs the transformers package, which is not installed; install "
            f"it with: {INSTALL}") from None
    return transformers


def byte_tokenizer(transformers: Any) -> Any:
    """A RoBERTa-style byte-level tokenizer without merges (``<s> bytes </s>``), built offline:
    the text side of ``weights: none``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *symbols, MASK_TOKEN))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", vocab["</s>"]),
                                                            ("<s>", vocab["<s>"]))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", mask_token=MASK_TOKEN)


def random_model(config: LaionClapConfig, transformers: Any, vocab_size: int) -> Any:
    """A randomly initialised ``ClapModel`` of the size ``config`` gives."""
    stages = len(config.audio_depths)
    audio = {"patch_embeds_hidden_size": config.audio_width,
             "hidden_size": config.audio_width * 2 ** (stages - 1),
             "depths": list(config.audio_depths), "num_attention_heads": list(config.audio_heads),
             "enable_fusion": False, "projection_dim": config.dim}
    text = {"vocab_size": vocab_size, "hidden_size": config.text_width,
            "num_hidden_layers": config.text_layers, "num_attention_heads": config.text_heads,
            "intermediate_size": 4 * config.text_width, "projection_dim": config.dim}
    return transformers.ClapModel(transformers.ClapConfig(
        audio_config=audio, text_config=text, projection_dim=config.dim))


def trained_parts(config: LaionClapConfig, transformers: Any) -> tuple[Any, Any, Any]:
    """(model, tokenizer, feature extractor) of a local folder or, for ``pretrained``, of
    ``checkpoint`` from the hub; a :class:`WeightsError` when they cannot be read."""
    pretrained = config.weights.strip().lower() == PRETRAINED
    source = config.checkpoint if pretrained else str(Path(config.weights).expanduser())
    if not pretrained and not Path(source).is_dir():
        raise WeightsError(
            f"the CLAP weights {config.weights} are not a folder; give a folder saved with "
            f"save_pretrained (config.json, the weights and the tokenizer's files), or "
            f"'pretrained' to download {config.checkpoint}")
    try:
        model = transformers.ClapModel.from_pretrained(source, local_files_only=not pretrained)
        tokenizer = transformers.AutoTokenizer.from_pretrained(source,
                                                               local_files_only=not pretrained)
        features = transformers.ClapFeatureExtractor.from_pretrained(
            source, local_files_only=not pretrained)
    except (OSError, ValueError) as exc:
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if pretrained:
            raise WeightsError(
                f"could not download the CLAP checkpoint {source} from the Hugging Face hub "
                f"({why}); download it on a machine with internet and give the folder "
                "save_pretrained writes as the weights option") from None
        raise WeightsError(f"could not read {source} as a CLAP checkpoint ({why}); give a folder "
                           "saved with save_pretrained that holds the model, its tokenizer and "
                           "its feature extractor") from None
    if model.config.audio_config.enable_fusion:
        raise WeightsError(f"{source} is a fused CLAP checkpoint, whose audio features take "
                           "random crops, so its scores would change from run to run; use an "
                           f"unfused one such as {DEFAULT_CHECKPOINT}")
    return model, tokenizer, features


def pooled(output: Any) -> Tensor:
    """The pooled embedding of ``get_audio_features``/``get_text_features`` (a tensor in older
    ``transformers``, an output whose ``pooler_output`` it is in 5.x), L2-normalised."""
    values = output.pooler_output if hasattr(output, "pooler_output") else output
    return torch.nn.functional.normalize(values, dim=-1)


class LaionClap(AudioEncoder):
    """LAION-CLAP at 48 kHz: ``encode(wav [b, c, n])`` → L2-normalised audio embeddings
    ``[b, ceil(n / 480000), dim]`` (one per 10 s window, rate 0.1, start 0);
    :meth:`embed_text` → text embeddings in the same space. Channels are mixed to mono. Its
    ``state_dict`` is the ``transformers`` model's, under ``model.``."""

    def __init__(self, config: LaionClapConfig | None = None):
        super().__init__()
        config = config or LaionClapConfig()
        self.config = config
        transformers = transformers_module()
        if is_random(config.weights):
            self.tokenizer = byte_tokenizer(transformers)
            self.model = random_model(config, transformers, vocab_size=len(self.tokenizer))
            self.features = transformers.ClapFeatureExtractor(
                truncation="rand_trunc", frequency_min=MEL_RANGE[0], frequency_max=MEL_RANGE[1])
        else:
            self.model, self.tokenizer, self.features = trained_parts(config, transformers)
        if int(self.features.sampling_rate) != SAMPLE_RATE:
            raise WeightsError(f"the CLAP checkpoint's feature extractor reads "
                               f"{self.features.sampling_rate} Hz, not {SAMPLE_RATE}")
        self.model.eval()
        self.sample_rate = SAMPLE_RATE
        self.dim = int(self.model.config.projection_dim)
        self.rate = 1.0 / WINDOW_SECONDS

    def _parameter(self) -> Tensor:
        return next(self.model.parameters())

    def windows(self, wav: Tensor) -> list[np.ndarray]:
        """``wav [b, c, n]`` → the 16-bit-rounded mono windows of every clip, clip by clip
        (``ceil(n / 480000)`` each, in float64 for the feature extractor)."""
        mono = wav.detach().to("cpu", torch.float64).mean(dim=1).clamp(-1.0, 1.0)
        mono = torch.round(mono * INT16_SCALE) / INT16_SCALE
        count = max(1, math.ceil(mono.shape[-1] / WINDOW))
        return [clip[i * WINDOW:(i + 1) * WINDOW].numpy() for clip in mono for i in range(count)]

    def embed(self, wav: Tensor) -> Tensor:
        """``wav [b, c, n]`` → ``[b, windows, dim]``, L2-normalised."""
        if wav.dim() != 3:
            raise ValueError(f"LaionClap expects wav [b, c, n], got {tuple(wav.shape)}")
        if wav.shape[-1] < 1:
            raise ValueError("LaionClap needs at least one sample per clip")
        windows = self.windows(wav)
        inputs = self.features(windows, sampling_rate=SAMPLE_RATE, truncation="rand_trunc",
                               padding="repeatpad", return_tensors="pt")
        parameter = self._parameter()
        mel = inputs["input_features"].to(parameter.device, parameter.dtype)
        embedded = pooled(self.model.get_audio_features(input_features=mel))
        return embedded.reshape(wav.shape[0], len(windows) // wav.shape[0], -1)

    def encode(self, wav: Tensor) -> FeatureSequence:
        return FeatureSequence(values=self.embed(wav), rate=self.rate, start=0.0)

    def embed_text(self, texts: list[str]) -> Tensor:
        """``texts`` → their L2-normalised embeddings ``[len(texts), dim]`` in the audio's space."""
        tokens = self.tokenizer(list(texts), padding=True, truncation=True,
                                max_length=MAX_TEXT_TOKENS, return_tensors="pt")
        device = self._parameter().device
        return pooled(self.model.get_text_features(
            input_ids=tokens["input_ids"].to(device),
            attention_mask=tokens["attention_mask"].to(device)))


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
    return [hub_model_folder(what=f"CLAP checkpoint {config.checkpoint}",
                             repo_id=config.checkpoint,
                             load=lambda: trained_parts(config, transformers_module()),
                             licence="unknown here (see the checkpoint's model card)")]


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="audio_encoder", name="clap", build=LaionClap, config=LaionClapConfig,
        properties=clap_properties, requires=("transformers",), install=INSTALL,
        pretrained_files=clap_pretrained_files,
        description="LAION-CLAP (Wu 2023, transformers' port): 512-d audio and text embeddings "
                    "at 48 kHz; needs v2a[clap]",
    ))
