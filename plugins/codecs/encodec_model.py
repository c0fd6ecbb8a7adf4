"""The ``encodec`` codec's implementation: :class:`EncodecCodec` and its loading (torch, the
encodec library).

The plug-in's documentation, options and registration are in
:mod:`v2a_plugins.codecs.encodec`, which imports this module the first time a codec is built.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from einops import rearrange
from torch import Tensor

from v2a import AudioCodec, FeatureSequence
from v2a.weights import PRETRAINED, WeightsError, is_random, load_checkpoint, local_file
from v2a_plugins.codecs.encodec import CHECKPOINTS, EncodecConfig
from v2a_plugins.codecs.inference import remove_weight_norms
from v2a_plugins.codecs.precision import apply_codec_precisions


# -- helpers ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_deprecations():
    """Silence the library's use of the deprecated ``torch.nn.utils.weight_norm``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*weight_norm.*is deprecated", category=FutureWarning)
        yield


def _init_codebooks(model) -> None:
    """Random codebooks for a randomly initialised model (the library's k-means-free init)."""
    from encodec.quantization.core_vq import uniform_init

    for layer in model.quantizer.vq.layers:
        book = layer._codebook
        entries = uniform_init(*book.embed.shape)
        book.embed.data.copy_(entries)
        book.embed_avg.data.copy_(entries)
        book.inited.data.fill_(1.0)


def load_encodec(config: EncodecConfig):
    """An ``encodec.EncodecModel`` for ``config``: random, published or from a local file."""
    from encodec import EncodecModel
    from encodec.model import ROOT_URL

    build = {"24khz": EncodecModel.encodec_model_24khz, "48khz": EncodecModel.encodec_model_48khz}
    with _quiet_deprecations():
        model = build[config.model](pretrained=False)
    if is_random(config.weights):
        _init_codebooks(model)
        return model
    if config.weights.strip().lower() == PRETRAINED:
        url = ROOT_URL + CHECKPOINTS[config.model]
        try:
            state = torch.hub.load_state_dict_from_url(
                url, map_location="cpu", check_hash=True, weights_only=True
            )
        except Exception as exc:
            raise WeightsError(
                f"could not download the published EnCodec {config.model} weights from {url} "
                f"({type(exc).__name__}: {exc}); download the file on a machine with internet "
                "and give its path as the weights option"
            ) from None
        where = url
    else:
        path = local_file(config.weights, what=f"the EnCodec {config.model} codec")
        state, where = load_checkpoint(path), str(path)
    if isinstance(state, dict) and state and all(key.startswith("model.") for key in state):
        state = {key[len("model."):]: value for key, value in state.items()}  # saved from v2a
    if isinstance(state, dict) and not any(str(key).endswith(".weight_g") for key in state):
        remove_weight_norms(model)  # a state dict of a loaded EncodecCodec: weight norm folded
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = str(exc).strip().splitlines()
        raise WeightsError(
            f"{where} is not a state dict of the EnCodec {config.model} model "
            f"({detail[1].strip() if len(detail) > 1 else detail[0]})"
        ) from None
    return model


# -- the codec ----------------------------------------------------------------------------------


class EncodecCodec(AudioCodec):
    """``encodec.EncodecModel`` behind the :class:`~v2a.interfaces.AudioCodec` contract.

    ``encode``: ``[b, c, n]`` → int64 codes ``[b, n_codebooks, ceil(n / 320)]``; ``decode``:
    codes → ``[b, channels, l * 320]`` (or ``length``); ``latents``: the quantiser's decoding of
    the codes, the embedding the decoder reads, ``[b, l, 128]`` at ``frame_rate``.
    """

    def __init__(self, config: EncodecConfig):
        super().__init__()
        self.config = config
        self.model = load_encodec(config)
        remove_weight_norms(self.model)
        self.model.requires_grad_(False)  # a frozen tokenizer (after the folded weights)

        self.sample_rate = int(self.model.sample_rate)
        self.channels = int(self.model.channels)
        self.hop_length = int(self.model.encoder.hop_length)
        self.frame_rate = self.sample_rate / self.hop_length
        self.bandwidth = float(config.bandwidth)
        self.n_codebooks = self.model.quantizer.get_num_quantizers_for_bandwidth(
            self.model.frame_rate, self.bandwidth
        )
        self.codebook_size = int(self.model.quantizer.bins)
        self.latent_dim = int(self.model.quantizer.dimension)
        self.normalize = config.model == "48khz"
        self.eval()
        self.precisions = apply_codec_precisions(self, name="encodec", ignored=("output_rms",))

    def _channels(self, wav: Tensor) -> Tensor:
        """``[b, c, n]`` → ``[b, channels, n]``: mixed down to mono, or mono duplicated to stereo."""
        if wav.shape[1] == self.channels:
            return wav
        mono = wav.mean(dim=1, keepdim=True)
        return mono.expand(-1, self.channels, -1)

    def encode(self, wav: Tensor) -> Tensor:
        """``wav: [b, c, n]`` → codes ``[b, n_codebooks, ceil(n / 320)]`` int64."""
        x = self._channels(wav).to(_dtype_of(self.model.encoder))
        if self.normalize:  # the library's per-segment normalisation, once per clip
            rms = x.mean(dim=1, keepdim=True).pow(2).mean(dim=2, keepdim=True).sqrt()
            x = x / (1e-8 + rms)
        emb = self.model.encoder(x).to(self._dtype())  # [b, 128, l]
        codes = self.model.quantizer.encode(emb, self.model.frame_rate, self.bandwidth)  # [k, b, l]
        return rearrange(codes, "k b l -> b k l")

    def _embed(self, codes: Tensor) -> Tensor:
        """codes ``[b, k, l]`` → the decoder's input ``[b, 128, l]``."""
        if codes.dim() != 3 or codes.shape[1] != self.n_codebooks:
            raise ValueError(
                f"EnCodec codes must be [b, {self.n_codebooks}, l], got {list(codes.shape)}"
            )
        return self.model.quantizer.decode(rearrange(codes.long(), "b k l -> k b l"))

    def decode_frames(self, codes: Tensor) -> Tensor:
        """codes ``[b, k, l]`` → ``wav: [b, channels, l * 320]`` (``decode`` fits it to the
        length asked for)."""
        emb = self._embed(codes)
        wav = self.model.decoder(emb.to(_dtype_of(self.model.decoder))).to(emb.dtype)  # [b, channels, l * 320]
        return wav * self.config.output_rms if self.normalize else wav

    def latents(self, codes: Tensor) -> FeatureSequence:
        """codes ``[b, k, l]`` → ``[b, l, 128]`` at ``frame_rate``."""
        values = rearrange(self._embed(codes), "b d l -> b l d")
        return FeatureSequence(values=values, rate=self.frame_rate)

    def _dtype(self) -> torch.dtype:
        return self.model.quantizer.vq.layers[0]._codebook.embed.dtype


def _dtype_of(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype
