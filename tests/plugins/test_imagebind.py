"""The ``imagebind`` audio and visual encoders: contracts, ImageBind's preprocessing, the released
key layout (built on the meta device), and one checkpoint file holding both modalities."""

from __future__ import annotations

import math

import pytest
import torch
from v2a_plugins.audio_encoders.imagebind import (
    AudioTooShortError,
    ImageBindAudioConfig,
    ImageBindAudioEncoder,
    window_fbank,
    window_starts,
)
from v2a_plugins.visual_encoders.imagebind import (
    CHECKPOINT_URL,
    ImageBindVisionConfig,
    ImageBindVisionEncoder,
    spatial_crops,
)

from tests.unsafe_pickle import RunsCode
from v2a.errors import UserError
from v2a.meta_device import build_on_meta
from v2a.registry import default_registry
from v2a.testing import from_registry, parametrize_with_checks
from v2a.weights import WeightsError

pytest.importorskip("torchaudio")

#: Small configurations of the real architectures (2 blocks of width 32; 36 fbank frames give
#: 12 x 3 audio patches; 28 x 28 images give 2 x 2 patches of 14).
SMALL_AUDIO = dict(mel_frames=36, width=32, depth=2, heads=2, embed_dim=16)
SMALL_VISION = dict(image_size=28, patch_size=14, width=32, depth=2, heads=2, embed_dim=16)

#: float64 comparisons of one computation arranged two ways (batched or one at a time, windows
#: cut here or by hand): float64's unit roundoff is 1.1e-16 and the values pass through a few
#: hundred sums of O(1) terms (fbank, attention, MLP), so they agree to about 1e-13; 1e-10
#: leaves a margin of 1000 on any CPU kernel and is far below any real difference (> 1e-3).
CLOSE64 = dict(rtol=0, atol=1e-10)


@parametrize_with_checks([
    from_registry("audio_encoder", "imagebind", weights="none", **SMALL_AUDIO),
    from_registry("visual_encoder", "imagebind", weights="none", **SMALL_VISION),
    from_registry("visual_encoder", "imagebind", weights="none", fps=2.0, crops=3, frame_pairs=True,
                  batch_frames=5, **SMALL_VISION),
])
def test_conformance(factory, check):
    check(factory)


# -- helpers ---------------------------------------------------------------------------------------


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values in every parameter and buffer (not the initialisation), so nothing cancels."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.state_dict().items():
            centre = 1.0 if ("norm" in name or "heads" in name and name.endswith(".0.weight")) else 0.0
            p.copy_(centre + torch.randn(p.shape, generator=gen) * (0.2 if p.dim() > 1 else 0.1))
    return module


def audio_encoder(seed: int = 0, **options) -> ImageBindAudioEncoder:
    return randomise(ImageBindAudioEncoder(ImageBindAudioConfig(**{**SMALL_AUDIO, **options})), seed)


def vision_encoder(seed: int = 0, **options) -> ImageBindVisionEncoder:
    return randomise(ImageBindVisionEncoder(ImageBindVisionConfig(**{**SMALL_VISION, **options})), seed)


def noise(samples: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return 0.3 * torch.randn(batch, 1, samples, generator=torch.Generator().manual_seed(seed))


def video(b=2, t=4, h=28, w=28, seed=0) -> torch.Tensor:
    return torch.rand(b, t, 3, h, w, generator=torch.Generator().manual_seed(seed))


# -- audio -----------------------------------------------------------------------------------------


def test_audio_gives_one_unit_embedding_per_clip():
    encoder = audio_encoder()
    out = encoder.encode(noise(3 * 16000))
    assert out.values.shape == (2, 1, 16) and out.start == 0.0
    assert out.rate == pytest.approx(16000 / 48000) and encoder.rate == 1.0
    torch.testing.assert_close(out.values.norm(dim=-1), torch.ones(2, 1))  # float32 unit norm
    assert not torch.allclose(out.values[0], out.values[1], atol=1e-3)


@pytest.mark.parametrize("samples, starts", [
    (8 * 16000, [0, 48000, 96000]),  # spare 6 s, windows every 3 s
    (16000, [0, 0, 0]),  # shorter than a window: the clip itself, three times
    (32000, [0, 0, 0]),
    # 50001 samples = 3.1250625 s: spare 1.1250625 s, step 9000.5 samples, truncated to 9000;
    # 2 steps would be 18001, but the reference takes the duration as the float 50001 / 16000,
    # which is 1.5e-16 s short of it, so the last start truncates to 18000
    (50001, [0, 9000, 18000]),
])
def test_windows_start_where_imagebinds_clip_sampler_puts_them(samples, starts):
    assert window_starts(samples, clips=3, clip_seconds=2.0) == starts


def test_the_embedding_is_the_normalised_mean_of_the_three_windows(float64_by_default):
    encoder = audio_encoder().double()
    wav = noise(8 * 16000, batch=1).double()
    windows = [wav[..., s:s + 32000] for s in (0, 48000, 96000)]
    each = torch.cat([encoder.encode(w).values[:, 0] for w in windows])  # one window each
    expected = torch.nn.functional.normalize(each.mean(dim=0), dim=-1)
    torch.testing.assert_close(encoder.encode(wav).values[0, 0], expected, **CLOSE64)
    # the logit scale multiplies all windows alike, so it cancels
    encoder.modality_postprocessors["audio"][1].log_logit_scale.fill_(1.0)
    torch.testing.assert_close(encoder.encode(wav).values[0, 0], expected, **CLOSE64)


def test_window_fbank_is_the_reference_kaldi_fbank_padded_then_normalised(float64_by_default):
    from torchaudio.compliance import kaldi

    window = noise(32000, batch=1)[0, 0].double() + 0.25  # an offset: each window is centred
    fbank = window_fbank(window, 204)
    raw = kaldi.fbank((window - window.mean())[None], htk_compat=True, sample_frequency=16000,
                      use_energy=False, window_type="hanning", num_mel_bins=128, dither=0.0,
                      frame_length=25, frame_shift=10).T
    assert fbank.shape == (1, 128, 204) and raw.shape == (128, 198)  # 1 + (32000 - 400) // 160
    torch.testing.assert_close(fbank[0, :, :198], (raw + 4.268) / 9.138, **CLOSE64)
    torch.testing.assert_close(fbank[0, :, 198:], torch.full((128, 6), 4.268 / 9.138), **CLOSE64)
    assert window_fbank(window, 100).shape == (1, 128, 100)  # longer windows are cut


def test_audio_channels_are_mixed_to_mono_and_short_clips_refused():
    encoder = audio_encoder()
    stereo = torch.cat([noise(16000, seed=1), noise(16000, seed=2)], dim=1)
    torch.testing.assert_close(encoder.encode(stereo).values,
                               encoder.encode(stereo.mean(dim=1, keepdim=True)).values)
    encoder.encode(torch.zeros(1, 1, 400))  # one fbank frame is enough
    with pytest.raises(AudioTooShortError, match="at least 400 samples") as info:
        encoder.encode(torch.zeros(1, 1, 399))
    assert isinstance(info.value, UserError)


def test_attention_has_imagebinds_learnt_key_value_token():
    attn = audio_encoder().modality_trunks["audio"].blocks[0].attn
    assert attn.bias_k.shape == (1, 1, 32) and attn.bias_v.shape == (1, 1, 32)
    x = torch.randn(2, 5, 32)
    before = attn(x, x, x, need_weights=False)[0]
    with torch.no_grad():
        attn.bias_v.add_(1.0)
    assert not torch.allclose(attn(x, x, x, need_weights=False)[0], before, atol=1e-3)


# -- vision ----------------------------------------------------------------------------------------


def test_vision_gives_one_unit_embedding_per_frame_at_fps():
    encoder = vision_encoder(fps=1.0)
    assert (encoder.fps, encoder.rate, encoder.dim, encoder.frame_size) == (1.0, 1.0, 16, (28, 28))
    out = encoder.encode(video(t=5), 3.0 + torch.arange(5.0))
    assert out.values.shape == (2, 5, 16) and out.start == 3.0 and out.rate == 1.0
    torch.testing.assert_close(out.values.norm(dim=-1), torch.ones(2, 5))  # float32 unit norm


def test_default_rate_is_av_benchmarks_half_frame_per_second():
    config = ImageBindVisionConfig()
    assert (config.fps, config.crops, config.frame_pairs) == (0.5, 1, False)


def test_an_image_is_a_clip_of_two_equal_frames(float64_by_default):
    """Frame pairs of a still video embed the same as single frames: the stem repeats an image."""
    single = vision_encoder().double()
    pairs = vision_encoder(frame_pairs=True).double()
    still = video(b=1, t=1).double().expand(1, 3, 3, 28, 28)
    alone = single.encode(still, torch.arange(3.0)).values
    paired = pairs.encode(still, torch.arange(3.0))
    assert paired.values.shape == (1, 2, 16) and paired.start == 0.5  # between frames 0 and 1
    torch.testing.assert_close(paired.values, alone[:, :2], **CLOSE64)


def test_frame_pairs_see_both_frames():
    encoder = vision_encoder(frame_pairs=True)
    clip = video(b=1, t=3)
    base = encoder.encode(clip, torch.arange(3.0)).values
    changed = clip.clone()
    changed[:, 2] = 1 - changed[:, 2]  # only the second frame of pair 1
    moved = encoder.encode(changed, torch.arange(3.0)).values
    torch.testing.assert_close(moved[:, 0], base[:, 0])
    assert not torch.allclose(moved[:, 1], base[:, 1], atol=1e-3)
    with pytest.raises(UserError, match="at least 2 frames"):
        encoder.encode(clip[:, :1], torch.zeros(1))


@pytest.mark.parametrize("h, w, boxes", [
    (224, 398, [(0, 0), (0, 87), (0, 174)]),  # ceil((398 - 224) / 2) = 87
    (300, 224, [(0, 0), (38, 0), (76, 0)]),
    (224, 224, [(0, 0)] * 3),
])
def test_three_crops_are_first_centre_last_along_the_long_side(h, w, boxes):
    images = torch.rand(1, 3, h, w)
    crops = spatial_crops(images, 224, 3)
    for crop, (top, left) in zip(crops, boxes):
        assert torch.equal(crop, images[..., top:top + 224, left:left + 224])
    assert torch.equal(spatial_crops(images, 224, 1)[0], crops[1])


def test_three_crops_average_the_crop_embeddings(float64_by_default):
    three = vision_encoder(crops=3).double()
    one = vision_encoder(crops=1).double()
    assert three.frame_size is None  # the whole frame is needed
    wide = video(b=1, t=2, h=28, w=50).double()
    crops = [wide[..., left:left + 28] for left in (0, 11, 22)]  # ceil((50 - 28) / 2) = 11
    expected = torch.stack([one.encode(c, torch.arange(2.0)).values for c in crops]).mean(dim=0)
    torch.testing.assert_close(three.encode(wide, torch.arange(2.0)).values, expected, **CLOSE64)


def test_frames_are_resized_shortest_side_first():
    encoder = vision_encoder()
    big = video(b=1, t=2, h=56, w=84)  # -> 28 x 42, centre crop columns 7..35 (of 42)
    out = encoder.encode(big, torch.arange(2.0)).values
    changed = big.clone()
    changed[..., :8] = 1 - changed[..., :8]  # outside the crop and its filter support
    torch.testing.assert_close(encoder.encode(changed, torch.arange(2.0)).values, out)


# -- the released key layout -------------------------------------------------------------------------


#: Keys and shapes of ImageBind-Huge (.briefs/eval-deps.md, from the reference on the meta device).
AUDIO_LAYOUT = {
    "modality_preprocessors.audio.cls_token": (1, 1, 768),
    "modality_preprocessors.audio.rgbt_stem.proj.weight": (768, 1, 16, 16),
    "modality_preprocessors.audio.rgbt_stem.norm_layer.weight": (768,),
    "modality_preprocessors.audio.rgbt_stem.norm_layer.bias": (768,),
    "modality_preprocessors.audio.pos_embedding_helper.pos_embed": (1, 229, 768),
    "modality_heads.audio.0.weight": (768,),
    "modality_heads.audio.0.bias": (768,),
    "modality_heads.audio.2.weight": (1024, 768),
    "modality_postprocessors.audio.1.log_logit_scale": (),
}
VISION_LAYOUT = {
    "modality_preprocessors.vision.cls_token": (1, 1, 1280),
    "modality_preprocessors.vision.rgbt_stem.proj.1.weight": (1280, 3, 2, 14, 14),
    "modality_preprocessors.vision.pos_embedding_helper.pos_embed": (1, 257, 1280),
    "modality_trunks.vision.pre_transformer_layer.0.weight": (1280,),
    "modality_trunks.vision.pre_transformer_layer.0.bias": (1280,),
    "modality_heads.vision.0.weight": (1280,),
    "modality_heads.vision.0.bias": (1280,),
    "modality_heads.vision.2.weight": (1024, 1280),
}


def block_layout(modality: str, blocks: int, width: int, bias_kv: bool) -> dict:
    layout = {}
    for i in range(blocks):
        block = f"modality_trunks.{modality}.blocks.{i}."
        layout |= {
            block + "attn.in_proj_weight": (3 * width, width), block + "attn.in_proj_bias": (3 * width,),
            block + "attn.out_proj.weight": (width, width), block + "attn.out_proj.bias": (width,),
            block + "mlp.fc1.weight": (4 * width, width), block + "mlp.fc1.bias": (4 * width,),
            block + "mlp.fc2.weight": (width, 4 * width), block + "mlp.fc2.bias": (width,),
            **{block + f"{norm}.{p}": (width,) for norm in ("norm_1", "norm_2") for p in ("weight", "bias")},
        }
        if bias_kv:
            layout |= {block + "attn.bias_k": (1, 1, width), block + "attn.bias_v": (1, 1, width)}
    return layout


@pytest.mark.parametrize("build, layout, millions", [
    (lambda: ImageBindAudioEncoder(), {**AUDIO_LAYOUT, **block_layout("audio", 12, 768, True)}, 86.2),
    (lambda: ImageBindVisionEncoder(), {**VISION_LAYOUT, **block_layout("vision", 32, 1280, False)}, 632.8),
])
def test_full_size_towers_have_the_released_keys_and_shapes(build, layout, millions):
    encoder = build_on_meta(build)  # ImageBind-Huge's sizes, no memory
    assert encoder is not None
    state = encoder.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == layout
    assert round(sum(v.numel() for v in state.values()) / 1e6, 1) == millions  # eval-deps.md


# -- weights -----------------------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path):
    """Both small towers, randomised, saved in one bare state dict as imagebind_huge.pth is, with
    another modality's tensors beside them."""
    audio, vision = audio_encoder(seed=3), vision_encoder(seed=4)
    state = {**audio.state_dict(), **vision.state_dict(),
             "modality_trunks.text.blocks.0.attn.in_proj_weight": torch.randn(96, 32),
             "modality_postprocessors.text.1.log_logit_scale": torch.tensor(2.6)}
    path = tmp_path / "imagebind_huge.pth"
    torch.save(state, path)
    return audio, vision, path


def test_each_tower_loads_its_own_keys_from_one_file(checkpoint):
    audio, vision, path = checkpoint
    loaded_audio = ImageBindAudioEncoder(ImageBindAudioConfig(weights=str(path), **SMALL_AUDIO))
    loaded_vision = from_registry("visual_encoder", "imagebind", weights=str(path), **SMALL_VISION)()
    wav, clip = noise(20000), video()
    assert torch.equal(loaded_audio.encode(wav).values, audio.encode(wav).values)
    assert torch.equal(loaded_vision.encode(clip, torch.arange(4.0)).values,
                       vision.encode(clip, torch.arange(4.0)).values)
    assert not any(p.requires_grad for p in loaded_vision.parameters())
    assert not loaded_audio.training


def test_a_checkpoint_without_the_modality_is_refused(tmp_path):
    path = tmp_path / "vision_only.pth"
    torch.save(vision_encoder().state_dict(), path)
    with pytest.raises(WeightsError, match="holds no ImageBind audio weights") as info:
        ImageBindAudioEncoder(ImageBindAudioConfig(weights=str(path), **SMALL_AUDIO))
    assert "\n" not in str(info.value) and CHECKPOINT_URL in str(info.value)


def test_a_checkpoint_of_another_size_is_refused(checkpoint):
    _, _, path = checkpoint  # width 32: the default options are ImageBind-Huge's 768
    with pytest.raises(WeightsError, match="does not fit the ImageBind audio tower") as info:
        ImageBindAudioEncoder(ImageBindAudioConfig(weights=str(path), **{**SMALL_AUDIO, "depth": 3}))
    assert "missing" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(WeightsError, match="another shape"):
        ImageBindVisionEncoder(ImageBindVisionConfig(weights=str(path), **{**SMALL_VISION, "width": 64, "heads": 4}))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"modality_trunks.audio.x": RunsCode()}, path)
    with pytest.raises(WeightsError, match="refused"):
        ImageBindAudioEncoder(ImageBindAudioConfig(weights=str(path), **SMALL_AUDIO))
    assert "this ran" not in capsys.readouterr().out


@pytest.mark.parametrize("build", [ImageBindAudioEncoder, ImageBindVisionEncoder])
def test_pretrained_and_missing_files_say_where_to_download(build, tmp_path):
    config = (ImageBindAudioConfig if build is ImageBindAudioEncoder else ImageBindVisionConfig)
    for weights in ("pretrained", str(tmp_path / "imagebind_huge.pth")):
        with pytest.raises(WeightsError) as info:
            build(config(weights=weights))
        message = str(info.value)
        assert CHECKPOINT_URL in message and "non-commercial" in message and "\n" not in message


def test_registered_with_declared_properties_and_bad_options_refused():
    registry = default_registry()
    audio = registry.get("audio_encoder", "imagebind")
    vision = registry.get("visual_encoder", "imagebind")
    assert audio.status == vision.status == "ok"
    assert audio.spec.properties(ImageBindAudioConfig()) == {"sample_rate": 16000, "dim": 1024}
    assert vision.spec.properties(ImageBindVisionConfig(crops=3)) == {
        "fps": 0.5, "rate": 0.5, "dim": 1024, "frame_size": None}
    for config, options in ((ImageBindVisionConfig, {"crops": 2}), (ImageBindVisionConfig, {"heads": 3}),
                            (ImageBindAudioConfig, {"mel_frames": 8}), (ImageBindAudioConfig, {"clips": 0})):
        with pytest.raises(ValueError):
            config(**options)
    assert math.isclose(registry.build("audio_encoder", "imagebind", registry.config_for(
        "audio_encoder", "imagebind", SMALL_AUDIO)).rate, 1.0)
