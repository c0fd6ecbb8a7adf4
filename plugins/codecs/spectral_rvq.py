"""``spectral_rvq``: a small spectral codec fitted on your own audio, no pre-trained weights.

It makes v2a's whole pipeline (``v2a generate`` with a bundled tiny model) run on a machine
with no internet: the codes it produces keep what a video-to-audio model must get right (when a
sound starts, and the pitch of tonal sounds), and it is fitted on a CPU in seconds to minutes.

How it works
------------
* **Analysis.** Mono mix, STFT with a periodic Hann window (``n_fft`` 1024, ``hop_length`` 256
  at 16 kHz: 62.5 frames/s, one frame = 16 ms). Frame ``i`` is centred on sample
  ``i * hop_length``; the input is zero-padded to ``l * hop_length`` samples,
  ``l = ceil(n / hop_length)``, so ``encode`` returns exactly :meth:`num_frames` frames.
* **Feature.** The magnitude of the *linear* frequency bins, scaled so that a sine of amplitude
  ``a`` peaks at ``a``, then compressed by a power law: ``feature = magnitude ** compression``
  (``compression`` 0.3). Linear bins (15.6 Hz apart at the defaults) keep the pitch of a tone in
  which bin peaks, where a mel scale would merge neighbouring notes above 1 kHz. The power law
  rather than ``log(1 + magnitude)``: it is scale-free (a gain ``g`` multiplies every feature by
  ``g ** 0.3``, so a codeword fitted on loud sounds also fits quiet ones, with no floor constant
  that depends on the level of the recording), it maps silence to exactly 0 (decoded silence is
  silent), and it compresses the dynamic range enough that k-means on squared error does not
  spend every codeword on the loudest frames (0.3 is the exponent of loudness-like
  compressions used in speech enhancement). ``latent_dim = n_fft // 2 + 1``.
* **Quantiser.** Residual VQ: ``n_codebooks`` codebooks of ``codebook_size`` entries. Level 0
  quantises the feature to its nearest entry, each next level the residual left by the
  previous ones; the dequantised feature is the sum of the chosen entries. Codes are
  ``[b, n_codebooks, l]``, coarse first, so decoding the first levels alone works too.
* **Synthesis.** The magnitude is recovered from the dequantised feature
  (``max(feature, 0) ** (1 / compression)``) and given a phase by fast Griffin-Lim (Perraudin et
  al. 2013: Griffin-Lim with momentum ``momentum``, ``griffin_lim_iters`` iterations). The
  initial phase is the phase a stationary sinusoid at each bin's centre frequency would have
  (``2π · bin · hop_length · frame / n_fft``), which is deterministic and already coherent from
  frame to frame for tones, so few iterations suffice and no random generator is involved.
  ``decode`` always synthesises ``l * hop_length`` samples (which the ``AudioCodec`` interface
  trims or zero-pads to ``length``) and does not clip them: peaks past full scale are left to
  ``v2a generate``'s output stage. Griffin-Lim cannot restore what quantising
  removed: the fine spectral structure that places a noise burst inside a 64 ms window is
  averaged away, so a decoded burst's attack is spread over about one frame either side
  (tones, whose frames are better matched, keep theirs sharper). More iterations do not help.

Measured on synthetic clips (tones of 7 pitches from 262 to 1047 Hz with sharp attacks, and
50 ms noise bursts; fitted on 16 s, 8 clips covering every pitch; 60 held-out 2 s clips, 300
events; onsets by spectral flux of ``log(1 + |STFT|)``, 16 ms window, 2 ms hop): every onset
found again, none invented, mean |error| 3.5 ms (tones) and 2.0 ms (bursts), worst 11 ms
(one frame is 16 ms; the detector itself is off by up to 5 ms on the originals); every tone's
dominant pitch within 0.04 semitone; compressed-magnitude error 0.25 of the signal's, against
1.65 for random codebooks. Encoding 10 s takes ~0.01 s, decoding ~0.2 s (2 CPU cores).

Fitting
-------
Before fitting (``weights: none``) the codebooks are random: every contract holds, but the
sound is noise. Fit them on audio like the audio you will generate::

    codec = build the codec (e.g. from a recipe)
    stats = codec.fit(wavs, max_frames=200_000, iterations=20, seed=0)   # wavs: [c, n] each
    v2a.weights.save_state(codec.state_dict(), "codec.safetensors")

and set ``weights: codec.safetensors`` in the recipe. On the command line ``v2a fit <recipe>
<slot> <audio files>`` does exactly this. :meth:`SpectralRVQCodec.fit` samples at most
``max_frames`` frames uniformly from all the audio (streaming, so long collections do not
fill memory), then fits one level after another by k-means (k-means++ seeding on a subsample,
then Lloyd iterations; an entry left empty is moved onto the worst-fitted frame) on the
residual the previous levels leave. It returns the squared error after each level, which must
fall level by level. At the defaults, 10 minutes of audio (37 500 frames) took 12 s and 200 000
frames (53 minutes) about 4 minutes on a shared 2-core CPU.

The codebooks hold what the fitting audio holds: a sound unlike any of it decodes as the
nearest one that was seen (a tone at a pitch that never occurs in the fitting audio comes back
at a fitted pitch). Fit on audio that covers the sounds you will generate, e.g. the training
set's soundtracks.

There is no ``pretrained`` for this codec: its codebooks describe your audio, so they are
fitted, never downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from v2a import ComponentSpec, hookimpl
from v2a.lazy import lazy_exports
from v2a.pretrained import nothing_to_download
from v2a.weights import WeightsError

# -- config ---------------------------------------------------------------------------------------


@dataclass
class SpectralRVQConfig:
    """Options of ``codec: {plugin: spectral_rvq, ...}``."""

    sample_rate: int = 16000
    """Hz of encode's input and decode's output"""
    n_fft: int = 1024
    """STFT size: n_fft // 2 + 1 linear bins, sample_rate / n_fft Hz apart"""
    hop_length: int = 256
    """samples per code frame: frame_rate = sample_rate / hop_length"""
    n_codebooks: int = 4
    """RVQ levels"""
    codebook_size: int = 256
    """entries per level"""
    compression: float = 0.3
    """feature = magnitude ** compression, in (0, 1]"""
    griffin_lim_iters: int = 32
    """phase reconstruction iterations in decode"""
    momentum: float = 0.99
    """fast Griffin-Lim momentum (0: plain Griffin-Lim)"""
    weights: str = "none"
    """none (random codebooks) or a .safetensors file written by v2a fit"""

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "n_codebooks", "codebook_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.hop_length > self.n_fft // 2:
            raise ValueError(
                f"hop_length must be at most n_fft // 2 = {self.n_fft // 2} so that frames "
                f"overlap, got {self.hop_length}"
            )
        if not 0 < self.compression <= 1:
            raise ValueError(f"compression must lie in (0, 1], got {self.compression}")
        if self.griffin_lim_iters < 0:
            raise ValueError(f"griffin_lim_iters must be >= 0, got {self.griffin_lim_iters}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")


def spectral_rvq_properties(config: SpectralRVQConfig) -> dict:
    """The codec attributes ``config`` gives, without building (see ``ComponentSpec.properties``);
    a fitted weights file must agree with them, or it is refused."""
    return {"sample_rate": config.sample_rate, "channels": 1,
            "frame_rate": config.sample_rate / config.hop_length,
            "n_codebooks": config.n_codebooks, "codebook_size": config.codebook_size,
            "latent_dim": config.n_fft // 2 + 1}


# -- registration ---------------------------------------------------------------------------------


#: The refusal of ``weights: pretrained``: the codebooks describe your audio, never published.
NOT_PUBLISHED = ("the spectral_rvq codec has no published weights; fit it on your own audio with "
                 "`v2a fit <recipe> <slot> <audio files>` and set weights to the .safetensors "
                 "file it writes, or to 'none' for random codebooks.")


def refuse_pretrained(weights: str) -> None:
    raise WeightsError(NOT_PUBLISHED)


def spectral_rvq_pretrained_files(config: SpectralRVQConfig) -> list:
    """Nothing to download (see ``ComponentSpec.pretrained_files``): ``v2a fit`` makes the
    weights; ``weights: pretrained`` is refused as building refuses it."""
    return nothing_to_download(config.weights, refuse_pretrained)


def build_codec(config: SpectralRVQConfig):
    """The :class:`SpectralRVQCodec` of ``config`` (its module, and torch, load on first use)."""
    from v2a_plugins.codecs.spectral_rvq_model import SpectralRVQCodec  # deferred: torch (the codec)

    return SpectralRVQCodec(config)


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="codec", name="spectral_rvq", build=build_codec, config=SpectralRVQConfig,
        properties=spectral_rvq_properties, state_dict_weights=True,
        pretrained_files=spectral_rvq_pretrained_files,
        description="STFT-magnitude RVQ codec fitted on your audio (k-means, Griffin-Lim); no download",
    ))


#: The implementation's public names, imported from :mod:`v2a_plugins.codecs.spectral_rvq_model`
#: on first use.
_HOMES = {"v2a_plugins.codecs.spectral_rvq_model": ("CHUNK", "SpectralRVQCodec", "kmeans",
                                                    "kmeans_plus_plus", "nearest")}
__all__ = ["NOT_PUBLISHED", "SpectralRVQConfig", "build_codec", "refuse_pretrained",
           "spectral_rvq_pretrained_files", "spectral_rvq_properties",
           *_HOMES["v2a_plugins.codecs.spectral_rvq_model"]]
__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
