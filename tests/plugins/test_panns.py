"""The PANNs CNN14 plug-in: AudioEncoder contract, AudioClassifier side, front end, released
checkpoint layout."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file
from v2a_plugins.audio_encoders.panns import (
    DOWNLOAD_PAGE,
    MIN_SAMPLES,
    AudioTooShortError,
    PannsCnn14,
    PannsConfig,
    hz_to_slaney_mel,
    slaney_filterbank,
    slaney_mel_to_hz,
)

from v2a.errors import UserError
from v2a.interfaces import AudioClassifier
from v2a.testing import from_registry, parametrize_with_checks
from v2a.weights import WeightsError

#: A small configuration of the real architecture: the released front end, pooling and heads,
#: narrow conv blocks.
SMALL = (4, 8, 8, 16, 16, 32)


@parametrize_with_checks([from_registry("audio_encoder", "panns_cnn14", weights="none",
                                        channels=list(SMALL))])
def test_conformance(factory, check):
    check(factory)


# -- helpers ---------------------------------------------------------------------------------------


def small(**changes) -> PannsCnn14:
    return PannsCnn14(PannsConfig(**{"channels": SMALL, **changes})).eval()


def audio(seconds: float, *, channels: int = 1, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(batch, channels, round(seconds * 32000), generator=gen)


def released_layout(channels=(64, 128, 256, 512, 1024, 2048), classes=527) -> dict[str, tuple]:
    """Name → shape of every tensor of the released Cnn14 state dict, written out from the
    layout of the released model (torchlibrosa front end, bn0, six conv blocks, two heads)."""
    def batch_norm(prefix, width):
        return {f"{prefix}.{name}": (width,)
                for name in ("weight", "bias", "running_mean", "running_var")} | {
                f"{prefix}.num_batches_tracked": ()}

    layout = {
        "spectrogram_extractor.stft.conv_real.weight": (513, 1, 1024),
        "spectrogram_extractor.stft.conv_imag.weight": (513, 1, 1024),
        "logmel_extractor.melW": (513, 64),
        **batch_norm("bn0", 64),
    }
    widths = (1, *channels)
    for i in range(1, 7):
        layout[f"conv_block{i}.conv1.weight"] = (widths[i], widths[i - 1], 3, 3)
        layout[f"conv_block{i}.conv2.weight"] = (widths[i], widths[i], 3, 3)
        layout |= batch_norm(f"conv_block{i}.bn1", widths[i]) | batch_norm(f"conv_block{i}.bn2", widths[i])
    d = channels[-1]
    layout |= {"fc1.weight": (d, d), "fc1.bias": (d,),
               "fc_audioset.weight": (classes, d), "fc_audioset.bias": (classes,)}
    return layout


def released_state(channels=SMALL, classes=527, seed=0) -> dict[str, torch.Tensor]:
    """A state dict in the released layout with random values (front end: the real kernels)."""
    gen = torch.Generator().manual_seed(seed)
    reference = small()  # only for the front end's fixed kernels
    state = {}
    for name, shape in released_layout(channels, classes).items():
        if name.startswith(("spectrogram_extractor", "logmel_extractor")):
            state[name] = reference.state_dict()[name].clone()
        elif name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(1000)
        elif name.endswith("running_var"):
            state[name] = 0.5 + torch.rand(shape, generator=gen)
        elif name.endswith(("bn0.weight", "bn1.weight", "bn2.weight")):
            state[name] = 1.0 + 0.2 * torch.randn(shape, generator=gen)
        else:
            state[name] = 0.2 * torch.randn(shape, generator=gen)
    return state


# -- shapes, rate, contract --------------------------------------------------------------------------


def test_encode_gives_one_step_per_clip_at_the_clip_rate():
    encoder = small()
    with torch.inference_mode():
        out = encoder.encode(audio(2.5))
    assert out.values.shape == (2, 1, 32)
    assert out.rate == pytest.approx(1 / 2.5) and out.start == 0.0 and out.mask is None
    assert (encoder.sample_rate, encoder.dim, encoder.rate) == (32000, 32, 1.0)


def test_is_an_audio_classifier_with_527_independent_probabilities():
    encoder = small()
    assert isinstance(encoder, AudioClassifier) and encoder.multi_label is True
    assert len(encoder.class_names) == 527 and encoder.class_names[:2] == ("class_000", "class_001")
    with torch.inference_mode():
        probs = encoder.classify(audio(1.0, batch=3))
    assert probs.shape == (3, 527) and probs.dtype == torch.float32
    assert bool(((probs >= 0) & (probs <= 1)).all())
    # independent sigmoids: rows do not sum to one (527 classes near 0.5 each at random init)
    assert not torch.allclose(probs.sum(dim=1), torch.ones(3))


def test_classify_is_batch_independent():
    encoder = small()
    wav = audio(1.0, batch=3, seed=1)
    with torch.inference_mode():
        together = encoder.classify(wav)
        alone = torch.cat([encoder.classify(wav[i:i + 1]) for i in range(3)])
    # float32 paths that may differ only in kernel choice and summation order: the logits come
    # out of ~10 layers of reductions over at most 9 * 32 terms each, relative error a few 1e-6;
    # the logits here are O(1) and the sigmoid's slope is at most 1/4, so 1e-5 is ample.
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


def test_classes_follow_the_option_and_the_embedding_is_the_classifier_input():
    encoder = small(classes=10)
    wav = audio(1.0, seed=2)
    with torch.inference_mode():
        embedding = encoder.encode(wav).values[:, 0]
        probs = encoder.classify(wav)
        from_embedding = torch.sigmoid(encoder.fc_audioset(embedding))
    assert probs.shape == (2, 10) and len(encoder.class_names) == 10
    assert bool((embedding >= 0).all())  # after the ReLU
    torch.testing.assert_close(probs, from_embedding)


def test_channels_are_mixed_to_mono():
    encoder = small()
    stereo = audio(1.0, channels=2)
    with torch.inference_mode():
        a = encoder.classify(stereo)
        b = encoder.classify(stereo.mean(dim=1, keepdim=True))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # the same mono input, the same path


def test_the_shortest_clip_is_31_hops():
    encoder = small()
    assert MIN_SAMPLES == 31 * 320  # 1 + n // 320 = 32 frames survive five halvings
    with torch.inference_mode():
        assert encoder.classify(torch.zeros(1, 1, MIN_SAMPLES)).shape == (1, 527)
    with pytest.raises(AudioTooShortError, match="at least 9920 samples") as info:
        encoder.encode(torch.zeros(1, 1, MIN_SAMPLES - 1))
    assert isinstance(info.value, UserError)


def test_features_respond_to_the_audio():
    encoder = small()
    with torch.inference_mode():
        quiet = encoder.encode(torch.zeros(1, 1, 32000)).values
        loud = encoder.encode(audio(1.0, batch=1)).values
    assert not torch.allclose(quiet, loud)


# -- the front end -----------------------------------------------------------------------------------


def test_spectrogram_of_a_cosine_on_a_bin_is_the_hann_main_lobe():
    """A cosine of amplitude A exactly on bin k: through a periodic Hann window of N samples its
    DFT is A N / 4 at bin k and A N / 8 at k +- 1 (Hann's only nonzero neighbours), nothing
    elsewhere; the power is the square."""
    encoder = small()
    amplitude, k, n_fft = 0.5, 32, 1024  # bin 32 = 1000 Hz at 32 kHz
    t = torch.arange(32000, dtype=torch.float64) / 32000
    wav = (amplitude * torch.cos(2 * math.pi * 1000.0 * t)).float()
    power = encoder.spectrogram_extractor(wav[None])[0, 0]  # [101, 513]
    assert power.shape == (1 + 32000 // 320, 513)
    interior = power[2:-2]  # frames whose window lies inside the signal (no reflected edges)
    expected = torch.zeros(513)
    expected[k] = (amplitude * n_fft / 4) ** 2  # 16384
    expected[k - 1] = expected[k + 1] = (amplitude * n_fft / 8) ** 2  # 4096
    # float32 sums of 1024 products bounded by 0.5: errors near 1024 * 6e-8 * 0.5 = 3e-5 in a
    # DFT value of 128, so below 2 * 128 * 3e-5 = 0.008 in power (and ~1e-9 off the lobe)
    torch.testing.assert_close(interior, expected.expand_as(interior), rtol=0, atol=0.02)


def test_slaney_mel_scale_at_hand_checked_points():
    hz = torch.tensor([0.0, 200.0, 1000.0, 6400.0, 6400.0 * 6.4], dtype=torch.float64)
    mel = hz_to_slaney_mel(hz)
    # linear part: 3 mels per 200 Hz up to 15 at 1 kHz; then 27 mels per factor 6.4
    torch.testing.assert_close(mel, torch.tensor([0.0, 3.0, 15.0, 42.0, 69.0], dtype=torch.float64))
    torch.testing.assert_close(slaney_mel_to_hz(mel), hz)


def test_mel_filters_are_unit_area_triangles_between_50_and_14000_hz():
    fb = slaney_filterbank(sample_rate=32000, n_fft=1024, n_mels=64, f_min=50.0, f_max=14000.0)
    assert fb.shape == (513, 64) and bool((fb >= 0).all())
    bins = torch.arange(513) * 31.25  # Hz of each STFT bin
    used = bins[fb.sum(dim=1) > 0]
    assert used.min() > 50.0 and used.max() < 14000.0  # nothing outside the edges
    # each triangle's area in Hz is 1 (Slaney normalisation): sum of samples x bin width, up to
    # the trapezoid error of sampling a triangle whose sides span >= 1 bin (below 1/2 a sample)
    area = fb.double().sum(dim=0) * 31.25
    wide = area[20:]  # filters wider than a few bins, where sampling is fine enough
    torch.testing.assert_close(wide, torch.ones_like(wide), rtol=0.05, atol=0)
    # hand-checked: filter 0 spans 50 Hz .. the second edge; its peak sits at the first edge
    edges = slaney_mel_to_hz(torch.linspace(float(hz_to_slaney_mel(torch.tensor(50.0))),
                                            float(hz_to_slaney_mel(torch.tensor(14000.0))), 66))
    assert float(edges[0]) == pytest.approx(50.0)
    assert float(edges[-1]) == pytest.approx(14000.0)


def test_mel_filters_match_librosas_slaney_filters():
    """Filters 0 and 31 as ``librosa.filters.mel(sr=32000, n_fft=1024, n_mels=64, fmin=50,
    fmax=14000)`` (librosa 0.11.0, the function the released front end was built with) gives
    them. By hand for filter 0: edges 0.75 mel (50 Hz) to 53.385 mel (14 kHz) in 65 steps of
    0.80977 mel put its centre at 103.99 Hz and its top at 157.93 Hz; bin 3 (93.75 Hz) rises
    (93.75 - 50) / 53.99 = 0.8103 of the way to the peak 2 / (157.93 - 50) = 0.018531: 0.015016."""
    fb = slaney_filterbank(sample_rate=32000, n_fft=1024, n_mels=64, f_min=50.0, f_max=14000.0)
    librosa_values = {
        0: (range(2, 6), [0.0042890897, 0.0150118135, 0.011312847, 0.000590123178]),
        31: (range(68, 76), [0.00107428455, 0.00315828645, 0.00524228858, 0.00732629048,
                             0.00676695537, 0.00479580602, 0.0028246569, 0.000853507896]),
    }
    for j, (bins, values) in librosa_values.items():
        assert (fb[:, j] > 0).nonzero().flatten().tolist() == list(bins)
        # both are float64 arithmetic rounded once to float32 (1 ulp = 1.2e-7 relative apart);
        # the values above are printed to 9 significant digits
        torch.testing.assert_close(fb[list(bins), j], torch.tensor(values), rtol=3e-7, atol=0)


def test_log_mel_is_decibels_of_the_filtered_power_with_a_floor():
    encoder = small()
    power = torch.zeros(1, 1, 2, 513)
    power[0, 0, 0, 100] = 3.0  # one bin lit in frame 0, frame 1 silent
    logmel = encoder.logmel_extractor(power)[0, 0]
    melW = encoder.logmel_extractor.melW
    lit = melW[100] > 0
    torch.testing.assert_close(logmel[0, lit], 10 * torch.log10(3.0 * melW[100, lit]))
    assert bool((logmel[0, ~lit] == -100.0).all())  # 10 log10(1e-10)
    assert bool((logmel[1] == -100.0).all())


# -- weights -----------------------------------------------------------------------------------------


def test_the_default_model_has_the_released_key_layout():
    own = {k: tuple(v.shape) for k, v in PannsCnn14().state_dict().items()}
    assert own == released_layout()


@pytest.mark.parametrize("container", ["released", "bare", "safetensors"])
def test_a_checkpoint_in_the_released_layout_loads(tmp_path, container):
    state = released_state()
    if container == "safetensors":
        path = tmp_path / "cnn14.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = tmp_path / "Cnn14_small.pth"
        torch.save({"model": state} if container == "released" else state, path)
    encoder = small(weights=str(path))
    loaded = encoder.state_dict()
    assert loaded.keys() == state.keys()
    for name, value in state.items():
        assert torch.equal(loaded[name], value), name
    wav = audio(1.0)
    with torch.inference_mode():
        assert not torch.allclose(encoder.classify(wav), small().classify(wav))


def test_the_files_front_end_is_the_one_used(tmp_path):
    state = released_state()
    state["logmel_extractor.melW"] = state["logmel_extractor.melW"] * 2.0
    path = tmp_path / "cnn14.pth"
    torch.save({"model": state}, path)
    doubled = small(weights=str(path)).logmel_extractor
    power = torch.rand(1, 1, 3, 513) + 0.5
    shift = doubled(power) - small().logmel_extractor(power)
    # twice the mel power is 10 log10(2) dB more; float32 log10 of values ~1..100: error ~1e-6
    torch.testing.assert_close(shift, torch.full_like(shift, 10 * math.log10(2.0)), rtol=0, atol=1e-4)


def test_a_file_without_batch_counters_loads(tmp_path):
    state = {k: v for k, v in released_state().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "cnn14.pth"
    torch.save({"model": state}, path)
    encoder = small(weights=str(path))
    assert torch.equal(encoder.fc1.weight, state["fc1.weight"])


def test_a_checkpoint_of_another_model_is_refused_in_one_sentence(tmp_path):
    path = tmp_path / "Cnn14_mAP=0.431.pth"
    torch.save({"model": released_state(channels=(4, 8, 8, 16, 16, 64))}, path)
    with pytest.raises(WeightsError) as info:
        small(weights=str(path))
    message = str(info.value)
    assert message.startswith(f"{path} does not fit PANNs CNN14 (channels [4, 8, 8, 16, 16, 32]")
    assert "another shape" in message and "conv_block6" in message and "\n" not in message


def test_a_file_that_is_no_state_dict_is_refused(tmp_path):
    path = tmp_path / "cnn14.pth"
    torch.save({"model": [1, 2, 3]}, path)
    with pytest.raises(WeightsError, match="state dict of tensors"):
        small(weights=str(path))


def test_pretrained_says_where_to_download_and_a_missing_file_is_named(tmp_path):
    with pytest.raises(WeightsError, match="Cnn14_mAP=0.431.pth") as info:
        small(weights="pretrained")
    assert DOWNLOAD_PAGE in str(info.value)
    with pytest.raises(WeightsError, match="does not exist"):
        small(weights=str(tmp_path / "nowhere.pth"))


def test_bad_widths_are_refused():
    from v2a.registry import default_registry

    with pytest.raises(UserError, match="channels"):
        default_registry().build_from("audio_encoder", {"plugin": "panns_cnn14", "channels": [4, 8]})
