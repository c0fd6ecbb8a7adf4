"""`v2a evaluate` on a small `v2a synth` set: identical, shifted and silent "generated" audio,
pairing and events, the command line end to end (results files, plots, one-sentence errors),
FDD and the sync score through a tiny recipe of real components (spectral RVQ codec,
colour_motion, SCAV on mel), and a third-party audio encoder. The metrics themselves (Fréchet
distance, MFCC, onsets) are tested in tests/test_metrics.py."""

from __future__ import annotations

import json
import logging
import math
import shutil
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from v2a import AudioEncoder, ComponentSpec, FeatureSequence, Reranker, VisualEncoder, hookimpl
from v2a.cli import main
from v2a.evaluate import EvaluationError, Options, evaluate
from v2a.evaluate.benchmark import truth_by_stem
from v2a.evaluate.pairing import audio_sources
from v2a.media import load_audio, write_audio
from v2a.metrics.onsets import onset_f1
from v2a.synth import write_synth

SR = 16000
CLIPS = 4
SHIFT = 0.2  # seconds

# the shipped light components (paths resolve to recipes/); the tests add codec.sample_rate=8000
RECIPE = """\
name: tiny_evaluate
codec: components/codecs/spectral_rvq_16khz.yaml
visual_encoders: {motion: components/visual_encoders/colour_motion.yaml}
reranker: {plugin: scav, audio_encoder: mel, video_stream: motion, video_dim: 645, dim: 8,
           layers: 1, heads: 2}
"""


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    """A synthetic reference set (mp4 + manifest + events) and "generated" folders made from it:
    ``same`` (its audio as wav), ``shifted`` (200 ms late), ``silence``; ``ref_wav`` holds the
    same wavs as ``same`` beside the reference's events, for a bit-exact comparison."""
    root = tmp_path_factory.mktemp("evaluate")
    # seed 77: no two events of a clip lie 130-270 ms apart, so audio 200 ms late matches none
    ref = write_synth(root / "ref", CLIPS, seed=77, seconds=2.0, fps=25, size=32, sample_rate=SR)
    folders = {name: root / name for name in ("same", "shifted", "silence", "ref_wav")}
    for folder in folders.values():
        folder.mkdir()
    for name in ("events.jsonl", "manifest.csv"):
        shutil.copy(ref / name, folders["ref_wav"] / name)
    shift = round(SHIFT * SR)
    for video in sorted(ref.glob("*.mp4")):
        wav = load_audio(video, sample_rate=SR).numpy()  # [1, n]
        late = np.concatenate([np.zeros((1, shift), np.float32), wav[:, :-shift]], axis=1)
        for name, audio in (("same", wav), ("ref_wav", wav), ("shifted", late),
                            ("silence", np.zeros_like(wav))):
            write_audio(folders[name] / f"{video.stem}.wav", audio, SR)
    recipe = root / "tiny.yaml"
    recipe.write_text(RECIPE)
    return {"root": root, "ref": ref, "recipe": recipe, **folders}


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["evaluate", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- the metrics on known cases ------------------------------------------------------------------


def test_identical_audio_scores_perfectly_and_shifted_audio_does_not(sets):
    same = evaluate(Options(generated=sets["same"], reference=sets["ref_wav"]))
    shifted = evaluate(Options(generated=sets["shifted"], reference=sets["ref"]))
    assert same["counts"]["pairs"] == shifted["counts"]["pairs"] == CLIPS
    assert same["counts"]["with_events"] == CLIPS

    onsets = same["onsets"]["generated"]
    assert onsets["onset_f1"] == 1.0 and onsets["class_accuracy"] == 1.0
    assert onsets["onset_offset_ms"] < 10 and onsets["matched"] == onsets["events"] > CLIPS
    assert same["onsets"]["reference"] == onsets  # the same audio on both sides
    for name in ("mel", "mfcc"):
        fd_same, fd_shifted = same["frechet"][name], shifted["frechet"][name]
        assert fd_same["frames_generated"] == fd_same["frames_reference"] > 100
        assert fd_shifted["distance"] > 0.1
        assert fd_same["distance"] <= 1e-6 * fd_shifted["distance"]
    assert (same["frechet"]["mel"]["dim"], same["frechet"]["mfcc"]["dim"]) == (64, 20)
    assert "FD codec latents (FDD) skipped: it needs the codec of a --recipe" in same["notes"]

    # the control: each clip's audio against another clip's events (different random events)
    control = same["onsets"]["generated_wrong_video"]
    assert control["clips"] == CLIPS and control["onset_f1"] < 0.5
    stems = sorted(same["clips"])
    assert [same["clips"][s]["wrong_video"] for s in stems] == stems[-1:] + stems[:-1]

    # 200 ms late: every onset is outside ±50 ms; the reference (the ground truth) stays perfect
    assert shifted["onsets"]["generated"]["onset_f1"] < 0.1
    assert shifted["onsets"]["reference"]["onset_f1"] == 1.0
    for stem, clip in shifted["clips"].items():
        assert clip["seconds"] == pytest.approx(2.0, abs=0.01)
        assert clip["onsets"]["generated"]["events"] == clip["onsets"]["reference"]["events"] > 0


def test_silence_finds_no_onsets(sets):
    results = evaluate(Options(generated=sets["silence"], reference=sets["ref"], encoders=[]))
    generated = results["onsets"]["generated"]
    assert generated["onset_f1"] == 0.0 and generated["detected"] == generated["matched"] == 0
    assert math.isnan(generated["class_accuracy"]) and math.isnan(generated["onset_offset_ms"])
    assert results["frechet"] == {}


def test_tolerance_decides_what_matches(sets):
    tolerance = SHIFT + 0.03
    wide = evaluate(Options(generated=sets["shifted"], reference=sets["ref"], encoders=[],
                            tolerance=tolerance))
    # what the shifted ground truth itself scores (onsets pushed past the clip's end are lost)
    truth = truth_by_stem(sets["ref"] / "events.jsonl")
    expected = np.mean([onset_f1([e.time + SHIFT for e in events if e.time + SHIFT < 2.0],
                                 [e.time for e in events], tolerance) for events in truth.values()])
    assert expected > 0.5
    assert wide["onsets"]["generated"]["onset_f1"] == pytest.approx(expected, abs=0.05)
    assert wide["onsets"]["tolerance"] == tolerance


# -- pairing and events --------------------------------------------------------------------------


def test_pairing_prefers_audio_files_and_the_v2a_suffix(tmp_path):
    for name in ("a.wav", "a.mp4", "b.mp4", "c.mp4", "c.v2a.wav", "c.v2a.mp4", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    found = {stem: path.name for stem, path in audio_sources(tmp_path).items()}
    assert found == {"a": "a.wav", "b": "b.mp4", "c": "c.v2a.wav"}


@pytest.fixture
def v2a_messages():
    """The records the ``v2a`` logger (:mod:`v2a.log`) emits during a test, whatever handlers
    the command line has set up."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger("v2a")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_events_map_clip_ids_to_stems(tmp_path, v2a_messages):
    lines = [{"clip": "a.mp4", "time": 0.5, "class": "red_disc"},
             {"clip": "b.mp4@2", "time": 0.3, "class": "red_disc"}]
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    truth = truth_by_stem(events)
    assert list(truth) == ["a"] and truth["a"][0].time == 0.5
    assert [r.levelno for r in v2a_messages] == [logging.WARNING]  # v2a.log.warn, not a print
    assert "1 clips" in v2a_messages[0].getMessage() and "'b.mp4@2'" in v2a_messages[0].getMessage()
    # with the manifest beside it: ids are the manifest's, a clip without events has none
    (tmp_path / "manifest.csv").write_text("path,start,duration,label,split,id\n"
                                           "videos/a.mp4,0,2,,,a.mp4\nvideos/c.mp4,0,2,,,\n")
    assert truth_by_stem(events) == {"a": truth["a"], "c": []}


# -- the command line ----------------------------------------------------------------------------


def test_cli_writes_results_and_one_plot_per_clip(sets, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, sets["same"], "--reference", sets["ref"], "-o", out, "--plots")
    assert code == 0, err
    assert stdout.startswith("| metric | generated | generated, wrong video | reference | note |")
    for row in ("| FD mel (FDM) |", "| FD MFCC |", "| onset F1 (±50 ms) | 1 | ",
                "| class accuracy | 1 | "):
        assert row in stdout
    assert (out / "results.md").read_text() == stdout
    results = json.loads((out / "results.json").read_text())
    assert results["command"].startswith("v2a evaluate ") and "--plots" in results["command"]
    assert results["options"]["tolerance"] == 0.05
    assert results["counts"] == {"pairs": CLIPS, "generated_only": [], "reference_only": [],
                                 "with_events": CLIPS}
    assert sorted(results["clips"]) == [f"clip{k:04d}" for k in range(CLIPS)]
    clip = results["clips"]["clip0000"]
    assert clip["reference"].endswith("clip0000.mp4") and clip["generated"].endswith("clip0000.wav")
    assert clip["onsets"]["generated"]["onset_f1"] == 1.0
    # 16-bit wav against the mp4's AAC audio: close, not identical
    assert 0 < results["frechet"]["mel"]["distance"] < 0.5
    plots = sorted((out / "plots").iterdir())
    assert [p.name for p in plots] == [f"clip{k:04d}.png" for k in range(CLIPS)]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)


def test_cli_warns_about_unpaired_clips(sets, tmp_path, capsys):
    generated = tmp_path / "gen"
    shutil.copytree(sets["same"], generated)
    (generated / "clip0003.wav").unlink()
    shutil.copy(generated / "clip0000.wav", generated / "stray.wav")
    code, stdout, err = run(capsys, generated, "--reference", sets["ref"], "--encoders", "none")
    assert code == 0, err
    assert "1 generated clips have no reference" in err and "'stray'" in err
    assert "1 references have no generated clip" in err and "'clip0003'" in err
    assert "3 pairs, 3 with ground-truth events" in stdout


@pytest.mark.parametrize("case, words", [
    ("missing_reference", "does not exist"),
    ("no_pairs", "no file of"),
    ("unknown_encoder", "the registered ones are"),
    ("plots_without_output", "needs -o OUT"),
    ("unreadable", "is not a media file"),
    ("silent_reference", "is a video without sound"),
])
def test_user_errors_are_one_sentence(sets, tmp_path, capsys, case, words):
    generated, reference, extra = sets["same"], sets["ref"], []
    if case == "missing_reference":
        reference = tmp_path / "nowhere"
    elif case == "no_pairs":
        generated = tmp_path / "other"
        generated.mkdir()
        write_audio(generated / "unrelated.wav", np.zeros((1, SR), np.float32), SR)
    elif case == "unknown_encoder":
        extra = ["--encoders", "mel,nonesuch"]  # no plug-in of that name
    elif case == "plots_without_output":
        extra = ["--plots"]
    elif case == "unreadable":
        generated = tmp_path / "broken"
        shutil.copytree(sets["same"], generated)
        (generated / "clip0002.wav").write_text("not audio at all")
    elif case == "silent_reference":
        reference = write_synth(tmp_path / "silent", clips=CLIPS, seconds=2.0, seed=3, size=32,
                                silent=True)
    code, stdout, err = run(capsys, generated, "--reference", reference, *extra)
    assert code != 0
    assert err.startswith("v2a: error: ") and err.count("\n") == 1 and words in err, err
    assert "Traceback" not in err and stdout == ""
    if case == "unknown_encoder":
        assert "'nonesuch'" in err and "mel" in err and "codec_latents" in err


# -- FDD, the codec ceiling and the sync score through a recipe ----------------------------------


def test_recipe_gives_fdd_the_codec_ceiling_and_the_sync_score(sets, tmp_path, capsys):
    from v2a.recipe import build_frozen, load_recipe

    out = tmp_path / "out"
    code, stdout, err = run(capsys, sets["same"], "--reference", sets["ref_wav"], "--recipe",
                            sets["recipe"], "-o", out, "codec.sample_rate=8000")
    assert code == 0, err
    assert "| FD codec latents (FDD) |" in stdout and "reference via codec" in stdout
    assert "dims; lower is better; random init |" in stdout  # the codec is not fitted
    assert "the reranker 'scav' is untrained" in stdout and "sync score (scav)" not in stdout
    results = json.loads((out / "results.json").read_text())
    fdd = results["frechet"]["codec_latents"]
    assert fdd["dim"] == 513 and fdd["frames_generated"] > 100 and fdd["distance"] < 1e-6
    assert (fdd["sample_rate"], fdd["encoder_rate"]) == (8000, 8000 / 256)  # not the onsets' rate
    assert fdd["encoder"]["codec"]["plugin"] == "spectral_rvq"
    # fewer frames than dimensions: said to be biased
    frames = fdd["frames_generated"]
    assert f"FD codec latents (FDD) rests on {frames} frames of 513 dimensions" in stdout
    # the random (unfitted) codec turns the reference into noise: a low ceiling
    ceiling = results["onsets"]["reference_via_codec"]
    assert ceiling["onset_f1"] < results["onsets"]["reference"]["onset_f1"] == 1.0

    # a reranker training run: its scav.safetensors becomes the reranker's weights
    run_dir = tmp_path / "run"
    recipe = load_recipe(sets["recipe"], ["codec.sample_rate=8000"])
    reranker = build_frozen(recipe.choice("reranker"))
    # a fixed draw: with seed 0 the shifted audio's mean score is 3.5e-3 off the synced one's, far
    # above the 1e-4 asserted below (an unseeded draw lands under 1e-4 now and then)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in reranker.projectors.parameters():
            p.normal_(0, 0.5, generator=generator)
    reranker.save_weights(run_dir / "scav.safetensors")
    shifted_out = tmp_path / "shifted"
    for generated, target in ((sets["same"], out), (sets["shifted"], shifted_out)):
        code, stdout, err = run(capsys, generated, "--reference", sets["ref"], "--recipe",
                                sets["recipe"], "--checkpoint", run_dir, "--encoders", "none",
                                "-o", target, "codec.sample_rate=8000")
        assert code == 0, err
        assert "| sync score (scav) |" in stdout
    same = json.loads((out / "results.json").read_text())
    shifted = json.loads((shifted_out / "results.json").read_text())
    assert same["sync"]["clips"] == CLIPS and same["sync"]["reranker"] == "scav"
    for clip in same["clips"].values():
        assert clip["video"].endswith(".mp4")
        assert clip["sync"]["generated"] == pytest.approx(clip["sync"]["reference"], abs=1e-3)
    assert shifted["sync"]["reference"] == pytest.approx(same["sync"]["reference"])
    assert shifted["sync"]["generated"] != pytest.approx(same["sync"]["generated"], abs=1e-4)


def test_a_run_folder_without_reranker_weights_leaves_the_reranker_untrained(sets, tmp_path,
                                                                            capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "generator.safetensors").write_bytes(b"")  # another slot's export: not the reranker's
    code, stdout, err = run(capsys, sets["same"], "--reference", sets["ref"], "--recipe",
                            sets["recipe"], "--checkpoint", run_dir, "--encoders", "none",
                            "codec.sample_rate=8000")
    assert code == 0, err
    assert f"Note: {run_dir} holds no trained weights for the reranker" in stdout
    assert "the reranker 'scav' is untrained" in stdout and "sync score (scav)" not in stdout


# -- a third-party audio encoder -----------------------------------------------------------------


@dataclass
class FrameEnergyConfig:
    sample_rate: int = 8000
    frame: int = 200


class FrameEnergy(AudioEncoder):
    """Per frame of ``frame`` samples: log energy and zero-crossing rate (an outside plug-in)."""

    def __init__(self, config: FrameEnergyConfig):
        super().__init__()
        self.frame = config.frame
        self.sample_rate, self.dim, self.rate = config.sample_rate, 2, config.sample_rate / config.frame

    def encode(self, wav):
        x = wav.mean(dim=1)
        x = x[:, : x.shape[1] // self.frame * self.frame].unflatten(1, (-1, self.frame))
        energy = torch.log(x.pow(2).mean(dim=-1) + 1e-6)
        crossings = (x[..., 1:] * x[..., :-1] < 0).float().mean(dim=-1)
        return FeatureSequence(values=torch.stack([energy, crossings], dim=-1), rate=self.rate)


def test_a_registered_third_party_encoder_is_usable(sets, registry, use_registry, capsys):
    module = types.ModuleType("frame_energy_plugin")

    @hookimpl
    def v2a_register_components(register):
        register(ComponentSpec(kind="audio_encoder", name="frame_energy", build=FrameEnergy,
                               config=FrameEnergyConfig, description="tests only"))

    module.v2a_register_components = v2a_register_components
    registry.register_module(module)
    code, stdout, err = run(capsys, sets["shifted"], "--reference", sets["ref"],
                            "--encoders", "frame_energy")
    assert code == 0, err
    row = next(line for line in stdout.splitlines() if line.startswith("| FD frame_energy |"))
    assert float(row.split("|")[2]) > 0 and "2 dims" in row


def test_plots_without_matplotlib_say_how_to_install_it(sets, tmp_path, capsys, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else find_spec(name, *a))
    code, stdout, err = run(capsys, sets["same"], "--reference", sets["ref"], "-o", tmp_path / "o",
                            "--plots")
    assert code == 2 and err.count("\n") == 1 and "pip install 'v2a[plots]'" in err
    assert not (tmp_path / "o").exists()


# -- the catalogue, --metrics and --protocol -----------------------------------------------------


def test_an_unknown_metric_or_protocol_says_what_was_meant(sets, capsys):
    code, stdout, err = run(capsys, sets["same"], "--reference", sets["ref"], "--metrics",
                            "fdm,onset_f2")
    assert code == 2 and err.count("\n") == 1 and "'onset_f2'" in err
    assert "did you mean 'onset_f1'?" in err and stdout == ""
    code, _, err = run(capsys, sets["same"], "--reference", sets["ref"], "--protocol", "maskvta")
    assert code == 2 and "did you mean 'maskvat'?" in err


def test_every_catalogue_metric_says_what_it_needs_and_why_it_is_skipped(registry):
    from v2a.evaluate.catalogue import CATALOGUE, PROTOCOLS, REFERENCE, skip_reason

    assert {"fad", "fdd", "fdm", "fd_mfcc", "fd_vggish", "fd_panns", "fd_passt", "kl_panns",
            "kl_passt", "is_panns", "is_passt", "ns", "onset_f1", "onset_acc", "onset_ap", "ss",
            "desync", "ib_score", "clap", "wav2clip", "text_class_acc", "class_shares",
            "sync"} == set(CATALOGUE)
    assert all(set(names) <= set(CATALOGUE) for names in PROTOCOLS.values())
    for metric in CATALOGUE.values():  # class_shares describes the set: neither direction
        assert metric.better in ("lower", "higher", "neither") and metric.label
    # the test registry has mel but no PaSST, VGGish or Synchformer
    assert skip_reason(CATALOGUE["fd_passt"], registry=registry, given={REFERENCE}) == \
        "FD PaSST skipped: no audio_encoder plug-in named 'passt' is installed"
    assert skip_reason(CATALOGUE["fdm"], registry=registry, given={REFERENCE}) is None
    assert "no --reference was given" in skip_reason(CATALOGUE["fdm"], registry=registry,
                                                     given=set())
    assert skip_reason(CATALOGUE["desync"], registry=registry, given=set()) == \
        "DeSync (Synchformer) skipped: no reranker plug-in named 'synchformer' is installed"


def test_the_maskvat_protocol_prints_its_table_and_skips_what_it_cannot_compute(
        sets, tmp_path, use_registry, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, sets["shifted"], "--reference", sets["ref"], "--protocol",
                            "maskvat", "-o", out)
    assert code == 0, err
    header = next(line for line in stdout.splitlines() if line.startswith("| |"))
    assert header == ("| | FAD (VGGish) ↓ | FD codec latents (FDD) ↓ | FD mel (FDM) ↓ | "
                      "IB-score (ImageBind) ↑ | SS (SparseSync offset) ↓ | "
                      "NS (novelty correlation) ↑ |")
    row = next(line for line in stdout.splitlines() if line.startswith("| generated |"))
    cells = [c.strip() for c in row.split("|")[2:-1]]
    assert cells[0] == cells[1] == cells[3] == cells[4] == "skipped"
    assert float(cells[2]) > 0.1 and -1 <= float(cells[5]) < 1  # 200 ms late: not the reference
    assert "Note: FAD (VGGish) skipped: no audio_encoder plug-in named 'vggish' is installed." in stdout
    assert "Note: FD codec latents (FDD) skipped: it needs a --recipe." in stdout
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"] == "maskvat"
    assert [c["name"] for c in results["layout"]] == ["fad", "fdd", "fdm", "ib_score", "ss", "ns"]
    assert sorted(results["metrics"]) == ["fdm", "ns"]
    assert results["metrics"]["fdm"]["model"]["plugin"] == "mel"
    assert results["metrics"]["fdm"]["model"]["weights"] == "no weights"
    assert results["metrics"]["ns"]["settings"]["sample_rate"] == 16000


def test_metrics_selects_rows_and_a_random_init_model_is_said_to_be_one(sets, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, sets["same"], "--reference", sets["ref_wav"], "--recipe",
                            sets["recipe"], "--metrics", "fdd,onset_f1,onset_acc,onset_ap", "-o",
                            out, "codec.sample_rate=8000")
    assert code == 0, err
    assert stdout.startswith("| metric | generated | reference | unit | better | model |")
    assert "| FD codec latents (FDD) | " in stdout and "codec_latents (random init) |" in stdout
    results = json.loads((out / "results.json").read_text())
    assert list(results["metrics"]) == ["fdd", "onset_f1", "onset_acc", "onset_ap"]
    fdd = results["metrics"]["fdd"]
    assert fdd["model"]["weights"] == "random init" and fdd["value"] < 1e-6
    # the same audio on both sides: every reference onset finds its generated onset
    assert results["metrics"]["onset_acc"]["value"] == 1.0
    assert results["metrics"]["onset_ap"]["value"] == 1.0
    assert results["metrics"]["onset_f1"]["value"] == results["metrics"]["onset_f1"]["reference_value"] == 1.0
    assert results["frechet"].keys() == {"codec_latents"}  # no other distance was asked for


# -- the feature cache and provenance ------------------------------------------------------------


class CountingEnergy(FrameEnergy):
    """:class:`FrameEnergy` counting its ``encode`` calls per registered name."""

    calls: dict[str, int] = {}
    name = ""

    def encode(self, wav):
        CountingEnergy.calls[self.name] = CountingEnergy.calls.get(self.name, 0) + 1
        return super().encode(wav)


def counting_plugin(name: str) -> types.ModuleType:
    module = types.ModuleType(f"{name}_plugin")
    built = type(name, (CountingEnergy,), {"name": name})

    @hookimpl
    def v2a_register_components(register):
        register(ComponentSpec(kind="audio_encoder", name=name, build=built,
                               config=FrameEnergyConfig, description="tests only"))

    module.v2a_register_components = v2a_register_components
    return module


def test_a_second_run_computes_only_the_new_models_features(sets, tmp_path, registry,
                                                            use_registry, capsys):
    for name in ("energy_a", "energy_b"):
        registry.register_module(counting_plugin(name))
    CountingEnergy.calls.clear()
    out = tmp_path / "out"
    code, _, err = run(capsys, sets["shifted"], "--reference", sets["ref"], "--metrics",
                       "fd_energy_a", "-o", out)
    assert code == 0, err
    assert CountingEnergy.calls == {"energy_a": 2 * CLIPS}  # each side of each pair, once
    first = json.loads((out / "results.json").read_text())
    CountingEnergy.calls.clear()
    code, _, err = run(capsys, sets["shifted"], "--reference", sets["ref"], "--metrics",
                       "fd_energy_a,fd_energy_b", "-o", out)
    assert code == 0, err
    assert CountingEnergy.calls == {"energy_b": 2 * CLIPS}  # energy_a's frames came from the cache
    second = json.loads((out / "results.json").read_text())
    assert second["features"]["loaded"] == first["features"]["computed"]
    # the cached frames are the frames: the same distance, to the last bit
    assert second["metrics"]["fd_energy_a"]["value"] == first["metrics"]["fd_energy_a"]["value"]
    cached = sorted((out / "features").rglob("*.safetensors"))
    assert len(cached) == 2 * 2 * CLIPS and not list((out / "features").rglob("*.tmp*"))


def test_results_that_differ_in_a_model_or_its_settings_do_not_compare(tmp_path):
    from v2a.evaluate.provenance import check_comparable, model_record

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"one")
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"two")

    def results(weights_file, sample_rate=16000):
        model = model_record({"plugin": "vggish", "weights": str(weights_file)})
        return {"metrics": {"fad": {"value": 1.0, "model": model,
                                    "settings": {"sample_rate": sample_rate}}}}

    assert results(weights)["metrics"]["fad"]["model"]["weights"]["sha256"] == \
        "7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed"  # sha256 of b"one"
    check_comparable(results(weights), results(weights))  # the same: no error
    moved = tmp_path / "moved.safetensors"
    moved.write_bytes(b"one")
    check_comparable(results(weights), results(moved))  # a file counts by its content
    with pytest.raises(EvaluationError, match="fad: model.weights: the weights file's content changed"):
        check_comparable(results(weights), results(other))
    with pytest.raises(EvaluationError, match="fad: settings.sample_rate: 16000 in the first, "
                                              "32000 in the second"):
        check_comparable(results(weights), results(weights, sample_rate=32000))
    assert model_record({"plugin": "panns_cnn14", "weights": "none"})["weights"] == "random init"


# -- reference-free: class probabilities and offsets of generated mp4s ---------------------------


@dataclass
class EnvelopeSyncConfig:
    stream: str = "motion"
    width: int = 645


class EnvelopeSync(Reranker):
    """A sync classifier for tests (an honest one): the correlation of the audio's onset
    envelope (the rise of its energy per video frame) with the video stream's frame-to-frame
    change, summed over the frames the two overlap at each of the 21 offsets -2..+2 s (a sum,
    not a mean, so that a large shift with few overlapping frames is not favoured); positive
    offsets: the audio comes late."""

    def __init__(self, config: EnvelopeSyncConfig):
        super().__init__()
        self.stream = config.stream
        self.sample_rate = SR
        self.video_streams = {config.stream: config.width}
        self.offsets = tuple(round(-2.0 + 0.2 * i, 1) for i in range(21))

    def offset_logits(self, audio, video):
        seq = video[self.stream]
        change = (seq.values[:, 1:] - seq.values[:, :-1]).norm(dim=-1)  # [b, t - 1]
        hop = round(self.sample_rate / seq.rate)
        mono = audio.mean(dim=1)
        frames = mono[:, : mono.shape[1] // hop * hop].unflatten(1, (-1, hop))
        energy = frames.pow(2).mean(dim=-1)
        rise = (energy[:, 1:] - energy[:, :-1]).clamp(min=0)  # [b, t' - 1]
        t = min(change.shape[1], rise.shape[1])
        change, rise = change[:, :t], rise[:, :t]
        logits = []
        for offset in self.offsets:
            lag = round(offset * seq.rate)  # audio late by lag frames: rise[i + lag] ~ change[i]
            if lag >= 0:
                pair = (change[:, : t - lag], rise[:, lag:]) if lag < t else None
            else:
                pair = (change[:, -lag:], rise[:, : t + lag]) if -lag < t else None
            logits.append(torch.zeros(change.shape[0]) if pair is None
                          else (pair[0] * pair[1]).sum(dim=1))
        return torch.stack(logits, dim=1)

    def score(self, candidates, video):
        b, n = candidates.shape[:2]
        logits = self.offset_logits(candidates.flatten(0, 1), {
            k: FeatureSequence(values=v.values.repeat_interleave(n, 0), rate=v.rate)
            for k, v in video.items()})
        best = torch.tensor(self.offsets)[logits.argmax(dim=1)]
        return -best.abs().unflatten(0, (b, n))


def test_reference_free_scores_generated_mp4s_with_what_needs_no_reference(
        sets, tmp_path, registry, use_registry, capsys):
    import v2a_plugins.audio_encoders.panns
    import v2a_plugins.codecs.spectral_rvq
    import v2a_plugins.rerankers.scav
    import v2a_plugins.visual_encoders.colour_motion

    for module in (v2a_plugins.audio_encoders.panns, v2a_plugins.codecs.spectral_rvq,
                   v2a_plugins.rerankers.scav, v2a_plugins.visual_encoders.colour_motion):
        registry.register_module(module)
    plugin = types.ModuleType("envelope_sync_plugin")

    @hookimpl
    def v2a_register_components(register):  # under the catalogue's name for DeSync's model
        register(ComponentSpec(kind="reranker", name="synchformer", build=EnvelopeSync,
                               config=EnvelopeSyncConfig, description="tests only"))

    plugin.v2a_register_components = v2a_register_components
    registry.register_module(plugin)
    recipe = tmp_path / "with_panns.yaml"  # a small CNN14 (the real architecture), random init
    recipe.write_text(sets["recipe"].read_text() + "audio_encoder: {plugin: panns_cnn14, "
                      "channels: [4, 4, 8, 8, 8, 8], classes: 6}\n")
    generated = tmp_path / "generated"  # mp4s with their sound and their video
    shutil.copytree(sets["ref"], generated, ignore=shutil.ignore_patterns("*.jsonl", "*.csv"))
    metrics = "is_panns,kl_panns,fdm,desync"
    found = {}
    for name, folder, extra in (("synced", generated, []),
                                ("late", sets["shifted"], ["--videos", sets["ref"]])):
        out = tmp_path / name
        code, stdout, err = run(capsys, folder, "--recipe", recipe, "--metrics", metrics, *extra,
                                "-o", out, "codec.sample_rate=8000")
        assert code == 0, err
        found[name] = json.loads((out / "results.json").read_text())
        assert "Note: KL PANNs skipped: it compares with reference audio and no --reference " \
               "was given." in stdout
        assert "Note: FD mel (FDM) skipped: it compares with reference audio" in stdout
        assert "| IS PANNs | " in stdout and "panns_cnn14 (random init) |" in stdout
    synced, late = found["synced"], found["late"]
    assert synced["counts"]["pairs"] == CLIPS and synced["clips"]["clip0000"]["reference"] is None
    is_panns = synced["metrics"]["is_panns"]
    # IS lies in [1, classes]; its model and settings are recorded
    assert 1.0 <= is_panns["value"] <= 6.0 and is_panns["reference_value"] is None
    assert is_panns["model"]["weights"] == "random init"
    assert is_panns["settings"] == {"sample_rate": 32000, "classes": 6, "multi_label": True,
                                    "splits": 1, "shuffle_seed": None}
    # the generated mp4s are in sync with their own video; the audio 200 ms late is found late
    assert synced["metrics"]["desync"]["value"] == 0.0
    assert late["metrics"]["desync"]["value"] == pytest.approx(SHIFT)
    offsets = late["clips"]["clip0000"]["offsets"]["desync"]["generated"]
    assert offsets == [pytest.approx(SHIFT)]  # a 2 s clip: one segment


def test_without_reference_the_whole_catalogue_is_listed_and_the_sync_score_runs(
        sets, tmp_path, registry, use_registry, capsys):
    import v2a_plugins.codecs.spectral_rvq
    import v2a_plugins.rerankers.scav
    import v2a_plugins.visual_encoders.colour_motion
    from v2a.recipe import build_frozen, load_recipe

    for module in (v2a_plugins.codecs.spectral_rvq, v2a_plugins.rerankers.scav,
                   v2a_plugins.visual_encoders.colour_motion):  # no PANNs, no Synchformer
        registry.register_module(module)

    run_dir = tmp_path / "run"
    reranker = build_frozen(load_recipe(sets["recipe"], ["codec.sample_rate=8000"]).choice("reranker"))
    reranker.save_weights(run_dir / "scav.safetensors")  # any weights: the score is defined
    generated = tmp_path / "generated"
    shutil.copytree(sets["ref"], generated, ignore=shutil.ignore_patterns("*.jsonl", "*.csv"))
    out = tmp_path / "out"
    code, stdout, err = run(capsys, generated, "--recipe", sets["recipe"], "--checkpoint", run_dir,
                            "-o", out, "codec.sample_rate=8000")
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert list(results["metrics"]) == ["sync"]
    sync = results["metrics"]["sync"]
    assert sync["reference_value"] is None and math.isfinite(sync["value"])
    assert sync["model"]["weights"]["sha256"] and sync["model"]["visual_encoders"]["motion"]
    assert results["sync"]["clips"] == CLIPS and "reference" not in results["sync"]
    # every other metric of the catalogue is listed as skipped, each with its reason
    from v2a.evaluate.catalogue import CATALOGUE

    # (but for the synthetic classes' metrics, which run only when --metrics names them)
    assert set(results["skipped"]) == set(CATALOGUE) - {"sync", "text_class_acc", "class_shares"}
    assert results["skipped"]["fdm"] == ("FD mel (FDM) skipped: it compares with reference audio "
                                         "and no --reference was given")
    assert "| sync score | " in stdout


def test_ground_truth_events_score_generated_audio_without_a_reference(sets, capsys):
    code, stdout, err = run(capsys, sets["shifted"], "--events", sets["ref"] / "events.jsonl",
                            "--metrics", "onset_f1,fdm")
    assert code == 0, err
    row = next(line for line in stdout.splitlines() if line.startswith("| onset F1 |"))
    assert [c.strip() for c in row.split("|")[2:4]] == ["0", ""]  # 200 ms late; no reference side
    assert "Note: FD mel (FDM) skipped: it compares with reference audio" in stdout


def test_plots_and_metrics_refuse_what_cannot_work(sets, tmp_path, capsys):
    code, _, err = run(capsys, sets["same"], "-o", tmp_path / "o", "--plots")
    assert code == 2 and err.count("\n") == 1 and "needs --reference" in err
    code, _, err = run(capsys, sets["same"], "--metrics", "fdm", "--protocol", "synth")
    assert code == 2 and "give --metrics or --protocol, not both" in err


def test_a_model_without_weights_is_skipped_unless_given_or_random_weights_asked(
        sets, tmp_path, registry, use_registry, capsys):
    """A metric's model built from its plug-in's defaults has no weights (PANNs': none): its
    metrics are skipped saying how to give them; --model gives them (here a small CNN14's own
    state, saved as a file), --random-weights asks for random init."""
    import v2a_plugins.audio_encoders.panns
    from safetensors.torch import save_file

    from v2a.recipe import ComponentChoice, build_frozen

    registry.register_module(v2a_plugins.audio_encoders.panns)
    small = ["--model", "panns_cnn14.channels=[4, 4, 8, 8, 8, 8]", "--model",
             "panns_cnn14.classes=6"]
    generated = tmp_path / "generated"
    shutil.copytree(sets["ref"], generated, ignore=shutil.ignore_patterns("*.jsonl", "*.csv"))

    code, stdout, err = run(capsys, generated, "--metrics", "is_panns", *small)
    assert code == 0, err
    assert ("IS PANNs skipped: panns_cnn14 has no weights; give its published checkpoint with "
            "--model panns_cnn14.weights=FILE") in stdout

    options = {"channels": [4, 4, 8, 8, 8, 8], "classes": 6}
    model = build_frozen(ComponentChoice(
        kind="audio_encoder", plugin="panns_cnn14", options=options,
        config=registry.config_for("audio_encoder", "panns_cnn14", options)))
    weights = tmp_path / "cnn14_small.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    out = tmp_path / "with_weights"
    code, stdout, err = run(capsys, generated, "--metrics", "is_panns", *small, "--model",
                            f"panns_cnn14.weights={weights}", "-o", out)
    assert code == 0, err
    recorded = json.loads((out / "results.json").read_text())["metrics"]["is_panns"]
    assert recorded["model"]["weights"]["file"] == str(weights)  # the file, with its sha256
    assert len(recorded["model"]["weights"]["sha256"]) == 64

    code, stdout, err = run(capsys, generated, "--metrics", "is_panns", *small, "--random-weights")
    assert code == 0, err
    assert "| IS PANNs | " in stdout and "panns_cnn14 (random init) |" in stdout

    code, _, err = run(capsys, generated, "--metrics", "is_panns", "--model", "panns_cnn14")
    assert code == 2 and "is not PLUGIN.KEY=VALUE" in err


# -- the semantic family (an audio-video cosine in a shared space) -------------------------------


@dataclass
class AxisAudioConfig:
    weights: str = "none"  # recorded, never read: the encoder has no parameters


class AxisAudio(AudioEncoder):
    """Per 10 ms of 16 kHz audio, ``(1 + rms, 0)``: every step points along the first axis of a
    2-d "shared space", with a length that varies (so only the normalised mean is 1, 0)."""

    def __init__(self, config: AxisAudioConfig):
        super().__init__()
        self.sample_rate, self.dim, self.rate = 16000, 2, 100.0

    def encode(self, wav):
        x = wav.mean(dim=1)
        x = x[:, : x.shape[1] // 160 * 160].unflatten(1, (-1, 160))
        length = 1.0 + x.pow(2).mean(dim=-1).sqrt()
        return FeatureSequence(values=torch.stack([length, torch.zeros_like(length)], dim=-1),
                               rate=self.rate)


@dataclass
class AngleFramesConfig:
    angle: float = 0.0  # degrees from the audio's axis
    fps: float = 5.0
    weights: str = "none"  # recorded, never read


class AngleFrames(VisualEncoder):
    """Per frame, ``(0.5 + brightness) * (cos a, sin a)``: every frame points at ``angle`` from
    :class:`AxisAudio`'s axis, so the clip's cosine is ``cos(angle)`` whatever the frames are."""

    def __init__(self, config: AngleFramesConfig):
        super().__init__()
        self.fps = self.rate = config.fps
        self.frame_size, self.dim = (8, 8), 2
        self.angle = math.radians(config.angle)

    def encode(self, frames, times):
        length = 0.5 + frames.mean(dim=(2, 3, 4))  # [b, t]
        axis = torch.tensor([math.cos(self.angle), math.sin(self.angle)])
        return FeatureSequence(values=length[..., None] * axis, rate=self.rate,
                               start=float(times[0]))


def shared_space_plugin(*kinds: str) -> types.ModuleType:
    """The test encoders under the catalogue's names for the Wav2CLIP score's models."""
    module = types.ModuleType("shared_space_plugin_" + "_".join(kinds))

    @hookimpl
    def v2a_register_components(register):
        if "audio" in kinds:
            register(ComponentSpec(kind="audio_encoder", name="wav2clip", build=AxisAudio,
                                   config=AxisAudioConfig, description="tests only"))
        if "video" in kinds:
            register(ComponentSpec(kind="visual_encoder", name="clip", build=AngleFrames,
                                   config=AngleFramesConfig, description="tests only"))

    module.v2a_register_components = v2a_register_components
    return module


def test_a_semantic_metric_is_the_cosine_of_the_mean_audio_and_video_directions(
        sets, tmp_path, registry, use_registry, capsys):
    generated = tmp_path / "generated"  # mp4s with their sound and their video
    shutil.copytree(sets["ref"], generated, ignore=shutil.ignore_patterns("*.jsonl", "*.csv"))
    metrics = ["--metrics", "wav2clip,ib_score,clap"]

    registry.register_module(shared_space_plugin("audio"))
    code, stdout, err = run(capsys, generated, *metrics, "--random-weights")
    assert code == 0, err
    assert "Note: Wav2CLIP score skipped: no visual_encoder plug-in named 'clip' is installed." \
        in stdout
    assert "Note: IB-score (ImageBind) skipped: no audio_encoder plug-in named 'imagebind' is " \
        "installed." in stdout
    assert "Note: CLAP score skipped: no audio_encoder plug-in named 'clap' is installed." \
        in stdout

    registry.register_module(shared_space_plugin("video"))
    code, stdout, err = run(capsys, generated, *metrics)  # both models at weights: none
    assert code == 0, err
    assert "Wav2CLIP score skipped: wav2clip has no weights; give its published checkpoint" in stdout
    code, stdout, err = run(capsys, generated, *metrics, "--model", "wav2clip.weights=w2c.pt")
    assert code == 0, err  # the audio model has weights, the video model still has none
    assert "Wav2CLIP score skipped: clip has no weights; give its published checkpoint" in stdout

    found = {}
    for angle in (90, 60):
        out = tmp_path / f"angle{angle}"
        code, stdout, err = run(capsys, generated, *metrics, "--random-weights", "--model",
                                f"clip.angle={angle}", "-o", out)
        assert code == 0, err
        found[angle] = json.loads((out / "results.json").read_text())
    score = found[60]["metrics"]["wav2clip"]
    # cos 60° = 0.5 and cos 90° = 0 from float32 embeddings (cos and sin of the angle rounded
    # to ~6e-8), pooled and normalised in float64: 1e-6 is ample
    assert score["value"] == pytest.approx(0.5, abs=1e-6) and score["reference_value"] is None
    assert found[90]["metrics"]["wav2clip"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert found[60]["clips"]["clip0000"]["semantic"]["wav2clip"] == {
        "generated": pytest.approx(0.5, abs=1e-6)}
    # both models are recorded, and the report says the number comes from random init
    assert score["model"]["plugin"] == "wav2clip" and score["model"]["weights"] == "random init"
    assert score["model"]["visual_encoder"]["plugin"] == "clip"
    assert score["model"]["visual_encoder"]["options"]["angle"] == 60
    assert score["settings"] == {"sample_rate": 16000, "fps": 5.0,
                                 "pooling": "mean over time, L2-normalised"}
    assert set(found[60]["skipped"]) == {"ib_score", "clap"}

    # with a reference, its audio is scored against the same videos beside the generated audio
    out = tmp_path / "with_reference"
    code, stdout, err = run(capsys, sets["same"], "--reference", sets["ref"], "--metrics",
                            "wav2clip", "--random-weights", "--model", "clip.angle=60", "-o", out)
    assert code == 0, err
    score = json.loads((out / "results.json").read_text())["metrics"]["wav2clip"]
    assert score["value"] == pytest.approx(0.5, abs=1e-6)
    assert score["reference_value"] == pytest.approx(0.5, abs=1e-6)
    assert "| Wav2CLIP score | " in stdout and "wav2clip (random init) |" in stdout


def test_a_semantic_metric_whose_models_share_no_space_is_skipped(registry, use_registry):
    from v2a.evaluate.catalogue import CATALOGUE
    from v2a.evaluate.options import Options as EvalOptions
    from v2a.evaluate.semantic import build_semantic_scorer, direction

    class WideFrames(AngleFrames):
        def __init__(self, config):
            super().__init__(config)
            self.dim = 3

    module = types.ModuleType("wide_frames_plugin")

    @hookimpl
    def v2a_register_components(register):
        register(ComponentSpec(kind="audio_encoder", name="wav2clip", build=AxisAudio,
                               config=AxisAudioConfig, description="tests only"))
        register(ComponentSpec(kind="visual_encoder", name="clip", build=WideFrames,
                               config=AngleFramesConfig, description="tests only"))

    module.v2a_register_components = v2a_register_components
    registry.register_module(module)
    reason = build_semantic_scorer(CATALOGUE["wav2clip"], None, registry, torch.device("cpu"),
                                   EvalOptions(generated=Path(".")))
    assert reason == ("Wav2CLIP score skipped: 'wav2clip' embeds audio in 2 dimensions and "
                      "'clip' embeds frames in 3, so they share no space; give both models the "
                      "options of one shared space")
    # a zero mean embedding has no direction: it scores 0 rather than NaN
    assert np.array_equal(direction(np.zeros((4, 3))), np.zeros(3))


def test_model_options_of_a_name_two_kinds_share_go_where_they_belong():
    """ImageBind's audio and vision towers are both `imagebind`: --model imagebind.weights=F
    reaches both, a key only one kind takes reaches that one, an unknown key reaches both (and
    is refused there by name)."""
    from v2a.evaluate.models import options_for
    from v2a.evaluate.options import Options
    from v2a.registry import default_registry

    registry = default_registry()
    assert registry.kinds_of("imagebind") == ["audio_encoder", "visual_encoder"]
    options = Options(generated=Path("gen"), models={"imagebind": {
        "weights": "ib.pth", "crops": 3, "clips": 2, "nonesuch": 1}})
    assert options_for("audio_encoder", "imagebind", options, registry) == {
        "weights": "ib.pth", "clips": 2, "nonesuch": 1}
    assert options_for("visual_encoder", "imagebind", options, registry) == {
        "weights": "ib.pth", "crops": 3, "nonesuch": 1}
    assert options_for("audio_encoder", "panns_cnn14", options, registry) == {}


def test_the_av_benchmark_protocol_splits_the_inception_score_as_av_benchmark_does():
    """10 splits of the set shuffled with seed 2020 (never more splits than clips); one split
    otherwise. The value is the mean of the splits' scores from v2a.metrics.classes."""
    from types import SimpleNamespace

    from v2a.evaluate.catalogue import CATALOGUE
    from v2a.evaluate.classify import PROTOCOL_SPLITS, ClassScorer
    from v2a.metrics.classes import inception_score

    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(5), size=12)  # 12 clips, 5 classes
    classifier = SimpleNamespace(multi_label=False, sample_rate=16000, class_names=list("abcde"))
    splits, seed = PROTOCOL_SPLITS["av-benchmark"]
    assert (splits, seed) == (10, 2020)
    scorer = ClassScorer(plugin="x", classifier=classifier, record={}, splits=splits,
                         shuffle_seed=seed, generated=list(probabilities))
    value, _ = scorer.entry_values(CATALOGUE["is_panns"])
    assert value == inception_score(probabilities, multi_label=False, splits=10, shuffle_seed=2020)
    assert scorer.settings()["splits"] == 10 and scorer.settings()["shuffle_seed"] == 2020
    few = ClassScorer(plugin="x", classifier=classifier, record={}, splits=splits,
                      shuffle_seed=seed, generated=list(probabilities[:3]))
    assert few.settings()["splits"] == 3  # one clip per split at most
    plain = ClassScorer(plugin="x", classifier=classifier, record={}, generated=list(probabilities))
    assert plain.entry_values(CATALOGUE["is_panns"])[0] == inception_score(
        probabilities, multi_label=False)



def test_offsets_are_read_over_the_window_the_sync_classifier_reads():
    """DeSync's 4.8 s windows are Synchformer's; a classifier that reads another length
    (SparseSync: 5 s) is scored on the first and last windows of its own length."""
    from v2a.evaluate.offsets import OffsetScorer
    from v2a.metrics.desync import WINDOW

    class Reads5s(torch.nn.Module):
        sample_rate, offsets, window_seconds = 16000, (0.0,), 5.0

    class NoWindow(torch.nn.Module):
        sample_rate, offsets = 16000, (0.0,)

    own = OffsetScorer(plugin="x", classifier=Reads5s(), encoders={}, record={},
                       device=torch.device("cpu"))
    assert own.window == 5.0 and own.settings()["window"] == 5.0
    default = OffsetScorer(plugin="x", classifier=NoWindow(), encoders={}, record={},
                           device=torch.device("cpu"))
    assert default.window == WINDOW == 4.8
