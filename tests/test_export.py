"""`v2a export RUN -o DIR`: a finished training run as a self-contained model folder (weights,
recipe.yaml with ./ weights pinned by sha256, a model card), which `--recipe DIR` runs exactly as
`--checkpoint RUN` does; the refusals (unfinished run, non-empty folder, overlapping folders);
and the bundled tiny model as such a folder, agreeing with recipes/tiny.yaml."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.media_fixtures import write_video
from tests.test_train import MemoryClips, recipe
from v2a.cli import main
from v2a.evaluate.report import markdown_table
from v2a.files import is_temporary
from v2a.media import load_audio
from v2a.recipe import build_frozen, load_recipe, read_yaml, shipped_recipes
from v2a.training import train
from v2a.weights import parse_weights, save_state

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny"
#: the real `v2a evaluate` results of the bundled tiny model (docs/results.md's held-out table)
TINY_SCORES = TINY / "results.json"
FAST = ["sampling.steps=[1]"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished 2-step run of the small Hybrid whose codec weights are a local file outside
    the run (the randomly initialised DAC, saved), as a fitted codec would be."""
    root = tmp_path_factory.mktemp("export_run")
    codec = build_frozen(recipe().choice("codec"))
    save_state(codec.state_dict(), root / "dac.safetensors")
    out = root / "run"
    codec_file = f"codec.weights={root / 'dac.safetensors'}"
    train(recipe("training.steps=2", "training.lr=0.01", codec_file),
          out_dir=out, train_data=MemoryClips(4), quiet=True)
    return out


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "model"
    assert main(["export", str(run), "-o", str(out), "--scores", str(TINY_SCORES),
                 "--licence", "Apache-2.0", "--name", "small_hybrid"]) == 0
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", seconds=1.0, fps=8.0,
                       width=32, height=32)


def test_the_folder_holds_the_weights_a_pinned_relative_recipe_and_a_card(run, exported):
    assert sorted(p.name for p in exported.iterdir()) == [
        "README.md", "codec.safetensors", "fuser.safetensors", "generator.safetensors",
        "recipe.yaml", "results.json"]
    for name in ("fuser.safetensors", "generator.safetensors"):  # the run's exports, as they are
        assert (exported / name).read_bytes() == (run / name).read_bytes()
    codec = (run.parent / "dac.safetensors").read_bytes()  # a local file outside the run: copied in
    assert (exported / "codec.safetensors").read_bytes() == codec
    raw = read_yaml(exported / "recipe.yaml")
    for slot in ("codec", "fuser", "generator"):
        assert raw[slot]["weights"] == (f"./{slot}.safetensors "
                                        f"sha256:{sha256(exported / f'{slot}.safetensors')}")
    assert raw["visual_encoders"]["clip"]["weights"] == "none"  # none stays none
    assert raw["name"] == "small_hybrid" and raw["training"]["steps"] == 2  # training kept

    card = (exported / "README.md").read_text()
    meta = front_matter(card)
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "v2a"
    assert {"v2a", "video-to-audio", "maskvat_hybrid", "dac"} <= set(meta["tags"])
    assert "pipeline_tag" not in meta  # the Hub has no video-to-audio task
    assert "# small_hybrid" in card and "| generator | maskvat_hybrid |" in card
    assert "2 steps of the 2 its recipe asks for" in card and "4 training clips" in card
    tiny_scores = json.loads(TINY_SCORES.read_text())
    assert markdown_table(tiny_scores).strip() in card  # the scores are evaluate's own table
    assert "v2a generate --recipe hf://OWNER/NAME video.mp4" in card
    assert (exported / "results.json").read_bytes() == TINY_SCORES.read_bytes()


def test_generating_from_the_moved_folder_gives_the_run_s_audio(run, exported, video, tmp_path,
                                                                capsys):
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(exported, moved)  # relative weights: the folder works wherever it is
    assert main(["generate", "--recipe", str(moved), str(video), "-o", str(tmp_path / "a"),
                 "--seed", "3", *FAST]) == 0, capsys.readouterr().err
    assert main(["generate", "--recipe", str(run / "recipe.yaml"), "--checkpoint", str(run),
                 str(video), "-o", str(tmp_path / "b"), "--seed", "3", *FAST]) == 0
    rate = load_recipe(moved).components["codec"].properties["sample_rate"]
    a = load_audio(tmp_path / "a" / "clip.wav", sample_rate=rate)
    b = load_audio(tmp_path / "b" / "clip.wav", sample_rate=rate)
    assert torch.equal(a, b)  # the same weights and seed: the same computation, bit for bit


def test_a_dtype_casts_the_weights_and_the_pins_follow(run, tmp_path):
    out = tmp_path / "half"
    assert main(["export", str(run), "-o", str(out), "--dtype", "bfloat16",
                 "--dataset", "acme/synth-sync"]) == 0
    fuser = load_file(str(out / "fuser.safetensors"))
    trained = load_file(str(run / "fuser.safetensors"))
    assert all(v.dtype == torch.bfloat16 for v in fuser.values())
    assert all(torch.equal(fuser[k], v.to(torch.bfloat16)) for k, v in trained.items())
    weights = read_yaml(out / "recipe.yaml")["fuser"]["weights"]
    assert parse_weights(weights).sha256 == sha256(out / "fuser.safetensors")
    meta = front_matter((out / "README.md").read_text())
    assert meta["license"] == "other" and meta["datasets"] == ["acme/synth-sync"]  # no --licence
    load_recipe(out)


def test_an_unfinished_run_is_refused_naming_what_to_run(run, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "generator.safetensors").unlink()
    assert main(["export", str(unfinished), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert "has no generator.safetensors" in err and "--resume" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_not_a_run_is_refused(tmp_path, capsys):
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "out")]) == 1
    assert "is not a training run folder" in capsys.readouterr().err


def test_a_non_empty_folder_is_kept_unless_force_replaces_it(run, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["export", str(run), "-o", str(out)]) == 1
    assert "is not an empty folder" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert main(["export", str(run), "-o", str(out), "--force"]) == 0
    assert not (out / "notes.txt").exists() and (out / "recipe.yaml").is_file()
    assert not [p for p in tmp_path.iterdir() if is_temporary(p)]  # written beside, renamed


def test_an_export_folder_inside_the_run_is_refused(run, capsys):
    assert main(["export", str(run), "-o", str(run / "model"), "--force"]) == 1
    assert "overlaps the run" in capsys.readouterr().err
    assert not (run / "model").exists()


def test_a_folder_without_a_recipe_is_refused_as_a_recipe(tmp_path, capsys):
    assert main(["recipe", "show", str(tmp_path)]) == 2
    assert "has no recipe.yaml" in capsys.readouterr().err


def test_a_folder_named_like_a_shipped_recipe_does_not_hide_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()  # e.g. data/tiny: no recipe.yaml, so not a model folder
    assert main(["recipe", "show", "tiny"]) == 0
    assert capsys.readouterr().out.startswith(f"# {ROOT / 'recipes' / 'tiny.yaml'}")


# ---------------------------------------------------------------------------------------------
# The bundled tiny model is such a folder
# ---------------------------------------------------------------------------------------------


def weights_files(data, prefix: str = "") -> dict[str, str]:
    """Every weights value of resolved recipe data, as the file it names (the pin left out)."""
    found = {}
    for key, value in data.items():
        if key == "weights" and isinstance(value, str) and value.lower() != "none":
            found[prefix] = str(Path(parse_weights(value).location).resolve())
        elif isinstance(value, dict):
            found.update(weights_files(value, f"{prefix}.{key}" if prefix else key))
    return found


def test_the_bundled_tiny_folder_is_an_export_that_agrees_with_tiny_yaml():
    """recipes/tiny/ is what `v2a export` wrote for the run that trained the bundled weights
    (runs/tiny_text, recipes/tiny.yaml): its recipe is tiny.yaml's, weights for weights and
    option for option, every pin matches its file, and its card shows the held-out scores."""
    folder, named = load_recipe(TINY).as_data(), load_recipe("tiny").as_data()
    assert weights_files(folder) == weights_files(named)  # the same four files
    strip = lambda data: {k: v for k, v in data.items() if k != "weights"}  # noqa: E731
    for slot in ("codec", "fuser", "generator", "text_encoder"):
        assert strip(folder[slot]) == strip(named[slot]), slot
    for key in ("visual_encoders", "data", "training", "sampling", "name", "description"):
        assert folder[key] == named[key], key
    raw = read_yaml(TINY / "recipe.yaml")
    for slot in ("codec", "fuser", "generator", "text_encoder"):
        pinned = parse_weights(raw[slot]["weights"])
        assert pinned.location == f"./{slot}.safetensors"
        assert pinned.sha256 == sha256(TINY / f"{slot}.safetensors"), (
            f"recipes/tiny/{slot}.safetensors changed: export the new run again "
            "(v2a export RUN -o recipes/tiny --force --scores ... --licence MIT)")
    card = (TINY / "README.md").read_text()
    assert front_matter(card)["license"] == "mit"
    results = json.loads(TINY_SCORES.read_text())
    assert results["onsets"]["generated"]["onset_f1"] == pytest.approx(0.970, abs=5e-4)
    assert markdown_table(results).strip() in card
    assert "tiny/recipe" not in shipped_recipes()  # a model's recipe, not one of the catalogue


def test_the_bundled_folder_generates_what_the_tiny_recipe_does(tmp_path, capsys):
    video = ROOT / "examples" / "shapes.mp4"
    for name, ref in (("folder", str(TINY)), ("named", "tiny")):
        assert main(["generate", "--recipe", ref, str(video), "-o", str(tmp_path / name),
                     "--duration", "1.0"]) == 0, capsys.readouterr().err
    a, b = (load_audio(tmp_path / name / "shapes.wav", sample_rate=16000)
            for name in ("folder", "named"))
    assert torch.equal(a, b)
