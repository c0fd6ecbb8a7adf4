"""``text_class_acc`` and ``class_shares``: the synthetic classes of generated audio's onsets
against the classes its text names, and their shares, with no timing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from v2a.cli import main
from v2a.evaluate import Options, evaluate, markdown_table
from v2a.evaluate.text_classes import named_classes
from v2a.media import write_audio
from v2a.synth import CLASSES, write_synth

SR = 16000
BY_NAME = {c.name: c for c in CLASSES}
TEXTS = {"three": "a red disc bouncing and a green square flashing",  # names 2 of its 3 classes
         "two": "A RED  DISC, twice",  # case and white space do not matter
         "no_class": "a dog barking"}  # names no class: left out like a clip without text
SOUNDS = {"three": ["red_disc", "green_square", "yellow_bar"], "two": ["red_disc", "red_disc"],
          "untexted": ["blue_triangle"], "no_class": ["blue_triangle"]}


def tones(classes: list[str], seconds: float = 2.0) -> np.ndarray:
    """``[1, n]``: one synth tone per class, 0.5 s apart from 0.3 s (clear, separate onsets)."""
    from v2a.synth import tone

    audio = np.zeros(round(seconds * SR))
    for k, name in enumerate(classes):
        wave = tone(BY_NAME[name], SR)
        at = round((0.3 + 0.5 * k) * SR)
        audio[at:at + len(wave)] += wave[: len(audio) - at]
    return (0.9 * audio / np.abs(audio).max())[None].astype(np.float32)


@pytest.fixture
def hand_made(tmp_path) -> tuple[Path, Path]:
    folder = tmp_path / "generated"
    folder.mkdir()
    for stem, classes in SOUNDS.items():
        write_audio(folder / f"{stem}.wav", tones(classes), SR)
    captions = tmp_path / "captions.csv"
    captions.write_text("name,caption\n" + "".join(f"{k},{v}\n" for k, v in TEXTS.items()))
    return folder, captions


def test_a_text_names_the_classes_whose_words_it_holds_as_whole_words():
    assert named_classes("A green  Square flashing and a red disc bouncing") == \
        ["red_disc", "green_square"]
    assert named_classes("a reddisc and a blue triangles") == []
    assert named_classes("") == []


def test_class_accuracy_against_the_text_is_the_share_of_events_the_text_names(hand_made, capsys):
    folder, captions = hand_made
    results = evaluate(Options(generated=folder, captions=captions,
                               metrics=["text_class_acc", "class_shares"]))
    clips = results["clips"]
    assert clips["three"]["event_classes"] == {"generated": SOUNDS["three"],
                                               "named": ["red_disc", "green_square"]}
    accuracy = results["metrics"]["text_class_acc"]
    # "three": 2 of 3 events named, "two": 2 of 2; the clip without a text and the one whose
    # text names no class are left out (same float operations as the mean, so exact)
    assert accuracy["value"] == (2 / 3 + 1) / 2
    assert accuracy["pooled"] == {"generated": 4 / 5}
    assert accuracy["clips"] == {"generated": 2} and accuracy["events"] == {"generated": 5}
    assert accuracy["reference_value"] is None and accuracy["settings"]["text"] == \
        "captions captions.csv"
    assert "2 clips have no text naming a synthetic class (from captions captions.csv) and are " \
        "left out of class accuracy against the text" in results["notes"]
    shares = results["metrics"]["class_shares"]
    # every clip's events count: red 3, green 1, blue 2, yellow 1 of 7
    assert shares["value"] == {"red_disc": 3 / 7, "green_square": 1 / 7, "blue_triangle": 2 / 7,
                               "yellow_bar": 1 / 7}
    # four shares, each rounded once to the nearest double (≤ 2⁻⁵³ relative): their sum is 1
    # to within a few ulps
    assert sum(shares["value"].values()) == pytest.approx(1.0, abs=4 * 2.0 ** -52)
    assert shares["events"] == {"generated": 7} and shares["better"] == "neither"
    assert "| class shares | red_disc 0.43, green_square 0.14, blue_triangle 0.29, " \
        "yellow_bar 0.14 |  |  | neither | v2a.metrics.onsets |" in markdown_table(results)


def test_the_reference_is_scored_beside_and_class_shares_needs_no_text(hand_made, tmp_path):
    folder, _ = hand_made
    reference = tmp_path / "reference"
    reference.mkdir()
    for stem in SOUNDS:  # the reference sounds only red discs
        write_audio(reference / f"{stem}.wav", tones(["red_disc", "red_disc"]), SR)
    results = evaluate(Options(generated=folder, reference=reference,
                               metrics=["text_class_acc", "class_shares"]))
    # no --captions, no events, no recorded prompts: no clip has a text
    assert results["skipped"]["text_class_acc"].startswith(
        "class accuracy against the text skipped: it compares each clip with its text")
    shares = results["metrics"]["class_shares"]
    assert shares["reference_value"] == {"red_disc": 1.0, "green_square": 0.0,
                                         "blue_triangle": 0.0, "yellow_bar": 0.0}
    assert shares["events"] == {"generated": 7, "reference": 8}


def test_v2a_evaluate_scores_a_synth_sets_own_audio_against_true_and_wrong_captions(
        tmp_path, capsys):
    synth = write_synth(tmp_path / "synth", 4, seed=3, seconds=2.0, fps=25, size=32,
                        sample_rate=SR, caption_wrong=1.0)
    found = {}
    # captions.csv's caption column is what each clip shows; the manifest's is the given
    # caption, here always wrong (naming only classes the clip does not show)
    for name, captions in (("true", synth / "captions.csv"), ("wrong", synth / "manifest.csv")):
        out = tmp_path / name
        code = main(["evaluate", str(synth), "--metrics", "text_class_acc,class_shares",
                     "--captions", str(captions), "-o", str(out)])
        stdout = capsys.readouterr().out
        assert code == 0
        found[name] = json.loads((out / "results.json").read_text())["metrics"]
        assert "| class shares | red_disc " in stdout
    # the clips' own audio: every estimated class is one the true caption names, none is one
    # a wrong caption names (the classes are estimated exactly on this set)
    assert found["true"]["text_class_acc"]["value"] == 1.0
    assert found["wrong"]["text_class_acc"]["value"] == 0.0
    assert found["true"]["class_shares"] == found["wrong"]["class_shares"]
