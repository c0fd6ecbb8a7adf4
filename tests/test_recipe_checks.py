"""A recipe's components are checked for fitting together before anything is built
(:mod:`v2a.recipe.consistency`), from what each plug-in declares (``ComponentSpec.properties``)."""

from __future__ import annotations

import re
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from v2a import ComponentSpec, FeatureSequence, VisualEncoder, hookimpl
from v2a.errors import RecipeError
from v2a.recipe import check_consistency, inconsistencies, load_recipe
from v2a.registry import Registry, default_registry
from v2a.weights import save_state

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SHIPPED = sorted(
    p for p in RECIPES.rglob("*.yaml") if "components" not in p.relative_to(RECIPES).parts
)

#: A complete recipe of small components that fit together, all with random weights:
#: colour_motion at grid 2 without orientations is (6 + 0) * 2² + 5 = 29 wide.
BASE = """
    codec: {plugin: spectral_rvq, n_fft: 64, hop_length: 32, n_codebooks: 2, codebook_size: 16}
    visual_encoders:
      motion: {plugin: colour_motion, grid: 2, size: 8, orientations: 0}
    fuser: {plugin: maskvat, streams: {motion: 29}, dim: 32, heads: 4, aligned: true,
            context: false, context_layers: 1}
    generator: {plugin: maskvat_adaln, n_codebooks: 2, codebook_size: 16, condition_dim: 32,
                width: 32, layers: 1, heads: 2, max_frames: 64}
    sampling: {steps: [4, 2]}
"""


def refusal(ref, overrides=(), registry: Registry | None = None) -> str:
    """The one sentence a recipe is refused with, after its source: from ``load_recipe`` where
    recipe validation runs :func:`check_consistency`, else from calling it on the loaded recipe."""
    registry = registry or default_registry()
    try:
        recipe = load_recipe(ref, overrides, registry=registry)
    except RecipeError as exc:  # "{source}: {dotted key}: {sentence}"; a source may hold ": "
        return re.match(r"^.*?: ([a-z_]+(?:\.[\w-]+)*: .*)$", str(exc)).group(1)
    with pytest.raises(RecipeError) as caught:
        check_consistency(recipe, lambda key: "recipe", registry)
    source, message = str(caught.value).split(": ", 1)
    assert source == "recipe"
    return message


def consistent(ref, overrides=(), registry: Registry | None = None) -> None:
    registry = registry or default_registry()
    recipe = load_recipe(ref, overrides, registry=registry)
    assert list(inconsistencies(recipe, registry)) == []
    check_consistency(recipe, lambda key: "recipe", registry)


# -- declarations ---------------------------------------------------------------------------------


def test_the_registry_gives_declared_properties_and_nothing_for_an_undeclared_plugin(registry):
    assert registry.properties("audio_encoder", "mel") == {"sample_rate": 16000, "dim": 64,
                                                           "rate": 62.5}
    config = registry.config_for("audio_encoder", "mel", {"n_mels": 8, "hop_length": 160})
    assert registry.properties("audio_encoder", "mel", config)["dim"] == 8
    assert registry.properties("reranker", "loudest") == {}  # tests/components_for_tests.py
    assert registry.properties_from("audio_encoder", {"plugin": "mel", "n_mels": 16})["dim"] == 16


def test_a_nested_component_declares_through_its_owner():
    codec = {"plugin": "spectral_rvq", "n_fft": 256, "hop_length": 64}
    assert default_registry().properties_from("audio_encoder", {"plugin": "codec_latents",
                                                                 "codec": codec}) == {
        "sample_rate": 16000, "dim": 129, "rate": 250.0}


def test_the_clip_size_table_agrees_with_open_clip():
    open_clip = pytest.importorskip("open_clip")
    from v2a_plugins.visual_encoders.clip import MODEL_SIZES

    for model, (embed_dim, image_size) in MODEL_SIZES.items():
        config = open_clip.get_model_config(model)
        assert (config["embed_dim"], config["vision_cfg"]["image_size"]) == (embed_dim, image_size)


# -- recipes that fit ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_shipped_recipe_is_consistent(path):
    """The paper recipes and the partial ones (no fuser: maskvat_base, maskvat_small, scav)
    pass: only what both sides declare is compared."""
    consistent(path)


def test_the_small_base_recipe_is_consistent(write):
    consistent(write("base.yaml", BASE))
    consistent(write("base.yaml", BASE), ["sampling.steps=[8]"])  # a shorter list repeats


# -- visual streams -------------------------------------------------------------------------------


def test_a_visual_encoder_narrower_than_the_fuser_reads_it_is_refused():
    assert refusal("tiny", ["visual_encoders.motion.grid=4"]) == (
        "fuser.streams.motion: is 645 but visual_encoders.motion (colour_motion) produces "
        "165-wide features; set fuser.streams.motion=165 (and train anew: fuser.weights=none)"
    )


def test_the_retraining_hint_is_only_given_for_trained_weights(write):
    assert refusal(write("base.yaml", BASE), ["visual_encoders.motion.grid=4"]) == (
        "fuser.streams.motion: is 29 but visual_encoders.motion (colour_motion) produces "
        "101-wide features; set fuser.streams.motion=101"
    )


@dataclass
class WideConfig:
    width: int = 100


class Wide(VisualEncoder):
    """A third-party visual encoder: ``width`` zeros per frame."""

    def __init__(self, config: WideConfig):
        super().__init__()
        self.fps = self.rate = 25.0
        self.frame_size, self.dim = None, config.width

    def encode(self, frames, times):
        b, t = frames.shape[:2]
        return FeatureSequence(frames.new_zeros(b, t, self.dim), rate=self.rate,
                               start=float(times[0]))


def third_party_registry(*, declares: bool = True) -> Registry:
    """The installed plug-ins and a third-party visual encoder ``wide`` that declares its width
    (or, with ``declares=False``, declares nothing)."""
    module = types.ModuleType("third_party")
    properties = (lambda config: {"dim": config.width, "fps": 25.0}) if declares else None

    @hookimpl
    def v2a_register_components(register):
        register(ComponentSpec(kind="visual_encoder", name="wide", build=Wide, config=WideConfig,
                               properties=properties))

    module.v2a_register_components = v2a_register_components
    registry = Registry.from_environment()
    registry.register_module(module)
    return registry


def test_a_third_party_encoder_swapped_in_is_checked_by_its_declaration():
    registry = third_party_registry()
    assert refusal("tiny", ["visual_encoders.motion=wide"], registry).startswith(
        "fuser.streams.motion: is 645 but visual_encoders.motion (wide) produces 100-wide "
        "features; set fuser.streams.motion=100"
    )
    consistent("tiny", ["visual_encoders.motion=wide", "visual_encoders.motion.width=645"],
               registry)


def test_a_third_party_encoder_that_declares_nothing_is_measured_on_the_meta_device():
    registry = third_party_registry(declares=False)
    assert registry.properties("visual_encoder", "wide") == {}
    assert refusal("tiny", ["visual_encoders.motion=wide"], registry).startswith(
        "fuser.streams.motion: is 645 but visual_encoders.motion (wide) produces 100-wide "
        "features; set fuser.streams.motion=100"
    )


def test_a_stream_the_fuser_reads_but_no_encoder_provides_is_refused(write):
    assert refusal(write("base.yaml", BASE), ["fuser.streams.clip=512"]) == (
        "fuser.streams.clip: the fuser reads a visual stream 'clip' (512 wide), but the recipe's "
        "visual encoders are: motion; add one with visual_encoders.clip=<plugin>, or stop the "
        "fuser reading it with ~fuser.streams.clip"
    )


def test_a_stream_nobody_reads_is_refused():
    assert refusal("tiny", ["visual_encoders.extra=clip"]) == (
        "visual_encoders.extra: the stream is extracted (clip), but neither the fuser nor the "
        "reranker reads it; add it to the fuser with fuser.streams.extra=512, or drop it with "
        "visual_encoders.extra=null"
    )


def test_a_stream_only_the_reranker_reads_is_fine_when_its_width_fits(write):
    base = write("base.yaml", BASE)
    reranker = "reranker={plugin: scav, video_stream: extra, audio_encoder: mel, weights: none}"
    consistent(base, ["visual_encoders.extra={plugin: clip, weights: none}", reranker])
    assert refusal(base, ["visual_encoders.extra={plugin: clip, weights: none}", reranker,
                          "reranker.video_dim=256"]) == (
        "reranker.video_dim: is 256 but visual_encoders.extra (clip) produces 512-wide features; "
        "set reranker.video_dim=512"
    )


def test_a_reranker_stream_no_encoder_provides_is_refused():
    assert refusal("small/maskvat_small", ["reranker.video_stream=motion"]) == (
        "reranker.video_stream: the reranker reads the visual stream 'motion', but the recipe's "
        "visual encoders are: clip, s3d; set reranker.video_stream to one of those, or add "
        "visual_encoders.motion=<plugin>"
    )


# -- generator ------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, message", [
    ("generator.n_codebooks=3",
     "generator.n_codebooks: is 3 but the codec (spectral_rvq) has 2 codebooks; set "
     "generator.n_codebooks=2"),
    ("generator.codebook_size=1024",
     "generator.codebook_size: is 1024 but the codec's (spectral_rvq) codebooks have 16 "
     "entries; set generator.codebook_size=16"),
    ("generator.condition_dim=64",
     "generator.condition_dim: is 64 but the fuser (maskvat) produces 32-wide conditioning; set "
     "generator.condition_dim=32"),
])
def test_a_generator_that_does_not_fit_its_codec_or_fuser_is_refused(write, override, message):
    assert refusal(write("base.yaml", BASE), [override]) == message


def test_a_generator_reading_a_conditioning_the_fuser_does_not_provide_is_refused(write):
    base = write("base.yaml", BASE)
    seq2seq = ("generator={plugin: maskvat_seq2seq, n_codebooks: 2, codebook_size: 16, "
               "condition_dim: 32, width: 32, layers: 1, heads: 2}")
    assert refusal(base, [seq2seq]).startswith(
        "fuser.context: the fuser (maskvat) provides no context conditioning, but the generator "
        "(maskvat_seq2seq) reads it; set fuser.context=true"
    )
    assert refusal("tiny", ["fuser.aligned=false"]) == (
        "fuser.aligned: the fuser (maskvat) provides no aligned conditioning, but the generator "
        "(maskvat_hybrid) reads it; set fuser.aligned=true (and train anew: fuser.weights=none)"
    )
    consistent(base, ["fuser.context=true"])  # providing more than is read is fine


def test_more_sampling_steps_than_codebooks_are_refused(write):
    assert refusal(write("base.yaml", BASE), ["sampling.steps=[4, 2, 1]"]) == (
        "sampling.steps: has 3 step counts but the generator decodes 2 codebooks; set "
        "sampling.steps=[4, 2] (one count per level; a shorter list repeats its last count)"
    )


def test_the_message_starts_with_the_source_of_the_key(write):
    path = write("base.yaml", BASE)
    try:
        recipe = load_recipe(path, ["sampling.steps=[4, 2, 1]"])
    except RecipeError as exc:  # validation runs the check: its source is the override
        assert str(exc).startswith("command line (sampling.steps=[4, 2, 1]): sampling.steps: ")
        return
    with pytest.raises(RecipeError, match=r"^set by sampling\.steps: sampling\.steps: has 3"):
        check_consistency(recipe, lambda key: f"set by {key}", default_registry())


# -- trained weights ------------------------------------------------------------------------------


def trained(write, slot: str, overrides=()) -> str:
    """The path of a weights file holding the state dict of ``slot`` of BASE, built for real."""
    recipe = load_recipe(write("base.yaml", BASE), overrides)
    path = Path(f"{slot}.safetensors").resolve()
    save_state(recipe.build(slot).state_dict(), path)
    return str(path)


def test_trained_weights_that_fit_the_options_pass(write):
    weights = [f"{slot}.weights={trained(write, slot)}" for slot in ("codec", "fuser", "generator")]
    consistent(write("base.yaml", BASE), weights)


def test_generator_weights_of_other_shapes_are_refused_with_the_first_mismatch(write):
    weights = trained(write, "generator")
    message = refusal(write("base.yaml", BASE), [
        f"generator.weights={weights}", "codec.n_codebooks=3", "generator.n_codebooks=3",
    ])
    assert message == (
        "generator.weights: generator.safetensors holds embed.weight as [34, 32], but generator "
        "maskvat_adaln built from these options has [51, 32]; set generator.weights=none to "
        "train anew, or set the options back to those it was trained with"
    )


def test_fuser_and_codec_weights_are_checked_too(write):
    fuser = trained(write, "fuser")
    assert refusal(write("base.yaml", BASE), [f"fuser.weights={fuser}", "fuser.context=true"]) == (
        "fuser.weights: fuser.safetensors has no tensor 'stream_embedding', which fuser maskvat "
        "built from these options has ([1, 32]); set fuser.weights=none to train anew, or set "
        "the options back to those it was trained with"
    )
    codec = trained(write, "codec")
    message = refusal(write("base.yaml", BASE), [f"codec.weights={codec}", "codec.codebook_size=8",
                                                 "generator.codebook_size=8"])
    assert message.startswith("codec.weights: codec.safetensors holds codebooks as [2, 16, 33], "
                              "but codec spectral_rvq built from these options has [2, 8, 33]")


def test_a_file_with_a_tensor_the_model_lacks_is_refused(write):
    fuser = trained(write, "fuser", ["fuser.context=true"])
    assert refusal(write("base.yaml", BASE), [f"fuser.weights={fuser}"]).startswith(
        "fuser.weights: fuser.safetensors holds a tensor 'context_norm.bias', which fuser "
        "maskvat built from these options does not have;"
    )


@pytest.mark.parametrize("overrides", [
    ["codec=encodec"],  # ${codec.n_codebooks} resolves to EnCodec's declared 8 codebooks of 1024
    ["codec=encodec", "generator.n_codebooks=8", "generator.codebook_size=1024"],
], ids=["interpolated", "written"])
def test_tiny_with_another_codec_is_refused_on_its_generator_weights(overrides):
    """The bundled generator was trained on 4 x 256 codes."""
    message = refusal("tiny", overrides)
    assert message.startswith("generator.weights: ")
    assert ("generator.safetensors holds embed.weight as [1028, 128], but generator "
            "maskvat_hybrid built from these options has [8200, 128]; set generator.weights=none "
            "to train anew") in message


@dataclass
class ValueBuiltConfig:
    weights: str = "none"


class ReadsValuesWhileBuilding(VisualEncoder):
    """Reads a tensor's value in its constructor, which the meta device cannot give."""

    def __init__(self, config: ValueBuiltConfig):
        super().__init__()
        self.fps = self.rate = 8.0
        self.frame_size, self.dim = None, 3
        self.scale = torch.nn.Parameter(torch.ones(3))
        self.gain = float(torch.ones(3).sum())  # .item() on meta raises

    def encode(self, frames, times):
        values = frames.mean(dim=(-1, -2)) * self.scale
        return FeatureSequence(values, rate=self.rate, start=float(times[0]))


def test_weights_checks_skip_what_cannot_be_built_on_the_meta_device_or_read(write, tmp_path):
    module = types.ModuleType("value_built")

    @hookimpl
    def v2a_register_components(register):
        register(ComponentSpec(kind="visual_encoder", name="value_built",
                               build=ReadsValuesWhileBuilding, config=ValueBuiltConfig,
                               state_dict_weights=True))

    module.v2a_register_components = v2a_register_components
    registry = Registry.from_environment()
    registry.register_module(module)
    wrong = tmp_path / "wrong.safetensors"
    save_state({"other": torch.zeros(2)}, wrong)
    base = write("base.yaml", BASE)
    consistent(base, ["visual_encoders.motion=value_built", "fuser.streams.motion=3",
                      f"visual_encoders.motion.weights={wrong}"], registry)
    # a missing or unreadable file is left to the real load, which names it
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    consistent(base, [f"generator.weights={tmp_path / 'missing.safetensors'}"])
    consistent(base, [f"generator.weights={tmp_path / 'junk.safetensors'}"])


def test_checking_trained_weights_imports_nothing_above_the_recipe_layer(tmp_path):
    """The consistency checks build on the meta device (:mod:`v2a.meta_device`) without the
    resource estimates or any engine: loading the tiny recipe (three trained weights files) with
    its weights checked imports none of those modules beyond what loading the plug-ins did. A
    fresh process, so that what the rest of the suite imported does not count."""
    import subprocess
    import sys

    script = ("import sys\n"
              "from v2a.registry import default_registry\n"
              "default_registry()\n"
              "before = set(sys.modules)\n"
              "from v2a.recipe import load_recipe\n"
              "load_recipe('tiny', check_weights=True)\n"
              "above = ('v2a.resources', 'v2a.train', 'v2a.training', 'v2a.cache', 'v2a.generate',"
              " 'v2a.features', 'v2a.sampler')\n"
              "print(sorted(m for m in set(sys.modules) - before if m.startswith(above)))\n"
              "print('v2a.meta_device' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "True"]  # checked on the meta device, and only so
