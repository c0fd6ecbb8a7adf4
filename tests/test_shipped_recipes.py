"""Every shipped recipe validates (torchtune-style); the small ones build and run on a CPU.

A recipe is any ``recipes/**/*.yaml`` outside ``recipes/components/`` (which holds component
files that recipes pull in by path) and outside model folders (``recipes/tiny/``, what ``v2a
export`` writes: tests/test_export.py checks it against ``tiny.yaml``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from v2a.recipe import load_recipe
from v2a.sequences import FeatureSequence

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SHIPPED = sorted(
    p for p in RECIPES.rglob("*.yaml") if "components" not in p.relative_to(RECIPES).parts
    and not (p.parent != RECIPES and (p.parent / "recipe.yaml").is_file())
)
SMALL = [p for p in SHIPPED if p.parent.name == "small" and p.stem != "maskvat_small"]


def rel(path: Path) -> str:
    return str(path.relative_to(RECIPES))


def test_the_maskvat_recipes_are_shipped():
    names = {rel(p) for p in SHIPPED}
    assert "small/maskvat_hybrid_text_small.yaml" in names  # video and a text prompt
    for variant in ("adaln", "seq2seq", "hybrid"):
        assert f"maskvat_{variant}.yaml" in names
        assert f"small/maskvat_{variant}_small.yaml" in names


@pytest.mark.parametrize("path", SHIPPED, ids=rel)
def test_recipe_validates_and_its_parts_fit_together(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    if not recipe.has("generator"):
        return
    fuser, generator = recipe.choice("fuser").config, recipe.choice("generator").config
    codec = recipe.choice("codec").config
    assert set(fuser.streams) <= set(recipe.visual_streams), "the fuser reads streams nobody makes"
    assert generator.condition_dim == fuser.dim
    assert generator.n_codebooks == codec.n_codebooks
    if codec.codebook_size is not None:
        assert generator.codebook_size == codec.codebook_size
    if recipe.training.level_policy == "per_level":
        steps = recipe.sampling.steps  # a count per level, the last repeating for further ones
        assert len(steps) <= generator.n_codebooks
        # the shortest form, so that a codec swapped in with fewer codebooks still checks
        assert len(steps) < 2 or steps[-1] != steps[-2]


@pytest.fixture(scope="module")
def small_components():
    """The slots of the small recipes, built once per distinct slot configuration."""
    cache = {}

    def build(recipe, slot):
        key = (slot, repr(recipe.choice(slot).as_data()))
        if key not in cache:
            torch.manual_seed(0)
            cache[key] = recipe.build(slot).eval()
        return cache[key]

    return build


@pytest.mark.parametrize("path", SMALL, ids=rel)
def test_small_recipe_builds_every_slot_and_generates_logits(path, small_components):
    recipe = load_recipe(path)
    slots = ["codec", "audio_encoder", "reranker", "fuser", "generator"]
    slots += [f"visual_encoders.{s}" for s in recipe.visual_streams]
    slots += ["text_encoder"] if recipe.has("text_encoder") else []
    built = {slot: small_components(recipe, slot) for slot in slots}
    codec, fuser, generator = built["codec"], built["fuser"], built["generator"]
    encoders = {s: built[f"visual_encoders.{s}"] for s in recipe.visual_streams}
    assert {s: encoders[s].dim for s in fuser.stream_dims} == dict(fuser.stream_dims)
    assert (generator.uses_aligned, generator.uses_context) == (
        fuser.provides_aligned, fuser.provides_context
    )
    assert (generator.n_codebooks, generator.codebook_size) == (codec.n_codebooks, codec.codebook_size)
    assert built["reranker"].video_streams.items() <= {s: e.dim for s, e in encoders.items()}.items()

    # 1 s of video: random features at each encoder's rate (two videos, the second one padded)
    gen = torch.Generator().manual_seed(0)
    streams = {}
    for name, encoder in encoders.items():
        t = max(2, round(encoder.rate))
        mask = torch.ones(2, t, dtype=torch.bool)
        mask[1, t // 2:] = False
        streams[name] = FeatureSequence(
            torch.randn(2, t, encoder.dim, generator=gen), rate=encoder.rate, mask=mask
        )
    num_frames = codec.num_frames(codec.sample_rate)
    codes = torch.randint(0, codec.codebook_size, (2, codec.n_codebooks, num_frames), generator=gen)
    mask = torch.rand(codes.shape, generator=gen) < 0.5
    with torch.inference_mode():
        text = {}  # a recipe with a text encoder: two prompts, the second one's dropped
        if recipe.has("text_encoder"):
            text = {"text": built["text_encoder"].encode(["a dog barks", "rain"]),
                    "drop_text": torch.tensor([False, True])}
        condition = fuser(streams, frame_rate=codec.frame_rate, num_frames=num_frames, **text)
        logits = generator(codes, mask, condition)
    assert logits.shape == (2, codec.n_codebooks, num_frames, codec.codebook_size)
    assert bool(logits.isfinite().all())


COMPONENTS = sorted((RECIPES / "components").rglob("*.yaml"))
#: Folder under recipes/components/ -> the recipe slot its files fill.
SLOT_OF_FOLDER = {"codecs": "codec", "visual_encoders": "visual_encoders.stream",
                  "audio_encoders": "audio_encoder", "rerankers": "reranker"}


@pytest.mark.parametrize("path", COMPONENTS, ids=rel)
def test_component_file_validates_in_its_slot(path, tmp_path):
    slot = SLOT_OF_FOLDER[path.parent.name]
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text("name: r\n")
    recipe = load_recipe(recipe_file, [f"{slot}={path}"])
    assert recipe.choice(slot).plugin == path.read_text().split("plugin:")[1].split()[0]
