"""The PaSST plug-in: AudioEncoder contract, AudioClassifier side, front end, windows, released
checkpoint layout."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file
from v2a_plugins.audio_encoders import passt as passt_module
from v2a_plugins.audio_encoders.passt import (
    CHECKPOINT,
    DOWNLOAD_PAGE,
    MIN_SAMPLES,
    RELEASE_URL,
    AudioTooShortError,
    Passt,
    PasstConfig,
    kaldi_mel_filters,
)

from v2a.errors import UserError
from v2a.interfaces import AudioClassifier
from v2a.testing import from_registry, parametrize_with_checks
from v2a.weights import WeightsError

#: A small configuration of the real architecture: the released front end, patches, strides,
#: tokens and embeddings (99 time patches), 32 mel filters (2 frequency patches), narrow blocks.
SMALL = {"depth": 2, "dim": 32, "heads": 2, "mels": 32}


@parametrize_with_checks([from_registry("audio_encoder", "passt", weights="none", **SMALL)])
def test_conformance(factory, check):
    check(factory)


# -- helpers ---------------------------------------------------------------------------------------


def small(**changes) -> Passt:
    return Passt(PasstConfig(**{**SMALL, **changes})).eval()


def audio(seconds: float, *, channels: int = 1, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(batch, channels, round(seconds * 32000), generator=gen)


def released_layout(depth=12, dim=768, mels=128) -> dict[str, tuple]:
    """Name → shape of every tensor of the released PaSST-S state dict (eval-deps: built from
    hear21passt 0.0.26's ``passt_s_swa_p16_128_ap476``), written out by hand."""
    freq = {128: 12, 32: 2}[mels]
    layout = {
        "cls_token": (1, 1, dim), "dist_token": (1, 1, dim), "new_pos_embed": (1, 2, dim),
        "freq_new_pos_embed": (1, dim, freq, 1), "time_new_pos_embed": (1, dim, 1, 99),
        "patch_embed.proj.weight": (dim, 1, 16, 16), "patch_embed.proj.bias": (dim,),
    }
    for i in range(depth):
        p = f"blocks.{i}"
        layout |= {f"{p}.norm1.weight": (dim,), f"{p}.norm1.bias": (dim,),
                   f"{p}.attn.qkv.weight": (3 * dim, dim), f"{p}.attn.qkv.bias": (3 * dim,),
                   f"{p}.attn.proj.weight": (dim, dim), f"{p}.attn.proj.bias": (dim,),
                   f"{p}.norm2.weight": (dim,), f"{p}.norm2.bias": (dim,),
                   f"{p}.mlp.fc1.weight": (4 * dim, dim), f"{p}.mlp.fc1.bias": (4 * dim,),
                   f"{p}.mlp.fc2.weight": (dim, 4 * dim), f"{p}.mlp.fc2.bias": (dim,)}
    layout |= {"norm.weight": (dim,), "norm.bias": (dim,),
               "head.0.weight": (dim,), "head.0.bias": (dim,),
               "head.1.weight": (527, dim), "head.1.bias": (527,),
               "head_dist.weight": (527, dim), "head_dist.bias": (527,)}
    return layout


def released_state(seed=0, **config) -> dict[str, torch.Tensor]:
    """A state dict in the released layout (of a small configuration) with random values."""
    config = {**SMALL, **config}
    config.pop("heads")  # the layout does not depend on the number of heads
    gen = torch.Generator().manual_seed(seed)
    return {name: 0.1 * torch.randn(shape, generator=gen)
            for name, shape in released_layout(**config).items()}


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
        _, logits = encoder.outputs(audio(1.0, batch=3))
    assert probs.shape == (3, 527) and probs.dtype == torch.float64
    assert bool(((probs > 0) & (probs < 1)).all())
    torch.testing.assert_close(probs, torch.sigmoid(logits.double()))  # the same path, a sigmoid
    assert not torch.allclose(probs.sum(dim=1), torch.ones(3, dtype=torch.float64))  # independent, not a softmax
    assert not torch.allclose(probs[0], probs[1])  # random heads are not zero: clips differ


def test_large_logits_survive_the_sigmoid():
    """A logit of 30 is 1 - 9.4e-14 in float64 but exactly 1.0 in float32: evaluation recovers
    the logits (log p - log(1 - p)) from the probabilities, so they are float64."""
    encoder = small()
    with torch.inference_mode():
        encoder.head[1].bias[0] = 30.0
        encoder.head[1].weight[0] = 0.0
        probs = encoder.classify(audio(1.0))
    recovered = torch.log(probs[:, 0]) - torch.log1p(-probs[:, 0])
    # 1 - p = 9.4e-14 carries float64's rounding of p (1.1e-16 absolute): 1e-3 relative in log
    torch.testing.assert_close(recovered, torch.full_like(recovered, 30.0), rtol=0, atol=5e-3)


def test_classify_is_batch_independent():
    encoder = small()
    wav = audio(3.0, batch=3, seed=1)
    with torch.inference_mode():
        together = encoder.classify(wav)
        alone = torch.cat([encoder.classify(wav[i:i + 1]) for i in range(3)])
    # float32 paths that differ only in kernel choice and summation order (batched matmuls and
    # the STFT): each logit comes out of ~10 reductions of at most 4 * 32 terms of O(1) values
    # through layer norms, relative error a few 1e-6; the sigmoid's slope is at most 1/4.
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


def test_features_are_the_mean_of_the_two_tokens_and_feed_the_head():
    encoder = small()
    captured = {}
    encoder.norm.register_forward_hook(lambda module, args, out: captured.update(tokens=out))
    with torch.inference_mode():
        features, logits = encoder.outputs(audio(1.0, seed=2))
        tokens = captured["tokens"]
        # 1 s: 100 frames -> 9 time patches; 32 mels -> 2 frequency patches; + cls and dist
        assert tokens.shape == (2, 2 + 2 * 9, 32)
        torch.testing.assert_close(features, (tokens[:, 0] + tokens[:, 1]) / 2)
        torch.testing.assert_close(logits, encoder.head(features))


def test_head_dist_is_loaded_but_not_used():
    encoder = small()
    wav = audio(1.0, seed=3)
    with torch.inference_mode():
        before = encoder.classify(wav)
        encoder.head_dist.weight.normal_()
        torch.testing.assert_close(encoder.classify(wav), before, rtol=0, atol=0)


def test_channels_are_mixed_to_mono():
    encoder = small()
    stereo = audio(1.0, channels=2)
    with torch.inference_mode():
        a = encoder.classify(stereo)
        b = encoder.classify(stereo.mean(dim=1, keepdim=True))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # the same mono input, the same path


def test_a_short_clip_uses_the_first_time_embeddings():
    """Patch (f, t) gets time embedding t whatever the clip length: the first 9 of the 99 for a
    1 s clip. Zeroing embeddings 9..98 leaves a 1 s clip's output exactly as it was."""
    encoder = small()
    wav = audio(1.0, seed=4)
    with torch.inference_mode():
        before = encoder.classify(wav)
        encoder.time_new_pos_embed[..., 9:] = 0.0
        torch.testing.assert_close(encoder.classify(wav), before, rtol=0, atol=0)
        encoder.time_new_pos_embed[..., 8] = 0.0
        assert not torch.allclose(encoder.classify(wav), before)


def test_the_shortest_clip_is_one_patch():
    encoder = small()
    assert MIN_SAMPLES == 15 * 320 + 1  # pre-emphasis keeps 4800 samples: 1 + 4800 // 320 = 16 frames
    with torch.inference_mode():
        assert encoder.classify(torch.zeros(1, 1, MIN_SAMPLES)).shape == (1, 527)
    with pytest.raises(AudioTooShortError, match="at least 4801 samples") as info:
        encoder.encode(torch.zeros(1, 1, MIN_SAMPLES - 1))
    assert isinstance(info.value, UserError)


def test_ten_seconds_is_one_pass_of_99_time_patches():
    encoder = small()
    wav = audio(10.0, batch=1, seed=5)
    with torch.inference_mode():
        mel = encoder.log_mel(wav)
        assert mel.shape == (1, 32, 1000)  # 1 + 319999 // 320
        features, logits = encoder.window_outputs(mel)
        torch.testing.assert_close(encoder.outputs(wav), (features, logits), rtol=0, atol=0)


def test_a_longer_clip_is_the_mean_over_hear_windows():
    """12.5 s, reflected by 5 s at both ends (22.5 s), in 10 s windows every 2.5 s: windows start
    at 0, 2.5, 5, 7.5, 10, 12.5 s of the padded signal (400000 // 80000 + 1 = 6)."""
    encoder = small()
    wav = audio(12.5, batch=2, seed=6)
    half, hop, window = 160000, 80000, 320000
    mono = wav.mean(dim=1)
    padded = torch.cat([mono[:, 1:half + 1].flip(-1), mono, mono[:, -half - 1:-1].flip(-1)], dim=-1)
    assert padded.shape[-1] == 400000 + 2 * half
    with torch.inference_mode():
        passes = [encoder.window_outputs(encoder.log_mel(padded[:, None, s:s + window]))
                  for s in range(0, padded.shape[-1] - window + 1, hop)]
        assert len(passes) == 6
        features = torch.stack([f for f, _ in passes]).mean(dim=0)
        logits = torch.stack([g for _, g in passes]).mean(dim=0)
        out = encoder.encode(wav)
        probs = encoder.classify(wav)
    # the same windows through the same float32 path, batched the same way: equal up to the
    # order of the six-term mean (a few ulp of O(1) values)
    torch.testing.assert_close(out.values[:, 0], features, rtol=0, atol=1e-6)
    torch.testing.assert_close(probs, torch.sigmoid(logits.double()), rtol=0, atol=1e-6)
    assert out.rate == pytest.approx(1 / 12.5)


# -- the front end -----------------------------------------------------------------------------------


def test_silence_is_the_normalised_log_of_the_offset():
    encoder = small()
    mel = encoder.log_mel(torch.zeros(1, 1, 8000))
    # (ln(0 + 1e-5) + 4.5) / 5 = (-11.512925 + 4.5) / 5
    assert mel.shape == (1, 32, 25)
    torch.testing.assert_close(mel, torch.full_like(mel, -1.4025851), rtol=0, atol=1e-6)


def test_power_of_a_cosine_on_a_bin_after_pre_emphasis_and_the_800_sample_hann():
    """A cosine of amplitude A at bin k (1000 Hz = bin 32 of 1024 at 32 kHz) after pre-emphasis
    y[i] = x[i + 1] - 0.97 x[i] is a cosine of amplitude A |e^{i w} - 0.97| (w = 2 pi 32 / 1024).
    Its DFT at bin k through a window w[m] is (that amplitude) / 2 * sum(w); a symmetric Hann of
    800 samples sums to 800 / 2 - 1 / 2 = 399.5 (a periodic one of 1024 would give 512)."""
    encoder = small()
    amplitude, k = 0.5, 32
    t = torch.arange(32000, dtype=torch.float64) / 32000
    wav = (amplitude * torch.cos(2 * math.pi * 1000.0 * t)).float()
    power = encoder.front_end.power(wav[None])[0]  # [513, 100]
    assert power.shape == (513, 1 + 31999 // 320)
    w = 2 * math.pi * k / 1024
    emphasised = amplitude * abs(complex(math.cos(w), math.sin(w)) - 0.97)  # 0.5 * 0.19855
    expected = (emphasised / 2 * 399.5) ** 2  # about 392.5
    interior = power[k, 3:-3]  # frames whose window lies inside the signal
    # float32 sums of 800 products bounded by 0.1 give DFT errors near 800 * 6e-8 * 0.1 = 5e-6 on
    # 19.8, and the negative-frequency image leaks through the window's sidelobes 64 bins away
    # (Hann sidelobes fall as 1 / distance^3: below 1e-5 relative); 1e-4 relative is ample
    torch.testing.assert_close(interior, torch.full_like(interior, expected), rtol=1e-4, atol=0)
    far = power[k + 40:, 3:-3]  # no energy far from the tone (Hann sidelobes ~1e-9 of it)
    assert float(far.max()) < 1e-5 * expected


def test_mel_filters_are_kaldis_triangles_at_hand_checked_points():
    """128 filters from 0 to 15000 Hz: ``1127 ln(1 + 15000 / 700)`` = 3505.348 mel in 129
    steps of 27.17324. Filter 0 peaks at 27.17 mel (17.08 Hz) and ends at 54.346 mel (34.58 Hz),
    so only bin 1 (31.25 Hz = 49.2218 mel) lies in it, on the falling side:
    (54.34649 - 49.22180) / 27.17324 = 0.188593."""
    fb = kaldi_mel_filters(mels=128, n_fft=1024, sample_rate=32000, f_min=0.0, f_max=15000.0)
    assert fb.shape == (128, 513) and bool((fb >= 0).all()) and bool((fb <= 1).all())
    assert fb[0].nonzero().flatten().tolist() == [1]
    assert float(fb[0, 1]) == pytest.approx(0.188593, abs=1e-6)
    assert bool((fb[:, 512] == 0).all())  # the Nyquist bin: no weight
    # the top filter ends at 15000 Hz: bin 480 (15000 Hz) and above get nothing
    assert int(fb.sum(dim=0).nonzero().max()) == 479


def test_mel_filters_match_torchaudios_kaldi_banks():
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi")
    banks, _ = kaldi.get_mel_banks(128, 1024, 32000.0, 0.0, 15000.0, 100.0, -500.0, 1.0)
    ours = kaldi_mel_filters(mels=128, n_fft=1024, sample_rate=32000, f_min=0.0, f_max=15000.0)
    # torchaudio works in float32: mel values up to 3505 carry rounding errors of half an ulp
    # (1.2e-4), and a slope (mel - edge) / 27.17 mixes three of them: below 1.4e-5; ours is
    # float64 rounded once
    torch.testing.assert_close(ours[:, :512], banks, rtol=0, atol=3e-5)


# -- weights -----------------------------------------------------------------------------------------


def test_the_default_model_has_the_released_key_layout():
    with torch.device("meta"):  # shapes and names only: no memory for 86 M parameters
        model = Passt()
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert own == released_layout()
    assert len(own) == 159
    assert sum(math.prod(s) for s in own.values()) == 86_153_758  # 86.15 M, as eval-deps lists


@pytest.mark.parametrize("container", ["bare", "model", "safetensors"])
def test_a_checkpoint_in_the_released_layout_loads(tmp_path, container):
    state = released_state()
    if container == "safetensors":
        path = tmp_path / "passt.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = tmp_path / CHECKPOINT
        torch.save({"model": state} if container == "model" else state, path)
    encoder = small(weights=str(path))
    loaded = encoder.state_dict()
    assert loaded.keys() == state.keys()
    for name, value in state.items():
        assert torch.equal(loaded[name], value), name
    round_trip = tmp_path / "again.pt"
    torch.save(encoder.state_dict(), round_trip)
    again = small(weights=str(round_trip))
    wav = audio(1.0)
    with torch.inference_mode():
        torch.testing.assert_close(again.classify(wav), encoder.classify(wav), rtol=0, atol=0)
        assert not torch.allclose(encoder.classify(wav), small().classify(wav))


def test_a_flattened_patch_kernel_is_reshaped(tmp_path):
    state = released_state()
    kernel = state["patch_embed.proj.weight"]
    path = tmp_path / "old.pt"
    torch.save({**state, "patch_embed.proj.weight": kernel.reshape(32, 1, 256)}, path)
    assert torch.equal(small(weights=str(path)).patch_embed.proj.weight, kernel)


def test_a_checkpoint_of_another_model_is_refused_in_one_sentence(tmp_path):
    path = tmp_path / CHECKPOINT
    torch.save(released_state(dim=32, depth=3), path)
    with pytest.raises(WeightsError) as info:
        small(weights=str(path))
    message = str(info.value)
    assert message.startswith(f"{path} does not fit PaSST (depth 2, dim 32, heads 2, 32 mels)")
    assert "unexpected" in message and "blocks.2" in message and "\n" not in message
    wide = tmp_path / "wide.pt"
    torch.save(released_state(dim=64, heads=2), wide)
    with pytest.raises(WeightsError, match="another shape"):
        small(weights=str(wide))


def test_a_file_that_is_no_state_dict_is_refused(tmp_path):
    path = tmp_path / "passt.pt"
    torch.save({"model": [1, 2, 3]}, path)
    with pytest.raises(WeightsError, match="state dict of tensors"):
        small(weights=str(path))


def test_a_missing_file_says_where_to_download():
    with pytest.raises(WeightsError, match="does not exist") as info:
        small(weights="/nowhere/passt.pt")
    assert CHECKPOINT in str(info.value) and DOWNLOAD_PAGE in str(info.value)


def test_pretrained_downloads_the_release_through_torch_hub(monkeypatch):
    calls = []

    def fake_download(url, **kwargs):  # stands in for the network: nothing is downloaded
        calls.append((url, kwargs))
        return {"model": released_state(seed=7)}

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    encoder = small(weights="pretrained")
    assert calls == [(RELEASE_URL, {"map_location": "cpu", "check_hash": False,
                                    "weights_only": True, "file_name": CHECKPOINT})]
    assert torch.equal(encoder.head_dist.weight, released_state(seed=7)["head_dist.weight"])


def test_a_failed_download_is_one_sentence(monkeypatch):
    def offline(url, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError) as info:
        small(weights="pretrained")
    message = str(info.value)
    assert RELEASE_URL in message and "give its path" in message and "\n" not in message


def test_bad_options_are_refused():
    from v2a.registry import default_registry

    for field, value in (("dim", 33), ("mels", 8), ("depth", 0)):
        with pytest.raises(UserError, match=field):
            default_registry().build_from("audio_encoder", {"plugin": "passt", **SMALL, field: value})


def test_properties_are_known_without_building():
    from v2a.registry import default_registry

    declared = default_registry().properties_from("audio_encoder", {"plugin": "passt", **SMALL})
    assert declared == {"sample_rate": 32000, "dim": 32}
    assert passt_module.TIME_PATCHES == 99
