"""`v2a generate` and :class:`v2a.generate.VideoToAudio` on a tiny recipe of real components
(spectral RVQ codec, colour_motion and a small random CLIP, the MaskVAT fuser and Hybrid
generator, SCAV with a mel encoder), randomly initialised, on generated videos."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tests.media_fixtures import write_broken, write_video
from v2a.cli import main
from v2a.generate import VideoToAudio
from v2a.media import load_audio, probe
from v2a.recipe import load_recipe
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
fuser: {plugin: maskvat, streams: {motion: 34, clip: 16}, dim: 16, aligned: true, context: true,
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
    ("no_video", "has no video stream"),
    ("empty", "is empty"),
    ("option", "unrecognized arguments"),
])
def test_bad_inputs_give_one_sentence_and_no_output(files, tmp_path, capsys, case, words):
    out = tmp_path / "out"
    video = {"missing": tmp_path / "nope.mp4", "option": files["video"]}.get(case) or files["broken"][case]
    extra = ["--frobnicate", "3"] if case == "option" else []
    if case == "option":
        with pytest.raises(SystemExit) as exc:
            main(["generate", "--recipe", str(files["recipe"]), str(video), "-o", str(out), *extra])
        code, err = exc.value.code, capsys.readouterr().err
    else:
        code, err = run(capsys, "--recipe", files["recipe"], video, "-o", out)
    assert code != 0
    assert words in err
    assert not out.exists() or not any(out.iterdir())


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
    trained = VideoToAudio.from_recipe(recipe, run_dir)
    d, _ = trained.generate(files["video"], seed=5, candidates=2)
    assert d.shape == a.shape and not torch.equal(a, d)

    # a checkpoint of another recipe (another generator width) is refused in one sentence
    other = load_recipe(files["recipe"], ["generator.width=64"])
    from v2a.errors import UserError

    with pytest.raises(UserError, match="another shape") as exc:
        VideoToAudio.from_recipe(other, run_dir)
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
    import v2a.sampler

    calls = []
    real = v2a.sampler.sample

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append((kwargs.get("prompt"), out))
        return out

    monkeypatch.setattr(v2a.sampler, "sample", spy)
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
    from v2a.data import Clip, write_manifest

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
