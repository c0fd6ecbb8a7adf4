"""The ``s3d`` visual encoder: torchvision's real S3D on small crops, random weights."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

pytest.importorskip("torchvision")

from torchvision.models.video import S3D_Weights, s3d  # noqa: E402
from v2a_plugins.visual_encoders.s3d import S3DConfig, S3DEncoder, num_features  # noqa: E402

from tests.unsafe_pickle import RunsCode  # noqa: E402
from v2a.testing import from_registry, parametrize_with_checks  # noqa: E402
from v2a.weights import WeightsError  # noqa: E402

KINETICS_MEAN = torch.tensor([0.43216, 0.394666, 0.37645]).view(1, 3, 1, 1, 1)
KINETICS_STD = torch.tensor([0.22803, 0.22145, 0.216989]).view(1, 3, 1, 1, 1)


def close(actual, expected, tol=1e-4) -> bool:
    """Equal up to ``tol`` relative to the largest expected value."""
    return bool((actual - expected).abs().max() <= tol * expected.abs().max())


def small(seed=0, **options) -> S3DEncoder:
    """A randomly initialised encoder on 32 x 32 crops (1024 channels all the same)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return S3DEncoder(S3DConfig(**{"weights": "none", "crop": 32, **options}))


def frames(b=1, t=16, side=32, seed=0):
    return torch.rand(b, t, 3, side, side, generator=torch.Generator().manual_seed(seed))


def reference_features(model, clip, mean=KINETICS_MEAN, std=KINETICS_STD):
    """torchvision's own ``features`` on normalised ``[b, t, 3, h, w]`` frames, mean over space."""
    video = (clip.permute(0, 2, 1, 3, 4) - mean) / std  # [b, 3, t, h, w]
    return model.features(video).mean(dim=(3, 4)).transpose(1, 2)  # [b, t', 1024]


def trained_like(seed=7):
    """A torchvision S3D with weights as a trained one might have: He-normal convs, BatchNorm
    statistics and affine parameters away from their defaults, every tensor distinct."""
    gen = torch.Generator().manual_seed(seed)
    model = s3d(weights=None)
    state = {}
    for key, value in model.state_dict().items():
        noise = torch.randn(value.shape, generator=gen) if value.is_floating_point() else None
        if key.endswith("num_batches_tracked"):
            state[key] = value + 1000
        elif value.dim() == 5:  # conv weights
            state[key] = noise * (2 / value[0].numel()) ** 0.5
        elif key.endswith(("running_var", "weight")):
            state[key] = 1 + 0.2 * noise.clamp(-2, 2)
        else:  # running_mean, bias
            state[key] = 0.1 * noise
    model.load_state_dict(state)
    return model.eval()


@parametrize_with_checks([from_registry("visual_encoder", "s3d", weights="none", crop=64)])
def test_conformance(factory, check):
    check(factory)


# -- shapes, rates, times ---------------------------------------------------------------------------


def test_features_at_an_eighth_of_fps_centred_on_their_frames():
    encoder = small(fps=25.0)
    assert encoder.frame_size == (32, 32) and encoder.dim == 1024 and encoder.rate == 25.0 / 8
    times = 3.0 + torch.arange(24) / 25
    out = encoder.encode(frames(b=2, t=24), times)
    assert out.values.shape == (2, 3, 1024) and out.rate == 25.0 / 8
    # feature n is centred on frame 8n + 2
    assert torch.allclose(out.times(), times[[2, 10, 18]].double(), atol=1e-6)


@pytest.mark.parametrize("t", [5, 8, 12, 13, 17, 21, 24])
def test_number_of_features_follows_the_strides(t):
    expected = math.floor(math.ceil(t / 4) / 2) if t >= 8 else 1  # shorter clips are padded to 8
    assert num_features(t) == expected
    out = small().encode(frames(t=t), torch.arange(t) / 25)
    assert out.values.shape[1] == num_features(t)


def test_receptive_field_is_centred_on_frame_8n_plus_2():
    """The frames whose gradient reaches feature 7 of a long clip lie symmetric about 58."""
    encoder = small()
    clip = frames(t=112).requires_grad_(True)
    out = encoder.encode(clip, torch.arange(112) / 25).values  # [1, 14, 1024]
    (grad,) = torch.autograd.grad(out[0, 7].sum(), clip)
    seen = grad.abs().sum(dim=(0, 2, 3, 4)).nonzero().flatten()
    assert 0 < seen.min() and seen.max() < 111  # not clipped by the clip's ends
    assert (seen.min() + seen.max()) / 2 == 8 * 7 + 2


def test_clips_shorter_than_8_frames_repeat_their_last_frame():
    encoder = small()
    clip = frames(t=3)
    out = encoder.encode(clip, 1.0 + torch.arange(3) / 25)
    padded = torch.cat([clip, clip[:, -1:].expand(-1, 5, -1, -1, -1)], dim=1)
    assert out.values.shape == (1, 1, 1024)
    assert close(out.values, encoder.encode(padded, torch.arange(8) / 25).values)
    assert out.start == pytest.approx(1.0 + 2 / 25)


def test_times_of_another_length_are_refused():
    with pytest.raises(ValueError, match="16 frames"):
        small().encode(frames(t=16), torch.arange(15) / 25)


# -- preprocessing ----------------------------------------------------------------------------------


def test_frames_are_normalised_with_torchvisions_kinetics_statistics():
    model = trained_like()
    encoder = small()
    encoder.features.load_state_dict(model.features.state_dict())
    clip = frames(b=2, t=16)
    expected = reference_features(model, clip)
    assert close(encoder.encode(clip, torch.arange(16) / 25).values, expected)
    transform = S3D_Weights.KINETICS400_V1.transforms()
    assert torch.allclose(encoder.mean.flatten(), torch.tensor(transform.mean))
    raw = small(normalise="none")
    raw.features.load_state_dict(model.features.state_dict())
    zero_one = reference_features(model, clip, mean=0.0, std=1.0)
    assert close(raw.encode(clip, torch.arange(16) / 25).values, zero_one)


def test_other_frame_sizes_are_resized_and_centre_cropped():
    encoder = small()
    wide = torch.rand(1, 8, 3, 64, 96, generator=torch.Generator().manual_seed(1))  # -> 32 x 48
    out = encoder.encode(wide, torch.arange(8) / 25).values
    assert out.shape == (1, 1, 1024)
    changed = wide.clone()
    changed[..., :12] = 0.5  # left and right of the crop (columns 16..80 of the input)
    changed[..., -12:] = 0.5
    assert close(encoder.encode(changed, torch.arange(8) / 25).values, out)
    changed[..., 40:56] = 0.5
    assert not close(encoder.encode(changed, torch.arange(8) / 25).values, out, tol=1e-2)


def test_train_mode_keeps_the_batchnorm_statistics():
    encoder = small().train()
    assert encoder.training and not encoder.features.training
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    clip = frames(b=2, t=8)
    first = encoder.encode(clip, torch.arange(8) / 25).values
    assert close(encoder.encode(clip[:1], torch.arange(8) / 25).values, first[:1])
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert not any(p.requires_grad for p in encoder.parameters())


# -- weights ----------------------------------------------------------------------------------------


def kylemin_keys() -> list[str]:
    """The state-dict keys of kylemin's S3D (as SparseSync, Synchformer and video_features vendor
    it), in module order, written from its module layout rather than from our key mapping.

    ``base``: 0 SepConv3d, 1 pool, 2 BasicConv3d, 3 SepConv3d, 4 pool, 5-6 Mixed_3b/c, 7 pool,
    8-12 Mixed_4b..f, 13 pool, 14-15 Mixed_5b/c; a Mixed block: branch0 = [Basic],
    branch1 = branch2 = [Basic, Sep], branch3 = [pool, Basic]; ``fc.0`` the classifier.
    """
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    basic = lambda p: [f"{p}.conv.weight"] + [f"{p}.bn.{n}" for n in bn]  # noqa: E731
    sep = lambda p: (  # noqa: E731
        [f"{p}.conv_s.weight"] + [f"{p}.bn_s.{n}" for n in bn]
        + [f"{p}.conv_t.weight"] + [f"{p}.bn_t.{n}" for n in bn]
    )

    def mixed(p):
        return (basic(f"{p}.branch0.0") + basic(f"{p}.branch1.0") + sep(f"{p}.branch1.1")
                + basic(f"{p}.branch2.0") + sep(f"{p}.branch2.1") + basic(f"{p}.branch3.1"))

    keys = sep("base.0") + basic("base.2") + sep("base.3")
    for i in (5, 6, 8, 9, 10, 11, 12, 14, 15):
        keys += mixed(f"base.{i}")
    return keys + ["fc.0.weight", "fc.0.bias"]


@pytest.mark.parametrize("wrapping", ["plain", "sparsesync training checkpoint", "synchformer"])
def test_sparsesync_kylemin_checkpoints_map_onto_torchvision(tmp_path, wrapping):
    torchvision_state = trained_like().state_dict()
    # kylemin's modules enumerate in the same order as torchvision's: pair the keys by position
    source = dict(zip(kylemin_keys(), torchvision_state.values(), strict=True))
    if wrapping == "plain":  # S3D_kinetics400_torchified.pt
        checkpoint = source
    elif wrapping == "sparsesync training checkpoint":
        checkpoint = {"epoch": 3, "model": {f"vfeat_extractor.{k}": v for k, v in source.items()}}
        checkpoint["model"]["afeat_extractor.conv1.weight"] = torch.zeros(64, 1, 7, 7)
    else:
        checkpoint = {"state_dict": {f"module.v_encoder.{k}": v for k, v in source.items()}}
    path = tmp_path / "S3D_kinetics400_torchified.pt"
    torch.save(checkpoint, path)
    loaded = small(weights=str(path)).features.state_dict()
    expected = {k.removeprefix("features."): v for k, v in torchvision_state.items() if k.startswith("features.")}
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_from_a_torchvision_state_dict(tmp_path, suffix):
    model = trained_like()
    path = tmp_path / f"s3d{suffix}"
    if suffix == ".pth":  # what torchvision downloads: s3d-d76dad2f.pth
        torch.save(model.state_dict(), path)
    else:
        save_file(model.state_dict(), str(path))
    encoder = small(weights=str(path))
    clip = frames(b=1, t=16)
    expected = reference_features(model, clip)
    assert close(encoder.encode(clip, torch.arange(16) / 25).values, expected)


def test_a_checkpoint_that_is_not_s3d_is_one_sentence(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(WeightsError) as info:
        small(weights=str(path))
    assert "\n" not in str(info.value) and "not an S3D checkpoint" in str(info.value)
    truncated = {k: v for k, v in s3d(weights=None).state_dict().items() if "features.15" not in k}
    torch.save(truncated, path)
    with pytest.raises(WeightsError, match="missing"):
        small(weights=str(path))


def test_a_missing_weights_file_is_one_sentence(tmp_path):
    missing = tmp_path / "S3D_kinetics400_torchified.pt"
    with pytest.raises(WeightsError) as info:
        small(weights=str(missing))
    message = str(info.value)
    assert "\n" not in message and str(missing) in message and "does not exist" in message


def test_a_pickle_that_runs_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"features.0.0.0.weight": RunsCode()}, path)
    with pytest.raises(WeightsError, match="refused"):
        small(weights=str(path))
    assert "this ran" not in capsys.readouterr().out


def test_pretrained_download_failure_is_one_sentence(monkeypatch):
    def offline(self, *args, **kwargs):
        raise OSError("no route to host")

    monkeypatch.setattr(S3D_Weights, "get_state_dict", offline)
    with pytest.raises(WeightsError) as info:
        S3DEncoder(S3DConfig(weights="pretrained"))
    assert "\n" not in str(info.value) and S3D_Weights.KINETICS400_V1.url in str(info.value)
