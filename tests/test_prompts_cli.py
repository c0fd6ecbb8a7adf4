"""Text prompts on the command line: ``v2a generate --prompt/--negative-prompt``, sound from text
alone, a manifest's captions as the prompts of its clips, the prompts recorded in the outputs'
tags (:func:`v2a.media.generated_prompt`) and read by ``v2a evaluate``'s CLAP score."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from tests.media_fixtures import tone, write_video
from v2a.cli import main
from v2a.evaluate.options import Options
from v2a.evaluate.text_score import EVENT_CLASSES, GENERATED_PROMPTS, clip_texts
from v2a.generate import VideoToAudio, codec_format
from v2a.media import (
    generated_by_v2a,
    generated_negative_prompt,
    generated_prompt,
    load_audio,
    mux_audio,
    probe,
    write_audio,
)
from v2a.recipe import load_recipe
from v2a.synth import Event

SR = 8000
#: A CLAP small enough to run at random init in a test.
SMALL_CLAP = {"audio_width": 8, "audio_depths": [1, 1], "audio_heads": [1, 2], "text_width": 16,
              "text_layers": 1, "text_heads": 2, "dim": 12}
#: The tiny recipe with a text encoder (learned_words, random init).
TEXT_RECIPE = Path(__file__).parents[1] / "recipes" / "small" / "maskvat_hybrid_text_small.yaml"
#: A tiny recipe without a text encoder (random init, real components).
VIDEO_ONLY = """\
name: tiny_video_only
codec: {plugin: spectral_rvq, sample_rate: 8000, n_fft: 256, hop_length: 128, n_codebooks: 2,
        codebook_size: 16}
visual_encoders:
  motion: {plugin: colour_motion, fps: 4.0, grid: 2, size: 16, orientations: 2}
fuser: {plugin: maskvat, streams: {motion: 37}, dim: 16, aligned: true, context: true,
        context_layers: 1, heads: 2}
generator: {plugin: maskvat_hybrid, n_codebooks: 2, codebook_size: 16, condition_dim: 16,
            width: 32, layers: 1, heads: 2, dropout: 0.0, max_frames: 256}
data: {clip_seconds: 2.0, num_workers: 0}
sampling: {steps: [2, 1], candidates: 1}
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("prompts")
    recipe = root / "video_only.yaml"
    recipe.write_text(VIDEO_ONLY)
    return {"root": root, "recipe": recipe,
            "video": write_video(root / "clip.mp4", seconds=1.0, fps=8.0, width=32, height=24)}


def run(capsys, *argv) -> tuple[int, str]:
    code = main(["generate", *map(str, argv)])
    return code, capsys.readouterr().err


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the model is built: refusals must come before anything heavy."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was built before the refusal")
    monkeypatch.setattr(VideoToAudio, "from_recipe", classmethod(refuse))


# -- the prompts in the outputs' tags ----------------------------------------------------------


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".mp4"])
def test_the_prompts_are_recorded_in_the_tags_of_wav_flac_and_mp4(tmp_path, suffix):
    wave = tone(0.5, SR)  # [1, n]
    prompt, negative = "a dog barks twice, then a café door — «creaks»", "music; speech"
    out = tmp_path / f"out{suffix}"
    if suffix == ".mp4":
        video = write_video(tmp_path / "in.mp4", seconds=0.5, fps=8.0)
        mux_audio(video, wave, SR, out, prompt=prompt, negative_prompt=negative)
    else:
        write_audio(out, wave, SR, prompt=prompt, negative_prompt=negative)
    assert generated_by_v2a(out)
    assert generated_prompt(out) == prompt
    assert generated_negative_prompt(out) == negative
    plain = tmp_path / f"plain{suffix}"
    if suffix == ".mp4":
        mux_audio(video, wave, SR, plain)
    else:
        write_audio(plain, wave, SR)
    assert generated_by_v2a(plain)
    assert generated_prompt(plain) is None and generated_negative_prompt(plain) is None


def test_a_title_in_a_file_v2a_did_not_write_is_not_a_prompt(tmp_path):
    path = tmp_path / "user.wav"
    with av.open(str(path), "w", format="wav") as out:
        out.metadata["title"] = "my holiday recording"
        stream = out.add_stream("pcm_s16le", rate=SR, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 256), np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate, frame.pts = SR, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    assert not generated_by_v2a(path)
    assert generated_prompt(path) is None
    assert generated_prompt(tmp_path / "missing.wav") is None


# -- refusals, before the model is built -------------------------------------------------------


@pytest.mark.parametrize("argv, words", [
    ([], "no video was given; give a VIDEO, or --prompt"),
    (["--negative-prompt", "music", "-o", "{tmp}/a.wav", "--duration", "1"], "no video was given"),
    (["--prompt", "rain", "-o", "{tmp}/a.wav"], "needs its length: give --duration"),
    (["--prompt", "rain", "-o", "{tmp}/a.wav", "--duration", "0"], "needs its length"),
    (["--prompt", "rain", "--duration", "1"], "give -o a .wav or .flac file name, not nothing"),
    (["--prompt", "rain", "--duration", "1", "-o", "{tmp}/a.mp4"], "not {tmp}/a.mp4"),
    (["--prompt", "rain", "--duration", "1", "-o", "{tmp}"], "give -o a .wav or .flac file"),
    (["--prompt", "rain", "--duration", "1", "-o", "{tmp}/a.wav", "--audio-format", "flac"],
     "asks for wav audio but --audio-format asks for flac"),
    (["--prompt", "rain", "--duration", "1", "-o", "{tmp}/a.wav", "--start", "1"],
     "--start needs a video, and none was given"),
    (["--prompt", "rain", "--duration", "1", "-o", "{tmp}/a.wav", "--keep-audio",
      "--regenerate", "0-1"], "--keep-audio needs a video"),
    (["--prompt", "  ", "--duration", "1", "-o", "{tmp}/a.wav"], "--prompt is empty"),
    (["{video}", "--negative-prompt", "", "-o", "{tmp}"], "--negative-prompt is empty"),
    (["--prompt", "rain", "--duration", "1", "-o", "{tmp}/a.wav"],
     "has no text encoder, so it cannot follow --prompt"),
    (["{video}", "--negative-prompt", "music", "-o", "{tmp}"],
     "has no text encoder, so it cannot follow --negative-prompt"),
])
def test_prompt_options_are_refused_in_one_sentence_before_the_model_is_built(
        files, tmp_path, capsys, no_model, argv, words):
    fill = {"tmp": tmp_path, "video": files["video"]}
    argv = [a.format(**fill) for a in argv]
    code, err = run(capsys, "--recipe", files["recipe"], *argv)
    assert code != 0
    assert words.format(**fill) in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written, no folder left behind


# -- prompts reaching the model ---------------------------------------------------------------


@pytest.fixture
def recorded(monkeypatch) -> list[dict]:
    """The keywords each call of :meth:`VideoToAudio.generate` receives (the real method then
    generates as usual)."""
    calls: list[dict] = []
    generate = VideoToAudio.generate

    def recording(self, video, **keywords):
        calls.append({"video": video, **keywords})
        return generate(self, video, **keywords)
    monkeypatch.setattr(VideoToAudio, "generate", recording)
    return calls


def test_text_alone_writes_one_audio_file_of_the_duration_tagged_with_the_prompts(
        tmp_path, capsys, recorded):
    out = tmp_path / "rain.flac"
    argv = ["--recipe", TEXT_RECIPE, "--prompt", "rain falls", "--negative-prompt", "music plays",
            "--duration", 1.5, "-o", out, "--seed", 3]
    code, err = run(capsys, *argv)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rain.flac"]  # no mp4, no leftovers
    rate = probe(out).sample_rate
    assert rate == codec_format(load_recipe(TEXT_RECIPE))[0]  # the codec's rate
    assert load_audio(out, sample_rate=rate).shape[-1] == round(1.5 * rate)
    assert generated_prompt(out) == "rain falls"
    assert generated_negative_prompt(out) == "music plays"
    assert [(c["video"], c["prompt"], c["negative_prompt"], c["duration"]) for c in recorded] == [
        (None, "rain falls", "music plays", 1.5)]
    code, err = run(capsys, *argv)
    assert code != 0 and "exists; pass --overwrite to replace it" in err
    code, err = run(capsys, *argv, "--skip-finished")
    assert code == 0 and "kept the finished outputs of 1 of 1" in err
    assert len(recorded) == 1


def test_a_manifests_captions_are_the_prompts_unless_prompt_is_given(
        files, tmp_path, capsys, recorded):
    second = write_video(tmp_path / "other.mp4", seconds=1.0, fps=8.0, width=32, height=24)
    listed = tmp_path / "list.csv"
    listed.write_text(f"path,caption\n{files['video']},a dog barks\n{second},\n")
    code, err = run(capsys, "--recipe", TEXT_RECIPE, listed, "-o", tmp_path / "captions",
                    "--negative-prompt", "people talk")
    assert code == 0, err
    assert [(Path(c["video"]).name, c["prompt"], c["negative_prompt"]) for c in recorded] == [
        ("clip.mp4", "a dog barks", "people talk"), ("other.mp4", None, "people talk")]
    for name in ("clip.wav", "clip.mp4"):
        assert generated_prompt(tmp_path / "captions" / name) == "a dog barks"
        assert generated_negative_prompt(tmp_path / "captions" / name) == "people talk"
    assert generated_prompt(tmp_path / "captions" / "other.mp4") is None
    recorded.clear()
    code, err = run(capsys, "--recipe", TEXT_RECIPE, listed, "-o", tmp_path / "given",
                    "--prompt", "a car engine")
    assert code == 0, err
    assert [(c["prompt"], c["negative_prompt"]) for c in recorded] == [("a car engine", None)] * 2
    assert generated_prompt(tmp_path / "given" / "other.wav") == "a car engine"


def test_a_manifests_captions_are_not_used_by_a_recipe_without_a_text_encoder(
        files, tmp_path, capsys, recorded):
    """(Passing them on would have the model refuse the batch.)"""
    listed = tmp_path / "list.csv"
    listed.write_text(f"path,caption\n{files['video']},a dog barks\n")
    code, err = run(capsys, "--recipe", files["recipe"], listed, "-o", tmp_path / "out")
    assert code == 0, err
    assert "has no text encoder: the captions of 1 clip(s) are not used" in err
    assert [call["prompt"] for call in recorded] == [None]
    assert generated_prompt(tmp_path / "out" / "clip.wav") is None


# -- evaluate's CLAP text from the tags --------------------------------------------------------


def test_evaluate_takes_each_clips_text_from_its_recorded_prompt_before_the_events(tmp_path):
    generated = tmp_path / "generated"
    generated.mkdir()
    wave = tone(0.5, SR)
    write_audio(generated / "a.wav", wave, SR, prompt="rain on a tin roof")
    write_audio(generated / "b.flac", wave, SR)  # no prompt: the events give its text
    truth = {"a": [Event(cls="red_disc", time=0.1)], "b": [Event(cls="green_square", time=0.2)]}
    texts = clip_texts(Options(generated=generated), truth)
    assert texts.texts == {"a": "rain on a tin roof", "b": "green square"}
    assert texts.source == f"{GENERATED_PROMPTS}, else {EVENT_CLASSES}"
    captions = tmp_path / "captions.csv"
    captions.write_text("name,caption\na,thunder\n")
    given = clip_texts(Options(generated=generated, captions=captions), truth)
    assert given.texts == {"a": "thunder"}  # --captions wins over the tags
    untagged = tmp_path / "untagged"
    untagged.mkdir()
    write_audio(untagged / "a.wav", wave, SR)
    assert clip_texts(Options(generated=untagged), truth).source == EVENT_CLASSES


def test_evaluate_scores_clap_against_the_recorded_prompts_without_captions(tmp_path, capsys):
    pytest.importorskip("transformers")  # the clap plug-in's text side
    generated = tmp_path / "generated"
    generated.mkdir()
    for stem, prompt in (("c0", "a dog barks"), ("c1", "rain on a roof")):
        write_audio(generated / f"{stem}.wav", tone(0.5, SR), SR, prompt=prompt)
    sizes = [f"clap.{key}={json.dumps(value)}" for key, value in SMALL_CLAP.items()]
    out = tmp_path / "out"
    code = main(["evaluate", str(generated), "--metrics", "clap", "--random-weights", "-o",
                 str(out), *(word for size in sizes for word in ("--model", size))])
    assert code == 0, capsys.readouterr().err
    found = json.loads((out / "results.json").read_text())
    assert found["metrics"]["clap"]["settings"]["text"] == GENERATED_PROMPTS
    assert all("clap" in found["clips"][stem]["text"] for stem in ("c0", "c1"))
