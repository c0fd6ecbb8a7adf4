"""MaskVAT fuser: the kit's contracts, time alignment, padding, the context encoder, errors."""

from __future__ import annotations

import math

import pytest
import torch
from v2a_plugins.fusers.maskvat import MaskVATFuser, MaskVATFuserConfig, time_embedding

from v2a.errors import PluginError, UserError
from v2a.registry import default_registry
from v2a.sequences import FeatureSequence
from v2a.testing import from_registry, parametrize_with_checks

STREAMS = {"clip": 12, "s3d": 20}
SMALL = dict(streams=STREAMS, dim=16, heads=2, context_layers=1)


@parametrize_with_checks([
    from_registry("fuser", "maskvat", **SMALL, context=False),
    from_registry("fuser", "maskvat", **SMALL, aligned=False),
    from_registry("fuser", "maskvat", **SMALL),
    from_registry("fuser", "maskvat", streams={"clip": 12}, dim=16, heads=2, context_layers=0),
])
def test_conformance(factory, check):
    check(factory)


# -- helpers ---------------------------------------------------------------------------------------


def small(seed: int = 0, **changes) -> MaskVATFuser:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MaskVATFuser(MaskVATFuserConfig(**{**SMALL, **changes})).eval()


def stream(b, t, d, rate, *, start=0.0, valid=None, seed=0) -> FeatureSequence:
    values = torch.randn(b, t, d, generator=torch.Generator().manual_seed(seed))
    mask = None if valid is None else torch.arange(t)[None] < torch.tensor(valid)[:, None]
    return FeatureSequence(values=values, rate=rate, start=start, mask=mask)


def video(b=2, seconds=2.0, clip_valid=None, s3d_valid=None, seed=0):
    return {
        "clip": stream(b, math.ceil(8 * seconds), 12, 8.0, valid=clip_valid, seed=seed),
        "s3d": stream(b, math.ceil(3.125 * seconds), 20, 3.125, start=0.16, valid=s3d_valid,
                      seed=seed + 1),
    }


# -- aligned ---------------------------------------------------------------------------------------


def test_aligned_follows_the_streams_in_time():
    """Starting the video 1 s later delays the aligned sequence by 1 s (50 frames at 50 Hz); the
    frames before it hold the first value (resample's nearest end)."""
    fuser = small(context=False, streams={"clip": 12})
    early = stream(1, 16, 12, 8.0, start=0.0)
    late = early.replace(start=1.0)
    with torch.no_grad():
        a = fuser.fuse({"clip": early}, frame_rate=50.0, num_frames=150).aligned
        b = fuser.fuse({"clip": late}, frame_rate=50.0, num_frames=150).aligned
    assert a.rate == 50.0 and a.start == 0.0 and a.length == 150 and a.mask is None
    torch.testing.assert_close(b.values[:, 50:], a.values[:, :100])
    torch.testing.assert_close(b.values[:, :50], a.values[:, :1].expand(-1, 50, -1))


def test_aligned_rows_of_a_padded_batch_equal_the_rows_alone():
    """A short video in a padded batch: where both streams have video its frames are those of
    the video fused alone, and the frames past the end of the last stream are padding."""
    fuser = small(context=False)
    batch = video(clip_valid=[16, 8], s3d_valid=[7, 3])  # row 1: about 1 s of video
    alone = {
        "clip": FeatureSequence(batch["clip"].values[1:, :8], rate=8.0),
        "s3d": FeatureSequence(batch["s3d"].values[1:, :3], rate=3.125, start=0.16),
    }
    with torch.no_grad():
        padded = fuser.fuse(batch, frame_rate=86.13, num_frames=172).aligned
        single = fuser.fuse(alone, frame_rate=86.13, num_frames=172).aligned
    assert padded.mask is not None and single.mask is None
    valid = padded.mask[1]
    end = max(8 / 8.0, 0.16 + 3 / 3.125)  # the later of the two streams' ends: 1.12 s
    torch.testing.assert_close(valid, torch.arange(172) / 86.13 < end)
    both = torch.arange(172) / 86.13 < 1.0  # alone, a stream holds its last value past its end
    torch.testing.assert_close(padded.values[1, both], single.values[0, both])


def test_aligned_mask_covers_frames_any_stream_reaches():
    fuser = small(context=False)
    batch = video(clip_valid=[16, 8])  # s3d without padding covers every frame
    with torch.no_grad():
        out = fuser.fuse(batch, frame_rate=50.0, num_frames=100).aligned
    assert out.mask is None


# -- context ---------------------------------------------------------------------------------------


def test_context_concatenates_streams_with_their_masks():
    fuser = small(aligned=False)
    batch = video(clip_valid=[16, 5], s3d_valid=[7, 2])
    with torch.no_grad():
        out = fuser.fuse(batch, frame_rate=50.0, num_frames=100).context
    assert out.length == 16 + 7 and out.dim == 16
    torch.testing.assert_close(out.mask, torch.cat([batch["clip"].mask, batch["s3d"].mask], dim=1))
    assert out.rate == pytest.approx(8.0 + 3.125) and out.start == 0.0  # nominal, documented


def test_context_encoder_mixes_streams_and_knows_time():
    fuser = small(aligned=False)
    batch = video()
    other_s3d = {**batch, "s3d": stream(2, 7, 20, 3.125, start=0.16, seed=9)}
    shifted_clip = {**batch, "clip": batch["clip"].replace(start=0.5)}
    with torch.no_grad():
        base = fuser.fuse(batch, frame_rate=50.0, num_frames=100).context.values
        mixed = fuser.fuse(other_s3d, frame_rate=50.0, num_frames=100).context.values
        shifted = fuser.fuse(shifted_clip, frame_rate=50.0, num_frames=100).context.values
    assert not torch.allclose(base[:, :16], mixed[:, :16])  # clip steps see the s3d steps
    assert not torch.allclose(base[:, :16], shifted[:, :16])  # and their own time


def test_context_without_encoder_layers_keeps_streams_apart():
    fuser = small(aligned=False, context_layers=0)
    batch = video()
    other_s3d = {**batch, "s3d": stream(2, 7, 20, 3.125, start=0.16, seed=9)}
    with torch.no_grad():
        base = fuser.fuse(batch, frame_rate=50.0, num_frames=100).context.values
        mixed = fuser.fuse(other_s3d, frame_rate=50.0, num_frames=100).context.values
    torch.testing.assert_close(base[:, :16], mixed[:, :16])


def test_a_row_without_any_video_gives_finite_output():
    fuser = small()
    batch = video(clip_valid=[16, 0], s3d_valid=[7, 0])
    batch["clip"].values[1] = 1e4
    with torch.no_grad():
        out = fuser.fuse(batch, frame_rate=50.0, num_frames=100)
    assert bool(out.context.values.isfinite().all()) and bool(out.aligned.values.isfinite().all())
    assert not out.context.mask[1].any() and not out.aligned.mask[1].any()


def test_time_embedding_tells_times_apart():
    emb = time_embedding(torch.tensor([0.0, 0.04, 0.12, 5.0, 300.0]), 16)
    assert emb.shape == (5, 16)
    distances = torch.cdist(emb, emb) + torch.eye(5)
    assert bool((distances > 1e-2).all())
    assert time_embedding(torch.tensor([1.0]), 7).shape == (1, 7)


# -- options and errors ----------------------------------------------------------------------------


def test_flags_and_stream_dims_follow_the_options():
    fuser = small(aligned=False)
    assert (fuser.provides_aligned, fuser.provides_context) == (False, True)
    assert fuser.stream_dims == STREAMS and fuser.dim == 16
    out = fuser.fuse(video(), frame_rate=50.0, num_frames=100)
    assert out.aligned is None and out.context is not None


def test_extra_streams_are_ignored():
    fuser = small()
    batch = video()
    with torch.no_grad():
        a = fuser.fuse(batch, frame_rate=50.0, num_frames=100)
        b = fuser.fuse({**batch, "motion": stream(2, 5, 3, 2.0)}, frame_rate=50.0, num_frames=100)
    torch.testing.assert_close(a.aligned.values, b.aligned.values)
    torch.testing.assert_close(a.context.values, b.context.values)


def test_missing_stream_is_a_one_sentence_error():
    fuser = small()
    with pytest.raises(UserError, match="needs the visual stream 's3d'.*given are: clip$"):
        fuser.fuse({"clip": video()["clip"]}, frame_rate=50.0, num_frames=100)


def test_wrong_stream_width_is_a_user_error():
    fuser = small()
    batch = {**video(), "s3d": stream(2, 7, 21, 3.125)}
    with pytest.raises(UserError, match="'s3d' to be 20 wide but it is 21"):
        fuser.fuse(batch, frame_rate=50.0, num_frames=100)


@pytest.mark.parametrize("options, message", [
    ({"aligned": False, "context": False}, "aligned, context or both"),
    ({"dim": 10, "heads": 3}, "must divide dim"),
    ({"streams": {}}, "at least one visual stream"),
])
def test_bad_options_are_recipe_errors(options, message):
    with pytest.raises(PluginError, match=message):
        default_registry().config_for("fuser", "maskvat", options)


# -- weights ---------------------------------------------------------------------------------------


def test_weights_option_loads_an_exported_fuser_strictly(tmp_path):
    from v2a.weights import WeightsError, save_state

    trained = small(seed=1)
    save_state(trained.state_dict(), tmp_path / "fuser.safetensors")
    loaded = small(seed=2, weights=str(tmp_path / "fuser.safetensors"))
    for key, value in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert not torch.equal(small(seed=2).project["clip"][0].weight, trained.project["clip"][0].weight)
    with pytest.raises(WeightsError, match="does not fit the maskvat fuser"):
        small(dim=32, weights=str(tmp_path / "fuser.safetensors"))
    with pytest.raises(WeightsError, match="does not exist"):
        small(weights=str(tmp_path / "missing.safetensors"))
    with pytest.raises(WeightsError, match="no published weights"):
        small(weights="pretrained")
