"""The Wav2CLIP plug-in: AudioEncoder contract, front end, released checkpoint layout, weights."""

from __future__ import annotations

import pytest
import torch
from v2a_plugins.audio_encoders.wav2clip import (
    HOP,
    MIN_SAMPLES,
    RELEASE_URL,
    AudioTooShortError,
    Wav2Clip,
    Wav2ClipConfig,
)

from v2a.testing import from_registry, parametrize_with_checks
from v2a.weights import WeightsError

#: A small configuration of the real architecture: the released front end, ResNet-18's layout
#: (stem, four stages of two basic blocks, shortcuts) and the projection, narrow channels.
SMALL = {"widths": [4, 8, 8, 16], "dim": 12}


@parametrize_with_checks([from_registry("audio_encoder", "wav2clip", weights="none", **SMALL)])
def test_conformance(factory, check):
    check(factory)


def small(**changes) -> Wav2Clip:
    return Wav2Clip(Wav2ClipConfig(**{**SMALL, **changes})).eval()


def audio(seconds: float, *, batch: int = 2, channels: int = 1, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(batch, channels, round(seconds * 16000), generator=gen)


def released_layout(widths=(64, 128, 256, 512), dim=512) -> dict[str, tuple]:
    """Name → shape of the audio side of the released Wav2CLIP.pt, written out from the model
    the wav2clip package loads it into (a torchvision-style ResNet-18 on one input channel, no
    fc, the spectrogram's window; then the MLP's two Linears)."""
    def batch_norm(prefix, width):
        return {f"{prefix}.{n}": (width,) for n in ("weight", "bias", "running_mean",
                                                    "running_var")} | {f"{prefix}.num_batches_tracked": ()}

    layout = {"audio_encoder.spectrogram.window": (512,),
              "audio_encoder.conv1.weight": (widths[0], 1, 7, 7),
              **batch_norm("audio_encoder.bn1", widths[0])}
    previous = widths[0]
    for stage, width in enumerate(widths, start=1):
        for block in (0, 1):
            prefix = f"audio_encoder.layer{stage}.{block}"
            inputs = previous if block == 0 else width
            layout[f"{prefix}.conv1.weight"] = (width, inputs, 3, 3)
            layout[f"{prefix}.conv2.weight"] = (width, width, 3, 3)
            layout |= batch_norm(f"{prefix}.bn1", width) | batch_norm(f"{prefix}.bn2", width)
        if stage > 1:
            layout[f"audio_encoder.layer{stage}.0.downsample.0.weight"] = (width, previous, 1, 1)
            layout |= batch_norm(f"audio_encoder.layer{stage}.0.downsample.1", width)
        previous = width
    layout |= {"audio_transform.sequential.0.weight": (dim, widths[-1]),
               "audio_transform.sequential.0.bias": (dim,),
               "audio_transform.sequential.3.weight": (dim, dim),
               "audio_transform.sequential.3.bias": (dim,)}
    return layout


def released_file(model: Wav2Clip, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """A file in the released layout: ``model``'s tensors perturbed (so that loading shows),
    plus entries of the training module that are not the audio side."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, value in model.state_dict().items():
        if name.endswith("num_batches_tracked") or name.endswith("window"):
            state[name] = value.clone()
        elif name.endswith("running_var"):
            state[name] = 0.5 + torch.rand(value.shape, generator=gen)
        else:
            state[name] = value + 0.1 * torch.randn(value.shape, generator=gen)
    dim = model.dim
    state["image_transform.sequential.0.weight"] = torch.randn(dim, dim, generator=gen)
    state["loss_fn_a.logit_scale"] = torch.tensor(2.66)
    return state


# -- shapes, layout, front end -----------------------------------------------------------------------


def test_encode_gives_one_clip_embedding_at_the_clip_rate():
    encoder = small()
    with torch.inference_mode():
        out = encoder.encode(audio(2.5, channels=2))
    assert out.values.shape == (2, 1, 12) and out.values.dtype == torch.float32
    assert out.rate == pytest.approx(1 / 2.5) and out.start == 0.0 and out.mask is None
    assert (encoder.sample_rate, encoder.dim, encoder.rate) == (16000, 12, 1.0)


def test_the_full_size_model_has_the_released_key_layout():
    model = Wav2Clip()
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == released_layout()
    encoder = [k for k in state if k.startswith("audio_encoder.")]
    assert len(encoder) == 121
    assert sum(p.numel() for p in model.audio_encoder.parameters()) == 11_170_240
    with torch.inference_mode():
        assert model.encode(audio(1.0)).values.shape == (2, 1, 512)


def test_the_front_end_standardises_each_clip_over_its_frames():
    encoder = small()
    n = 16000
    wav = audio(1.0, batch=2, seed=3)
    wav[1] *= 100.0  # a loud clip beside a quiet one
    x = encoder.audio_encoder.standardised_log_power(wav[:, 0])
    assert x.shape == (2, 1, 257, 1 + n // HOP)
    # each clip: mean 0 and unbiased std 1 over its 257 * 46 values; float32 sums of ~1e4
    # values of order 1 are exact to about 1e4 * 6e-8 relative, so 1e-4 is ample
    flat = x.flatten(1).double()
    torch.testing.assert_close(flat.mean(dim=1), torch.zeros(2, dtype=torch.float64),
                               rtol=0, atol=1e-4)
    torch.testing.assert_close(flat.std(dim=1), torch.ones(2, dtype=torch.float64),
                               rtol=0, atol=1e-4)


def test_a_clips_embedding_does_not_depend_on_its_batch():
    encoder = small()
    wav = audio(1.0, batch=3, seed=1)
    wav[2] *= 50.0
    with torch.inference_mode():
        together = encoder.embed(wav)
        alone = torch.cat([encoder.embed(wav[i:i + 1]) for i in range(3)])
    # float32 paths that differ only in kernel choice and summation order: about ten layers of
    # reductions over at most 7 * 7 * 16 terms, each a few 1e-7 relative on O(1) values
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


def test_a_clip_too_short_for_the_first_frame_is_one_sentence():
    encoder = small()
    with pytest.raises(AudioTooShortError, match="at least 257 samples") as info:
        encoder.encode(torch.zeros(1, 1, MIN_SAMPLES - 1))
    assert "\n" not in str(info.value)
    encoder.encode(torch.zeros(1, 1, MIN_SAMPLES))  # the shortest clip that runs


# -- weights ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["released", "packaged"])
def test_a_checkpoint_in_the_released_or_packaged_layout_loads(tmp_path, layout):
    source = small()
    state = released_file(source)
    if layout == "packaged":  # wav2clip.get_model's own module: encoder.*, transform.*
        state = {k.replace("audio_encoder.", "encoder.").replace("audio_transform.", "transform."): v
                 for k, v in state.items()}
    path = tmp_path / "Wav2CLIP.pt"
    torch.save(state, path)
    loaded = small(weights=str(path))
    own = loaded.state_dict()
    for name, value in released_file(source).items():
        if name.startswith(("audio_encoder.", "audio_transform.")):
            assert torch.equal(own[name], value), name
    wav = audio(1.0, seed=4)
    with torch.inference_mode():
        assert not torch.allclose(loaded.embed(wav), small().embed(wav))


def test_a_wrong_checkpoint_is_refused_in_one_sentence(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"conv_block1.conv1.weight": torch.zeros(4, 1, 3, 3)}, other)
    with pytest.raises(WeightsError, match="holds no Wav2CLIP audio encoder") as info:
        small(weights=str(other))
    assert "\n" not in str(info.value)
    wider = tmp_path / "wider.pt"
    torch.save(released_file(small(widths=[4, 8, 8, 32])), wider)
    with pytest.raises(WeightsError, match="does not fit Wav2CLIP") as info:
        small(weights=str(wider))
    assert "\n" not in str(info.value) and "of another shape" in str(info.value)
    with pytest.raises(WeightsError, match="does not exist"):
        small(weights=str(tmp_path / "missing.pt"))


def test_pretrained_downloads_the_release_only_when_asked(monkeypatch):
    calls = []
    source = small()

    def fake_download(url, **kwargs):
        calls.append((url, kwargs))
        return released_file(source)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    small()
    assert calls == []  # weights: none (the default) downloads nothing
    small(weights="pretrained")
    (url, kwargs), = calls
    assert url == RELEASE_URL and kwargs["weights_only"] is True

    def offline(url, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError, match="could not download the published Wav2CLIP") as info:
        small(weights="pretrained")
    assert "\n" not in str(info.value)
