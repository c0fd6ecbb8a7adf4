"""`v2a generate` and :class:`v2a.generate.VideoToAudio` on a tiny recipe of real components
(spectral RVQ codec, colour_motion and a small random CLIP, the MaskVAT fuser and Hybrid
generator, SCAV with a mel encoder), randomly initialised, on generated videos."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from einops import rearrange

from tests.media_fixtures import frame_indices, tone, write_audio, write_broken, write_video
from v2a.cli import main
from v2a.errors import UserError
from v2a.generate import VideoToAudio, check_run_recipe, same_weights
from v2a.hookspecs import hookimpl
from v2a.media import load_audio, load_video, probe, resample_video
from v2a.recipe import load_recipe
from v2a.registry import Registry, TrainingTaskSpec
from v2a.weights import save_state

SR = 8000
RECIPE = """\
name: tiny_generate
codec: {plugin: spectral_rvq, sample_rate: 8000, n_fft: 256, hop_length: 128, n_codebooks: 2,
        codebook_size: 16}
visual_encoders:
  motion: {plugin: colour_motion, fps: 4.0, grid: 2, size: 16, orientations: 2}
  clip: {plugin: clip, weights: none, fps: 2.0, image_size: 32, patch_size: 16, width: 64,
         layers: 1, heads: 2, embed_dim: 16}
fuser: {plugin: maskvat, streams: {motion: 37, clip: 16}, dim: 16, aligned: true, context: true,
        context_layers: 1, heads: 2}
generator: {plugin: maskvat_hybrid, n_codebooks: 2, codebook_size: 16, condition_dim: 16,
            width: 32, layers: 1, heads: 2, dropout: 0.0, max_frames: 256}
reranker: {plugin: scav, audio_encoder: {plugin: mel, sample_rate: 16000, n_fft: 256,
           hop_length: 128, n_mels: 8}, video_stream: clip, video_dim: 16, dim: 8, layers: 1,
           heads: 2, weights: none}
data: {clip_seconds: 2.0, num_workers: 0}
sampling: {steps: [2, 1], candidates: 2}
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("generate")
    recipe = root / "tiny.yaml"
    recipe.write_text(RECIPE)
    (root / "in").mkdir()
    return {
        "root": root,
        "recipe": recipe,
        # 1.3 s at 7.5 fps: neither the frame count nor the duration is a round number of codes
        "video": write_video(root / "in" / "clip.mp4", seconds=1.3, fps=7.5, width=32, height=24),
        "long": write_video(root / "in" / "long.mp4", seconds=3.0, fps=8.0),
        "broken": write_broken(root / "bad", seconds=1.0),
    }


@pytest.fixture(scope="module")
def trained(files, tmp_path_factory) -> Path:
    """A training run folder of the tiny recipe: perturbed weights and its recipe.yaml."""
    recipe = load_recipe(files["recipe"])
    model = VideoToAudio.from_recipe(recipe, warn=lambda _: None)
    run_dir = tmp_path_factory.mktemp("run")
    torch.manual_seed(1)
    for slot in ("fuser", "generator"):
        state = {k: v + 0.5 * torch.randn_like(v) if v.is_floating_point() else v
                 for k, v in getattr(model, slot).state_dict().items()}
        save_state(state, run_dir / f"{slot}.safetensors")
    (run_dir / "recipe.yaml").write_text("# resolved recipe of this run\n" + recipe.to_yaml())
    return run_dir


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) below ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
            for p in folder.rglob("*")}


def run(capsys, *argv) -> tuple[int, str]:
    code = main(["generate", *map(str, argv)])
    return code, capsys.readouterr().err


def video_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(video=0) if p.dts is not None]


def test_generate_writes_wav_and_mp4_of_the_videos_duration(files, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run(capsys, "--recipe", files["recipe"], files["video"], "-o", out, "--seed", 1)
    assert code == 0, err
    wav, mp4 = out / "clip.wav", out / "clip.mp4"
    info_in, info_out = probe(files["video"]), probe(mp4)
    assert load_audio(wav, sample_rate=SR).shape == (1, round(info_in.video_duration * SR))
    # the video stream is copied packet for packet; the audio lasts as long as it
    assert video_packets(mp4) == video_packets(files["video"])
    assert (info_out.width, info_out.height, info_out.fps) == (32, 24, 7.5)
    assert info_out.has_audio and info_out.sample_rate == SR
    assert abs(info_out.audio_duration - info_in.video_duration) <= 1024 / SR
    decoded = load_audio(mp4, sample_rate=SR)
    assert abs(decoded.shape[1] - wav_len(wav)) <= 1024
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4", "clip.wav"]  # no temp files left

    # an existing output is refused without --overwrite and left as it was
    before = mp4.read_bytes()
    code, err = run(capsys, "--recipe", files["recipe"], files["video"], "-o", out, "--seed", 2)
    assert code != 0 and "exists; pass --overwrite" in err and err.count("\n") == 1
    assert mp4.read_bytes() == before
    code, err = run(capsys, "--recipe", files["recipe"], files["video"], "-o", out, "--seed", 2,
                    "--overwrite", "--candidates", 1)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4", "clip.wav"]


def wav_len(path: Path) -> int:
    return load_audio(path, sample_rate=SR).shape[1]


def test_default_output_is_beside_the_input(files, tmp_path, capsys):
    video = tmp_path / "v.mp4"
    video.write_bytes(files["video"].read_bytes())
    code, err = run(capsys, "--recipe", files["recipe"], video, "--duration", 1.0,
                    "sampling.steps=[1]")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4", "v.v2a.mp4", "v.v2a.wav"]
    assert wav_len(tmp_path / "v.v2a.wav") == SR  # --duration 1.0
    assert video.read_bytes() == files["video"].read_bytes()  # the input is untouched


@pytest.mark.parametrize("case, words", [
    ("missing", "does not exist"),
    ("not_media", "is not a media file"),
    ("empty", "is empty"),
    ("truncated", "is truncated or damaged"),
    ("no_video", "has no video stream"),
    ("audio_only", "has no video stream"),
    ("option", "unrecognized arguments: --frobnicate"),
    ("steps", "--steps takes positive integers separated by commas"),
    ("steps_zero", "--steps takes positive integers"),
    ("checkpoint_empty", "has no fuser.safetensors"),
    ("checkpoint_file", "is not a training run folder"),
    ("another_recipe", "was trained with another recipe (codec.hop_length: 128 in the run, 64 in"),
    ("output_is_input", "would overwrite the input"),
    ("several_to_one_file", "names the output of one video, but 2 videos were given"),
    ("bad_output_suffix", "end the name in .mp4, .wav or .flac"),
    ("two_audio_formats", "asks for flac audio but --audio-format asks for wav"),
])
def test_bad_inputs_give_one_sentence_and_no_output(files, trained, tmp_path, capsys, case, words):
    video, out = tmp_path / "in" / "clip.mp4", tmp_path / "out"
    video.parent.mkdir()
    video.write_bytes(files["video"].read_bytes())
    (tmp_path / "empty_run").mkdir()
    second = tmp_path / "in" / "other.mp4"
    inputs, extra = [video], []
    if case in files["broken"]:
        inputs = [files["broken"][case]]
    elif case == "missing":
        inputs = [tmp_path / "nope.mp4"]
    elif case == "audio_only":
        inputs = [write_audio(tmp_path / "in" / "song.wav", tone(1.0, SR), SR)]
    else:
        extra = {
            "option": ["--frobnicate", "3"],
            "steps": ["--steps", "4,x"],
            "steps_zero": ["--steps", "2,0"],
            "checkpoint_empty": ["--checkpoint", tmp_path / "empty_run"],
            "checkpoint_file": ["--checkpoint", video],
            "another_recipe": ["--checkpoint", trained, "codec.hop_length=64"],
            "output_is_input": ["-o", video],
            "several_to_one_file": ["-o", tmp_path / "out.mp4"],
            "bad_output_suffix": ["-o", tmp_path / "out.mkv"],
            "two_audio_formats": ["-o", tmp_path / "out.flac", "--audio-format", "wav"],
        }[case]
        if case == "several_to_one_file":
            second.write_bytes(files["video"].read_bytes())
            inputs = [video, second]
    before = tree(tmp_path)
    if case == "option":
        with pytest.raises(SystemExit) as exc:
            main(["generate", "--recipe", str(files["recipe"]), *map(str, inputs), "-o", str(out),
                  *map(str, extra)])
        code, err = exc.value.code, capsys.readouterr().err
    else:
        code, err = run(capsys, "--recipe", files["recipe"], *inputs, *(extra or ["-o", out]))
    assert code != 0
    assert words in err, err
    lines = [line for line in err.splitlines() if not line.startswith("v2a: warning")]
    assert len(lines) == 1 or case == "option"  # argparse adds its usage line
    assert tree(tmp_path) == before  # nothing written, no folder made, the input untouched


def test_same_seed_same_audio_and_checkpoints(files, tmp_path):
    recipe = load_recipe(files["recipe"])
    model = VideoToAudio.from_recipe(recipe, warn=lambda _: None)
    a, sr = model.generate(files["video"], seed=5, candidates=2)
    b, _ = model.generate(files["video"], seed=5, candidates=2)
    c, _ = model.generate(files["video"], seed=6, candidates=2)
    assert sr == SR and a.shape == (1, round(probe(files["video"]).video_duration * SR))
    assert torch.equal(a, b) and not torch.equal(a, c)

    # a training run folder: its weights are loaded (strictly) and change the result
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.manual_seed(1)
    for slot in ("fuser", "generator"):
        module = getattr(model, slot)
        state = {k: v + 0.5 * torch.randn_like(v) if v.is_floating_point() else v
                 for k, v in module.state_dict().items()}
        save_state(state, run_dir / f"{slot}.safetensors")
    warnings = []
    trained = VideoToAudio.from_recipe(recipe, run_dir, warn=warnings.append)
    d, _ = trained.generate(files["video"], seed=5, candidates=2)
    assert d.shape == a.shape and not torch.equal(a, d)
    # this run has no recipe.yaml: it is used, with a warning that it could not be checked
    assert len(warnings) == 1 and "has no readable recipe.yaml" in warnings[0]

    # so a checkpoint of another recipe (another generator width) is caught by its shapes
    other = load_recipe(files["recipe"], ["generator.width=64"])
    with pytest.raises(UserError, match="another shape") as exc:
        VideoToAudio.from_recipe(other, run_dir, warn=lambda _: None)
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="no fuser.safetensors"):
        VideoToAudio.from_recipe(recipe, tmp_path)


def test_audio_files_are_written_exactly(tmp_path):
    from v2a.media import mux_audio, write_audio

    wave = np.sin(np.linspace(0, 200, 12345))[None] * 0.5
    for suffix in (".wav", ".flac"):
        path = write_audio(tmp_path / f"a{suffix}", wave, SR)
        back = load_audio(path, sample_rate=SR)
        assert back.shape == (1, 12345) and np.abs(back.numpy() - wave).max() < 1e-3
    video = write_video(tmp_path / "v.mp4", seconds=1.0, fps=10.0)
    stereo = np.concatenate([wave, -wave])[:, :SR]
    out = mux_audio(video, stereo, SR, tmp_path / "o.mp4")
    assert probe(out).audio_channels == 2 and abs(probe(out).audio_duration - 1.0) <= 1024 / SR


def test_long_videos_are_generated_in_windows_that_continue_each_other(files, monkeypatch):
    import v2a.generate.model

    calls = []
    real = v2a.generate.model.sample

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append((kwargs.get("prompt"), out))
        return out

    monkeypatch.setattr(v2a.generate.model, "sample", spy)
    model = VideoToAudio.from_recipe(load_recipe(files["recipe"]), warn=lambda _: None)
    audio, sr = model.generate(files["long"], seed=3, candidates=1)
    assert audio.shape == (1, 3 * SR)  # exactly the video's 3 s, past the 2 s window
    width = model.codec.num_frames(2 * SR)
    total = model.codec.num_frames(3 * SR)
    assert [c[1].shape[-1] for c in calls] == [width, width]
    first, (prompt, second) = calls[0][1][0], calls[1]
    start = total - width  # the second window ends at the video's end
    overlap = width - start
    assert calls[0][0] is None and overlap >= width // 4
    # the second window was given the first one's codes of the overlap, and kept them
    assert prompt.known[0, :, :overlap].all() and not prompt.known[0, :, overlap:].any()
    assert torch.equal(prompt.codes[0, :, :overlap], first[:, start:])
    assert torch.equal(second[0, :, :overlap], first[:, start:])
    b, _ = model.generate(files["long"], seed=3, candidates=1)
    assert torch.equal(audio, b)


def test_a_folder_or_a_manifest_as_input_and_flac(files, tmp_path, capsys):
    from v2a.manifests import Clip, write_manifest

    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (folder / name).write_bytes(files["video"].read_bytes())
    out = tmp_path / "out"
    code, err = run(capsys, "--recipe", files["recipe"], folder, "-o", out, "--audio-format", "flac")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a.flac", "a.mp4", "b.flac", "b.mp4"]
    assert load_audio(out / "a.flac", sample_rate=SR).shape[1] == round(probe(files["video"]).video_duration * SR)

    listed = tmp_path / "list.csv"
    write_manifest([Clip(path="videos/b.mp4")], listed)
    out2 = tmp_path / "out2"
    code, err = run(capsys, "--recipe", files["recipe"], listed, "-o", out2)
    assert code == 0, err
    assert sorted(p.name for p in out2.iterdir()) == ["b.mp4", "b.wav"]

    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = run(capsys, "--recipe", files["recipe"], empty, "-o", tmp_path / "out3")
    assert code != 0 and "holds no video" in err and not (tmp_path / "out3").exists()


def test_a_manifests_split_below_a_root_and_a_killed_batch_continued(files, tmp_path, capsys):
    from v2a.manifests import Clip, write_manifest

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (videos / name).write_bytes(files["video"].read_bytes())
    listed = tmp_path / "lists" / "clips.csv"  # paths relative to videos/, not to the manifest
    listed.parent.mkdir()
    write_manifest([Clip(path="a.mp4", split="test"), Clip(path="b.mp4", split="train"),
                    Clip(path="c.mp4", split="test")], listed)
    out = tmp_path / "out"
    code, err = run(capsys, "--recipe", files["recipe"], listed, "--root", videos, "--split",
                    "test", "-o", out)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "a.wav", "c.mp4", "c.wav"]

    # a batch killed after a.*: c's wav was never written. --skip-finished keeps a.* as it is
    # and generates c again; without it the finished a.mp4 is refused.
    finished = {name: (out / name).read_bytes() for name in ("a.mp4", "a.wav")}
    before = (out / "c.mp4").stat().st_mtime_ns
    (out / "c.wav").unlink()
    code, err = run(capsys, "--recipe", files["recipe"], listed, "--root", videos, "--split",
                    "test", "-o", out)
    assert code != 0 and "a.wav exists; pass --overwrite" in err and "--skip-finished" in err
    code, err = run(capsys, "--recipe", files["recipe"], listed, "--root", videos, "--split",
                    "test", "-o", out, "--skip-finished")
    assert code == 0, err
    assert "kept the finished outputs of 1 of 2 videos" in err
    assert {name: (out / name).read_bytes() for name in finished} == finished
    assert (out / "c.wav").is_file() and (out / "c.mp4").stat().st_mtime_ns != before
    code, err = run(capsys, "--recipe", files["recipe"], listed, "--root", videos, "--split",
                    "test", "-o", out, "--skip-finished")  # all finished: nothing to do
    assert code == 0 and "kept the finished outputs of 2 of 2 videos" in err

    code, err = run(capsys, "--recipe", files["recipe"], listed, "--root", videos, "--split",
                    "val", "-o", tmp_path / "none")
    assert code != 0 and "no clip in the split 'val'" in err
    code, err = run(capsys, "--recipe", files["recipe"], listed, "-o", out, "--skip-finished",
                    "--overwrite")
    assert code != 0 and "give one of them" in err


# -- a training run of another recipe ------------------------------------------------------------


def test_a_run_of_another_recipe_is_refused_in_one_sentence(files, trained):
    warnings = []
    VideoToAudio.from_recipe(load_recipe(files["recipe"]), trained, warn=warnings.append)
    # sampling, training and data options do not change what the weights mean
    VideoToAudio.from_recipe(load_recipe(files["recipe"], ["sampling.steps=[1]", "training.lr=0.1",
                                                           "data.clip_seconds=3.0"]),
                             trained, warn=warnings.append)
    assert warnings == []

    # another encoder rate: the same tensor shapes, but features the weights never saw
    with pytest.raises(UserError) as exc:
        VideoToAudio.from_recipe(load_recipe(files["recipe"], ["visual_encoders.clip.fps=4.0"]), trained)
    text = str(exc.value)
    assert "(visual_encoders.clip.fps: 2.0 in the run, 4.0 in the recipe)" in text
    assert text.endswith(f"generate with --recipe {trained / 'recipe.yaml'}") and "\n" not in text

    # a swapped plug-in is named first; at most three keys are listed
    swapped = load_recipe(files["recipe"], ["visual_encoders.motion=clip", "codec.hop_length=64",
                                            "visual_encoders.motion.embed_dim=37"])  # fuser's width
    with pytest.raises(UserError) as exc:
        check_run_recipe(trained, swapped)
    text = str(exc.value)
    assert "(visual_encoders.motion.plugin: 'colour_motion' in the run, 'clip' in the recipe, " in text
    assert text.count(" in the run, ") == 3 and " more); generate with --recipe " in text


def test_weights_files_are_compared_by_place_and_content(files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.pt").write_bytes(b"one")
    (tmp_path / "copy.pt").write_bytes(b"one")
    (tmp_path / "other.pt").write_bytes(b"two")
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    def check(saved_weights: str, warn=None, weights: str = "w.pt") -> None:
        saved = load_recipe(files["recipe"], [f"visual_encoders.clip.weights={saved_weights}"])
        (run_dir / "recipe.yaml").write_text(saved.to_yaml())
        own = load_recipe(files["recipe"], [f"visual_encoders.clip.weights={weights}"])
        check_run_recipe(run_dir, own, warn)

    warnings = []
    for same in ("w.pt", str(tmp_path / "w.pt"), "./w.pt", "copy.pt"):  # one place, or one content
        check(same, warnings.append)
    assert warnings == []
    check(str(tmp_path / "gone.pt"), warnings.append, weights="gone.pt")  # missing, but one place
    assert warnings == []
    check(str(tmp_path / "gone.pt"), warnings.append)  # cannot be told: a warning, not a refusal
    assert len(warnings) == 1 and "cannot tell whether visual_encoders.clip.weights" in warnings[0]
    for other in ("other.pt", "none", "pretrained"):
        with pytest.raises(UserError, match=rf"visual_encoders.clip.weights: '{other}' in the run, "
                                            r"'w.pt' in the recipe"):
            check(other)
    assert same_weights("None", "none") and not same_weights("none", "pretrained")


# -- frames in memory ----------------------------------------------------------------------------


def test_frames_in_memory_give_the_files_audio(files):
    # both encoders take 32 x 32 frames, the video's own size: nothing is resized, so each encoder
    # sees the same bytes whether the video comes as a file or as its decoded frames
    model = VideoToAudio.from_recipe(load_recipe(files["recipe"], ["visual_encoders.motion.size=32"]),
                                     warn=lambda _: None)
    expected, sr = model.generate(files["long"], seed=3, candidates=2)  # 3 s: two windows, reranked
    decoded = load_video(files["long"], fps=8.0)  # the file's own rate
    as_bytes = rearrange(load_video(files["long"], fps=8.0, dtype=torch.uint8).frames,
                         "t c h w -> t h w c")
    for video, fps in ((decoded, None), (decoded.frames, 8.0), (as_bytes, 8.0)):
        audio, rate = model.generate(video, fps=fps, seed=3, candidates=2)
        assert rate == sr and torch.equal(audio, expected)
    # (the frames matter: the same video played backwards is encoded otherwise; the random
    # generator's output may not depend on it yet, AdaLN-Zero starts without conditioning)
    from v2a.generate import video_source

    forwards = model.encode_video(video_source(as_bytes, 8.0), 3.0)
    backwards = model.encode_video(video_source(as_bytes.flip(0), 8.0), 3.0)
    assert all(not torch.equal(forwards[k].values, backwards[k].values) for k in forwards)
    # a shorter --duration: the frames are cut by time, as the file is
    short, _ = model.generate(files["long"], duration=1.5, seed=4, candidates=1)
    again, _ = model.generate(as_bytes, fps=8.0, duration=1.5, seed=4, candidates=1)
    assert short.shape == (1, round(1.5 * SR)) and torch.equal(short, again)


def test_frames_in_memory_are_resampled_and_resized_as_load_video_does(tmp_path):
    steady = write_video(tmp_path / "steady.mp4", seconds=1.3, fps=10.0, width=32, height=24)
    # the frame on screen, not the nearest one: at 2/3 s frame 6 (from 0.6 s), not frame 7
    thirds = resample_video(load_video(steady, fps=10.0), fps=3.0)
    assert frame_indices(thirds.frames) == [0, 3, 6, 10]
    # variable frame rate: frames at uneven times, each shown until the next; decoded on a grid
    # fine enough to hold every frame at its own time
    times = [0.0, 0.1, 0.15, 0.4, 0.45, 0.5, 0.8, 1.1, 1.2, 1.25]
    uneven = write_video(tmp_path / "vfr.mp4", times=times, fps=10.0, width=32, height=24)
    for path, native in ((steady, load_video(steady, fps=10.0)), (uneven, load_video(uneven, fps=40.0))):
        for fps, start, duration in ((3.0, 0.0, None), (7.5, 0.38, 0.8), (4.0, 0.45, None),
                                     (2.0, 0.0, 1.0), (25.0, 0.62, 0.5)):
            direct = load_video(path, fps=fps, start=start, duration=duration)
            again = resample_video(native, fps=fps, start=start, duration=duration)
            assert torch.equal(again.frames, direct.frames) and torch.equal(again.times, direct.times)
            assert torch.allclose(again.frame_times, direct.frame_times, atol=1e-6)
            # resized by the same scaler: from RGB here, from the file's YUV there, so not bit-exact
            small = load_video(path, fps=fps, size=16, start=start, duration=duration)
            resized = resample_video(native, fps=fps, size=16, start=start, duration=duration)
            assert resized.frames.shape == small.frames.shape == (direct.num_frames, 3, 16, 16)
            assert frame_indices(resized.frames) == frame_indices(small.frames)

    def gradient(i: int) -> np.ndarray:  # smooth content, as in most real videos
        y, x = np.mgrid[0:24, 0:32]
        return np.stack([x * 6 + i * 4, y * 8, (x + y) * 4], axis=-1).astype(np.uint8)

    path = write_video(tmp_path / "smooth.mp4", seconds=1.0, fps=8.0, width=32, height=24,
                       image=gradient)
    for size in (16, (8, 12), 48):
        direct = load_video(path, fps=4.0, size=size)
        resized = resample_video(load_video(path, fps=8.0), fps=4.0, size=size)
        error = (resized.frames - direct.frames).abs()
        assert resized.frames.shape == direct.frames.shape
        assert float(error.mean()) < 4 / 255 and float(error.max()) < 12 / 255


@pytest.mark.parametrize("video, fps, words", [
    (torch.zeros(4, 8, 8, 3, dtype=torch.uint8), None, "need their frame rate, a positive fps"),
    (torch.zeros(4, 8, 8, 3, dtype=torch.uint8), 0.0, "need their frame rate, a positive fps"),
    (torch.zeros(4, 3, 8, 8, dtype=torch.uint8), 8.0, "a uint8 tensor [t, h, w, 3] or a float tensor"),
    (torch.full((4, 3, 8, 8), 2.0), 8.0, "float frames must lie in [0, 1]"),
    (torch.zeros(0, 3, 8, 8), 8.0, "with t > 0"),
    ("clip.mp4", 8.0, "has its own frame times"),
    ([1, 2, 3], None, "not list"),
])
def test_frames_that_cannot_be_used_give_one_sentence(files, video, fps, words):
    model = VideoToAudio.from_recipe(load_recipe(files["recipe"]), warn=lambda _: None)
    with pytest.raises(UserError) as exc:
        model.generate(video, fps=fps)
    assert words in str(exc.value) and "\n" not in str(exc.value)


# -- -o as a file ------------------------------------------------------------------------------


def test_output_names_the_files_of_one_video(files, tmp_path, capsys):
    length = round(probe(files["video"]).video_duration * SR)
    code, err = run(capsys, "--recipe", files["recipe"], files["video"],
                    "-o", tmp_path / "new" / "take.mp4", "sampling.steps=[1]")
    assert code == 0, err
    assert sorted(tree(tmp_path)) == ["new", "new/take.mp4", "new/take.wav"]  # folder made
    assert wav_len(tmp_path / "new" / "take.wav") == length
    assert probe(tmp_path / "new" / "take.mp4").has_audio

    # the audio format from the suffix, or from --audio-format beside an .mp4
    for output, extra, written in (("song.flac", [], ["song.flac", "song.mp4"]),
                                   ("clip.mp4", ["--audio-format", "flac"], ["clip.flac", "clip.mp4"])):
        out = tmp_path / output.split(".")[0]
        code, err = run(capsys, "--recipe", files["recipe"], files["video"], "-o", out / output,
                        "sampling.steps=[1]", *extra)
        assert code == 0, err
        assert sorted(p.name for p in out.iterdir()) == written
        assert load_audio(out / written[0], sample_rate=SR).shape[1] == length

    # an existing folder with a media suffix stays a folder
    box = tmp_path / "box.mp4"
    box.mkdir()
    code, err = run(capsys, "--recipe", files["recipe"], files["video"], "-o", box, "sampling.steps=[1]")
    assert code == 0, err
    assert sorted(p.name for p in box.iterdir()) == ["clip.mp4", "clip.wav"]


def test_a_recipe_naming_its_fuser_and_generator_weights_needs_no_checkpoint(files, trained):
    named = [f"fuser.weights={trained / 'fuser.safetensors'}",
             f"generator.weights={trained / 'generator.safetensors'}"]
    warnings = []
    bundled = VideoToAudio.from_recipe(load_recipe(files["recipe"], named), warn=warnings.append)
    assert warnings == []
    from_run = VideoToAudio.from_recipe(load_recipe(files["recipe"]), trained, warn=warnings.append)
    a, _ = bundled.generate(files["video"], seed=3)
    b, _ = from_run.generate(files["video"], seed=3)
    assert torch.equal(a, b)
    # a run replaces the recipe's own weights: its recipe.yaml (weights none) still agrees
    VideoToAudio.from_recipe(load_recipe(files["recipe"], named), trained, warn=warnings.append)
    assert warnings == []
    # neither a run nor weights: the sound is noise, and the user is told
    VideoToAudio.from_recipe(load_recipe(files["recipe"], named[:1]), warn=warnings.append)
    assert len(warnings) == 1 and "the generator is randomly initialised" in warnings[0]


# -- optional dependencies and messages ----------------------------------------------------------


def test_reranking_needs_no_torchaudio(files, monkeypatch):
    # the base install has no torchaudio (only the beats extra brings it): candidates reach the
    # reranker at its own rate all the same (the recipe's codec runs at 8 kHz, its mel at 16 kHz)
    monkeypatch.setitem(sys.modules, "torchaudio", None)
    monkeypatch.setitem(sys.modules, "torchaudio.functional", None)
    model = VideoToAudio.from_recipe(load_recipe(files["recipe"]), warn=lambda _: None)
    seen = []
    real = model.reranker.score
    monkeypatch.setattr(model.reranker, "score", lambda wavs, video: seen.append(wavs) or real(wavs, video))
    audio, sr = model.generate(files["video"], seed=2, candidates=2)
    assert audio.shape == (1, round(probe(files["video"]).video_duration * SR))
    assert bool(torch.isfinite(audio).all())
    frames = model.codec.num_frames(audio.shape[-1])  # one window: the whole video
    decoded = model.codec.num_samples(frames)  # what the codec decodes each candidate to
    assert len(seen) == 1 and seen[0].shape == (1, 2, 1, decoded * 16000 // SR)


class Recorded(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_warnings_go_through_the_v2a_logger(files, tmp_path):
    logger = logging.getLogger("v2a")
    recorded = Recorded()
    logger.addHandler(recorded)
    try:
        VideoToAudio.from_recipe(load_recipe(files["recipe"]))  # no run, no weights
        check_run_recipe(tmp_path, load_recipe(files["recipe"]))  # a run without recipe.yaml
    finally:
        logger.removeHandler(recorded)
    texts = [r.getMessage() for r in recorded.records]
    assert all(r.levelno == logging.WARNING for r in recorded.records) and len(texts) == 2, texts
    assert "the fuser and generator are randomly initialised" in texts[0]
    assert "has no readable recipe.yaml" in texts[1]
    assert not any(t.startswith(("v2a:", "warning:")) for t in texts)  # the CLI adds the prefix


def test_a_runs_weights_are_found_by_the_names_its_training_task_exports(files, trained, tmp_path,
                                                                          monkeypatch):
    # the installed plug-ins, and one more whose training task exports the fuser and generator
    # under names of its own
    registry = Registry.from_environment()
    monkeypatch.setattr("v2a.registry.override", registry)
    plugin = types.ModuleType("renamed_exports")

    @hookimpl
    def v2a_register_training_tasks(register):
        register(TrainingTaskSpec(name="renamed", build=lambda recipe: None,
                                  exports={"fuser": "fuse.safetensors", "generator": "gen.safetensors"}))

    plugin.v2a_register_training_tasks = v2a_register_training_tasks
    registry.register_module(plugin)
    run_dir = tmp_path / "renamed_run"
    run_dir.mkdir()
    for name, new in (("fuser", "fuse"), ("generator", "gen"), ("recipe", "recipe")):
        suffix = ".yaml" if name == "recipe" else ".safetensors"
        (run_dir / f"{new}{suffix}").write_bytes((trained / f"{name}{suffix}").read_bytes())
    recipe = load_recipe(files["recipe"])
    renamed = VideoToAudio.from_recipe(recipe, run_dir, warn=lambda _: None)
    original = VideoToAudio.from_recipe(recipe, trained, warn=lambda _: None)
    for slot in ("fuser", "generator"):
        ours, theirs = getattr(renamed, slot).state_dict(), getattr(original, slot).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    (run_dir / "gen.safetensors").unlink()  # the message names every name a task exports
    with pytest.raises(UserError, match=r"has no gen.safetensors or generator.safetensors; is it"):
        VideoToAudio.from_recipe(recipe, run_dir)
