"""The ``clip`` visual encoder: open_clip's real vision tower at small sizes, random weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

pytest.importorskip("open_clip")

import open_clip  # noqa: E402
from v2a_plugins.visual_encoders.clip import ClipConfig, ClipEncoder  # noqa: E402

from tests.unsafe_pickle import RunsCode  # noqa: E402
from v2a.errors import UserError  # noqa: E402
from v2a.testing import from_registry, parametrize_with_checks  # noqa: E402
from v2a.weights import WeightsError  # noqa: E402

#: A real open_clip ViT, small: 32x32 images in 2x2 patches of 16, 2 layers of width 64.
SMALL = dict(image_size=32, patch_size=16, width=64, layers=2, heads=2, embed_dim=32)


def small(seed=0, **options) -> ClipEncoder:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ClipEncoder(ClipConfig(**{"weights": "none", **SMALL, **options}))


def open_clip_model(**overrides):
    """A whole open_clip CLIP model (a small text tower too) of the SMALL shape: what users save."""
    vision = dict(image_size=32, patch_size=16, width=64, layers=2, head_width=32)
    return open_clip.create_model(
        "ViT-B-32", pretrained=None, embed_dim=32, quick_gelu=True,
        vision_cfg={**open_clip.get_model_config("ViT-B-32")["vision_cfg"], **vision, **overrides},
        text_cfg=dict(context_length=8, vocab_size=64, width=32, heads=2, layers=1),
    ).eval()


def frames(b=2, t=5, h=32, w=32, seed=0):
    return torch.rand(b, t, 3, h, w, generator=torch.Generator().manual_seed(seed))


@parametrize_with_checks([
    from_registry("visual_encoder", "clip", weights="none", **SMALL),
    from_registry("visual_encoder", "clip", weights="none", fps=4.0, batch_frames=3, normalize=True, **SMALL),
])
def test_conformance(factory, check):
    check(factory)


# -- shapes, rates, times ---------------------------------------------------------------------------


def test_one_embedding_per_frame_at_fps_from_the_first_time():
    encoder = small(fps=8.0)
    assert encoder.frame_size == (32, 32) and encoder.dim == 32 and encoder.rate == 8.0
    times = 2.0 + torch.arange(7) / 8
    out = encoder.encode(frames(t=7), times)
    assert out.values.shape == (2, 7, 32)
    assert out.rate == 8.0 and out.start == pytest.approx(2.0)
    assert torch.allclose(out.times(), times.double())


def test_each_frame_is_embedded_on_its_own():
    encoder = small()
    clip = frames(t=4)
    out = encoder.encode(clip, torch.arange(4) / 8).values
    alone = encoder.encode(clip[:, 2:3], torch.zeros(1)).values
    assert torch.allclose(out[:, 2:3], alone, atol=1e-5)
    assert not torch.allclose(out[:, 1], out[:, 2], atol=1e-3)


def test_default_is_the_vit_b_32_shape():
    encoder = ClipEncoder(ClipConfig(weights="none"))
    assert encoder.frame_size == (224, 224) and encoder.dim == 512 and encoder.fps == 8.0
    # the 'openai' tag's weights were trained with QuickGELU, which ViT-B-32's config lacks
    assert isinstance(encoder.visual.transformer.resblocks[0].mlp.gelu, open_clip.model.QuickGELU)
    assert not any(name.startswith(("transformer.", "token_embedding")) for name, _ in encoder.named_parameters())


def test_quick_gelu_follows_the_pretrained_tag():
    laion = small(pretrained="laion2b_s34b_b79k")
    assert isinstance(laion.visual.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)
    forced = small(pretrained="laion2b_s34b_b79k", quick_gelu=True)
    assert isinstance(forced.visual.transformer.resblocks[0].mlp.gelu, open_clip.model.QuickGELU)


def test_times_of_another_length_are_refused():
    with pytest.raises(ValueError, match="5 frames"):
        small().encode(frames(t=5), torch.arange(4) / 8)


# -- preprocessing ----------------------------------------------------------------------------------


def test_frames_of_the_model_size_are_only_normalised():
    model = open_clip_model()
    encoder = small()
    encoder.visual.load_state_dict(model.visual.state_dict())
    clip = frames(b=1, t=3)[0]
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(3, 1, 1)
    expected = model.encode_image((clip - mean) / std)
    assert torch.allclose(encoder.encode(clip[None], torch.arange(3) / 8).values[0], expected, atol=1e-5)


def test_other_frame_sizes_are_resized_and_centre_cropped():
    encoder = small()
    wide = frames(b=1, t=2, h=64, w=128)  # shortest side 64 -> 32: 32 x 64, crop columns 16..48
    out = encoder.encode(wide, torch.arange(2) / 8).values
    assert out.shape == (1, 2, 32)
    changed = wide.clone()
    changed[..., :24] = 1 - changed[..., :24]  # left and right of the crop (and its filter support)
    changed[..., -24:] = 1 - changed[..., -24:]
    assert torch.allclose(encoder.encode(changed, torch.arange(2) / 8).values, out, atol=1e-5)
    changed[..., 60:68] = 1 - changed[..., 60:68]  # inside the crop
    assert not torch.allclose(encoder.encode(changed, torch.arange(2) / 8).values, out, atol=1e-3)


def test_chunking_and_normalisation():
    clip = frames(b=2, t=5)
    reference = small(batch_frames=64)
    whole = reference.encode(clip, torch.arange(5) / 8).values

    def like_reference(**options):
        encoder = small(**options)
        encoder.load_state_dict(reference.state_dict())
        return encoder

    chunked = like_reference(batch_frames=3).encode(clip, torch.arange(5) / 8).values
    assert torch.allclose(whole, chunked, atol=1e-5)
    unit = like_reference(normalize=True).encode(clip, torch.arange(5) / 8).values
    assert torch.allclose(unit.norm(dim=-1), torch.ones(2, 5), atol=1e-5)
    assert torch.allclose(unit, torch.nn.functional.normalize(whole, dim=-1), atol=1e-5)


# -- weights ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["open_clip .bin", "safetensors", "training checkpoint", "vision tower"])
def test_weights_from_a_local_checkpoint(tmp_path, layout):
    model = open_clip_model()
    state = model.state_dict()
    if layout == "open_clip .bin":  # open_clip_pytorch_model.bin from the hub: the whole model
        path = tmp_path / "open_clip_pytorch_model.bin"
        torch.save(state, path)
    elif layout == "safetensors":
        path = tmp_path / "open_clip_model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif layout == "training checkpoint":  # what open_clip's trainer writes under DDP
        path = tmp_path / "epoch_1.pt"
        torch.save({"epoch": 1, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        path = tmp_path / "visual.pt"
        torch.save(model.visual.state_dict(), path)
    encoder = small(weights=str(path))
    clip = frames(b=1, t=2)
    encoded = encoder.encode(clip, torch.arange(2) / 8).values[0]
    expected = model.encode_image(encoder.preprocess(clip[0]))
    assert torch.allclose(encoded, expected, atol=1e-5)
    assert not torch.allclose(encoded, small().encode(clip, torch.arange(2) / 8).values[0], atol=1e-3)


def test_a_checkpoint_of_another_shape_is_one_sentence(tmp_path):
    path = tmp_path / "wide.bin"
    torch.save(open_clip_model(width=128, head_width=64).state_dict(), path)
    with pytest.raises(WeightsError) as info:
        small(weights=str(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "another shape" in message


def test_a_missing_weights_file_is_one_sentence(tmp_path):
    missing = tmp_path / "nowhere" / "clip.bin"
    with pytest.raises(WeightsError) as info:
        small(weights=str(missing))
    message = str(info.value)
    assert "\n" not in message and str(missing) in message and "does not exist" in message


def test_a_pickle_that_runs_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"visual.proj": RunsCode()}, path)
    with pytest.raises(WeightsError, match="refused"):
        small(weights=str(path))
    assert "this ran" not in capsys.readouterr().out


def test_pretrained_download_failure_is_one_sentence(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no route to host")

    monkeypatch.setattr(open_clip, "download_pretrained", offline)
    with pytest.raises(WeightsError) as info:
        ClipEncoder(ClipConfig(weights="pretrained"))
    assert "\n" not in str(info.value) and "ViT-B-32/openai" in str(info.value)


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="did you mean"):
        ClipEncoder(ClipConfig(model="ViT-B-23", weights="none"))
    with pytest.raises(UserError, match="tag"):
        ClipEncoder(ClipConfig(pretrained="openia", weights="pretrained"))
    with pytest.raises(UserError, match="published weights do not fit"):
        ClipEncoder(ClipConfig(weights="pretrained", **SMALL))
    with pytest.raises(ValueError, match="divide"):
        ClipConfig(width=64, heads=3)
