"""The ``synchformer`` visual encoder and reranker: small configurations of the real
architecture, random weights (nothing is downloaded)."""

from __future__ import annotations

import pytest
import torch
from v2a_plugins.rerankers.synchformer import (
    SAMPLE_RATE,
    Synchformer,
    SynchformerSyncConfig,
    window_seconds,
    window_starts,
)
from v2a_plugins.visual_encoders.synchformer import (
    SynchformerVisualConfig,
    SynchformerVisualEncoder,
    num_segments,
    segment_times,
)

from v2a import FeatureSequence
from v2a.recipe import load_recipe
from v2a.testing import from_registry, parametrize_with_checks
from v2a.weights import WeightsError

VISUAL = dict(image_size=32, width=16, depth=1, heads=2)
SYNC = dict(video_width=16, segments=3, mel_bins=32, audio_width=16, audio_depth=1,
            audio_heads=2, sync_width=16, sync_depth=1, sync_heads=2)
#: float32 logits of magnitude ~1 through a few small layers: a different batch size may change
#: the GEMM blocking, hence the order of each sum (~100 terms), so results agree to a few ulp
#: per sum, about 1e-6; 1e-5 leaves room for the layers compounding it.
TOL = 1e-5


@parametrize_with_checks(
    [from_registry("visual_encoder", "synchformer", **VISUAL),
     from_registry("reranker", "synchformer", **SYNC),
     from_registry("reranker", "synchformer", score="argmax", **SYNC)]
)
def test_conformance(factory, check):
    check(factory)


def encoder(seed=0, **options) -> SynchformerVisualEncoder:
    torch.manual_seed(seed)
    return SynchformerVisualEncoder(SynchformerVisualConfig(**{**VISUAL, **options}))


def reranker(seed=0, **options) -> Synchformer:
    torch.manual_seed(seed)
    return Synchformer(SynchformerSyncConfig(**{**SYNC, **options}))


def clip(b=2, t=120, seed=0):
    return torch.rand(b, t, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# -- segment bookkeeping -----------------------------------------------------------------------------


def test_a_4_8_s_window_gives_14_segments_every_0_32_s():
    assert num_segments(120) == 14  # 4.8 s at 25 fps
    assert [num_segments(t) for t in (1, 16, 23, 24, 250)] == [1, 1, 1, 2, 30]
    times = segment_times(14, 25.0)
    assert torch.allclose(times[:, 0], torch.arange(14, dtype=torch.float64) * 0.32)
    assert torch.allclose(times[:, 1] - times[:, 0], torch.full((14,), 0.64, dtype=torch.float64))
    assert times[-1, 1] == pytest.approx(4.8)
    assert window_seconds(14) == pytest.approx(4.8)


def test_steps_are_segments_at_an_eighth_of_fps_centred_on_their_frames():
    enc = encoder()
    assert (enc.fps, enc.rate, enc.dim, enc.frame_size) == (25.0, 25.0 / 8, 8 * 16, (32, 32))
    out = enc.encode(clip(), 2.0 + torch.arange(120) / 25)
    assert out.values.shape == (2, 14, 128) and out.rate == 25.0 / 8
    assert out.start == pytest.approx(2.0 + 7.5 / 25)  # the centre of frames 0..15


def test_a_segment_sees_only_its_own_16_frames():
    enc = encoder()
    frames = clip(b=1, t=40).requires_grad_(True)
    out = enc.encode(frames, torch.arange(40) / 25).values  # 4 segments
    (grad,) = torch.autograd.grad(out[0, 2].sum(), frames)
    seen = grad.abs().sum(dim=(0, 2, 3, 4)).nonzero().flatten()
    assert seen.tolist() == list(range(16, 32))


def test_short_clips_repeat_their_last_frame():
    enc = encoder()
    frames = clip(b=1, t=5)
    padded = torch.cat([frames, frames[:, -1:].expand(-1, 11, -1, -1, -1)], dim=1)
    short = enc.encode(frames, torch.arange(5) / 25).values
    assert short.shape == (1, 1, 128)
    assert torch.equal(short, enc.encode(padded, torch.arange(16) / 25).values)


def test_window_starts_are_the_first_and_last_whole_windows():
    assert window_starts(4.8, 14) == [0]
    assert window_starts(5.0, 14) == [0]  # the last window would start < 0.32 s later
    assert window_starts(8.0, 14) == [0, 10]  # 3.2 s later: 10 steps of 0.32 s


# -- the sync classifier -------------------------------------------------------------------------------


def stream(b=2, seed=0, **options):
    enc = encoder(seed=seed, **options)
    t = 8 * (SYNC["segments"] - 1) + 16
    return enc.encode(clip(b=b, t=t, seed=seed), torch.arange(t) / 25)


def test_offset_logits_are_b_by_21_over_offsets_minus_2_to_2():
    model = reranker()
    video = {"synchformer": stream()}
    audio = 0.1 * torch.randn(2, 1, round(window_seconds(3) * SAMPLE_RATE))
    logits = model.offset_logits(audio, video)
    assert logits.shape == (2, 21) and bool(logits.isfinite().all())
    assert model.offsets[0] == -2.0 and model.offsets[-1] == 2.0 and model.offsets[10] == 0.0
    assert torch.allclose(torch.tensor(model.offsets).diff(), torch.full((20,), 0.2), atol=1e-6)


def test_offset_logits_reverse_the_official_label_order():
    """Official labels count positive as 'audio cut later' (sound early): v2a's sign is the
    opposite, so v2a's class i is the official class 20 - i."""
    model = reranker()
    video = {"synchformer": stream()}
    audio = 0.1 * torch.randn(2, 1, round(window_seconds(3) * SAMPLE_RATE))
    visual, segments = model.window_tokens(audio, video["synchformer"], 0)
    tokens = model.afeat_extractor(segments.flatten(0, 1)).reshape(2, -1, 16)
    official = model.transformer(model.vproj(visual), model.aproj(tokens))
    assert torch.allclose(model.offset_logits(audio, video), official.flip(-1), atol=TOL)


def test_offset_logits_are_batch_independent():
    model = reranker()
    video = stream(b=3)
    audio = 0.1 * torch.randn(3, 1, round(window_seconds(3) * SAMPLE_RATE))
    together = model.offset_logits(audio, {"synchformer": video})
    for i in range(3):
        alone = video.replace(values=video.values[i:i + 1])
        one = model.offset_logits(audio[i:i + 1], {"synchformer": alone})
        assert torch.allclose(one, together[i:i + 1], atol=TOL)


def test_score_is_minus_the_mean_absolute_offset_of_the_first_and_last_windows():
    model = reranker(score="argmax")
    video = FeatureSequence(torch.randn(1, 12, 128), rate=25 / 8, start=0.3)
    audio = 0.1 * torch.randn(1, 2, 1, round(3.2 * SAMPLE_RATE))  # windows at segments 0 and 6
    assert window_starts(3.2, 3) == [0, 6]
    scores = model.score(audio, {"synchformer": video})
    offsets = torch.tensor(model.offsets)
    expected = torch.stack([
        offsets[model.offset_logits(audio[0], {"synchformer": video.repeat_interleave(2)},
                                    window=w).argmax(-1)].abs() for w in (0, 6)
    ]).mean(0)
    assert torch.allclose(scores[0], -expected)


def test_a_missing_or_mismatched_stream_is_a_user_error():
    model = reranker()
    audio = torch.zeros(1, 1, 16000)
    with pytest.raises(Exception, match="reads the visual stream 'synchformer'"):
        model.offset_logits(audio, {"clip": FeatureSequence(torch.zeros(1, 3, 128), rate=8.0)})
    with pytest.raises(Exception, match="8 \\* video_width = 128"):
        model.offset_logits(audio, {"synchformer": FeatureSequence(torch.zeros(1, 3, 64), rate=8.0)})


# -- weights -------------------------------------------------------------------------------------------


def official_layout(state: dict, prefix: str) -> dict:
    """A v2a state dict under the key names the official checkpoint uses (module docstrings)."""
    out = {}
    for key, value in state.items():
        key = key.replace("patch_embed_3d.", "patch_embed_3d.proj.")
        key = key.replace("spatial_attn_agg.layer.", "spatial_attn_agg.")
        key = key.replace("freq_attn_agg.layer.", "freq_attn_agg.")
        out[prefix + key] = value
    return out


def test_official_checkpoints_load_into_both_parts(tmp_path):
    enc, model = encoder(seed=1), reranker(seed=1)
    state = official_layout(enc.tower.state_dict(), "vfeat_extractor.")
    state["vfeat_extractor.patch_embed.proj.weight"] = torch.zeros(16, 3, 16, 16)  # unused 2D
    state.update(official_layout(model.state_dict(), ""))
    path = tmp_path / "synchformer.pt"
    torch.save({"model": state, "epoch": 3}, path)
    enc2, model2 = encoder(seed=2, weights=str(path)), reranker(seed=2, weights=str(path))
    frames = clip(b=1, t=16)
    assert torch.equal(enc2.encode(frames, torch.arange(16) / 25).values,
                       enc.encode(frames, torch.arange(16) / 25).values)
    video, audio = {"synchformer": stream(b=1)}, 0.1 * torch.randn(1, 1, 20480)
    assert torch.equal(model2.offset_logits(audio, video), model.offset_logits(audio, video))


def test_pretrained_and_missing_files_are_refused_with_where_to_get_them(tmp_path):
    for build in (encoder, reranker):
        with pytest.raises(WeightsError, match="v-iashin/Synchformer"):
            build(weights="pretrained")
        with pytest.raises(WeightsError, match="does not exist"):
            build(weights=str(tmp_path / "missing.pt"))


# -- recipe --------------------------------------------------------------------------------------------


def test_the_synchformer_recipe_swaps_s3d_for_the_synchformer_stream():
    recipe = load_recipe("recipes/maskvat_hybrid_synchformer.yaml")
    assert set(recipe.visual_streams) == {"clip", "synchformer"}
    assert dict(recipe.choice("fuser").config.streams) == {"clip": 512, "synchformer": 6144}
    small = load_recipe("recipes/small/maskvat_hybrid_synchformer_small.yaml")
    torch.manual_seed(0)
    built = small.build("visual_encoders.synchformer")
    assert built.dim == small.choice("fuser").config.streams["synchformer"]
