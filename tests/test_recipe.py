"""Recipes: composition, overrides, interpolation, validation with one-sentence errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from v2a.errors import RecipeError
from v2a.recipe import load_recipe


@pytest.fixture
def write(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # errors name files relative to the working directory

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    return write


BASE = """
    name: base
    description: the base recipe
    audio_encoder: {plugin: mel, n_mels: 32}
    visual_encoders:
      colour: {plugin: mean_colour, fps: 4}
      grey: {plugin: mean_colour, space: grey}
    reranker: none
    training: {lr: 3.0e-4, steps: 10}
    sampling: {steps: [4, 2]}
"""


def test_extends_merges_key_by_key_and_keeps_its_own_name(write, registry):
    write("base.yaml", BASE)
    child = write("child.yaml", """
        extends: base.yaml
        audio_encoder: {hop_length: 128}
        training: {steps: 20}
    """)
    recipe = load_recipe(child, registry=registry)
    assert recipe.name == "child" and recipe.description == ""
    mel = recipe.choice("audio_encoder").config
    assert (mel.n_mels, mel.hop_length, mel.n_fft) == (32, 128, 1024)
    assert (recipe.training.lr, recipe.training.steps) == (3e-4, 20)
    assert recipe.sampling.steps == [4, 2]
    assert recipe.visual_streams == ["colour", "grey"]
    assert recipe.choice("visual_encoders.colour").config.fps == 4.0


def test_extends_a_list_in_order(write, registry):
    write("a.yaml", "training: {lr: 0.1, seed: 1}\n")
    write("b.yaml", "training: {lr: 0.2}\n")
    top = write("top.yaml", "extends: [a.yaml, b.yaml]\n")
    recipe = load_recipe(top, registry=registry)
    assert (recipe.training.lr, recipe.training.seed) == (0.2, 1)


def test_component_yaml_is_pulled_relative_to_the_recipe(write, registry):
    write("components/encoders/small_mel.yaml", "plugin: mel\nn_mels: 16\nhop_length: 160\n")
    top = write("top.yaml", "audio_encoder: components/encoders/small_mel.yaml\n")
    mel = load_recipe(top, registry=registry).choice("audio_encoder").config
    assert (mel.n_mels, mel.hop_length) == (16, 160)


def test_weights_starting_with_dot_are_relative_to_the_file_that_sets_them(write, tmp_path):
    write("models/parts/codec.yaml", "plugin: spectral_rvq\nweights: ../codec.safetensors\n")
    top = write("models/top.yaml", """
        codec: parts/codec.yaml
        visual_encoders: {v: {plugin: colour_motion}}
    """)
    here = load_recipe(top).choice("codec").config.weights
    assert Path(here) == (tmp_path / "models" / "codec.safetensors").resolve()
    inline = write("models/inline.yaml", "codec: {plugin: spectral_rvq, weights: ./w/c.safetensors}\n")
    assert Path(load_recipe(inline).choice("codec").config.weights) == (
        tmp_path / "models" / "w" / "c.safetensors").resolve()
    # other relative paths (and overrides) stay relative to the working directory
    plain = write("models/plain.yaml", "codec: {plugin: spectral_rvq, weights: c.safetensors}\n")
    assert load_recipe(plain).choice("codec").config.weights == "c.safetensors"
    assert load_recipe(top, ["codec.weights=./x.safetensors"]).choice("codec").config.weights == (
        "./x.safetensors")


def test_changing_the_plugin_replaces_the_slot(write, registry):
    write("base.yaml", "visual_encoders: {v: {plugin: mean_colour, space: grey}}\n")
    top = write("top.yaml", "extends: base.yaml\nreranker: {plugin: none, sample_rate: 8000}\n")
    recipe = load_recipe(top, ["reranker.sample_rate=16000"], registry=registry)
    assert recipe.choice("reranker").config.sample_rate == 16000
    # mean_colour options must not leak into another plug-in of the same kind, and back
    swapped = load_recipe(top, ["visual_encoders.v=mean_colour"], registry=registry)
    assert swapped.choice("visual_encoders.v").config.space == "rgb"


def test_overrides_parse_yaml_values_and_can_drop_a_stream(write, registry):
    write("base.yaml", BASE)
    recipe = load_recipe(
        write("top.yaml", "extends: base.yaml\n"),
        ["sampling.steps=[8, 4, 2]", "sampling.top_k=50", "sampling.top_p=null",
         "training.precision=bf16", "visual_encoders.grey=null", "name=renamed",
         "visual_encoders.colour.size=[16,24]"],
        registry=registry,
    )
    assert recipe.sampling.steps == [8, 4, 2] and recipe.sampling.top_k == 50
    assert recipe.sampling.top_p is None and recipe.training.precision == "bf16"
    assert recipe.visual_streams == ["colour"] and recipe.name == "renamed"
    assert recipe.choice("visual_encoders.colour").config.size == [16, 24]


def test_exponent_floats_without_a_dot_are_floats(write, registry):
    """YAML 1.1 reads `1e-3` as a string; recipes read it as YAML 1.2 does, a float."""
    top = write("top.yaml", "training: {lr: 1e-3, weight_decay: 2E-5}\n")
    recipe = load_recipe(top, ["training.lr_min=1e-6"], registry=registry)
    assert (recipe.training.lr, recipe.training.weight_decay, recipe.training.lr_min) == (1e-3, 2e-5, 1e-6)


def test_override_adds_a_stream_to_a_recipe_without_any(write, registry):
    write("components/grey.yaml", "plugin: mean_colour\nspace: grey\n")
    top = write("top.yaml", "name: top\n")
    recipe = load_recipe(top, ["visual_encoders.a=mean_colour",
                               "visual_encoders.b=components/grey.yaml"], registry=registry)
    assert recipe.visual_streams == ["a", "b"]
    assert recipe.choice("visual_encoders.b").config.space == "grey"


def test_interpolation_is_resolved(write, registry):
    top = write("top.yaml", """
        training: {steps: 40, warmup_steps: "${training.steps}"}
        reranker: {plugin: none, sample_rate: "${audio_encoder.sample_rate}"}
        audio_encoder: {plugin: mel, sample_rate: 22050}
    """)
    recipe = load_recipe(top, registry=registry)
    assert recipe.training.warmup_steps == 40
    assert recipe.choice("reranker").config.sample_rate == 22050


def test_show_output_loads_back_to_the_same_recipe(write, registry):
    write("base.yaml", BASE)
    recipe = load_recipe(write("top.yaml", "extends: base.yaml\n"), registry=registry)
    again = load_recipe(write("shown.yaml", recipe.to_yaml()), registry=registry)
    assert again.as_data() == {**recipe.as_data(), "name": "top"}


def test_builtin_component_build(write, registry):
    recipe = load_recipe(write("r.yaml", "audio_encoder: {plugin: mel, n_mels: 20}\n"), registry=registry)
    encoder = recipe.build("audio_encoder", registry)
    assert encoder.dim == 20
    with pytest.raises(RecipeError, match="no codec"):
        recipe.build("codec", registry)


def test_nested_components_are_validated_and_built(write, registry):
    top = write("top.yaml", "reranker: {plugin: loudest, audio_encoder: {plugin: mel, n_mels: 4}}\n")
    recipe = load_recipe(top, registry=registry)
    shown = recipe.as_data()["reranker"]["audio_encoder"]
    assert shown["plugin"] == "mel" and shown["n_mels"] == 4 and shown["hop_length"] == 256
    reranker = recipe.build("reranker", registry)
    assert reranker.audio_encoder.dim == 4
    scores = reranker.score(torch.randn(2, 3, 1, 4000), {})
    assert scores.shape == (2, 3)
    default = load_recipe(write("d.yaml", "reranker: loudest\n"), registry=registry)
    assert default.as_data()["reranker"]["audio_encoder"]["n_mels"] == 8
    with pytest.raises(RecipeError, match=r"reranker\.audio_encoder\.n_melz: not an option of audio_encoder 'mel'"):
        load_recipe(top, ["reranker.audio_encoder.n_melz=3"], registry=registry)
    with pytest.raises(RecipeError, match=r"reranker\.audio_encoder\.plugin: no audio_encoder plug-in is named 'mle'"):
        load_recipe(top, ["reranker.audio_encoder=mle"], registry=registry)


# --- errors: one sentence naming the file, the key and the closest choices -------------------

ERRORS = [
    # (recipe text, overrides, expected file, expected fragments)
    ("audio_encoder: {plugin: mel, n_melz: 3}\n", [], "bad.yaml",
     ["audio_encoder.n_melz", "not an option of audio_encoder 'mel'", "did you mean 'n_mels'"]),
    ("trainng: {lr: 1.0}\n", [], "bad.yaml", ["trainng", "did you mean 'training'"]),
    ("training: {lr: fast}\n", [], "bad.yaml", ["training.lr", "expected float", "'fast'"]),
    ("training: {steps: 1.5}\n", [], "bad.yaml", ["training.steps", "expected int"]),
    ("training: {precision: bf61}\n", [], "bad.yaml", ["training.precision", "did you mean 'bf16'"]),
    ("reranker: nnoe\n", [], "bad.yaml", ["reranker.plugin", "no reranker plug-in", "did you mean 'none'"]),
    ("audio_encoder: {n_mels: 3}\n", [], "bad.yaml", ["audio_encoder.plugin", "is required"]),
    ("visual_encoders: [a, b]\n", [], "bad.yaml", ["visual_encoders", "mapping of stream names"]),
    ("sampling: {steps: [4, two]}\n", [], "bad.yaml", ["sampling.steps[1]", "expected int"]),
    ("audio_encoder: mel\n", ["audio_encoder.n_fft=big"], "command line (audio_encoder.n_fft=big)",
     ["audio_encoder.n_fft", "expected int"]),
    ("reranker: none\n", ["reranker=nothing"], "command line (reranker=nothing)",
     ["no reranker plug-in is named 'nothing'"]),
    ("name: x\n", ["trainig.lr=1"], "command line", ["did you mean 'training'"]),
    ("name: x\n", ["justakey"], "override 'justakey'", ["key=value"]),
    ("training: {lr: '${nope.missing}'}\n", [], "bad.yaml", ["training.lr"]),
]


@pytest.mark.parametrize("text, overrides, where, fragments", ERRORS, ids=[e[3][0] for e in ERRORS])
def test_invalid_recipes_fail_with_one_sentence(write, registry, text, overrides, where, fragments):
    with pytest.raises(RecipeError) as info:
        load_recipe(write("bad.yaml", text), overrides, registry=registry)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(where) or where in message
    for fragment in fragments:
        assert fragment in message


def test_error_names_the_file_that_set_the_key(write, registry):
    write("base.yaml", "audio_encoder: {plugin: mel, hop_lenght: 3}\n")
    with pytest.raises(RecipeError, match=r"^base\.yaml: audio_encoder\.hop_lenght"):
        load_recipe(write("child.yaml", "extends: base.yaml\n"), registry=registry)


def test_a_configs_own_check_is_blamed_on_the_latest_source(write, registry):
    write("base.yaml", "visual_encoders: {v: {plugin: mean_colour, fps: 4}}\n")
    child = write("child.yaml", "extends: base.yaml\nvisual_encoders: {v: {space: grey}}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(child, ["visual_encoders.v.fps=-1"], registry=registry)
    assert str(info.value) == (
        "command line (visual_encoders.v.fps=-1): visual_encoders.v: fps must be positive, got -1.0"
    )


def test_file_errors(write, registry, tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml", registry=registry)
    with pytest.raises(RecipeError, match="syntax.yaml is not valid YAML at line 3"):
        load_recipe(write("syntax.yaml", "a: 1\nb: [1, 2\n"), registry=registry)
    with pytest.raises(RecipeError, match="must hold a mapping"):
        load_recipe(write("list.yaml", "- 1\n- 2\n"), registry=registry)
    write("x.yaml", "extends: y.yaml\n")
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(write("y.yaml", "extends: x.yaml\n"), registry=registry)
    with pytest.raises(RecipeError, match="has no 'plugin' key"):
        write("comp.yaml", "n_mels: 3\n")
        load_recipe(write("top.yaml", "audio_encoder: comp.yaml\n"), registry=registry)


def test_a_recipe_cannot_run_code(write, registry, tmp_path):
    marker = tmp_path / "pwned"
    text = f"name: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(write("evil.yaml", text), registry=registry)
    assert not marker.exists()
    # plug-ins are reached by registered name only; an import path is just an unknown name
    with pytest.raises(RecipeError, match="no reranker plug-in is named 'os:system'"):
        load_recipe(write("path.yaml", "reranker: {plugin: 'os:system'}\n"), registry=registry)
