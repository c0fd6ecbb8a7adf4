"""The BEATs audio encoder plug-in: contract, official checkpoint layout, weights and features."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from einops import rearrange
from v2a_plugins.audio_encoders.beats import (
    DOWNLOAD_PAGE,
    AudioTooShortError,
    BeatsConfig,
    BeatsEncoder,
    MultiheadAttention,
    ScaleGrad,
    filterbank,
    relative_position_buckets,
)

from tests.unsafe_pickle import RunsCode
from v2a.errors import UserError
from v2a.registry import default_registry
from v2a.testing import from_registry, parametrize_with_checks
from v2a.weights import WeightsError

#: A small configuration of the real architecture (released settings otherwise: post-LN with
#: deep norm, gated relative position bias, even positional-convolution kernel).
SMALL = dict(
    encoder_layers=2, encoder_embed_dim=64, encoder_attention_heads=4, encoder_ffn_embed_dim=128,
    embed_dim=32, conv_pos=16, conv_pos_groups=4, num_buckets=32, max_distance=64,
)


@parametrize_with_checks([from_registry("audio_encoder", "beats", weights="none", **SMALL)])
def test_conformance(factory, check):
    check(factory)


# -- helpers ---------------------------------------------------------------------------------------


def small_encoder(**changes) -> BeatsEncoder:
    return BeatsEncoder(BeatsConfig(**{**SMALL, **changes})).eval()


def randomise(encoder: BeatsEncoder, seed: int = 0) -> BeatsEncoder:
    """Random values in every parameter (not the initialisation), so nothing cancels by chance."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in encoder.named_parameters():
            centre = 1.0 if name.endswith(("norm.weight", "grep_a", "weight_g")) else 0.0
            p.copy_(centre + torch.randn(p.shape, generator=gen) * (0.05 if p.dim() > 1 else 0.3))
    return encoder


def official_cfg(**changes) -> dict:
    """A cfg in the layout of the official checkpoints (every key they carry), small sizes."""
    cfg = {
        "encoder_layers": 12, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072,
        "encoder_attention_heads": 12, "activation_fn": "gelu", "dropout": 0.0,
        "attention_dropout": 0.0, "activation_dropout": 0.0, "encoder_layerdrop": 0.05,
        "dropout_input": 0.0, "layer_norm_first": False, "conv_bias": False, "conv_pos": 128,
        "conv_pos_groups": 16, "relative_position_embedding": True, "num_buckets": 320,
        "max_distance": 800, "gru_rel_pos": True, "deep_norm": True, "input_patch_size": 16,
        "layer_wise_gradient_decay_ratio": 0.6, "embed_dim": 512, "finetuned_model": False,
    }
    return {**cfg, **SMALL, **changes}


def audio(seconds: float, channels: int = 1, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(batch, channels, round(seconds * 16000), generator=gen)


def encode(encoder: BeatsEncoder, wav: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return encoder.encode(wav).values


@pytest.fixture
def saved(tmp_path):
    """A randomised small model and the official-layout checkpoint file written from it."""
    source = randomise(small_encoder())
    path = tmp_path / "BEATs_small.pt"
    torch.save({"cfg": official_cfg(), "model": source.beats.state_dict()}, path)
    return source, path


# -- shapes, rate, time ----------------------------------------------------------------------------


def test_ten_seconds_give_62_steps_at_6_25_hz_starting_at_the_first_patch_centre():
    out = small_encoder().encode(audio(10.0))
    # 160000 samples -> 1 + (160000 - 400) // 160 = 998 frames -> 62 patches of 16 frames
    assert out.values.shape == (2, 62, 64)
    assert out.rate == 6.25
    assert out.start == pytest.approx((15 * 160 + 400) / 2 / 16000)  # 0.0875 s
    assert out.mask is None and torch.isfinite(out.values).all()


@pytest.mark.parametrize("samples, steps", [(2800, 1), (2800 + 16 * 160 - 1, 1), (2800 + 16 * 160, 2), (16000, 6)])
def test_steps_count_whole_patches(samples, steps):
    encoder = small_encoder()
    assert encoder.num_steps(samples) == steps
    assert encode(encoder, torch.zeros(1, 1, samples)).shape[1] == steps


def test_audio_shorter_than_one_patch_is_a_user_error():
    with pytest.raises(AudioTooShortError, match="at least 2800 samples") as info:
        small_encoder().encode(torch.zeros(1, 1, 2799))
    assert isinstance(info.value, UserError)


@pytest.mark.slow
def test_full_default_architecture_on_ten_seconds():
    encoder = BeatsEncoder().eval()
    assert (encoder.sample_rate, encoder.dim, encoder.rate) == (16000, 768, 6.25)
    out = encode(encoder, audio(10.0, batch=1))
    assert out.shape == (1, 62, 768) and torch.isfinite(out).all()


def test_channels_are_mixed_to_mono():
    encoder = randomise(small_encoder())
    stereo = audio(1.0, channels=2)
    mono = stereo.mean(dim=1, keepdim=True)
    torch.testing.assert_close(encode(encoder, stereo), encode(encoder, mono), rtol=1e-5, atol=1e-5)


def test_features_follow_the_audio_in_time():
    """Silence then noise: the noisy half's steps differ from the silent half's steps."""
    encoder = randomise(small_encoder())
    wav = torch.zeros(1, 1, 64000)
    wav[..., 32000:] = audio(2.0, batch=1)
    values = encode(encoder, wav)[0]  # 24 steps
    quiet, loud = values[:8], values[-8:]
    within = (quiet - quiet.mean(0)).norm(dim=-1).mean()
    assert (loud.mean(0) - quiet.mean(0)).norm() > 3 * within


# -- the architecture --------------------------------------------------------------------------------


def test_filterbank_is_the_reference_normalised_kaldi_fbank():
    from torchaudio.compliance import kaldi

    wav = audio(0.5, batch=1)[:, 0]
    raw = kaldi.fbank(wav * 32768, num_mel_bins=128, sample_frequency=16000, frame_length=25, frame_shift=10)
    torch.testing.assert_close(filterbank(wav)[0], (raw - 15.41663) / (2 * 6.55582))


def test_relative_position_buckets_match_hand_computed_values():
    # 320 buckets, max distance 800: 160 per direction, distances < 80 exact, then
    # 80 + floor(log(d / 80) / log(800 / 80) * 80), capped at 159 (+160 for keys after the query)
    before = relative_position_buckets(5001, 1, num_buckets=320, max_distance=800)[:, 0]
    after = relative_position_buckets(1, 5001, num_buckets=320, max_distance=800)[0]
    for distance, bucket in [(0, 0), (1, 1), (79, 79), (80, 80), (100, 87), (200, 111), (799, 159), (5000, 159)]:
        assert int(before[distance]) == bucket
        assert int(after[distance]) == (bucket + 160 if distance else 0)


@pytest.mark.parametrize("grep_a, gate", [(1.0, 1.75), (3.0, 2.25)])
def test_gated_relative_position_bias(grep_a, gate):
    """With a zero ``grep_linear`` both sigmoids are 1/2, so the gate is 0.5 * (0.5 * a - 1) + 2."""
    torch.manual_seed(0)
    table = torch.nn.Embedding(32, 4)
    attn = MultiheadAttention(dim=16, heads=4, dropout=0.0, gated=True, relative_attention_bias=table,
                              num_buckets=32, max_distance=64).eval()
    with torch.no_grad():
        attn.grep_linear.weight.zero_()
        attn.grep_linear.bias.zero_()
        attn.grep_a.fill_(grep_a)
    x = torch.randn(2, 7, 16)
    bias = attn.position_bias(7)  # [h, s, s]
    heads = lambda t: rearrange(t, "b s (h e) -> b h s e", h=4)  # noqa: E731
    q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(x)), heads(attn.v_proj(x))
    weights = torch.softmax(q @ k.transpose(-1, -2) / 2.0 + gate * bias, dim=-1)  # head dim 4
    expected = attn.out_proj(rearrange(weights @ v, "b h s e -> b s (h e)"))
    torch.testing.assert_close(attn(x, bias), expected, rtol=1e-5, atol=1e-6)


#: Features of the model of ``SMALL`` with the parameters of :func:`hashed_parameters` on
#: :func:`chirp`, ``values[0, :, :3]`` (9 steps), from the official implementation (microsoft/unilm
#: ``beats/BEATs.py``, ``backbone.py``, ``modules.py``) run outside this project in float64: float64
#: default dtype (so torchaudio's mel filters are float64 too) and its GELU kept in float64 (the
#: official ``gelu`` casts to float32). Its float32 run on the same inputs gives values that differ
#: from these by up to 2.3e-4, the size of float32 rounding here (see the test).
REFERENCE_FEATURES = [
    [1.6348179516411583, -1.069884404353099, 0.16621835478123634],
    [1.1792468514109486, -0.8835023451829307, -0.0032105639395938815],
    [1.2765614093492796, -1.1042947989438427, 0.07873343759977537],
    [1.2031322337673385, -1.024172577744094, 0.02422015164239862],
    [1.4606021229235993, -1.0574634719351066, 0.13537489021518478],
    [1.1928167874503393, -1.021172778248671, 0.04293051581202979],
    [1.3655173531741727, -1.0862531211407287, 0.1472512426804676],
    [1.020747338567315, -1.036996142288185, 0.10554386644174762],
    [1.432910671235981, -1.1023950607454114, 0.2801209916130008],
]


def hashed_parameters(model: torch.nn.Module) -> None:
    """Deterministic pseudo-random values (no RNG) in every entry of the official state dict,
    rounded to float32 (so a float32 and a float64 model hold the same parameters)."""
    state = model.state_dict()
    names = [k for k in sorted(state) if "relative_attention_bias" not in k or ".layers.0." in k]
    with torch.no_grad():
        for i, name in enumerate(names):
            p = state[name]
            x = torch.sin((torch.arange(p.numel(), dtype=torch.float64) + 1000 * i) * 12.9898) * 43758.5453
            noise = x - x.floor() - 0.5
            centre = 1.0 if name.endswith(("norm.weight", "grep_a", "weight_g")) else 0.0
            big = "relative_attention_bias" in name or "grep_linear.weight" in name
            scale = 2.0 if big else (0.2 if p.dim() > 1 else 0.5)
            p.copy_((centre + scale * noise).float().reshape(p.shape))


def chirp() -> torch.Tensor:
    """1.5 s of a beating 440 Hz tone plus a rising chirp, ``[1, 1, 24000]`` float32."""
    t = torch.arange(24000, dtype=torch.float64) / 16000
    wav = 0.3 * torch.sin(2 * math.pi * 440 * t) * torch.sin(2 * math.pi * 1.5 * t)
    return (wav + 0.1 * torch.sin(2 * math.pi * 3000 * t**2)).float().reshape(1, 1, -1)


def test_features_match_the_official_implementation(float64_by_default):
    """Guards the whole model: a swapped gate, transposed buckets or a lost deep-norm scale each
    move these values by 2e-3 or more.

    Compared in float64 because float32 arithmetic gets these values only to ~2e-4: the
    log-mel of a weak band inherits the FFT's rounding, which is relative to the frame's strongest
    bin (float32 and float64 runs of this model differ by 2.3e-4, and float32 runs on CPUs with
    other kernels differ from each other by as much). Rounding errors scale with the unit
    roundoff, 2**-29 times smaller in float64 (2**-53 against 2**-24): 2.3e-4 * 2**-29 = 4e-13,
    and runs with ATen, oneDNN and MKL restricted to AVX2 or SSE4.2 kernels differ from the
    reference by at most 7.5e-13. 1e-10 leaves a margin of over 100 and is still 2e7 times
    smaller than the smallest breakage above. (The fixture makes torchaudio's mel filters float64
    too: computed in float32, they alone move the features by 1e-6.)"""
    encoder = small_encoder()
    hashed_parameters(encoder.beats)
    assert encoder.beats.patch_embedding.weight.dtype == torch.float64
    values = encode(encoder, chirp().double())
    assert values.dtype == torch.float64 and values.shape == (1, 9, 64)
    torch.testing.assert_close(values[0, :, :3], torch.tensor(REFERENCE_FEATURES), rtol=0, atol=1e-10)


def test_state_dict_has_the_official_key_names():
    keys = set(small_encoder().beats.state_dict())
    expected = {
        "patch_embedding.weight", "layer_norm.weight", "layer_norm.bias",
        "post_extract_proj.weight", "post_extract_proj.bias",
        "encoder.pos_conv.0.weight_g", "encoder.pos_conv.0.weight_v", "encoder.pos_conv.0.bias",
        "encoder.layer_norm.weight", "encoder.layer_norm.bias",
    }
    for i in range(2):
        layer = f"encoder.layers.{i}."
        expected |= {layer + name for name in (
            "self_attn.relative_attention_bias.weight", "self_attn.grep_a",
            "self_attn.grep_linear.weight", "self_attn.grep_linear.bias",
            *(f"self_attn.{p}_proj.{w}" for p in "kvq" for w in ("weight", "bias")),
            "self_attn.out_proj.weight", "self_attn.out_proj.bias",
            "self_attn_layer_norm.weight", "self_attn_layer_norm.bias",
            "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
            "final_layer_norm.weight", "final_layer_norm.bias",
        )}
    assert keys == expected
    layers = small_encoder().beats.encoder.layers
    assert layers[1].self_attn.relative_attention_bias is layers[0].self_attn.relative_attention_bias


def test_training_mode_without_dropout_computes_the_same_features_and_decays_gradients():
    encoder = randomise(small_encoder())
    wav = audio(1.0)
    expected = encode(encoder, wav)
    encoder.train()
    torch.testing.assert_close(encoder.encode(wav).values, expected, rtol=1e-5, atol=1e-6)
    x = torch.ones(3, requires_grad=True)
    ScaleGrad.apply(x, 0.6).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), 0.6))


# -- weights ---------------------------------------------------------------------------------------


def test_official_checkpoint_loads_with_its_cfg_and_gives_identical_features(saved):
    source, path = saved
    factory = from_registry("audio_encoder", "beats", weights=str(path))  # default options: 12 x 768
    loaded = factory().eval()
    assert (loaded.config.encoder_layers, loaded.dim) == (2, 64)  # the checkpoint's cfg decided
    wav = audio(1.5)
    assert torch.equal(encode(loaded, wav), encode(source, wav))


def test_fine_tuned_checkpoint_drops_the_classifier(saved, tmp_path):
    source, _ = saved
    state = dict(source.beats.state_dict())
    state["predictor.weight"], state["predictor.bias"] = torch.randn(527, 64), torch.randn(527)
    path = tmp_path / "finetuned.pt"
    cfg = official_cfg(finetuned_model=True, predictor_class=527)
    torch.save({"cfg": cfg, "model": state, "label_dict": {0: "/m/09x0r"}}, path)
    wav = audio(1.0)
    assert torch.equal(encode(BeatsEncoder(BeatsConfig(weights=str(path))).eval(), wav), encode(source, wav))


def test_a_file_storing_the_shared_position_table_once_loads(saved, tmp_path):
    source, _ = saved
    state = dict(source.beats.state_dict())
    del state["encoder.layers.1.self_attn.relative_attention_bias.weight"]
    path = tmp_path / "deduplicated.pt"
    torch.save({"cfg": official_cfg(), "model": state}, path)
    wav = audio(1.0)
    assert torch.equal(encode(BeatsEncoder(BeatsConfig(weights=str(path))).eval(), wav), encode(source, wav))


def test_a_bare_safetensors_state_dict_loads_with_the_options_as_architecture(saved, tmp_path):
    from v2a.weights import save_state

    source, _ = saved
    path = tmp_path / "beats.safetensors"
    save_state(source.state_dict(), path)  # component keys ("beats....")
    loaded = small_encoder(weights=str(path))
    wav = audio(1.0)
    assert torch.equal(encode(loaded, wav), encode(source, wav))


def test_cfg_keys_a_checkpoint_lacks_take_the_reference_defaults(saved, tmp_path):
    source, _ = saved
    cfg = {k: v for k, v in official_cfg().items() if k not in ("deep_norm", "max_distance")}
    path = tmp_path / "old.pt"
    torch.save({"cfg": cfg, "model": source.beats.state_dict()}, path)
    config = BeatsEncoder(BeatsConfig(weights=str(path))).config
    assert (config.deep_norm, config.max_distance) == (False, 1280)


def test_an_option_contradicting_the_checkpoint_is_refused_by_name(saved):
    _, path = saved
    with pytest.raises(WeightsError, match="encoder_layers=6 contradicts"):
        BeatsEncoder(BeatsConfig(weights=str(path), encoder_layers=6))
    # agreeing architecture options and regularisation options are fine; the latter are kept
    encoder = BeatsEncoder(BeatsConfig(weights=str(path), encoder_embed_dim=64, dropout=0.2))
    assert (encoder.dim, encoder.config.dropout) == (64, 0.2)


def test_a_state_dict_that_does_not_fit_is_one_sentence(saved, tmp_path):
    source, _ = saved
    state = dict(source.beats.state_dict())
    del state["encoder.layers.0.fc1.bias"]
    path = tmp_path / "broken.pt"
    torch.save({"cfg": official_cfg(), "model": state}, path)
    with pytest.raises(WeightsError, match="missing encoder.layers.0.fc1.bias") as info:
        BeatsEncoder(BeatsConfig(weights=str(path)))
    assert "\n" not in str(info.value)


def test_a_checkpoint_that_would_run_code_is_refused(saved, tmp_path, capsys):
    source, _ = saved
    path = tmp_path / "evil.pt"
    torch.save({"cfg": official_cfg(), "model": source.beats.state_dict(), "extra": RunsCode("this checkpoint ran code")}, path)
    with pytest.raises(WeightsError, match="refused"):
        BeatsEncoder(BeatsConfig(weights=str(path)))
    assert "ran code" not in capsys.readouterr().out


def test_a_missing_weights_file_is_one_sentence_saying_where_to_get_one(tmp_path):
    missing = tmp_path / "BEATs_iter3_plus_AS2M.pt"
    with pytest.raises(WeightsError) as info:
        BeatsEncoder(BeatsConfig(weights=str(missing)))
    message = str(info.value)
    assert str(missing) in message and DOWNLOAD_PAGE in message and str(tmp_path) in message
    assert "\n" not in message and message.count(". ") == 0 and message.endswith(".")


def test_pretrained_explains_where_to_download_the_checkpoint():
    with pytest.raises(WeightsError) as info:
        BeatsEncoder(BeatsConfig(weights="pretrained"))
    message = str(info.value)
    assert DOWNLOAD_PAGE in message and "path" in message and "\n" not in message


def test_registered_with_its_options_and_ok():
    registry = default_registry()
    entry = registry.get("audio_encoder", "beats")
    assert entry.status == "ok" and entry.spec.requires == ("torchaudio",)
    defaults = BeatsConfig()
    assert (defaults.encoder_layers, defaults.encoder_embed_dim, defaults.encoder_attention_heads) == (12, 768, 12)
    config = registry.config_for("audio_encoder", "beats", {"encoder_layers": 3})
    assert dataclasses.replace(defaults, encoder_layers=3) == config
    assert math.isclose(registry.build("audio_encoder", "beats", registry.config_for(
        "audio_encoder", "beats", SMALL)).rate, 6.25)
