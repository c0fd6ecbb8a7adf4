"""The ``clap`` audio encoder's implementation: how v2a builds or loads ``transformers``'
``ClapModel``, feeds it audio and text and reads its embeddings (the plug-in, its options and
its documentation are :mod:`v2a_plugins.audio_encoders.clap`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from v2a import AudioEncoder, FeatureSequence
from v2a.errors import UserError
from v2a.weights import PRETRAINED, WeightsError, is_random
from v2a_plugins.audio_encoders.clap import (
    DEFAULT_CHECKPOINT, INSTALL, SAMPLE_RATE, WINDOW_SECONDS, LaionClapConfig,
)

WINDOW = SAMPLE_RATE * WINDOW_SECONDS
INT16_SCALE = 32767.0  # LAION's inference rounds the waveform to 16-bit and back
MAX_TEXT_TOKENS = 77  # LAION-CLAP's text length
MEL_RANGE = (50, 14000)  # Hz: LAION-CLAP's mel bands (HTSAT's configuration)
#: The byte-level tokenizer of ``weights: none``: special tokens, then the 256 byte symbols.
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
MASK_TOKEN = "<mask>"


class ClapNotInstalledError(UserError):
    """The ``clap`` plug-in is asked for without ``transformers``."""


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

