"""The ``vggish`` audio encoder's implementation: VGGish in torchvggish's parameter names, its
log-mel front end, the PCA postprocessing and weights loading (the plug-in, its options and its
documentation are :mod:`v2a_plugins.audio_encoders.vggish`)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from v2a import AudioEncoder, FeatureSequence
from v2a.errors import UserError
from v2a.weights import PRETRAINED, WeightsError, check_finite, is_random, load_checkpoint, load_into, local_file
from v2a_plugins.audio_encoders.vggish import (
    DOWNLOAD_PAGE, EMBEDDING_DIM, EXAMPLE_FRAMES, HOP, RATE, SAMPLE_RATE, VggishConfig,
)

# -- constants of the reference (vggish_params; the plug-in module has those its declaration needs)

WINDOW = 400  # 25 ms
FFT_SIZE = 512  # the next power of two above the window
MEL_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
HIDDEN = 4096
QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0
#: The convolution stack: output channels, "M" for a 2x2 max-pool of stride 2.
LAYOUT = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
POOLED_SIZE = (EXAMPLE_FRAMES // 16, MEL_BANDS // 16)  # (6, 4) after four pools

EXAMPLE_SAMPLES = WINDOW + (EXAMPLE_FRAMES - 1) * HOP  # 15600: the span of one example
START = EXAMPLE_SAMPLES / 2 / SAMPLE_RATE  # 0.4875 s


# -- front end ------------------------------------------------------------------------------------


def hz_to_mel(hz):
    """The mel scale of the reference: ``1127 ln(1 + f / 700)``."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def mel_matrix() -> Tensor:
    """``[257, 64]`` float64 weights from FFT-bin magnitudes to mel bands.

    Triangles in the mel domain: band ``i`` rises from edge ``i`` to edge ``i + 1`` and falls to
    edge ``i + 2``, of 66 edges equally spaced in mel from 125 to 7500 Hz; peak 1, not area
    normalised. The DC bin weighs nothing.
    """
    bins_mel = hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, FFT_SIZE // 2 + 1))[:, None]
    edges = np.linspace(hz_to_mel(MEL_MIN_HZ), hz_to_mel(MEL_MAX_HZ), MEL_BANDS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel - lower) / (centre - lower)
    falling = (upper - bins_mel) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return torch.from_numpy(weights)


def num_frames(num_samples: int) -> int:
    """Log-mel frames of ``num_samples`` samples (whole windows only; 0 below one window)."""
    return 0 if num_samples < WINDOW else 1 + (num_samples - WINDOW) // HOP


def num_examples(num_samples: int) -> int:
    """Whole 96-frame examples, the steps ``encode`` returns, of ``num_samples`` samples."""
    return num_frames(num_samples) // EXAMPLE_FRAMES


def spectrum_magnitude(mono: Tensor, window: Tensor) -> Tensor:
    """``[b, n]`` → ``[b, frames, 257]``: |512-point FFT| of each windowed 400-sample frame
    (the frame is zero-padded at its end, as the reference's ``rfft(frame, 512)``)."""
    frames = mono.unfold(-1, WINDOW, HOP)  # [b, frames, 400]
    return torch.fft.rfft(frames * window, n=FFT_SIZE).abs()


def log_mel(mono: Tensor, window: Tensor, mel_weights: Tensor) -> Tensor:
    """``[b, n]`` → the reference's log-mel ``[b, frames, 64]`` (in ``mono``'s dtype)."""
    return torch.log(spectrum_magnitude(mono, window) @ mel_weights + LOG_OFFSET)


# -- the network ----------------------------------------------------------------------------------


def conv_stack(width_divisor: int) -> tuple[nn.Sequential, int]:
    """torchvggish's ``features``: convolutions (3x3, padding 1) each followed by a ReLU, and
    2x2 max-pools, in the order of :data:`LAYOUT`; and its number of output channels."""
    layers: list[nn.Module] = []
    channels = 1
    for item in LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            out = item // width_divisor
            layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1), nn.ReLU()]
            channels = out
    return nn.Sequential(*layers), channels


def flatten_channels_last(x: Tensor) -> Tensor:
    """``[n, c, h, w]`` → ``[n, h * w * c]`` in (h, w, c) order: the TensorFlow model's flatten,
    which the ported weights of the first fully connected layer expect."""
    return x.permute(0, 2, 3, 1).flatten(1)


def quantise(whitened: Tensor) -> Tensor:
    """The release's 8-bit quantisation: clip to [-2, 2], map linearly to [0, 255], round
    (half to even), kept as floats."""
    clipped = whitened.clamp(QUANTIZE_MIN, QUANTIZE_MAX)
    return torch.round((clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))


class Postprocessor(nn.Module):
    """PCA whitening then 8-bit quantisation: ``e [n, 128]`` → ``quantise(P (e - m))``.

    ``pca_matrix [128, 128]`` is ``P`` (rows are output dimensions), ``pca_means [128, 1]`` is
    ``m``: the names and shapes of torchvggish's ``pproc``. Initialised to the identity and zeros.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("pca_matrix", torch.eye(EMBEDDING_DIM))
        self.register_buffer("pca_means", torch.zeros(EMBEDDING_DIM, 1))

    def forward(self, embeddings: Tensor) -> Tensor:
        return quantise((embeddings - self.pca_means.T) @ self.pca_matrix.T)


# -- weights --------------------------------------------------------------------------------------


def download_pretrained(postprocess: bool) -> dict[str, Tensor]:
    """torchvggish's own download (its ``vggish()``), as a state dict in this module's layout."""
    try:
        import torchvggish
    except ImportError as exc:  # torchvggish itself, or soundfile, which it needs undeclared
        raise WeightsError(
            f"VGGish weights=pretrained downloads through torchvggish, which cannot be imported "
            f"(no module {exc.name!r}): install it with pip install 'v2a[vggish]', or download "
            f"vggish-10086976.pth from {DOWNLOAD_PAGE} and set weights to its path."
        ) from None
    try:
        model = torchvggish.vggish(postprocess=postprocess)
    except OSError as exc:
        raise WeightsError(
            f"torchvggish could not download the VGGish weights ({exc}); download "
            f"vggish-10086976.pth from {DOWNLOAD_PAGE} and set weights to its path."
        ) from None
    state = dict(model.state_dict())
    if postprocess:  # torchvggish 0.2 keeps the PCA outside its state dict
        state["pproc.pca_matrix"] = torch.as_tensor(model.pproc._pca_matrix).float()
        state["pproc.pca_means"] = torch.as_tensor(model.pproc._pca_means).float().reshape(-1, 1)
    check_finite(state, "the torchvggish download")
    return state


def load_pca(pca_weights: str) -> dict[str, Tensor]:
    """``pproc.*`` tensors from a PCA file (``pca_eigen_vectors``, ``pca_means``)."""
    path = local_file(pca_weights, what="the VGGish PCA",
                      hint=f"It is vggish_pca_params-970ea276.pth from {DOWNLOAD_PAGE}.")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                params = {name: torch.from_numpy(archive[name]) for name in archive.files}
        except (OSError, ValueError) as exc:
            raise WeightsError(f"{path} is not a readable NumPy .npz archive ({exc}).") from None
        check_finite(params, path)
    else:
        params = load_checkpoint(path)
    if not isinstance(params, Mapping) or any(
        not isinstance(params.get(key), Tensor) for key in ("pca_eigen_vectors", "pca_means")
    ):
        raise WeightsError(f"{path} holds no pca_eigen_vectors and pca_means tensors, so it is "
                           "not a VGGish PCA file.")
    matrix, means = params["pca_eigen_vectors"].float(), params["pca_means"].float()
    if tuple(matrix.shape) != (EMBEDDING_DIM, EMBEDDING_DIM) or means.numel() != EMBEDDING_DIM:
        raise WeightsError(
            f"{path} holds a PCA of {tuple(matrix.shape)} with {means.numel()} means, not the "
            f"({EMBEDDING_DIM}, {EMBEDDING_DIM}) and {EMBEDDING_DIM} of VGGish."
        )
    return {"pproc.pca_matrix": matrix, "pproc.pca_means": means.reshape(-1, 1)}


def resolve_weights(config: VggishConfig) -> tuple[dict[str, Tensor] | None, str]:
    """The state dict to load into the encoder (``None``: keep the random initialisation) and
    where it came from; the ``pproc.*`` entries present exactly when ``postprocess`` is on."""
    if config.pca_weights and (not config.postprocess or is_random(config.weights)):
        raise UserError("VGGish reads pca_weights only with postprocess on and weights a file or "
                        "pretrained; set those, or remove pca_weights.")
    if is_random(config.weights):
        return None, ""
    if config.weights.strip().lower() == PRETRAINED:
        state, source = download_pretrained(config.postprocess), "the torchvggish download"
    else:
        path = local_file(config.weights, what="VGGish",
                          hint=f"It is vggish-10086976.pth from {DOWNLOAD_PAGE}.")
        state, source = load_checkpoint(path), str(path)
        if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
            raise WeightsError(f"{path} does not hold a state dict of tensors, so it is not a "
                               "VGGish checkpoint.")
        state = dict(state)
    has_pca = any(key.startswith("pproc.") for key in state)
    if not config.postprocess:
        state = {key: value for key, value in state.items() if not key.startswith("pproc.")}
    elif config.pca_weights:
        state = {key: value for key, value in state.items() if not key.startswith("pproc.")}
        state.update(load_pca(config.pca_weights))
    elif not has_pca:
        raise WeightsError(
            f"VGGish postprocess needs the PCA parameters, which {source} does not hold; set "
            f"pca_weights to vggish_pca_params-970ea276.pth (from {DOWNLOAD_PAGE}) or to the "
            "TensorFlow release's vggish_pca_params.npz."
        )
    return state, source


# -- component ------------------------------------------------------------------------------------


class VggishEncoder(AudioEncoder):
    """VGGish embeddings per 0.96 s example: ``wav [b, c, n]`` at 16 kHz → ``[b, t, 128]``.

    Channels are mixed to mono. ``t = (1 + (n - 400) // 160) // 96`` whole examples (0 below
    15600 samples: an empty sequence), step ``i`` describing ``0.4875 + 0.96 i`` s. The state
    dict is torchvggish's (``features.*``, ``embeddings.*``, with ``postprocess`` ``pproc.*``).
    """

    def __init__(self, config: VggishConfig | None = None):
        super().__init__()
        config = config or VggishConfig()
        divisor = config.width_divisor
        if divisor < 1 or any(isinstance(c, int) and c % divisor for c in LAYOUT) or HIDDEN % divisor:
            raise UserError(f"VGGish width_divisor must be a positive divisor of 64, got {divisor}.")
        self.config = config
        self.sample_rate, self.dim, self.rate = SAMPLE_RATE, EMBEDDING_DIM, RATE
        self.features, channels = conv_stack(divisor)
        hidden = HIDDEN // divisor
        head: list[nn.Module] = [
            nn.Linear(channels * POOLED_SIZE[0] * POOLED_SIZE[1], hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, EMBEDDING_DIM),
        ]
        if config.embedding_relu:
            head.append(nn.ReLU())
        self.embeddings = nn.Sequential(*head)
        self.pproc = Postprocessor() if config.postprocess else None
        self.register_buffer("window", torch.hann_window(WINDOW, periodic=True, dtype=torch.float64),
                             persistent=False)
        self.register_buffer("mel_weights", mel_matrix(), persistent=False)
        state, source = resolve_weights(config)
        if state is not None:
            load_into(self, state, source, "the VGGish architecture of these options")

    def embed(self, examples: Tensor) -> Tensor:
        """``[n, 96, 64]`` log-mel examples → ``[n, 128]`` (postprocessed when configured)."""
        pooled = self.features(examples.unsqueeze(1))  # [n, c, 6, 4]
        out = self.embeddings(flatten_channels_last(pooled))
        return self.pproc(out) if self.pproc is not None else out

    def encode(self, wav: Tensor) -> FeatureSequence:
        if wav.dim() != 3:
            raise ValueError(f"VggishEncoder.encode expects wav [b, c, n], got {tuple(wav.shape)}")
        batch, steps = wav.shape[0], num_examples(wav.shape[-1])
        dtype = self.embeddings[0].weight.dtype
        if steps == 0:
            values = wav.new_zeros(batch, 0, EMBEDDING_DIM, dtype=dtype)
            return FeatureSequence(values=values, rate=self.rate, start=START)
        mono = wav.mean(dim=1)[:, : WINDOW + (steps * EXAMPLE_FRAMES - 1) * HOP]
        front = torch.float64 if mono.dtype == torch.float64 else torch.float32
        mono = mono.to(front)
        mel = log_mel(mono, self.window.to(front), self.mel_weights.to(front))  # [b, 96 t, 64]
        examples = mel.reshape(batch * steps, EXAMPLE_FRAMES, MEL_BANDS).to(dtype)
        values = self.embed(examples).reshape(batch, steps, EMBEDDING_DIM)
        return FeatureSequence(values=values, rate=self.rate, start=START)

