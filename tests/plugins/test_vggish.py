"""The VGGish audio encoder plug-in: contract, front end, example framing, torchvggish layout."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch
from v2a_plugins.audio_encoders.vggish import (
    DOWNLOAD_PAGE,
    Postprocessor,
    VggishConfig,
    VggishEncoder,
    flatten_channels_last,
    log_mel,
    mel_matrix,
    num_examples,
    spectrum_magnitude,
)

from v2a.errors import UserError
from v2a.registry import default_registry
from v2a.testing import from_registry, parametrize_with_checks
from v2a.weights import WeightsError

#: Widths divided by 16: convolutions 4, 8, 16, 16, 32, 32 channels, hidden layers 256.
SMALL = dict(width_divisor=16)


@parametrize_with_checks([from_registry("audio_encoder", "vggish", weights="none", **SMALL)])
def test_conformance(factory, check):
    check(factory)


# -- helpers ----------------------------------------------------------------------------------------


def small_encoder(**changes) -> VggishEncoder:
    return VggishEncoder(VggishConfig(**{**SMALL, **changes})).eval()


def audio(seconds: float, channels: int = 1, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(batch, channels, round(seconds * 16000), generator=gen)


def encode(encoder: VggishEncoder, wav: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return encoder.encode(wav).values


def torchvggish_shapes(divisor: int = 1) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of torchvggish's ``vggish-10086976.pth`` (``features`` counts its
    ReLUs and pools: convolutions at 0, 3, 6, 8, 11, 13; ``embeddings`` its ReLUs: linears at 0,
    2, 4), with widths divided by ``divisor``."""
    c1, c2, c3, c4, hidden = (w // divisor for w in (64, 128, 256, 512, 4096))
    shapes = {}
    for index, (out, inp) in {0: (c1, 1), 3: (c2, c1), 6: (c3, c2), 8: (c3, c3), 11: (c4, c3),
                              13: (c4, c4)}.items():
        shapes[f"features.{index}.weight"] = (out, inp, 3, 3)
        shapes[f"features.{index}.bias"] = (out,)
    for index, (out, inp) in {0: (hidden, c4 * 6 * 4), 2: (hidden, hidden), 4: (128, hidden)}.items():
        shapes[f"embeddings.{index}.weight"] = (out, inp)
        shapes[f"embeddings.{index}.bias"] = (out,)
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {key: 0.1 * torch.randn(shape, generator=gen) for key, shape in shapes.items()}


# -- rate, steps, time ------------------------------------------------------------------------------


def test_properties_and_ten_seconds():
    encoder = small_encoder()
    out = encoder.encode(audio(10.0))
    # 160000 samples -> 1 + (160000 - 400) // 160 = 998 frames -> 10 examples of 96 frames
    assert out.values.shape == (2, 10, 128)
    assert out.rate == pytest.approx(1 / 0.96) and out.start == pytest.approx(0.4875)
    assert out.mask is None and torch.isfinite(out.values).all()
    declared = default_registry().properties("audio_encoder", "vggish", VggishConfig())
    assert declared == {"sample_rate": 16000, "dim": 128, "rate": encoder.rate}


@pytest.mark.parametrize("samples, steps", [
    (0, 0), (399, 0), (15599, 0),  # the first example spans 400 + 95 * 160 = 15600 samples
    (15600, 1), (16000, 1), (15600 + 15359, 1), (15600 + 15360, 2),  # then 96 * 160 each
    (48000, 3),
])
def test_steps_count_whole_examples(samples, steps):
    assert num_examples(samples) == steps
    assert encode(small_encoder(), torch.zeros(1, 1, samples)).shape == (1, steps, 128)


def test_a_clip_shorter_than_one_example_gives_an_empty_sequence():
    out = small_encoder().encode(audio(0.9))
    assert out.values.shape == (2, 0, 128) and out.values.dtype == torch.float32
    assert out.rate == pytest.approx(1 / 0.96)


def test_steps_follow_the_audio_in_time():
    """Each step sees only its own 0.96 s: changing audio only the third example reads (its
    frames start at sample 2 * 15360; the second example's last frame ends at 15360 + 15600)
    changes only step 2."""
    encoder = small_encoder()
    wav = audio(3.0, batch=1)
    changed = wav.clone()
    changed[..., 15360 + 15600: 2 * 15360 + 15600] *= 3.0
    before, after = encode(encoder, wav)[0], encode(encoder, changed)[0]
    assert torch.equal(before[:2], after[:2]) and not torch.allclose(before[2], after[2])


def test_channels_are_mixed_to_mono():
    encoder = small_encoder()
    stereo = audio(2.0, channels=2)
    left_right = encode(encoder, stereo)
    assert torch.equal(left_right, encode(encoder, stereo.mean(1, keepdim=True)))  # exact: same mix
    assert not torch.allclose(left_right, encode(encoder, stereo[:, :1]))


def test_rows_are_encoded_independently():
    """Over 2 s (the conformance probe's 0.5 s is shorter than one example, so its batch check
    sees no steps): each row alone gives the row of the batch."""
    encoder = small_encoder()
    wav = audio(2.0, batch=3)
    batched = encode(encoder, wav)
    alone = torch.cat([encode(encoder, wav[i: i + 1]) for i in range(3)])
    # float32 sums over at most 12288 products, reordered by batch-size-dependent kernels:
    # ~sqrt(12288) * 6e-8 ≈ 7e-6 of the terms' size; 1e-4 of the largest output leaves margin
    scale = batched.abs().max().item()
    torch.testing.assert_close(alone, batched, rtol=1e-4, atol=1e-4 * scale)


# -- the front end, against hand-computed cases -----------------------------------------------------


def test_spectrum_is_the_magnitude_of_a_periodic_hann_frame():
    """A 1000 Hz sine of amplitude 0.5 makes exactly 25 cycles in a 400-sample frame, so the
    512-point FFT bin 32 (1000 Hz) reads A / 2 * sum(window) = 0.25 * 200 = 50 (the periodic
    Hann sums to 200; the negative-frequency image falls 50 whole cycles away, where the window's
    transform is exactly zero). A power spectrum would read 2500, a symmetric window less."""
    t = torch.arange(4000, dtype=torch.float64) / 16000
    wav = 0.5 * torch.sin(2 * math.pi * 1000 * t + 0.3)[None]
    window = torch.hann_window(400, periodic=True, dtype=torch.float64)
    spectrum = spectrum_magnitude(wav, window)  # [1, frames, 257]
    assert spectrum.shape == (1, 1 + (4000 - 400) // 160, 257)
    # float64 FFT of 512 points: error ~ 9 * 2.2e-16 * 200 ≈ 4e-13
    torch.testing.assert_close(spectrum[0, :, 32], torch.full((spectrum.shape[1],), 50.0, dtype=torch.float64),
                               rtol=0, atol=1e-9)


def test_mel_weights_are_triangles_in_the_mel_domain():
    """The 1000 Hz bin (32): mel = 1127 ln(1 + 1000 / 700) lies at 20.46 steps of the 66 edges
    spaced from mel(125) to mel(7500), so band 19 (falling) weighs 1 - 0.46 and band 20 (rising)
    0.46; no other band sees it. The DC bin weighs nothing."""
    weights = mel_matrix()
    assert weights.shape == (257, 64) and weights.dtype == torch.float64
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731
    position = (mel(1000.0) - mel(125.0)) / ((mel(7500.0) - mel(125.0)) / 65)
    above = position - math.floor(position)
    assert math.floor(position) == 20 and above == pytest.approx(0.4637, abs=1e-4)
    expected = torch.zeros(64, dtype=torch.float64)
    expected[19], expected[20] = 1.0 - above, above
    torch.testing.assert_close(weights[32], expected, rtol=0, atol=1e-12)
    assert weights[0].abs().sum() == 0
    assert (weights <= 1.0).all() and weights.sum(dim=0).min() > 0  # every band sees some bin


def test_silence_is_log_of_the_offset():
    window = torch.hann_window(400, periodic=True, dtype=torch.float64)
    mel = log_mel(torch.zeros(1, 16000, dtype=torch.float64), window, mel_matrix())
    assert mel.shape == (1, 98, 64)
    assert torch.equal(mel, torch.full_like(mel, math.log(0.01)))


@pytest.mark.parametrize("band", [20, 40, 54])
def test_a_sine_lands_in_its_mel_band(band):
    """A tone at band ``band``'s centre (edge ``band + 1``, rounded to a multiple of 40 Hz:
    whole cycles per frame) has its largest log-mel value in that band."""
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731
    step = (mel(7500.0) - mel(125.0)) / 65
    centre = 700.0 * (math.exp((mel(125.0) + (band + 1) * step) / 1127.0) - 1.0)
    frequency = 40 * round(centre / 40)
    t = torch.arange(32000, dtype=torch.float64) / 16000
    wav = 0.5 * torch.sin(2 * math.pi * frequency * t)[None]
    window = torch.hann_window(400, periodic=True, dtype=torch.float64)
    per_band = log_mel(wav, window, mel_matrix()).mean(dim=1)[0]
    assert int(per_band.argmax()) == band


def test_flatten_is_time_mel_channel_order():
    """The TensorFlow model flattens [n, h, w, c]: element (c, h, w) goes to (h * 4 + w) * C + c."""
    x = torch.arange(2 * 3 * 6 * 4, dtype=torch.float32).reshape(2, 3, 6, 4)
    flat = flatten_channels_last(x)
    assert flat.shape == (2, 72)
    for c, h, w in [(0, 0, 0), (2, 0, 0), (0, 0, 1), (1, 5, 3), (2, 3, 2)]:
        assert flat[1, (h * 4 + w) * 3 + c] == x[1, c, h, w]


def test_postprocess_whitens_then_quantises_to_8_bits():
    """P (e - m), clipped to [-2, 2], mapped onto [0, 255], rounded half to even; P's rows are
    the outputs (only output 0 reads input 1 here)."""
    post = Postprocessor()
    post.pca_matrix.zero_()
    post.pca_matrix[0, 1] = 0.25
    post.pca_matrix[1, 1] = 0.5
    post.pca_matrix[2, 2] = 1.0
    post.pca_means.fill_(1.0)
    e = torch.ones(3, 128)
    e[0, 1] = 5.0  # output 0: 0.25 * 4 = 1 -> 3 * 63.75 = 191.25 -> 191; output 1: 2 -> 255
    e[1, 2] = -9.0  # output 2: -10, clipped to -2 -> 0
    e[2, 1] = 0.0  # output 0: -0.25 -> 111.5625 -> 112; output 1: -0.5 -> 95.625 -> 96
    out = post(e)
    assert out[:, 3:].eq(128.0).all()  # 0 -> 127.5 -> 128 (half to even)
    assert out[0, :3].tolist() == [191.0, 255.0, 128.0]
    assert out[1, :3].tolist() == [128.0, 128.0, 0.0]
    assert out[2, :3].tolist() == [112.0, 96.0, 128.0]


def test_embedding_relu_is_torchvggish_s_last_activation():
    wav = audio(2.0)
    plain = small_encoder()
    with_relu = small_encoder(embedding_relu=True)
    with_relu.load_state_dict(plain.state_dict(), strict=True)  # a ReLU has no parameters
    without = encode(plain, wav)
    assert (without < 0).any()  # the FAD default: no activation on the 128-d layer
    assert torch.equal(encode(with_relu, wav), without.clamp(min=0))


# -- weights in the torchvggish layout --------------------------------------------------------------


def test_the_state_dict_has_torchvggish_s_keys_and_shapes():
    with torch.device("meta"):
        encoder = VggishEncoder()
    assert {k: tuple(v.shape) for k, v in encoder.state_dict().items()} == torchvggish_shapes()
    with torch.device("meta"):
        post = VggishEncoder(VggishConfig(postprocess=True))
    shapes = {k: tuple(v.shape) for k, v in post.state_dict().items()}
    assert shapes == torchvggish_shapes() | {"pproc.pca_matrix": (128, 128), "pproc.pca_means": (128, 1)}


def test_a_torchvggish_state_dict_loads_through_a_path(tmp_path):
    state = random_state(torchvggish_shapes(16))
    path = tmp_path / "vggish-10086976.pth"
    torch.save(state, path)
    encoder = small_encoder(weights=str(path))
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, state[key]), key
    # the component's own state dict, as safetensors, is the same layout
    from safetensors.torch import save_file
    save_file(encoder.state_dict(), str(tmp_path / "own.safetensors"))
    again = small_encoder(weights=str(tmp_path / "own.safetensors"))
    wav = audio(2.0)
    assert torch.equal(encode(again, wav), encode(encoder, wav))


def test_a_file_of_another_architecture_is_refused_naming_the_key(tmp_path):
    state = random_state(torchvggish_shapes(16))
    state["features.1.weight"] = state.pop("features.0.weight")
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="features.0.weight|features.1.weight"):
        small_encoder(weights=str(path))
    torch.save(random_state(torchvggish_shapes(16)), path)
    # twice the widths: every tensor but embeddings.4.bias ([128] at any width) differs
    with pytest.raises(WeightsError, match="17 of another shape"):
        small_encoder(weights=str(path), width_divisor=8)


def test_postprocess_takes_the_pca_from_the_file_or_from_pca_weights(tmp_path):
    state = random_state(torchvggish_shapes(16))
    gen = torch.Generator().manual_seed(1)
    matrix, means = torch.randn(128, 128, generator=gen), torch.randn(128, generator=gen)
    full = tmp_path / "full.pth"  # the GitHub torchvggish full model: pproc.* in the state dict
    torch.save(state | {"pproc.pca_matrix": matrix, "pproc.pca_means": means[:, None]}, full)
    encoder = small_encoder(weights=str(full), postprocess=True)
    assert torch.equal(encoder.pproc.pca_matrix, matrix)
    assert torch.equal(encoder.pproc.pca_means, means[:, None])
    values = encode(encoder, audio(2.0))
    assert torch.equal(values, values.round()) and values.min() >= 0 and values.max() <= 255
    # without postprocess the PCA of the file is not used
    assert small_encoder(weights=str(full)).pproc is None

    bare = tmp_path / "vggish.pth"
    torch.save(state, bare)
    with pytest.raises(WeightsError, match="pca_weights"):
        small_encoder(weights=str(bare), postprocess=True)
    npz = tmp_path / "vggish_pca_params.npz"  # the TensorFlow release's layout
    np.savez(npz, pca_eigen_vectors=matrix.numpy(), pca_means=means.numpy())
    from_npz = small_encoder(weights=str(bare), postprocess=True, pca_weights=str(npz))
    assert torch.equal(encode(from_npz, audio(2.0)), values)
    pth = tmp_path / "vggish_pca_params-970ea276.pth"  # torchvggish's, as tensors
    torch.save({"pca_eigen_vectors": matrix, "pca_means": means}, pth)
    from_pth = small_encoder(weights=str(bare), postprocess=True, pca_weights=str(pth))
    assert torch.equal(from_pth.pproc.pca_means, means[:, None])
    torch.save({"eigen": matrix}, pth)
    with pytest.raises(WeightsError, match="not a VGGish PCA file"):
        small_encoder(weights=str(bare), postprocess=True, pca_weights=str(pth))


@pytest.mark.parametrize("options", [
    dict(postprocess=False, weights="vggish.pth"), dict(postprocess=True, weights="none"),
])
def test_pca_weights_that_would_be_ignored_are_a_user_error(options):
    with pytest.raises(UserError, match="pca_weights"):
        small_encoder(pca_weights="vggish_pca_params.npz", **options)


def test_pretrained_without_torchvggish_says_where_to_get_the_file(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvggish", None)  # import torchvggish -> ImportError
    with pytest.raises(WeightsError, match="v2a\\[vggish\\]") as info:
        small_encoder(weights="pretrained")
    assert DOWNLOAD_PAGE in str(info.value) and isinstance(info.value, UserError)


def test_pretrained_uses_torchvggish_s_model_and_its_pca(monkeypatch):
    """torchvggish 0.2's API: ``vggish(postprocess)`` returns its model, whose ``pproc`` holds
    ``_pca_matrix [128, 128]`` and ``_pca_means [128, 1]`` outside the state dict."""
    state = random_state(torchvggish_shapes(16))
    matrix = torch.randn(128, 128, generator=torch.Generator().manual_seed(2))
    means = torch.arange(128.0)[:, None]
    calls = []

    class Model:
        pproc = types.SimpleNamespace(_pca_matrix=matrix, _pca_means=means)

        def state_dict(self):
            return state

    def vggish(postprocess=True):
        calls.append(postprocess)
        return Model()

    monkeypatch.setitem(sys.modules, "torchvggish", types.SimpleNamespace(vggish=vggish))
    encoder = small_encoder(weights="pretrained", postprocess=True)
    assert calls == [True]
    assert torch.equal(encoder.embeddings[0].weight, state["embeddings.0.weight"])
    assert torch.equal(encoder.pproc.pca_matrix, matrix) and torch.equal(encoder.pproc.pca_means, means)


def test_bad_width_divisor_is_a_user_error():
    with pytest.raises(UserError, match="width_divisor"):
        VggishEncoder(VggishConfig(width_divisor=3))


@pytest.mark.slow
def test_full_default_architecture_on_three_seconds():
    encoder = VggishEncoder().eval()
    assert (encoder.sample_rate, encoder.dim) == (16000, 128)
    out = encode(encoder, audio(3.0, batch=1))
    assert out.shape == (1, 3, 128) and torch.isfinite(out).all()
