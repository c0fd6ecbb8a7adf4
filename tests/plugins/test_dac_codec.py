"""The ``dac`` codec plug-in: conformance, the published rates, weights, codebook selection and
chunked encoding, on small random-weight DAC models (no download)."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

pytest.importorskip("dac")

from v2a_plugins.codecs.dac import (  # noqa: E402
    PUBLISHED,
    PUBLISHED_SHARED,
    DACCodec,
    DACConfig,
    dac_kwargs,
    encoder_receptive_field,
    speed_up,
)
from v2a_plugins.codecs.dac_model import _import_dac, _quiet_deprecations  # noqa: E402
from v2a_plugins.codecs.inference import remove_weight_norms  # noqa: E402
from v2a_plugins.codecs.precision import choose_precisions, machine_key  # noqa: E402

from tests.unsafe_pickle import TouchesFile  # noqa: E402
from v2a.errors import PluginError  # noqa: E402
from v2a.registry import default_registry  # noqa: E402
from v2a.testing import from_registry, parametrize_with_checks  # noqa: E402
from v2a.weights import WeightsError, save_state  # noqa: E402

@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test measures into its own cache (``precision: auto`` writes there)."""
    monkeypatch.setenv("V2A_CACHE", str(tmp_path / "v2a-cache"))


#: A small DAC of the real architecture: 0.4 M parameters, a few ms per second of audio.
SMALL = dict(weights="none", encoder_dim=8, decoder_dim=32, n_codebooks=4, codebook_size=256)


def named(factory, name):
    factory.__name__ = name  # the test id
    return factory


@parametrize_with_checks([
    named(from_registry("codec", "dac", model="44khz", **SMALL), "dac-44khz-small"),
    named(from_registry("codec", "dac", model="16khz", **SMALL), "dac-16khz-small"),
])
def test_conformance(factory, check):
    check(factory)


# -- helpers ----------------------------------------------------------------------------------------


def build(**options) -> DACCodec:
    return default_registry().build_from("codec", {"plugin": "dac", **options})


def noise(seconds: float, sample_rate: int, channels: int = 1, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(1, channels, round(seconds * sample_rate), generator=gen).clamp(-3, 3) / 3


def small_dac(seed: int = 0, **changes):
    """A random ``dac.DAC`` of the library (44.1 kHz strides, small widths, 9 codebooks)."""
    dac = _import_dac()
    torch.manual_seed(seed)
    kwargs = dict(encoder_dim=8, decoder_dim=32, codebook_size=256, n_codebooks=9, **changes)
    with _quiet_deprecations():
        return dac.DAC(**kwargs).eval()


def one_sentence(message: str) -> bool:
    return "\n" not in message and message.count(". ") == 0


# -- rates and shapes ---------------------------------------------------------------------------------


def test_44khz_ten_seconds_gives_9_by_862_codes_and_decodes_to_the_input_length():
    codec = build(model="44khz", weights="none", encoder_dim=8, decoder_dim=32)
    assert (codec.sample_rate, codec.channels, codec.n_codebooks) == (44100, 1, 9)
    assert codec.frame_rate == pytest.approx(44100 / 512) and codec.codebook_size == 1024
    assert codec.latent_dim == 8 * 2**4  # derived as DAC does
    wav = noise(10.0, 44100)
    with torch.inference_mode():
        codes = codec.encode(wav)
        assert codes.dtype == torch.int64 and list(codes.shape) == [1, 9, 862]
        assert codec.num_frames(wav.shape[-1]) == 862
        assert list(codec.decode(codes, length=wav.shape[-1]).shape) == [1, 1, 441000]
        assert list(codec.decode(codes).shape) == [1, 1, 862 * 512]
        latents = codec.latents(codes)
    assert list(latents.values.shape) == [1, 862, 128] and latents.rate == codec.frame_rate


@pytest.mark.slow
def test_44khz_full_published_architecture_random_init():
    codec = build(model="44khz", weights="none")
    assert sum(p.numel() for p in codec.parameters()) > 70e6
    assert (codec.latent_dim, codec.n_codebooks, codec.codebook_size) == (1024, 9, 1024)
    wav = noise(10.0, 44100)
    with torch.inference_mode():
        codes = codec.encode(wav)
        assert list(codes.shape) == [1, 9, 862]
        assert list(codec.decode(codes, length=wav.shape[-1]).shape) == [1, 1, 441000]


def test_published_configurations_follow_the_library():
    dac = _import_dac()
    defaults = {k: p.default for k, p in inspect.signature(dac.DAC).parameters.items()}
    published_44 = {**PUBLISHED_SHARED, **PUBLISHED["44khz"]}
    assert {k: defaults[k] for k in published_44} == published_44  # the library's defaults are 44.1 kHz
    expected = {"44khz": (44100, 512, 9), "24khz": (24000, 320, 32), "16khz": (16000, 320, 12)}
    for model, (rate, hop, codebooks) in expected.items():
        kwargs = dac_kwargs(DACConfig(model=model, weights="none"))
        assert kwargs["sample_rate"] == rate and math.prod(kwargs["encoder_rates"]) == hop
        assert math.prod(kwargs["decoder_rates"]) == hop and kwargs["n_codebooks"] == codebooks
        assert (kwargs["encoder_dim"], kwargs["decoder_dim"], kwargs["codebook_dim"]) == (64, 1536, 8)


def test_16khz_small_rates_and_decode_length():
    codec = build(model="16khz", **SMALL)
    assert codec.sample_rate == 16000 and codec.frame_rate == 50.0
    wav = noise(1.01, 16000)  # 16160 samples: 50.5 frames -> 51, padded as DAC's preprocess does
    with torch.inference_mode():
        codes = codec.encode(wav)
        assert list(codes.shape) == [1, 4, 51]
        # the 5x transposed conv returns 8 samples short of l * 320: zero-filled to the contract
        assert codec.decode(codes).shape[-1] == 51 * 320
        assert codec.decode(codes, length=16160).shape[-1] == 16160


def test_multichannel_input_is_mixed_down():
    codec = build(model="16khz", **SMALL)
    stereo = noise(0.5, 16000, channels=2)
    with torch.inference_mode():
        assert torch.equal(codec.encode(stereo), codec.encode(stereo.mean(dim=1, keepdim=True)))


def test_codec_is_frozen_and_in_eval_mode():
    codec = build(model="16khz", **SMALL)
    assert not codec.training and not codec.model.training
    assert not any(p.requires_grad for p in codec.parameters())


@pytest.mark.parametrize("options, words", [
    (dict(n_codebooks=0), "n_codebooks must be a positive integer"),
    (dict(chunk_seconds=0.0), "chunk_seconds must be positive"),
    (dict(model="22khz"), "'24khz'"),
])
def test_bad_options_are_recipe_errors(options, words):
    with pytest.raises(PluginError, match=words):
        default_registry().config_for("codec", "dac", {"weights": "none", **options})


# -- the library's behaviour is kept -------------------------------------------------------------------


def test_codes_decode_and_latents_match_the_library(tmp_path):
    source = small_dac()
    path = tmp_path / "weights.pth"
    source.save(str(path), package=False)  # the library's own checkpoint format
    codec = build(model="44khz", weights=str(path))
    wav = noise(1.3, 44100)
    with torch.inference_mode():
        padded = source.preprocess(wav, 44100)
        z, expected, *_ = source.encode(padded)
        codes = codec.encode(wav)
        assert torch.equal(codes, expected)
        audio = source.decode(z)[..., : wav.shape[-1]]
        assert torch.allclose(codec.decode(codes, length=wav.shape[-1]), audio, atol=1e-5)
        assert torch.allclose(codec.latents(codes).values, z.transpose(1, 2), atol=1e-5)


def test_fewer_codebooks_select_the_first_levels(tmp_path):
    path = tmp_path / "weights.pth"
    small_dac().save(str(path), package=False)
    full, part = build(weights=str(path)), build(weights=str(path), n_codebooks=4)
    assert (full.n_codebooks, part.n_codebooks) == (9, 4)
    wav = noise(0.5, 44100)
    with torch.inference_mode():
        codes = full.encode(wav)
        first = part.encode(wav)
        assert list(first.shape) == [1, 4, codes.shape[-1]] and torch.equal(first, codes[:, :4])
        z4 = full.model.quantizer.from_codes(codes[:, :4])[0]
        assert torch.allclose(part.latents(first).values, z4.transpose(1, 2))
        assert torch.allclose(part.decode(first), full.model.decoder(z4))
        assert not torch.allclose(part.decode(first), full.decode(codes))  # the other 5 levels count
        with pytest.raises(ValueError, match=r"\[b, 4, l\]"):
            part.decode(codes)


# -- weights ---------------------------------------------------------------------------------------------


def test_checkpoint_metadata_decides_the_architecture(tmp_path):
    path = tmp_path / "weights.pth"
    small_dac(codebook_dim=4).save(str(path), package=False)
    codec = build(model="44khz", weights=str(path))  # no architecture options: all from metadata
    assert (codec.model.encoder_dim, codec.model.decoder_dim, codec.codebook_size) == (8, 32, 256)
    assert codec.model.codebook_dim == 4 and codec.n_codebooks == 9
    with pytest.raises(WeightsError, match="encoder_dim 8, but the options set encoder_dim 64") as info:
        build(model="44khz", weights=str(path), encoder_dim=64)
    assert one_sentence(str(info.value))
    with pytest.raises(WeightsError, match="44100 Hz DAC, but the model option is '16khz'"):
        build(model="16khz", weights=str(path))
    with pytest.raises(WeightsError, match="has only 9 codebooks"):
        build(model="44khz", weights=str(path), n_codebooks=12)


def test_pretrained_uses_the_release_file_where_the_library_keeps_it(tmp_path, monkeypatch):
    from v2a.downloads import DownloadError
    from v2a_plugins.codecs.dac import release_file

    monkeypatch.setenv("HOME", str(tmp_path))  # Path.home(): the library's cache folder
    dac = _import_dac()
    closed = "http://127.0.0.1:9/nothing.pth"  # the discard port: nothing answers there
    for key in list(dac.utils.__MODEL_URLS__):
        monkeypatch.setitem(dac.utils.__MODEL_URLS__, key, closed)
    config = default_registry().config_for("codec", "dac", {"model": "16khz"})
    _, path = release_file(config)
    path.parent.mkdir(parents=True)
    small_dac(encoder_rates=[2, 4, 5, 8], decoder_rates=[8, 5, 4, 2], sample_rate=16000).save(
        str(path), package=False
    )
    codec = build(model="16khz")  # weights: pretrained is the default; the file is there
    assert codec.sample_rate == 16000 and codec.n_codebooks == 9 and codec.model.encoder_dim == 8
    with pytest.raises(DownloadError, match="could not download the published DAC 24khz weights") as info:
        build(model="24khz")  # not there, and the release cannot be reached
    assert "\n" not in str(info.value)


def test_safetensors_state_dict_with_the_options(tmp_path):
    source = build(model="16khz", **SMALL)
    path = tmp_path / "dac.safetensors"
    save_state(source.model.state_dict(), path)
    options = dict(SMALL, weights=str(path))
    loaded = build(model="16khz", **options)
    wav = noise(0.5, 16000)
    with torch.inference_mode():
        assert torch.equal(loaded.encode(wav), source.encode(wav))
    save_state(source.state_dict(), tmp_path / "component.safetensors")  # keys "model.…" work too
    build(model="16khz", **dict(options, weights=str(tmp_path / "component.safetensors")))
    with pytest.raises(WeightsError, match="does not fit a DAC built from these options") as info:
        build(model="16khz", **dict(options, encoder_dim=16))
    assert "\n" not in str(info.value)
    # a state dict with 9 quantizers: the model keeps all 9, n_codebooks selects the first 4
    save_state(small_dac().state_dict(), tmp_path / "nine.safetensors")
    part = build(model="44khz", **dict(options, weights=str(tmp_path / "nine.safetensors")))
    assert part.n_codebooks == 4 and len(part.model.quantizer.quantizers) == 9




def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "metadata": {"kwargs": TouchesFile(marker)}}, path)
    with pytest.raises(WeightsError, match="refused: loading it would run code"):
        build(weights=str(path))
    assert not marker.exists()


def test_a_missing_weights_file_is_one_sentence(tmp_path):
    missing = tmp_path / "nowhere" / "weights.pth"
    with pytest.raises(WeightsError) as info:
        build(weights=str(missing))
    message = str(info.value)
    assert "\n" not in message and str(missing) in message and "DAC 44khz" in message


# -- chunked encoding ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rates", [[2, 4, 8, 8], [2, 4, 5, 8]])
def test_receptive_field_is_what_a_gradient_measures(rates):
    dac = _import_dac()
    torch.manual_seed(0)
    with _quiet_deprecations():
        model = dac.DAC(encoder_dim=4, encoder_rates=rates, decoder_dim=16,
                        decoder_rates=rates[::-1], n_codebooks=1, codebook_size=8).double()
    hop = math.prod(rates)
    wav = torch.randn(1, 1, 64 * hop, dtype=torch.float64, requires_grad=True)
    model.encoder(wav)[0, :, 32].sum().backward()
    touched = wav.grad[0, 0].nonzero().squeeze(1)
    assert int(touched.max() - touched.min()) + 1 == encoder_receptive_field(rates)


def test_chunked_codes_equal_one_pass_codes():
    options = dict(model="44khz", **SMALL)
    torch.manual_seed(0)
    chunked = build(**options, chunk_seconds=0.5)  # 43 frames kept per window
    whole = build(**options, chunk_seconds=None)
    whole.load_state_dict(chunked.state_dict())
    assert chunked.margin_frames == 16  # ceil(7978 / 512)
    wav = noise(4.0, 44100)  # 345 frames: 9 windows
    with torch.inference_mode():
        a, b = chunked.encode(wav), whole.encode(wav)
    assert a.shape == b.shape == (1, 4, 345)
    # Every kept frame sees the samples it sees in one pass, so the codes agree; only float
    # rounding (a conv run on another length) could flip a quantiser decision that sits on a
    # boundary, so 0.2 % (2 of 1380) may differ. None does on this machine.
    assert (a != b).float().mean() <= 0.002
    chunked.margin_frames = 0  # the control: windows without context do change the codes (8 %)
    with torch.inference_mode():
        assert (chunked.encode(wav) != b).float().mean() > 0.02


# -- speed: weight norm folded, channels-last convolutions, precision --------------------------------


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


def test_folding_weight_norm_keeps_the_outputs():
    library, folded = small_dac(), small_dac()
    assert remove_weight_norms(folded) == sum(1 for k in library.state_dict() if k.endswith("weight_g"))
    assert not any(k.endswith(("weight_g", "weight_v")) for k in folded.state_dict())
    wav = noise(0.5, 44100)
    with torch.inference_mode():
        z, z_folded = library.encoder(wav), folded.encoder(wav)
        audio, audio_folded = library.decoder(z), folded.decoder(z)
    # The folded weight g·v/‖v‖ is computed once by the function the hook calls at every
    # forward, so it is the same fp32 number; a different summation order of ‖v‖² (at most
    # 7 × 64 terms here) would move each weight by a few ulp (~1e-7 relative), and one ulp per
    # layer through the ~30 layers stays below 1e-5 of the output's norm.
    assert relative_error(z_folded, z) < 1e-5 and relative_error(audio_folded, audio) < 1e-5


def test_speed_up_keeps_the_library_outputs_and_parameter_names():
    library, fast = small_dac(), small_dac()
    speed_up(fast)
    assert set(fast.state_dict()) == set(library.state_dict()) - {
        k for k in library.state_dict() if k.endswith(("weight_g", "weight_v"))
    } | {k[: -len("_g")] for k in library.state_dict() if k.endswith("weight_g")}
    wav = noise(0.5, 44100)
    with torch.inference_mode():
        z, z_fast = library.encoder(wav), fast.encoder(wav)
        audio, audio_fast = library.decoder(z), fast.decoder(z)
    # Same weights, another convolution kernel (oneDNN's channels-last one) and a fused
    # multiply-add in Snake: each output is the same fp32 sum in another order, a relative
    # error of about sqrt(terms) · 2^-24 ≈ 1e-6 per layer (k · C_in ≤ 7 × 64 terms); through
    # ~30 layers that stays well below 1e-4 of the output's norm.
    assert relative_error(z_fast, z) < 1e-4 and relative_error(audio_fast, audio) < 1e-4


def test_the_published_key_layout_still_loads(tmp_path):
    """A checkpoint as DAC publishes it (weight_g / weight_v, the library's format) loads into
    the sped-up codec, which then computes what the library's model computes."""
    source = small_dac()
    assert any(k.endswith("weight_g") for k in source.state_dict())
    source.save(str(tmp_path / "published.pth"), package=False)
    save_state(source.state_dict(), tmp_path / "published.safetensors")
    wav = noise(0.5, 44100)
    with torch.inference_mode():
        expected = source.decoder(source.encoder(wav))
        for name in ("published.pth", "published.safetensors"):
            codec = build(model="44khz", weights=str(tmp_path / name),
                          encoder_dim=8, decoder_dim=32, codebook_size=256)  # small_dac's
            assert not any(k.endswith("weight_g") for k in codec.state_dict())
            got = codec.model.decoder(codec.model.encoder(wav))
            assert relative_error(got, expected) < 1e-4  # as in the test above


def test_precision_bfloat16_runs_encoder_and_decoder_in_bf16_and_returns_float32():
    codec = build(model="44khz", **SMALL, encode_precision="bfloat16", decode_precision="bfloat16")
    assert codec.precisions == {"encode": "bfloat16", "decode": "bfloat16"}
    assert next(codec.model.encoder.parameters()).dtype == torch.bfloat16
    assert next(codec.model.decoder.parameters()).dtype == torch.bfloat16
    assert codec.model.quantizer.quantizers[0].codebook.weight.dtype == torch.float32
    with torch.inference_mode():
        codes = codec.encode(noise(0.3, 44100))
        assert codes.dtype == torch.int64
        assert codec.decode(codes).dtype == torch.float32
        assert codec.latents(codes).values.dtype == torch.float32


def test_precision_auto_follows_the_cached_measurement(tmp_path):
    """auto asks the chooser under this machine's key; a cached choice is used as it is."""
    assert build(model="44khz", **SMALL).precisions == {"encode": "float32", "decode": "float32"}
    config = default_registry().config_for("codec", "dac", {"model": "44khz", **SMALL})
    options = {k: v for k, v in vars(config).items()
               if k not in ("encode_precision", "decode_precision", "chunk_seconds")}
    key = machine_key({"codec": "dac", **options})
    scripted = {"encode": "bfloat16", "decode": "float32"}
    runs = {part: (lambda dtype, p=part: torch.ones(3)) for part in scripted}
    fake = iter([0.0, 1.0, 0.0, 0.5, 0.0, 1.0, 0.0, 2.0])  # encode: bf16 2x faster; decode: slower
    assert choose_precisions(runs, key=key, timer=lambda: next(fake)) == scripted  # cached now
    codec = build(model="44khz", **SMALL, encode_precision="auto", decode_precision="auto")
    assert codec.precisions == scripted
    assert next(codec.model.encoder.parameters()).dtype == torch.bfloat16
    assert next(codec.model.decoder.parameters()).dtype == torch.float32
    # each part on its own: a fixed one is not measured, an auto one takes the cached choice
    codec = build(model="44khz", **SMALL, encode_precision="float32", decode_precision="auto")
    assert codec.precisions == {"encode": "float32", "decode": "float32"}
    codec = build(model="44khz", **SMALL, encode_precision="auto", decode_precision="bfloat16")
    assert codec.precisions == {"encode": "bfloat16", "decode": "bfloat16"}


def test_the_recipes_dac_encodes_in_float32_and_measures_its_decoder():
    """MaskVAT's DAC (recipes/components/codecs/dac_44khz.yaml): training's codes are the
    library's own fp32 ones; the decoder's precision is measured (the real-time path)."""
    from v2a.recipe import load_recipe
    choice = load_recipe("maskvat_hybrid").choice("codec")
    assert (choice.config.encode_precision, choice.config.decode_precision) == ("float32", "auto")



# -- the published weights: downloaded by v2a, to where the library keeps them --------------------


def test_pretrained_weights_are_downloaded_whole_to_the_librarys_cache_file(tmp_path, monkeypatch):
    """``weights: pretrained`` fetches the release once, atomically, to the file
    ``dac.utils.download`` uses (so each finds the other's copy); a cut transfer leaves nothing
    there (the library would load a partial file), and the failure is one sentence."""
    from tests.test_weights_url import Server
    from v2a.downloads import DownloadError
    from v2a_plugins.codecs.dac import dac_pretrained_files, release_file
    from v2a_plugins.codecs.dac_model import _weights_file

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # Path.home(): the library's cache folder
    utils = _import_dac().utils
    config = default_registry().config_for("codec", "dac", {"model": "44khz"})
    _, path = release_file(config)
    tag = utils.__MODEL_LATEST_TAGS__[("44khz", "8kbps")]
    assert path == tmp_path / "home" / ".cache" / "descript" / "dac" / f"weights_44khz_8kbps_{tag}.pth"
    server = Server({"/release.pth": b"checkpoint bytes" * 1000})
    try:
        key = ("44khz", tag, "8kbps")
        monkeypatch.setitem(utils.__MODEL_URLS__, key, server.url("/release.pth"))
        server.cut.add("/release.pth")
        with pytest.raises(DownloadError) as refused:
            _weights_file(config)
        assert "could not download the published DAC 44khz weights" in str(refused.value)
        assert "\n" not in str(refused.value)
        assert not path.exists() and not [p for p in path.parent.iterdir() if p.is_file()]
        server.cut.clear()
        assert _weights_file(config) == path and path.read_bytes() == b"checkpoint bytes" * 1000
        assert _weights_file(config) == path  # found: no second request
        assert server.requests == ["/release.pth", "/release.pth"]
        (pretrained,) = dac_pretrained_files(config)  # what `v2a download --check` looks for
        assert pretrained.find() == path and pretrained.source == server.url("/release.pth")
    finally:
        server.stop()
