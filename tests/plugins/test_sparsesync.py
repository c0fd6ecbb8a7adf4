"""The ``sparsesync`` visual encoder and reranker: small configurations of the real
architecture, random weights (nothing is downloaded)."""

from __future__ import annotations

import pytest
import torch
from v2a_plugins.rerankers.sparsesync import (
    SAMPLE_RATE,
    AudioResNet,
    SparseSync,
    SparseSyncConfig,
    SparseSyncVisualConfig,
    SparseSyncVisualEncoder,
    log_spectrogram,
    window_starts,
)

from v2a import FeatureSequence
from v2a.errors import UserError
from v2a.testing import from_registry, parametrize_with_checks
from v2a.weights import WeightsError

VISUAL = dict(resize=32, crop=32)  # a 1 x 1 grid
#: width stays 512 (ResNet-18's); a 1 s window: 25 frames → 3 visual steps, audio [9, 4].
SYNC = dict(grid=1, window_seconds=1.0, depth=1, heads=2, selectors=2)
WINDOW = SAMPLE_RATE  # samples per 1 s window
#: float32 logits of magnitude ~1 after a few 512-wide layers: another batch size may change the
#: GEMM blocking and so the order of each ~2000-term sum, which moves results by a few ulp per
#: sum (~1e-6 relative); 1e-4 leaves room for the layers (and ResNet's convolutions) compounding it.
TOL = 1e-4


@parametrize_with_checks(
    [from_registry("visual_encoder", "sparsesync", **VISUAL),
     from_registry("reranker", "sparsesync", **SYNC),
     from_registry("reranker", "sparsesync", score="argmax", **SYNC)]
)
def test_conformance(factory, check):
    check(factory)


def reranker(seed=0, **options) -> SparseSync:
    torch.manual_seed(seed)
    return SparseSync(SparseSyncConfig(**{**SYNC, **options}))


def encoder(seed=0, **options) -> SparseSyncVisualEncoder:
    torch.manual_seed(seed)
    return SparseSyncVisualEncoder(SparseSyncVisualConfig(**{**VISUAL, **options}))


def stream(b=2, steps=3, seed=0) -> FeatureSequence:
    values = torch.randn(b, steps, 1024, generator=torch.Generator().manual_seed(seed))
    return FeatureSequence(values, rate=25 / 8, start=2 / 25)


def noise(*shape, seed=0) -> torch.Tensor:
    return 0.1 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- the real sizes ------------------------------------------------------------------------------------


def test_five_seconds_give_16_visual_steps_of_a_7x7_grid_and_a_9x20_audio_map():
    assert SparseSyncConfig().visual_steps == 16
    enc = encoder(resize=256, crop=224)
    assert enc.dim == 7 * 7 * 1024 and enc.rate == 25 / 8
    spec = log_spectrogram(noise(1, 5 * SAMPLE_RATE))
    assert spec.shape == (1, 257, 626)
    torch.manual_seed(0)
    assert AudioResNet()(spec.unsqueeze(1)).shape == (1, 512, 9, 20)


def test_the_visual_stream_keeps_the_spatial_grid():
    enc = encoder(resize=64, crop=64)  # a 2 x 2 grid
    frames = torch.rand(1, 16, 3, 80, 64, generator=torch.Generator().manual_seed(0))
    out = enc.encode(frames, torch.arange(16) / 25)
    video = (frames[0, :, :, 8:72] - enc.mean) / enc.std  # 80 x 64 → 64 x 64 centre crop
    feature_map = enc.features(video.permute(1, 0, 2, 3).unsqueeze(0))  # [1, 1024, 2, 2, 2]
    assert out.values.shape == (1, 2, 4 * 1024) and out.start == pytest.approx(2 / 25)
    # layout (h w d): step 0, row 1, column 0 is the third block of 1024
    assert torch.allclose(out.values[0, 0, 2048:3072], feature_map[0, :, 0, 1, 0], atol=1e-5)


def test_the_spectrogram_is_standardised_per_frequency():
    spec = log_spectrogram(noise(2, WINDOW))
    assert torch.allclose(spec.mean(-1), torch.zeros(2, 257), atol=1e-4)
    assert torch.allclose(spec.std(-1), torch.ones(2, 257), atol=1e-4)


# -- the classifier ------------------------------------------------------------------------------------


def test_offset_logits_are_b_by_21_over_offsets_minus_2_to_2():
    model = reranker()
    logits = model.offset_logits(noise(2, 1, WINDOW), {"sparsesync": stream()})
    assert logits.shape == (2, 21) and bool(logits.isfinite().all())
    assert model.offsets[0] == -2.0 and model.offsets[10] == 0.0 and model.offsets[-1] == 2.0
    assert torch.allclose(torch.tensor(model.offsets).diff(), torch.full((20,), 0.2), atol=1e-6)


def test_offset_logits_reverse_the_official_label_order():
    """Official labels count positive as 'audio cut later' (sound early); v2a's class i is the
    official class 20 - i."""
    model = reranker()
    audio, video = noise(2, 2, WINDOW), stream()
    maps, wav = model.window_inputs(audio, video, 0)
    assert torch.equal(wav, audio.mean(1))
    visual = model.v_bridge.bridge(maps).permute(0, 2, 3, 4, 1)
    sound = model.afeat_extractor(log_spectrogram(wav).unsqueeze(1)).permute(0, 2, 3, 1)
    official = model.transformer(visual, sound)
    assert torch.allclose(model.offset_logits(audio, {"sparsesync": video}), official.flip(-1), atol=TOL)


def test_offset_logits_depend_on_both_modalities():
    model = reranker()
    audio, video = noise(1, 1, WINDOW), stream(b=1)
    base = model.offset_logits(audio, {"sparsesync": video})
    assert not torch.allclose(base, model.offset_logits(noise(1, 1, WINDOW, seed=1), {"sparsesync": video}))
    assert not torch.allclose(base, model.offset_logits(audio, {"sparsesync": stream(b=1, seed=1)}))


def test_offset_logits_are_batch_independent():
    model = reranker()
    audio, video = noise(3, 1, WINDOW), stream(b=3)
    together = model.offset_logits(audio, {"sparsesync": video})
    for i in range(3):
        alone = video.replace(values=video.values[i:i + 1])
        one = model.offset_logits(audio[i:i + 1], {"sparsesync": alone})
        assert torch.allclose(one, together[i:i + 1], atol=TOL)


def test_windows_are_the_first_and_last_whole_ones():
    assert window_starts(5.0, 5.0) == [0]
    assert window_starts(8.0, 5.0) == [0, 9]  # (8 - 5) / 0.32 = 9.4
    assert window_starts(1.64, 1.0) == [0, 2]


def test_score_is_minus_the_mean_absolute_offset_of_the_first_and_last_windows():
    model = reranker(score="argmax")
    video = stream(b=1, steps=6)
    audio = noise(1, 2, 1, round(1.64 * SAMPLE_RATE))  # windows at steps 0 and 2
    scores = model.score(audio, {"sparsesync": video})
    offsets = torch.tensor(model.offsets)
    expected = torch.stack([
        offsets[model.offset_logits(audio[0], {"sparsesync": video.repeat_interleave(2)},
                                    window=w).argmax(-1)].abs() for w in (0, 2)
    ]).mean(0)
    assert scores.shape == (1, 2) and torch.allclose(scores[0], -expected)


def test_a_missing_or_mismatched_stream_is_a_user_error():
    model = reranker()
    audio = torch.zeros(1, 1, WINDOW)
    with pytest.raises(UserError, match="reads the visual stream 'sparsesync'"):
        model.offset_logits(audio, {"s3d": FeatureSequence(torch.zeros(1, 3, 1024), rate=25 / 8)})
    with pytest.raises(UserError, match="grid \\* grid \\* 1024 = 1024"):
        model.offset_logits(audio, {"sparsesync": FeatureSequence(torch.zeros(1, 3, 512), rate=25 / 8)})


def test_a_width_other_than_resnets_is_refused():
    with pytest.raises(UserError, match="width must be 512"):
        SparseSyncConfig(width=256)


# -- weights -------------------------------------------------------------------------------------------


def test_a_state_dict_round_trips_through_an_official_style_checkpoint(tmp_path):
    model = reranker(seed=1)
    enc = encoder(seed=1)
    state = {f"vfeat_extractor.{k}": v for k, v in enc.state_dict().items()}  # torchvision names
    state.update(model.state_dict())
    path = tmp_path / "sparsesync.pt"
    torch.save({"model": state, "epoch": 3}, path)
    model2, enc2 = reranker(seed=2, weights=str(path)), encoder(seed=2, weights=str(path))
    audio, video = noise(1, 1, WINDOW), {"sparsesync": stream(b=1)}
    assert torch.equal(model2.offset_logits(audio, video), model.offset_logits(audio, video))
    frames = torch.rand(1, 8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(enc2.encode(frames, torch.arange(8) / 25).values,
                       enc.encode(frames, torch.arange(8) / 25).values)
    assert "transformer.global_transformer.OFF_tok" in state
    assert "transformer.off_head.bias" not in state and "v_bridge.bridge.0.weight" in state


def test_a_checkpoint_of_other_sizes_is_refused(tmp_path):
    path = tmp_path / "small.pt"
    torch.save({"model": reranker(selectors=3).state_dict()}, path)
    with pytest.raises(WeightsError, match="does not fit"):
        reranker(weights=str(path))


def test_pretrained_and_missing_files_are_refused_with_where_to_get_them(tmp_path):
    for build in (encoder, reranker):
        with pytest.raises(WeightsError, match="v-iashin/SparseSync"):
            build(weights="pretrained")
        with pytest.raises(WeightsError, match="does not exist"):
            build(weights=str(tmp_path / "missing.pt"))
