"""The ``encodec`` codec plug-in: conformance, rates and bandwidths, the 48 kHz handling, and
weights, on the real EnCodec architectures with random weights (no download)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("encodec")

from v2a_plugins.codecs.encodec import CHECKPOINTS, EncodecCodec  # noqa: E402

from tests.unsafe_pickle import TouchesFile  # noqa: E402
from v2a.errors import PluginError  # noqa: E402
from v2a.registry import default_registry  # noqa: E402
from v2a.testing import from_registry, parametrize_with_checks  # noqa: E402
from v2a.weights import WeightsError, save_state  # noqa: E402


def named(factory, name):
    factory.__name__ = name  # the test id
    return factory


@parametrize_with_checks([
    named(from_registry("codec", "encodec", model="24khz", weights="none"), "encodec-24khz"),
    named(from_registry("codec", "encodec", model="48khz", weights="none", bandwidth=3.0), "encodec-48khz"),
])
def test_conformance(factory, check):
    check(factory)


# -- helpers ------------------------------------------------------------------------------------


def build(**options) -> EncodecCodec:
    return default_registry().build_from("codec", {"plugin": "encodec", **options})


def noise(seconds: float, sample_rate: int, channels: int = 1, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(1, channels, round(seconds * sample_rate), generator=gen)


@pytest.fixture(scope="module")
def codec24() -> EncodecCodec:
    torch.manual_seed(0)
    return build(model="24khz", weights="none")


@pytest.fixture(scope="module")
def codec48() -> EncodecCodec:
    torch.manual_seed(0)
    return build(model="48khz", weights="none")


# -- rates, channels and bandwidths -------------------------------------------------------------


def test_24khz_is_mono_at_75_frames_per_second(codec24):
    assert (codec24.sample_rate, codec24.channels, codec24.frame_rate) == (24000, 1, 75.0)
    assert (codec24.n_codebooks, codec24.codebook_size, codec24.latent_dim) == (8, 1024, 128)
    wav = noise(1.01, 24000)  # 24240 samples: 75.75 frames -> 76
    with torch.inference_mode():
        codes = codec24.encode(wav)
        assert codes.dtype == torch.int64 and list(codes.shape) == [1, 8, 76]
        # random codebooks: the library's untrained ones are all zero, so every code would be 0
        assert len(codes.unique()) > 1
        assert list(codec24.decode(codes).shape) == [1, 1, 76 * 320]
        assert list(codec24.decode(codes, length=24240).shape) == [1, 1, 24240]


def test_48khz_is_stereo_at_150_frames_per_second(codec48):
    assert (codec48.sample_rate, codec48.channels, codec48.frame_rate) == (48000, 2, 150.0)
    assert codec48.n_codebooks == 4  # 6 kbps
    wav = noise(0.5, 48000, channels=2)
    with torch.inference_mode():
        codes = codec48.encode(wav)
        assert list(codes.shape) == [1, 4, 75]
        assert list(codec48.decode(codes, length=24000).shape) == [1, 2, 24000]


@pytest.mark.parametrize("model, table", [
    ("24khz", {1.5: 2, 3.0: 4, 6.0: 8, 12.0: 16, 24.0: 32}),
    ("48khz", {3.0: 2, 6.0: 4, 12.0: 8, 24.0: 16}),
])
def test_bandwidth_picks_the_number_of_codebooks(model, table):
    wav = noise(0.2, 24000 if model == "24khz" else 48000)
    for bandwidth, codebooks in table.items():
        codec = build(model=model, weights="none", bandwidth=bandwidth)
        assert codec.n_codebooks == codebooks
        with torch.inference_mode():
            assert codec.encode(wav).shape[1] == codebooks


@pytest.mark.parametrize("model, bandwidth, valid", [
    ("24khz", 5.0, "1.5, 3, 6, 12, 24"),
    ("48khz", 1.5, "3, 6, 12, 24"),
])
def test_other_bandwidths_are_one_sentence_recipe_errors(model, bandwidth, valid):
    with pytest.raises(PluginError) as info:
        default_registry().config_for("codec", "encodec", {"model": model, "bandwidth": bandwidth})
    message = str(info.value)
    assert f"bandwidth {bandwidth:g} kbps is not one the EnCodec {model} model offers" in message
    assert message.endswith(f"use one of {valid}") and "\n" not in message


def test_channels_are_mixed_down_or_duplicated(codec24, codec48):
    stereo24, mono48 = noise(0.3, 24000, channels=2), noise(0.3, 48000)
    with torch.inference_mode():
        assert torch.equal(codec24.encode(stereo24), codec24.encode(stereo24.mean(dim=1, keepdim=True)))
        assert torch.equal(codec48.encode(mono48), codec48.encode(mono48.expand(-1, 2, -1)))


def test_latents_are_what_the_decoder_reads(codec24):
    wav = noise(0.4, 24000)
    with torch.inference_mode():
        codes = codec24.encode(wav)
        latents = codec24.latents(codes)
        assert list(latents.values.shape) == [1, codes.shape[-1], 128] and latents.rate == 75.0
        decoded = codec24.model.decoder(latents.values.transpose(1, 2))
        assert torch.allclose(codec24.decode(codes), decoded)


def test_codec_is_frozen_and_in_eval_mode(codec24):
    assert not codec24.training and not codec24.model.training
    assert not any(p.requires_grad for p in codec24.parameters())


# -- the library's behaviour is kept, and the 48 kHz choices --------------------------------------


def test_24khz_codes_are_the_library_codes(codec24):
    wav = noise(0.7, 24000)
    codec24.model.set_target_bandwidth(6.0)
    with torch.inference_mode():
        (expected, scale), = codec24.model.encode(wav)  # no segments, no normalisation
        assert scale is None and torch.equal(codec24.encode(wav), expected)
        audio = codec24.model.decode([(expected, None)])
        assert torch.allclose(codec24.decode(expected, length=wav.shape[-1]), audio[..., : wav.shape[-1]])


def test_48khz_codes_are_the_library_codes_of_one_normalised_segment(codec48):
    wav = noise(0.7, 48000, channels=2)
    model = codec48.model
    model.set_target_bandwidth(6.0)
    segment = model.segment
    model.segment = None  # the whole clip as one segment, normalised by its RMS
    try:
        with torch.inference_mode():
            (expected, scale), = model.encode(wav)
            assert torch.equal(codec48.encode(wav), expected)
            unit = model.decode([(expected, None)])[..., : wav.shape[-1]]  # unit-level output
            assert torch.allclose(codec48.decode(expected, length=wav.shape[-1]), 0.1 * unit)
    finally:
        model.segment = segment


def test_48khz_codes_carry_no_loudness(codec48):
    wav = noise(0.4, 48000, channels=2)
    with torch.inference_mode():
        codes = codec48.encode(wav)
        assert torch.equal(codec48.encode(4.0 * wav), codes)
        louder = build(model="48khz", weights="none", output_rms=0.2)
        louder.load_state_dict(codec48.state_dict())
        assert torch.allclose(louder.decode(codes), 2.0 * codec48.decode(codes))


# -- weights -----------------------------------------------------------------------------------


def test_local_state_dict_files_load(tmp_path, codec24):
    wav = noise(0.3, 24000)
    with torch.inference_mode():
        expected = codec24.encode(wav)
    torch.save(codec24.model.state_dict(), tmp_path / "encodec_24khz.th")  # the library's format
    save_state(codec24.model.state_dict(), tmp_path / "encodec_24khz.safetensors")
    for name in ("encodec_24khz.th", "encodec_24khz.safetensors"):
        torch.manual_seed(1)
        loaded = build(model="24khz", weights=str(tmp_path / name))
        with torch.inference_mode():
            assert torch.equal(loaded.encode(wav), expected)


def test_a_state_dict_of_the_other_model_is_one_sentence(tmp_path, codec48):
    path = tmp_path / "encodec_48khz.th"
    torch.save(codec48.model.state_dict(), path)
    with pytest.raises(WeightsError, match="is not a state dict of the EnCodec 24khz model") as info:
        build(model="24khz", weights=str(path))
    assert "\n" not in str(info.value)


def test_pretrained_downloads_with_a_hash_check_and_no_code(monkeypatch, codec24):
    calls = []

    def fake_download(url, **kwargs):
        calls.append((url, kwargs))
        return codec24.model.state_dict()

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    build(model="24khz")  # weights: pretrained is the default
    (url, kwargs), = calls
    assert url.endswith(CHECKPOINTS["24khz"]) and url.startswith("https://")
    assert kwargs["check_hash"] is True and kwargs["weights_only"] is True

    def offline(url, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError, match="could not download the published EnCodec 48khz weights") as info:
        build(model="48khz")
    assert "\n" not in str(info.value)




def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.th"
    torch.save({"encoder.model.0.conv.conv.bias": TouchesFile(marker)}, path)
    with pytest.raises(WeightsError, match="refused: loading it would run code"):
        build(weights=str(path))
    assert not marker.exists()


def test_a_missing_weights_file_is_one_sentence(tmp_path):
    missing = tmp_path / "nowhere" / "encodec.th"
    with pytest.raises(WeightsError) as info:
        build(weights=str(missing))
    message = str(info.value)
    assert "\n" not in message and str(missing) in message and "EnCodec 24khz" in message


# -- speed: weight norm folded, precision ---------------------------------------------------------


def test_the_published_key_layout_loads_and_the_outputs_are_the_library_models(tmp_path):
    """A state dict as the library saves it (weight_g / weight_v) loads into the codec, whose
    folded model computes what the library's model computes."""
    from encodec import EncodecModel

    torch.manual_seed(0)
    library = EncodecModel.encodec_model_24khz(pretrained=False).eval()
    assert any(k.endswith("weight_g") for k in library.state_dict())
    torch.save(library.state_dict(), tmp_path / "published.th")
    codec = build(model="24khz", weights=str(tmp_path / "published.th"))
    assert not any(k.endswith(("weight_g", "weight_v")) for k in codec.state_dict())
    wav = noise(0.5, 24000)
    with torch.inference_mode():
        emb, emb_codec = library.encoder(wav), codec.model.encoder(wav)
        out, out_codec = library.decoder(emb), codec.model.decoder(emb)
    # The folded weight g·v/‖v‖ is computed once by the function the weight-norm hook calls at
    # every forward, so it is the same fp32 number and the same kernels run: the outputs are
    # expected equal. A different summation order of ‖v‖² would move a weight by a few ulp
    # (~1e-7 relative), one ulp per layer through ~20 layers and two LSTMs, far below 1e-4.
    for got, expected in ((emb_codec, emb), (out_codec, out)):
        assert float((got - expected).norm() / expected.norm()) < 1e-4


def test_precision_bfloat16_runs_encoder_and_decoder_in_bf16_and_returns_float32():
    codec = build(model="24khz", weights="none", encode_precision="bfloat16",
                  decode_precision="bfloat16")
    assert codec.precisions == {"encode": "bfloat16", "decode": "bfloat16"}
    assert next(codec.model.encoder.parameters()).dtype == torch.bfloat16
    assert next(codec.model.decoder.parameters()).dtype == torch.bfloat16
    assert codec._dtype() == torch.float32  # the quantiser's
    with torch.inference_mode():
        codes = codec.encode(noise(0.3, 24000))
        assert codes.dtype == torch.int64 and codec.decode(codes).dtype == torch.float32


def test_precision_auto_measures_once_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("V2A_CACHE", str(tmp_path / "cache"))
    codec = build(model="24khz", weights="none", encode_precision="auto",
                  decode_precision="auto")
    entries = (tmp_path / "cache" / "precision.json").read_text()
    assert '"codec": "encodec"' in entries and set(codec.precisions) == {"encode", "decode"}
    for part, choice in codec.precisions.items():
        module = codec.model.encoder if part == "encode" else codec.model.decoder
        assert next(module.parameters()).dtype == {"float32": torch.float32, "bfloat16": torch.bfloat16}[choice]
    again = build(model="24khz", weights="none", encode_precision="auto",
                  decode_precision="auto")
    assert again.precisions == codec.precisions  # read back from the cache, not re-timed
