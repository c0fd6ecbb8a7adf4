"""The spectral_rvq codec: its contracts (random and fitted codebooks), and what fitting buys:
onsets within one frame, tone pitches within a semitone, and a far lower error than random
codebooks, on synthetic clips it was not fitted on."""

from __future__ import annotations

import functools
import itertools
import math
import pickle
import time

import pytest
import torch
from v2a_plugins.codecs.spectral_rvq import SpectralRVQCodec, SpectralRVQConfig

from tests.unsafe_pickle import RunsCode
from v2a.testing import from_registry, parametrize_with_checks
from v2a.weights import WeightsError, save_state

SR = 16000
FRAME_MS = 1000 * 256 / SR  # 16 ms
PITCHES = (261.63, 329.63, 392.00, 523.25, 659.25, 783.99, 1046.50)  # C4 E4 G4 C5 E5 G5 C6


# -- synthetic audio --------------------------------------------------------------------------------


def synthetic_clip(gen: torch.Generator, seconds: float = 2.0, events: int = 5, pitches=None):
    """A clip of ``events`` sounds with sharp attacks at known samples, ≥ 250 ms apart: tones
    (exponential decay) or short noise bursts, each with a 20 ms fade-out so that only the
    attacks are onsets. A tone's pitch is the next of the iterator ``pitches``, or one of
    :data:`PITCHES` at random. Returns ``(wav [n], [(kind, onset, hz)])``."""
    n = round(seconds * SR)
    wav = torch.zeros(n, dtype=torch.float64)
    slots = torch.randperm(int((seconds - 0.3) / 0.3), generator=gen)[:events].sort().values
    found = []
    for slot in slots.tolist():
        onset = round((0.05 + 0.3 * slot + 0.05 * float(torch.rand(1, generator=gen))) * SR)
        amplitude = 0.3 + 0.3 * float(torch.rand(1, generator=gen))
        if float(torch.rand(1, generator=gen)) < 0.7:
            hz = next(pitches) if pitches else PITCHES[int(torch.randint(len(PITCHES), (1,), generator=gen))]
            t = torch.arange(round(0.25 * SR), dtype=torch.float64) / SR
            phase = 2 * math.pi * float(torch.rand(1, generator=gen))
            sound = amplitude * torch.exp(-t / 0.06) * torch.sin(2 * math.pi * hz * t + phase)
            found.append(("tone", onset, hz))
        else:
            t = torch.arange(round(0.05 * SR), dtype=torch.float64) / SR
            noise = 2 * torch.rand(len(t), generator=gen, dtype=torch.float64) - 1
            sound = amplitude * torch.exp(-t / 0.012) * noise
            found.append(("noise", onset, None))
        fade = round(0.02 * SR)
        sound[-fade:] *= 0.5 * (1 + torch.cos(torch.linspace(0, math.pi, fade, dtype=torch.float64)))
        end = min(n, onset + len(sound))
        wav[onset:end] += sound[: end - onset]
    return wav.float(), found


def detect_onsets(wav: torch.Tensor, n_fft: int = 256, hop: int = 32) -> list[int]:
    """Onset samples by spectral flux: the summed rise of ``log(1 + |STFT|)`` (16 ms frames, 2 ms
    hop), peaks above a tenth of the clip's largest, at least 100 ms apart."""
    spec = torch.stft(wav, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True)
    compressed = torch.log1p(spec.abs())
    flux = [0.0] + compressed.diff(dim=1).clamp(min=0).sum(0).tolist()
    threshold = 0.1 * max(flux)
    peaks: list[int] = []
    for j in range(1, len(flux) - 1):
        if flux[j] > threshold and flux[j] >= flux[j - 1] and flux[j] > flux[j + 1]:
            if peaks and j - peaks[-1] < 0.1 * SR / hop:
                if flux[j] > flux[peaks[-1]]:
                    peaks[-1] = j
                continue
            peaks.append(j)
    return [j * hop for j in peaks]


def dominant_hz(wav: torch.Tensor, start: int) -> float:
    """The strongest frequency of ``wav`` from 10 to 120 ms after ``start`` (zero-padded FFT)."""
    segment = wav[start + round(0.01 * SR): start + round(0.12 * SR)]
    size = 1 << 16
    spectrum = torch.fft.rfft(segment * torch.hann_window(len(segment)), n=size).abs()
    return float(spectrum.argmax()) * SR / size


def round_trip(codec: SpectralRVQCodec, wavs: list[torch.Tensor]) -> torch.Tensor:
    """``decode(encode(x))`` of equally long clips ``[n]``, as one batch → ``[clips, n]``."""
    x = torch.stack(wavs).unsqueeze(1)  # [clips, 1, n]
    return codec.decode(codec.encode(x), length=x.shape[-1])[:, 0]


def spectral_errors(codec: SpectralRVQCodec, wavs: list[torch.Tensor]) -> list[float]:
    """Per clip, the relative error of the compressed magnitudes ``|F(x̂) - F(x)| / |F(x)|``."""
    fx = codec.features(torch.stack(wavs).unsqueeze(1))
    fy = codec.features(round_trip(codec, wavs).unsqueeze(1))
    return ((fy - fx).flatten(1).norm(dim=1) / fx.flatten(1).norm(dim=1)).tolist()


@pytest.fixture(scope="module")
def clips():
    gen = torch.Generator().manual_seed(0)
    every_pitch = itertools.cycle(PITCHES)  # the codec is fitted on every pitch it must keep
    train = [synthetic_clip(gen, pitches=every_pitch)[0] for _ in range(8)]  # 16 s
    held_out = [synthetic_clip(gen) for _ in range(12)]
    return train, held_out


@pytest.fixture(scope="module")
def fitted(clips):
    codec = SpectralRVQCodec(SpectralRVQConfig()).eval()
    stats = codec.fit([wav.unsqueeze(0) for wav in clips[0]], iterations=10)
    return codec, stats


@pytest.fixture(scope="module")
def decoded(clips, fitted):
    """The held-out clips through the fitted codec, ``[clips, n]``."""
    return round_trip(fitted[0], [wav for wav, _ in clips[1]])


# -- conformance ------------------------------------------------------------------------------------


@parametrize_with_checks([
    from_registry("codec", "spectral_rvq"),
    from_registry("codec", "spectral_rvq", n_fft=256, hop_length=64, n_codebooks=2,
                  codebook_size=16, griffin_lim_iters=4),
])
def test_conformance(factory, check):
    check(factory)


SMALL = SpectralRVQConfig(n_fft=256, hop_length=64, codebook_size=32, griffin_lim_iters=4)


@functools.cache
def small_fitted_state() -> dict[str, torch.Tensor]:
    codec = SpectralRVQCodec(SMALL)
    gen = torch.Generator().manual_seed(1)
    codec.fit([synthetic_clip(gen, seconds=1.0, events=3)[0].unsqueeze(0) for _ in range(2)], iterations=5)
    return codec.state_dict()


def fitted_small_codec() -> SpectralRVQCodec:
    """A small codec with codebooks fitted on tones and noise (fitted once, loaded each time)."""
    codec = SpectralRVQCodec(SMALL)
    codec.load_state_dict(small_fitted_state())
    return codec


@parametrize_with_checks([fitted_small_codec])
def test_conformance_fitted(factory, check):
    check(factory)


# -- what fitting buys --------------------------------------------------------------------------------


def test_fit_lowers_the_error_level_by_level(clips, fitted):
    _, stats = fitted
    assert stats["frames"] == 8 * 125 and stats["seconds"] == pytest.approx(16.0)
    assert stats["error"][0] < 0.05 * stats["energy"]
    # with 16 entries a level, far fewer than frames, every level has work left to do
    codec = SpectralRVQCodec(SpectralRVQConfig(codebook_size=16))
    stats = codec.fit([wav.unsqueeze(0) for wav in clips[0]], iterations=10)
    errors = stats["error"]
    assert len(errors) == 4
    assert all(later < 0.95 * earlier for earlier, later in zip(errors, errors[1:], strict=False))
    assert errors[0] < 0.5 * stats["energy"]
    assert stats["used"] == [16] * 4  # every entry of every level is chosen


def test_onsets_stay_within_one_frame(clips, decoded):
    errors = {"tone": [], "noise": []}
    for (_, events), wav in zip(clips[1], decoded, strict=True):
        found = detect_onsets(wav)
        assert len(found) == len(events), (found, events)  # no onset lost, none invented
        for kind, onset, _ in events:
            nearest = min(found, key=lambda s: abs(s - onset))
            errors[kind].append(1000 * (nearest - onset) / SR)
    every = errors["tone"] + errors["noise"]
    assert max(abs(e) for e in every) <= FRAME_MS, errors
    assert sum(abs(e) for e in every) / len(every) < FRAME_MS / 2


def test_the_detector_finds_the_true_onsets(clips):
    """The control: on the original clips the onset detector is within a few ms."""
    for wav, events in clips[1]:
        found = detect_onsets(wav)
        assert len(found) == len(events)
        for _, onset, _ in events:
            assert min(abs(s - onset) for s in found) / SR * 1000 < 8.0


def test_tone_pitch_stays_within_a_semitone(clips, decoded):
    semitones = []
    for (_, events), wav in zip(clips[1], decoded, strict=True):
        for kind, onset, hz in events:
            if kind == "tone":
                semitones.append(12 * math.log2(dominant_hz(wav, onset) / hz))
    assert len(semitones) >= 20
    assert max(abs(s) for s in semitones) < 1.0, semitones


def test_fitted_error_is_far_below_random(clips, fitted):
    wavs = [wav for wav, _ in clips[1][:4]]
    fitted_errors = spectral_errors(fitted[0], wavs)
    random_errors = spectral_errors(SpectralRVQCodec().eval(), wavs)
    for fitted_error, random_error in zip(fitted_errors, random_errors, strict=True):
        assert fitted_error < 0.5, fitted_error
        assert fitted_error < 0.25 * random_error, (fitted_error, random_error)


def test_fit_is_deterministic_and_subsamples(clips):
    wavs = [wav.unsqueeze(0) for wav in clips[0][:2]]
    small = dict(n_fft=256, hop_length=64, codebook_size=16, n_codebooks=2)
    a, b = SpectralRVQCodec(SpectralRVQConfig(**small)), SpectralRVQCodec(SpectralRVQConfig(**small))
    stats = a.fit(wavs, max_frames=300, iterations=5, seed=3)
    b.fit(wavs, max_frames=300, iterations=5, seed=3)
    assert stats["frames"] == 300
    assert torch.equal(a.codebooks, b.codebooks)


# -- the codec itself -------------------------------------------------------------------------------


def test_rates_shapes_and_mono_mix_down():
    codec = SpectralRVQCodec().eval()
    assert codec.frame_rate == 62.5 and codec.latent_dim == 513 and codec.channels == 1
    gen = torch.Generator().manual_seed(0)
    left, right = synthetic_clip(gen, seconds=1.0)[0], synthetic_clip(gen, seconds=1.0)[0]
    stereo = torch.stack([left, right]).unsqueeze(0)  # [1, 2, n]
    codes = codec.encode(stereo)
    assert codes.shape == (1, 4, 63) and codes.dtype == torch.int64  # ceil(16000 / 256)
    assert torch.equal(codes, codec.encode(((left + right) / 2).view(1, 1, -1)))
    assert codec.decode(codes).shape == (1, 1, 63 * 256)
    assert codec.decode(codes, length=16000).shape == (1, 1, 16000)
    latents = codec.latents(codes)
    assert latents.values.shape == (1, 63, 513) and latents.rate == 62.5 and latents.start == 0.0


def test_decoding_the_coarse_levels_alone(fitted, clips):
    """RVQ is coarse first: the first level alone decodes, with a larger error than all four."""
    codec, _ = fitted
    wav = clips[1][0][0].view(1, 1, -1)
    codes = codec.encode(wav)
    target = codec.features(wav)
    coarse = (codec.latents(codes[:, :1]).values - target).norm()
    full = (codec.latents(codes).values - target).norm()
    assert codec.decode(codes[:, :1]).shape == (1, 1, codes.shape[-1] * 256)
    assert full < coarse


def test_invalid_codes_are_rejected():
    codec = SpectralRVQCodec(SpectralRVQConfig(codebook_size=16))
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        codec.decode(torch.full((1, 4, 3), 16))
    with pytest.raises(ValueError, match="1 <= k <= 4"):
        codec.latents(torch.zeros(1, 5, 3, dtype=torch.long))


def test_encoding_ten_seconds_is_fast(fitted):
    codec, _ = fitted
    wav = torch.rand(1, 1, 10 * SR) - 0.5
    codec.encode(wav)  # warm up
    begin = time.perf_counter()
    codec.encode(wav)
    assert time.perf_counter() - begin < 0.5


# -- weights ----------------------------------------------------------------------------------------


def test_fitted_weights_round_trip_through_safetensors(tmp_path, fitted, clips):
    codec, _ = fitted
    path = tmp_path / "codec.safetensors"
    save_state(codec.state_dict(), path)
    loaded = SpectralRVQCodec(SpectralRVQConfig(weights=str(path))).eval()
    wav = clips[1][1][0].view(1, 1, -1)
    assert torch.equal(loaded.encode(wav), codec.encode(wav))
    assert not torch.equal(SpectralRVQCodec().encode(wav), codec.encode(wav))


def test_weights_fitted_with_other_options_are_refused(tmp_path, fitted):
    codec, _ = fitted
    path = tmp_path / "codec.safetensors"
    save_state(codec.state_dict(), path)
    with pytest.raises(WeightsError, match="fitted with sample_rate=16000, n_fft=1024"):
        SpectralRVQCodec(SpectralRVQConfig(weights=str(path), n_fft=512))
    with pytest.raises(WeightsError, match="codebook_size=128"):
        SpectralRVQCodec(SpectralRVQConfig(weights=str(path), codebook_size=128))


def test_pretrained_and_missing_files_are_one_sentence_errors(tmp_path):
    with pytest.raises(WeightsError, match="no published weights.*v2a fit") as info:
        SpectralRVQCodec(SpectralRVQConfig(weights="pretrained"))
    assert str(info.value).count(". ") == 0
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(WeightsError, match="does not exist") as info:
        SpectralRVQCodec(SpectralRVQConfig(weights=str(missing)))
    assert "nowhere.safetensors" in str(info.value)


def test_a_pickle_that_runs_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"codebooks": RunsCode("this checkpoint runs code")}, protocol=2))
    with pytest.raises(WeightsError, match="refused"):
        SpectralRVQCodec(SpectralRVQConfig(weights=str(path)))
    assert "runs code" not in capsys.readouterr().out


def test_a_checkpoint_of_something_else_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_state({"weight": torch.zeros(3)}, path)
    with pytest.raises(WeightsError, match="not a spectral_rvq checkpoint"):
        SpectralRVQCodec(SpectralRVQConfig(weights=str(path)))


def test_fit_without_audio_is_a_user_error():
    from v2a.errors import UserError

    with pytest.raises(UserError, match="no audio"):
        SpectralRVQCodec().fit([])
