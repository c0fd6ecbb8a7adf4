"""Recipes: composition, overrides, interpolation, validation with one-sentence errors."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

from v2a.errors import RecipeError
from v2a.recipe import load_recipe, load_yaml

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


# --- interpolations resolve against each slot's effective options -----------------------------


def test_interpolation_sees_a_swapped_in_codecs_declared_codebooks():
    """EnCodec writes no n_codebooks (its bandwidth sets the count); it declares 8 at 6 kbps."""
    for swap in ("codec=encodec", "codec=components/codecs/encodec_24khz.yaml"):
        generator = load_recipe("maskvat_hybrid", [swap]).choice("generator").config
        assert (generator.n_codebooks, generator.codebook_size) == (8, 1024)
    tiny = load_recipe("tiny", ["codec=encodec", "generator.weights=none", "fuser.weights=none"])
    assert (tiny.choice("generator").config.n_codebooks,
            tiny.choice("generator").config.codebook_size) == (8, 1024)


def test_a_declared_property_wins_over_an_option_of_the_same_name():
    """DAC's option codebook_size: null means "the model's"; the property says 1024."""
    recipe = load_recipe("maskvat_hybrid", ["generator.codebook_size=${codec.codebook_size}"])
    assert recipe.choice("codec").config.codebook_size is None
    assert recipe.choice("generator").config.codebook_size == 1024
    assert recipe.as_data()["generator"]["codebook_size"] == 1024  # `recipe show` prints it


def test_interpolation_sees_defaults_and_properties_in_any_order(write, registry):
    top = write("top.yaml", """
        sampling: {seed: "${training.warmup_steps}"}
        training: {warmup_steps: "${training.steps}", out_dir: "runs/${.seed}_${audio_encoder.dim}"}
        reranker: {plugin: none, sample_rate: "${audio_encoder.sample_rate}"}
        audio_encoder: {plugin: mel, n_mels: "${visual_encoders.v.size[1]}"}
        visual_encoders: {v: {plugin: mean_colour, size: [8, 24]}}
    """)
    recipe = load_recipe(top, registry=registry)
    assert recipe.training.warmup_steps == recipe.sampling.seed == 100_000  # a section's default
    assert recipe.choice("reranker").config.sample_rate == 16000  # mel's default, not written
    assert recipe.choice("audio_encoder").config.n_mels == 24
    assert recipe.training.out_dir == "runs/0_24"  # text around interpolations: a string


def test_interpolation_syntax(write, registry):
    top = write("top.yaml", r"""
        training:
          steps: 40
          warmup_steps: "${oc.select:training.missing, 7}"
          out_dir: '\${literal}/${oc.decode:"[1, 2]"}'
          train_split: "${oc.dict.keys:visual_encoders}"
        visual_encoders: {a: {plugin: mean_colour, size: "${visual_encoders.b.size}"},
                          b: {plugin: mean_colour, size: [6, "${.0}"]}}
    """)
    with pytest.raises(RecipeError, match=r"training\.train_split: expected str, got a list"):
        load_recipe(top, registry=registry)
    recipe = load_recipe(top, ["training.train_split=${training.val_split}",
                               "visual_encoders.b.size=[4, '${.0}']"], registry=registry)
    assert recipe.training.warmup_steps == 7
    assert recipe.training.out_dir == "${literal}/[1, 2]"
    assert recipe.training.train_split == "val"
    assert recipe.choice("visual_encoders.a").config.size == [4, 4]


def test_evaluator_on_plain_data():
    """v2a.interpolation alone: lists of a mapping's keys and values, nested interpolations."""
    from v2a.interpolation import Evaluator, walk

    data = {"dims": {"a": 3, "b": "${.a}"}, "pick": "b", "chosen": "${dims.${pick}}",
            "keys": "${oc.dict.keys:dims}", "values": "${oc.dict.values:dims}"}
    evaluator = Evaluator(lambda key: (walk(data, key), False), allow_env=False, env_refusal="no",
                          decode=load_yaml, max_values=100, max_chars=100)
    assert evaluator.resolve(data, ()) == {**data, "dims": {"a": 3, "b": 3}, "chosen": 3,
                                           "keys": ["a", "b"], "values": [3, 3]}


INTERPOLATION_ERRORS = [
    # (recipe text, overrides, the whole message)
    ("training: {lr: '${training.lrr}'}\n", [],
     "bad.yaml: training.lr: ${training.lrr} names no value: training has no 'lrr'; did you mean "
     "'training.lr'?"),
    ("audio_encoder: mel\n", ["reranker={plugin: none, sample_rate: '${audio_encoder.sample_rat}'}"],
     "command line (reranker={plugin: none, sample_rate: '${audio_encoder.sample_rat}'}): "
     "reranker.sample_rate: ${audio_encoder.sample_rat} names no value: audio_encoder (mel) has "
     "no 'sample_rat'; did you mean 'audio_encoder.sample_rate'?"),
    ("reranker: {plugin: none, sample_rate: '${codec.sample_rate}'}\n", [],
     "bad.yaml: reranker.sample_rate: ${codec.sample_rate} names no value: the recipe has no codec"),
    ("training: {steps: '${training.warmup_steps}', warmup_steps: '${training.steps}'}\n", [],
     "bad.yaml: training.warmup_steps: ${training.steps} closes a cycle of interpolations "
     "(training.steps -> training.warmup_steps -> training.steps); write one of these values out"),
    ("audio_encoder: {plugin: mel, sample_rate: '${reranker.sample_rate}'}\n"
     "reranker: {plugin: none, sample_rate: '${audio_encoder.sample_rate}'}\n", [],
     "bad.yaml: audio_encoder.sample_rate: ${reranker.sample_rate} cannot be resolved: "
     "audio_encoder and reranker refer to each other in a cycle (audio_encoder.sample_rate -> "
     "${reranker.sample_rate}, reranker.sample_rate -> ${audio_encoder.sample_rate}); write one "
     "of these values out"),
    ("training: {out_dir: '${oc.create:{a: 1}}'}\n", [],
     "bad.yaml: training.out_dir: ${oc.create:{a: 1}} calls the resolver 'oc.create', which "
     "recipes do not offer; they offer oc.select, oc.dict.keys, oc.dict.values, oc.decode, oc.env"),
    ("training: {out_dir: '${training.steps'}\n", [],
     "bad.yaml: training.out_dir: '${training.steps' is not a valid interpolation: a '${' is not "
     "closed by '}'"),
]


@pytest.mark.parametrize("text, overrides, message", INTERPOLATION_ERRORS,
                         ids=["missing", "missing-option", "no-slot", "cycle", "slot-cycle",
                              "resolver", "syntax"])
def test_unresolvable_interpolations_are_one_sentence(write, registry, text, overrides, message):
    with pytest.raises(RecipeError) as info:
        load_recipe(write("bad.yaml", text), overrides, registry=registry)
    assert str(info.value) == message


def test_a_misspelt_plugin_in_a_swap_is_named_before_what_waits_for_it():
    for recipe in ("maskvat_hybrid", "tiny"):
        with pytest.raises(RecipeError) as info:
            load_recipe(recipe, ["codec=encodek"])
        assert str(info.value) == ("command line (codec=encodek): codec.plugin: no codec plug-in "
                                   "is named 'encodek'; did you mean 'encodec'? (see `v2a plugins`)")


# --- resolvers that read outside the recipe ----------------------------------------------------


def test_the_environment_is_read_only_when_allowed(write, registry, monkeypatch):
    monkeypatch.setenv("V2A_TEST_SECRET", "hunter2")
    monkeypatch.delenv("V2A_RECIPE_ALLOW_ENV", raising=False)
    top = write("top.yaml", "training: {out_dir: 'runs/${oc.env:V2A_TEST_SECRET}'}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(top, registry=registry)
    assert str(info.value) == (
        "top.yaml: training.out_dir: ${oc.env:V2A_TEST_SECRET} reads the environment variable "
        "V2A_TEST_SECRET, which a recipe may read only when you allow it: pass --allow-env or set "
        "V2A_RECIPE_ALLOW_ENV=1")
    with pytest.raises(RecipeError, match="reads the environment variable HOME"):
        load_recipe(write("ok.yaml", "name: x\n"), ["training.out_dir=${oc.env:HOME}"], registry=registry)
    assert load_recipe(top, registry=registry, allow_env=True).training.out_dir == "runs/hunter2"
    monkeypatch.setenv("V2A_RECIPE_ALLOW_ENV", "1")
    assert load_recipe(top, registry=registry).training.out_dir == "runs/hunter2"
    with pytest.raises(RecipeError, match="reads the environment"):
        load_recipe(top, registry=registry, allow_env=False)
    unset = write("unset.yaml", "training: {out_dir: '${oc.env:V2A_TEST_UNSET_XYZ,fallback}'}\n")
    assert load_recipe(unset, registry=registry).training.out_dir == "fallback"


def test_recipes_use_no_global_omegaconf_resolver(write, registry):
    """A resolver someone registered with OmegaConf in the process is not reachable from a
    recipe, and loading a recipe leaves OmegaConf's registry as it was (v2a does not depend on
    OmegaConf, but a user's process may well import it)."""
    OmegaConf = pytest.importorskip("omegaconf").OmegaConf

    with warnings.catch_warnings():  # OmegaConf 2.4 renames it; 2.3 has only this name
        warnings.simplefilter("ignore", UserWarning)
        OmegaConf.register_new_resolver("v2a_test_probe", lambda: "reached")
    try:
        before = {name: OmegaConf.has_resolver(name) for name in ("oc.env", "oc.decode", "v2a_test_probe")}
        with pytest.raises(RecipeError, match="calls the resolver 'v2a_test_probe', which recipes do not offer"):
            load_recipe(write("r.yaml", "training: {out_dir: '${v2a_test_probe:}'}\n"), registry=registry)
        load_recipe(write("ok.yaml", "training: {steps: 3, warmup_steps: '${training.steps}'}\n"),
                    registry=registry)
        assert {name: OmegaConf.has_resolver(name) for name in before} == before
        assert OmegaConf.create({"a": "${v2a_test_probe:}"}).a == "reached"
    finally:
        OmegaConf.clear_resolver("v2a_test_probe")


# --- section ranges are checked at load time, at the key -----------------------------------------

RANGES = [
    ("training.steps=0", "training.steps: must be at least 1, got 0"),
    ("training.batch_size=0", "training.batch_size: must be at least 1, got 0"),
    ("training.grad_accum=0", "training.grad_accum: must be at least 1, got 0"),
    ("training.ema=1.0", "training.ema: must lie in [0, 1), got 1.0"),
    ("training.ema=-0.1", "training.ema: must lie in [0, 1), got -0.1"),
    ("training.lr=0", "training.lr: must be positive, got 0.0"),
    ("training.checkpoint_every=0", "training.checkpoint_every: must be at least 1, got 0"),
    ("training.keep_checkpoints=0", "training.keep_checkpoints: must be at least 1, got 0"),
    ("training.log_every=0", "training.log_every: must be at least 1, got 0"),
    ("training.eval_every=-1", "training.eval_every: must not be negative, got -1"),
    ("training.sample_every=-5", "training.sample_every: must not be negative, got -5"),
    ("training.warmup_steps=-1", "training.warmup_steps: must not be negative, got -1"),
    ("training.lr_min=-1e-5", "training.lr_min: must not be negative, got -1e-05"),
    ("training.lr_min=0.5", "training.lr_min: must not exceed training.lr (0.0001), got 0.5"),
    ("training.condition_dropout=1.5", "training.condition_dropout: must lie in [0, 1], got 1.5"),
    ("training.aux_regression_weight=-1", "training.aux_regression_weight: must not be negative, got -1.0"),
    ("training.aux_contrastive_weight=-1", "training.aux_contrastive_weight: must not be negative, got -1.0"),
    ("training.num_sample_videos=-1", "training.num_sample_videos: must not be negative, got -1"),
    ("training.weight_decay=-1", "training.weight_decay: must not be negative, got -1.0"),
    ("training.grad_clip=-1", "training.grad_clip: must not be negative, got -1.0"),
    ("sampling.steps=[4, 0]", "sampling.steps[1]: must be at least 1, got 0"),
    ("sampling.steps=[]", "sampling.steps: must not be empty"),
    ("sampling.temperature=-1", "sampling.temperature: must not be negative, got -1.0"),
    ("sampling.top_k=0", "sampling.top_k: must be at least 1, got 0"),
    ("sampling.top_p=0", "sampling.top_p: must lie in (0, 1], got 0.0"),
    ("sampling.top_p=1.5", "sampling.top_p: must lie in (0, 1], got 1.5"),
    ("sampling.candidates=0", "sampling.candidates: must be at least 1, got 0"),
    ("sampling.cfg_scale=-1", "sampling.cfg_scale: must not be negative, got -1.0"),
    ("data.clip_seconds=0", "data.clip_seconds: must be positive, got 0.0"),
    ("data.num_workers=-1", "data.num_workers: must not be negative, got -1"),
]


@pytest.mark.parametrize("override, message", RANGES, ids=[r[0] for r in RANGES])
def test_section_ranges_are_checked_at_load_time(write, registry, override, message):
    with pytest.raises(RecipeError) as info:
        load_recipe(write("r.yaml", "name: r\n"), [override], registry=registry)
    assert str(info.value) == f"command line ({override}): {message}"


def test_a_range_names_the_file_and_the_list_item(write, registry):
    with pytest.raises(RecipeError) as info:
        load_recipe(write("r.yaml", "sampling: {steps: [8, 4, 0]}\n"), registry=registry)
    assert str(info.value) == "r.yaml: sampling.steps[2]: must be at least 1, got 0"
    assert load_recipe(write("ok.yaml", "sampling: {top_k: null, top_p: 1.0}\n"),
                       registry=registry).sampling.top_p == 1.0  # null is not checked; bounds included


def test_sections_check_their_ranges_outside_recipes_too():
    from v2a.recipe import SamplingConfig, TrainingConfig
    from v2a.schema import FieldError

    with pytest.raises(FieldError, match=r"^steps\[0\]: must be at least 1, got 0$"):
        SamplingConfig(steps=[0])
    with pytest.raises(FieldError, match="^lr_min: must not exceed"):
        TrainingConfig(lr=1e-4, lr_min=1e-3)


def test_the_reference_documents_every_range():
    """The `allowed` column of docs/recipes.md says what the bounds of each field say."""
    import re

    from v2a.recipe import SECTIONS
    from v2a.schema import BOUNDS, fields_of

    text = (Path(__file__).resolve().parents[1] / "docs" / "recipes.md").read_text()
    for section, schema in SECTIONS.items():
        part = re.split(r"\n#+ ", text.split(f"### `{section}`", 1)[1], maxsplit=1)[0]
        allowed = dict(re.findall(r"^\| `(\w+)` \| [^|]*(?:\\\|[^|]*)* \| [^|]* \| ([^|]*) \|", part, re.M))
        for name, (_, f) in fields_of(schema).items():
            bounds = f.metadata.get(BOUNDS)
            documented = allowed[name].strip()
            if bounds is None:
                assert documented == "", f"{section}.{name} has no bounds"
            else:
                assert documented.startswith(bounds.short()), f"{section}.{name}: {documented!r}"


# --- base recipes and names ----------------------------------------------------------------------


def test_base_recipes_are_marked_and_refused_for_running(write, registry):
    from v2a.recipe import require_runnable

    base = load_recipe("maskvat_base")
    assert base.base and load_recipe("small/maskvat_small").base
    with pytest.raises(RecipeError) as info:
        require_runnable(base)
    assert str(info.value) == (
        f"{base.source} is a base recipe, meant to be extended (it has no fuser and "
        "generator); run maskvat_adaln, maskvat_hybrid, maskvat_hybrid_synchformer or "
        "maskvat_seq2seq instead")
    assert base.source.endswith("recipes/maskvat_base.yaml")
    hybrid = load_recipe("maskvat_hybrid")
    assert not hybrid.base  # never inherited
    require_runnable(hybrid)
    write("mine.yaml", "base: true\naudio_encoder: mel\n")
    child = write("child.yaml", "extends: mine.yaml\n")
    assert not load_recipe(child, registry=registry).base
    with pytest.raises(RecipeError, match=r"mine\.yaml is a base recipe, meant to be extended "
                                          r"\(it has no fuser and generator\); run child\.yaml instead"):
        require_runnable(load_recipe("mine.yaml", registry=registry))
    with pytest.raises(RecipeError, match="^bad.yaml: base: must be true or false"):
        load_recipe(write("bad.yaml", "base: yes please\n"), registry=registry)


def test_a_unique_file_name_finds_a_shipped_recipe(tmp_path, monkeypatch):
    found = load_recipe("maskvat_hybrid_small")
    assert found.path == Path(__file__).resolve().parents[1] / "recipes" / "small" / "maskvat_hybrid_small.yaml"
    shipped = tmp_path / "shipped"
    for folder in ("a", "b"):
        (shipped / folder).mkdir(parents=True)
        (shipped / folder / "twin.yaml").write_text("name: twin\n")
    monkeypatch.setattr("v2a.recipe.files.builtin_recipes_dir", lambda: shipped)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as info:
        load_recipe("twin")
    assert str(info.value) == ("recipe name 'twin' is ambiguous: shipped/a/twin.yaml and "
                               "shipped/b/twin.yaml both have it; give the path of the one you mean")
    assert load_recipe("a/twin").name == "twin"


def test_recipe_list_shows_every_shipped_recipe_and_marks_the_base_ones(capsys):
    from v2a.cli import main

    assert main(["recipe", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines if not line.startswith("[")}
    assert set(rows) == {str(p.relative_to(RECIPES).with_suffix("")) for p in SHIPPED_RECIPES}
    assert "small/maskvat_hybrid_small" in rows
    for name, row in rows.items():
        base = name in ("maskvat_base", "small/maskvat_small")
        assert ("[base]" in row) == base, row
        assert load_recipe(name).description in row


RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SHIPPED_RECIPES = [p for p in RECIPES.rglob("*.yaml") if "components" not in p.relative_to(RECIPES).parts
                   and not (p.parent != RECIPES and (p.parent / "recipe.yaml").is_file())]  # model folders


# --- recipes from strangers: size and depth limits ----------------------------------------------


def alias_bomb(levels: int) -> str:
    """A YAML document of about 100 bytes per level whose aliases expand to 10**levels values."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_expands(write, tmp_path):
    """9 levels would expand to 10**9 values: anything that expands it never finishes. Run in a
    child process so that the code as it was (which expanded it) fails by the guard's timeout
    rather than hanging the suite; the refusal itself takes milliseconds."""
    import subprocess
    import sys

    bomb = write("bomb.yaml", alias_bomb(9))
    assert bomb.stat().st_size < 1024
    script = ("from v2a.recipe import load_recipe\n"
              "try:\n    load_recipe('bomb.yaml')\nexcept Exception as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.strip() == ("bomb.yaml expands to more than 10000 values (YAML aliases?); "
                                   "recipes are limited to 10000")
    with pytest.raises(RecipeError, match=r"^command line \(training\.x=\{l0: &l0.*the value "
                                          r"expands to more than 10000 values"):
        load_recipe(write("r.yaml", "name: r\n"),
                    ["training.x={" + alias_bomb(9).replace("\n", ", ").rstrip(", ") + "}"])


def test_deep_nesting_and_large_files_are_refused(write, registry):
    nested = write("deep.yaml", "training: " + "{a: " * 100 + "1" + "}" * 100 + "\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(nested, registry=registry)
    assert str(info.value) == ("deep.yaml nests mappings and lists more than 32 levels deep; "
                               "recipes are limited to 32")
    with pytest.raises(RecipeError, match=r"the key nests mappings and lists more than 32"):
        load_recipe(write("r.yaml", "name: r\n"), ["a." * 40 + "b=1"], registry=registry)
    big = write("big.yaml", "description: " + "x" * 300_000 + "\n")
    with pytest.raises(RecipeError, match=r"^big\.yaml is larger than 256 KiB; recipes are limited to 256 KiB$"):
        load_recipe(big, registry=registry)
    looped = write("loop.yaml", "name: &n [*n]\n")
    with pytest.raises(RecipeError, match="a recipe cannot contain itself"):
        load_recipe(looped, registry=registry)


def test_interpolations_cannot_grow_a_value_past_the_limits(write, registry):
    doubling = ["training:", "  s0: xxxxxxxxxxxxxxxx"]
    doubling += [f"  s{i}: '${{.s{i - 1}}}${{.s{i - 1}}}'" for i in range(1, 17)]  # s15: 2**19
    with pytest.raises(RecipeError, match=r"^strings\.yaml: training\.s\d+: its interpolations "
                                          r"expand to more than 262144 characters"):
        load_recipe(write("strings.yaml", "\n".join(doubling) + "\n"), registry=registry)
    lists = ["training:", "  s0: [1, 2]"]
    lists += [f"  s{i}: ['${{..s{i - 1}}}', '${{..s{i - 1}}}']" for i in range(1, 17)]  # 2**17
    with pytest.raises(RecipeError, match=r"^lists\.yaml: training: its interpolations expand to "
                                          r"more than 10000 values"):
        load_recipe(write("lists.yaml", "\n".join(lists) + "\n"), registry=registry)
    chain = ["training:"] + [f"  s{i}: '${{.s{i + 1}}}'" for i in range(100)] + ["  s100: 1"]
    with pytest.raises(RecipeError, match=r"is reached through more than 64 interpolations in a row"):
        load_recipe(write("chain.yaml", "\n".join(chain) + "\n"), registry=registry)


# --- overrides are recorded; random weights everywhere --------------------------------------------


def test_the_overrides_are_recorded_as_given(write, registry):
    given = ["training.steps=5", "audio_encoder=mel", "sampling.steps=[2, 1]"]
    recipe = load_recipe(write("r.yaml", "name: r\n"), given, registry=registry)
    assert recipe.overrides == tuple(given)
    assert load_recipe(write("s.yaml", "name: s\n"), registry=registry).overrides == ()


def test_random_weights_sets_every_weights_option_to_none():
    recipe = load_recipe("maskvat_hybrid", random_weights=True)
    found = {slot: choice.config.weights for slot, choice in recipe.all_components()
             if hasattr(choice.config, "weights")}
    assert "reranker.audio_encoder" in found and "visual_encoders.s3d" in found
    assert set(found.values()) == {"none"}
    assert recipe.as_data()["reranker"]["audio_encoder"]["weights"] == "none"
    as_written = dict(load_recipe("maskvat_hybrid").all_components())
    assert as_written["reranker.audio_encoder"].config.weights == "checkpoints/BEATs_iter3_plus_AS2M.pt"
    tiny = load_recipe("tiny", random_weights=True)
    assert tiny.choice("codec").config.weights == "none"
    assert "weights" not in tiny.choice("visual_encoders.motion").options  # no such option
    assert tiny.as_data()["visual_encoders"] == load_recipe("tiny").as_data()["visual_encoders"]


def test_a_tilde_override_removes_a_key(capsys):
    from v2a.cli import main

    # dropping a stream needs the fuser to stop reading it: ~KEY takes a key out of a mapping
    recipe = load_recipe("maskvat_hybrid", ["visual_encoders.s3d=null", "~fuser.streams.s3d"])
    assert recipe.visual_streams == ["clip"] and recipe.choice("fuser").config.streams == {"clip": 512}
    back = load_recipe("tiny", ["~sampling.cfg_scale"])  # an option back to its default
    assert back.sampling.cfg_scale == load_recipe("tiny", ["sampling.cfg_scale=3.0"]).sampling.cfg_scale
    for bad, words in (("~fuser.streams.nope", "removes a key, but the recipe has no 'fuser.streams.nope'"),
                       ("~fuser.streams.s3d=1", "~KEY takes a dotted key and no value")):
        with pytest.raises(RecipeError, match=re.escape(words)):
            load_recipe("maskvat_hybrid", [bad])
    # on the command line, after options too
    assert main(["recipe", "check", "maskvat_hybrid", "visual_encoders.s3d=null", "--verbose",
                 "~fuser.streams.s3d"]) == 0
    assert "ok (6 components)" in capsys.readouterr().out
