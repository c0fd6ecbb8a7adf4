"""The web demo without a browser: :class:`v2a.demo.DemoEngine` (checks, generation through the
engine of ``v2a generate``, the files it writes), the spectrogram picture, the page's handlers
and the ``v2a demo`` command's refusals. The page in a real browser: tests/test_demo_browser.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tests.media_fixtures import write_video
from v2a.cli import main
from v2a.demo import (
    GRADIO_MISSING,
    DemoEngine,
    DemoError,
    DemoRequest,
    draw_spectrogram,
    host_warning,
    is_loopback,
    load_gradio,
)
from v2a.demo.spectrogram import AXIS_HEIGHT, ONSET_COLOUR
from v2a.errors import UserError
from v2a.generate import VideoToAudio
from v2a.generate.errors import GenerationError, parse_steps
from v2a.media import load_audio, write_audio
from v2a.output_stage import OutputStage, apply_output_stage
from v2a.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ROOT / "examples" / "shapes.mp4"  # 6 s, 25 fps, no audio track


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> DemoEngine:
    """One engine for the module: the tiny model is built once, as the page keeps it."""
    return DemoEngine(workdir=tmp_path_factory.mktemp("demo"), recipe="tiny", max_seconds=8)


def read_stream_seconds(path: Path) -> dict[str, float]:
    """Each stream's duration in seconds, as the container states it, by stream type."""
    with av.open(str(path)) as container:
        return {s.type: float(s.duration * s.time_base) for s in container.streams}


def test_a_request_goes_through_the_generate_engine_with_the_pages_settings(engine, tmp_path):
    result = engine.generate(DemoRequest(video=SHAPES, recipe="tiny", steps="2,1", cfg=1.5,
                                         candidates=1, seed=7))
    assert result.mp4.parent == result.audio.parent == result.spectrogram.parent
    assert result.mp4.parent.parent == engine.workdir
    seconds = read_stream_seconds(result.mp4)
    # AAC is written in frames of 1024 samples (at 16 kHz here): the stream may state up to one
    # frame more than the 6 s of video, never less than the video minus one frame.
    assert abs(seconds["audio"] - seconds["video"]) <= 1024 / 16000
    written = load_audio(result.audio, sample_rate=16000)
    assert written.shape[-1] == round(6.0 * 16000)

    # the same settings, straight through the engine of v2a generate: the same sound
    model = VideoToAudio.from_recipe(load_recipe("tiny"), warn=lambda text: None)
    direct, sr = model.generate(SHAPES, seed=7, steps=[2, 1], cfg=1.5, candidates=1)
    direct, _ = apply_output_stage(direct, sr, OutputStage())
    write_audio(tmp_path / "direct.wav", direct.numpy(), sr)
    # one computation on one thread, one 16-bit writer: the very same samples
    assert torch.equal(written, load_audio(tmp_path / "direct.wav", sample_rate=16000))
    assert result.duration == pytest.approx(6.0)


def test_the_result_spectrogram_marks_the_onsets_detected_in_the_sound(engine):
    result = engine.generate(DemoRequest(video=SHAPES, recipe="tiny", steps="1"))
    assert result.onsets, "the tiny model sounds the shapes of examples/shapes.mp4"
    from PIL import Image
    picture = np.asarray(Image.open(result.spectrogram).convert("RGB"))
    height, width = picture.shape[0] - AXIS_HEIGHT, picture.shape[1]
    cyan = np.all(picture[:height] == ONSET_COLOUR, axis=2).all(axis=0)  # whole-height columns
    expected = {round(t / result.duration * (width - 1)) for t in result.onsets}
    assert set(np.flatnonzero(cyan)) == expected
    assert result.summary.startswith(f"6.00 s of sound; {len(result.onsets)} onset(s)")


def test_a_longer_video_than_the_limit_is_refused_before_any_model_is_built(tmp_path):
    engine = DemoEngine(workdir=tmp_path / "work", recipe="tiny", max_seconds=2)
    long_video = write_video(tmp_path / "long.mp4", seconds=3.0, fps=10)
    with pytest.raises(DemoError, match=r"long\.mp4 lasts 3\.0 s, longer than this demo's limit "
                       r"of 2 s; upload a shorter video"):
        engine.generate(DemoRequest(video=long_video, recipe="tiny"))
    assert engine._models == {} and not list((tmp_path / "work").glob("result-*"))


@pytest.mark.parametrize("request_options, message", [
    (dict(video=None), "no video was uploaded; upload one, then press Generate"),
    (dict(recipe="elsewhere.yaml"), "'elsewhere.yaml' is not one of the demo's recipes"),
    (dict(steps="12,four"), "steps takes positive integers separated by commas"),
    (dict(regenerate="1-2"), "shapes.mp4 has no sound of its own to keep around the stretch"),
    (dict(candidates=0), "--candidates must be at least 1"),
])
def test_requests_a_user_can_fix_are_refused_in_one_sentence(engine, request_options, message):
    options = {"video": SHAPES, "recipe": "tiny", **request_options}
    with pytest.raises(UserError, match=message):
        engine.generate(DemoRequest(**options))


def test_a_prompt_for_a_recipe_without_text_encoder_is_refused(tmp_path):
    engine = DemoEngine(workdir=tmp_path, recipe="small/maskvat_hybrid_small")
    assert not engine.defaults("small/maskvat_hybrid_small").takes_text
    with pytest.raises(DemoError, match="has no text encoder, so it cannot follow a prompt"):
        engine.generate(DemoRequest(video=SHAPES, recipe="small/maskvat_hybrid_small",
                                    prompt="a red disc"))


def test_a_stretch_is_regenerated_in_the_videos_own_sound(engine, tmp_path):
    video = write_video(tmp_path / "voiced.mp4", seconds=2.0, fps=25, width=64, height=64,
                        audio=True, frequency=440.0)
    with pytest.raises(UserError, match=r"the stretch 1.5-2.5 s to regenerate ends after the "
                       r"clip \(2.00 s\)"):
        engine.generate(DemoRequest(video=video, recipe="tiny", steps="1", regenerate="1.5-2.5"))
    result = engine.generate(DemoRequest(video=video, recipe="tiny", steps="1",
                                         regenerate="0.5-1.0"))
    rate = 16000
    kept = load_audio(result.audio, sample_rate=rate)
    original = load_audio(video, sample_rate=rate)
    n = min(kept.shape[-1], original.shape[-1])
    # away from the stretch and its 20 ms crossfade the output is the video's own sound
    # (through the -1 dBFS limiter, which leaves a 440 Hz tone below it untouched, and the
    # 16-bit writer: one LSB)
    outside = slice(round(1.1 * rate), n)
    assert torch.allclose(kept[..., outside].mean(0), original[..., outside].mean(0),
                          atol=2 * 2**-15)


def test_the_page_shows_each_recipes_sampling_and_text_fields(engine):
    shown = engine.defaults("tiny")
    assert (shown.steps, shown.cfg, shown.candidates, shown.seed, shown.takes_text) == \
        ("12,4,2", 2.0, 1, 0, True)
    assert engine.choices[0] == "tiny" and "small/maskvat_hybrid_small" in engine.choices
    assert not any(name.endswith("_base") for name in engine.choices)  # base recipes do not run


def test_steps_text():
    assert parse_steps(" ", name="steps") is None
    assert parse_steps("12, 4,2", name="steps") == [12, 4, 2]
    with pytest.raises(GenerationError, match="steps takes positive integers, not '0'"):
        parse_steps("0", name="steps")


def test_old_result_folders_are_removed(tmp_path):
    engine = DemoEngine(workdir=tmp_path, recipe="tiny")
    old, new = tmp_path / "result-old", tmp_path / "result-new"
    for folder in (old, new):
        folder.mkdir()
    hour_ago = time.time() - 3601
    os.utime(old, (hour_ago, hour_ago))
    assert engine.remove_old_results() == [old]
    assert new.is_dir() and not old.exists()


def test_spectrogram_puts_low_frequencies_at_the_bottom_and_marks_onsets():
    rate = 16000
    t = np.arange(rate) / rate
    wav = np.sin(2 * np.pi * 1000.0 * t)  # 1 kHz: an eighth of the way up to 8 kHz
    picture = np.asarray(draw_spectrogram(wav, rate, [0.25, 0.5], width=400, height=160))
    assert picture.shape == (160 + AXIS_HEIGHT, 400, 3)
    brightness = picture[:160, 20:80].astype(float).sum(axis=(1, 2))  # away from the onsets
    assert abs(int(np.argmax(brightness)) - round(160 * (1 - 1000 / 8000))) <= 2
    cyan = np.all(picture[:160] == ONSET_COLOUR, axis=2).all(axis=0)
    assert list(np.flatnonzero(cyan)) == [round(0.25 * 399), round(0.5 * 399)]


def test_loopback_hosts_only_are_served_without_a_warning():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert is_loopback(host) and host_warning(host, 7860) is None
    for host in ("0.0.0.0", "192.168.1.4", "example.org"):
        assert not is_loopback(host)
        assert host_warning(host, 8000).startswith(f"--host {host} is not a loopback address")


def test_without_gradio_the_demo_says_to_install_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    with pytest.raises(DemoError, match=r"install v2a\[demo\]"):
        load_gradio()
    assert main(["demo", "--recipe", "tiny"]) == 1
    assert capsys.readouterr().err.strip() == f"v2a: error: {GRADIO_MISSING}"


def test_command_line_options_that_cannot_work_exit_2(capsys):
    assert main(["demo", "--port", "0"]) == 2
    assert main(["demo", "--recipe", "no_such_recipe"]) == 2  # refused before serving
    assert "recipe file 'no_such_recipe' does not exist" in capsys.readouterr().err


def test_a_bad_checkpoint_is_refused_before_the_page_is_served(tmp_path, capsys):
    assert main(["demo", "--recipe", "tiny", "--checkpoint", str(tmp_path / "no-run")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"v2a: error: the checkpoint {tmp_path / 'no-run'} is not a training run folder (it "
        "should hold fuser.safetensors and generator.safetensors)")
    assert main(["demo", "--recipe", "tiny", "--max-seconds", "0"]) == 2
    assert "--max-seconds must be a number of seconds above 0" in capsys.readouterr().err


def test_the_page_queues_one_generation_at_a_time_and_shows_errors_as_the_cli_prints(engine):
    gr = pytest.importorskip("gradio", reason="the page needs v2a[demo] (gradio)")
    from v2a.demo.page import build_page, on_generate
    page = build_page(engine)
    assert page._queue.default_concurrency_limit == 1
    with pytest.raises(gr.Error) as raised:
        on_generate(engine, gr, None, "tiny", "", 2.0, 1, 0, "", "", "")
    try:
        engine.generate(DemoRequest(video=None, recipe="tiny"))
    except UserError as exc:
        assert raised.value.message == str(exc)
    assert not page.analytics_enabled


def test_picking_a_recipe_shows_its_sampling_and_hides_prompts_it_cannot_follow(tmp_path):
    gr = pytest.importorskip("gradio", reason="the page needs v2a[demo] (gradio)")
    from v2a.demo.page import on_recipe
    engine = DemoEngine(workdir=tmp_path, recipe="tiny")
    steps, cfg, candidates, seed, text = on_recipe(engine, gr, "small/maskvat_hybrid_small")
    sampling = load_recipe("small/maskvat_hybrid_small").sampling
    assert steps["value"] == ",".join(map(str, sampling.steps))
    assert (cfg["value"], candidates["value"], seed["value"]) == \
        (sampling.cfg_scale, sampling.candidates, sampling.seed)
    assert text["visible"] is False
    assert on_recipe(engine, gr, "tiny")[4]["visible"] is True


def test_an_untrained_models_warning_comes_with_every_result(tmp_path):
    engine = DemoEngine(workdir=tmp_path, recipe="tiny",
                        recipe_options={"random_weights": True})
    for _ in range(2):  # built once, warned each time
        result = engine.generate(DemoRequest(video=SHAPES, recipe="tiny", steps="1"))
        assert any("randomly initialised" in text for text in result.warnings)
    assert len(engine._models) == 1


def test_the_checkpoint_goes_with_the_given_recipe(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("fuser", "generator"):  # the bundled weights as a run folder without its recipe
        shutil.copyfile(ROOT / "recipes" / "tiny" / f"{name}.safetensors",
                        run / f"{name}.safetensors")
    engine = DemoEngine(workdir=tmp_path / "work", recipe="tiny", checkpoint=run)
    said = engine.warm_up()
    assert any("recipe.yaml" in text for text in said), said  # the run's weights were read


def test_the_command_line_needs_neither_gradio_nor_pillow_until_the_demo_runs():
    blocked = ("import sys; sys.modules['gradio'] = sys.modules['PIL'] = None; "
               "from v2a.cli import main; sys.exit(main(['demo', '--help']))")
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0 and "usage: v2a demo" in done.stdout, done.stderr
