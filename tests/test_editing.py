"""Masked editing in `v2a generate` and :meth:`VideoToAudio.generate`: ``--keep-audio
--regenerate`` and ``--audio-prompt``, on the tiny recipe of tests/test_generate.py (randomly
initialised: these tests check what is kept and how it is spliced, not how good the sound is)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import v2a.generate.model
from tests.media_fixtures import write_audio, write_video
from tests.test_generate import RECIPE, SR
from v2a.cli import main
from v2a.generate import VideoToAudio
from v2a.generate.editing import AudioEdit, plan_edit
from v2a.media import load_audio, resample_audio
from v2a.recipe import load_recipe

SECONDS = 3.0  # longer than the recipe's 2 s window: two generation windows
FRAME_RATE = 62.5  # the spectral codec's: 8000 Hz / hop 128
RAMP = round(0.02 * SR)  # samples of the default 20 ms crossfade

# float32 mixing kept · cos + generated · sin, each product and the sum rounded once: at most
# 3 half-ulps of the magnitudes involved, bounded by 4 · eps32 · (|kept| + |generated|)
# (weights cast from float64 to float32 add at most one more half-ulp per product)
MIX_TOLERANCE = 4 * float(torch.finfo(torch.float32).eps)


def noise(seconds: float, seed: int, channels: int = 1) -> np.ndarray:
    """Band-limited noise in [-0.4, 0.4]: sound whose codes change from frame to frame."""
    rng = np.random.default_rng(seed)
    wave = rng.uniform(-1, 1, (channels, round(seconds * SR)))
    wave = np.stack([np.convolve(row, np.ones(4) / 4, mode="same") for row in wave])
    return (0.4 * wave).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("editing")
    (root / "tiny.yaml").write_text(RECIPE)
    return {
        "recipe": root / "tiny.yaml",
        # PCM in Matroska: the kept audio decodes to the same samples every time
        "video": write_video(root / "clip.mkv", seconds=SECONDS, fps=8.0, wave=noise(SECONDS, 0),
                             sample_rate=SR, audio_codec="pcm_s16le"),
        "silent": write_video(root / "silent.mkv", seconds=SECONDS, fps=8.0),
        "prompt": write_audio(root / "prompt.wav", noise(0.7, 1), SR),
        "long_prompt": write_audio(root / "long.wav", noise(4.0, 2), SR),
    }


@pytest.fixture(scope="module")
def model(files) -> VideoToAudio:
    return VideoToAudio.from_recipe(load_recipe(files["recipe"]), warn=lambda _: None)


def kept_audio(files) -> torch.Tensor:
    return load_audio(files["video"], sample_rate=SR, channels=1, duration=SECONDS)


def edit_codes(model: VideoToAudio, video: Path, edit: AudioEdit, seed: int) -> torch.Tensor:
    """The codes :meth:`VideoToAudio.generate` samples for ``edit`` (one candidate)."""
    total = model.codec.num_frames(round(SECONDS * SR))
    options = model.sampling_options(candidates=1)
    return model.generate_codes(video, start=0.0, duration=SECONDS, total=total,
                                width=model.width_for(SECONDS, total), seed=seed,
                                options=options, prompt=edit.prompt(model.codec, total))


def test_codes_outside_the_regenerated_stretches_are_the_kept_audios(files, model, monkeypatch):
    stretches = [(1.2, 1.4), (2.5, 2.81)]
    edit = plan_edit(keep_audio=files["video"], regenerate=stretches, start=0.0,
                     duration=SECONDS, sample_rate=SR, channels=1)
    original = model.codec.encode(kept_audio(files)[None])[0]  # [k, total], encoded here
    codes = edit_codes(model, files["video"], edit, seed=4)
    assert codes.shape == original.shape == (2, 188)
    # every frame that overlaps a stretch is hidden: [floor(a · 62.5), ceil(b · 62.5))
    hidden = torch.zeros(188, dtype=torch.bool)
    hidden[75:88] = True  # 1.2-1.4 s: frames 75 (1.200-1.216 s) to 87 (1.392-1.408 s)
    hidden[156:176] = True  # 2.5-2.81 s: frames 156 to 175 (2.800-2.816 s)
    assert torch.equal(~edit.known_frames(FRAME_RATE, 188), hidden)
    assert torch.equal(codes[:, ~hidden], original[:, ~hidden])  # exactly the original's codes
    assert not torch.equal(codes[:, hidden], original[:, hidden])  # the stretches were sampled

    # a window with nothing hidden is not sampled: only the second window (frames 63-187) is
    calls = []
    real = v2a.generate.model.sample
    monkeypatch.setattr(v2a.generate.model, "sample",
                        lambda *a, **k: calls.append(k["prompt"]) or real(*a, **k))
    late = plan_edit(keep_audio=files["video"], regenerate=[(2.5, 2.81)], start=0.0,
                     duration=SECONDS, sample_rate=SR, channels=1)
    codes = edit_codes(model, files["video"], late, seed=4)
    assert len(calls) == 1
    assert calls[0].known[0, :, 156 - 63:176 - 63].logical_not().all()
    assert torch.equal(codes[:, :156], original[:, :156])


def test_the_output_is_the_kept_audio_away_from_the_seams_and_crossfades_by_the_formula(
        files, model):
    stretches = [(1.2, 1.4), (2.5, 2.81)]
    audio, sr = model.generate(files["video"], seed=4, candidates=1, keep_audio=files["video"],
                               regenerate=stretches)
    edit = plan_edit(keep_audio=files["video"], regenerate=stretches, start=0.0,
                     duration=SECONDS, sample_rate=SR, channels=1)
    codes = edit_codes(model, files["video"], edit, seed=4)
    generated = model.decode_codes(codes, round(SECONDS * SR), window=codes.shape[-1])
    kept = kept_audio(files)
    assert sr == SR and audio.shape == kept.shape == generated.shape == (1, 24000)

    spans = [(9600, 11200), (20000, 22480)]  # the stretches in samples, round(seconds · 8000)
    distance = torch.full((24000,), 10**9)
    position = torch.arange(24000)
    for a, b in spans:
        assert torch.equal(audio[:, a:b], generated[:, a:b])  # inside: the decoded codes
        away = torch.where(position < a, a - position, (position - b + 1).clamp(min=0))
        distance = torch.minimum(distance, away)
    far = distance > RAMP
    assert torch.equal(audio[:, far], kept[:, far])  # bit for bit, not the codec's round trip
    assert not torch.allclose(generated[:, far], kept[:, far], atol=1e-3)  # (which differs)

    # the 20 ms on the kept side of each of the 4 seams: kept · cos phi + generated · sin phi
    ramp = (distance >= 1) & (distance <= RAMP)
    assert int(ramp.sum()) == 4 * RAMP
    phi = math.pi / 2 * (1 - (distance[ramp].double() - 0.5) / RAMP)
    k, g = kept[0, ramp].double(), generated[0, ramp].double()
    expected = k * torch.cos(phi) + g * torch.sin(phi)
    assert (audio[0, ramp].double() - expected).abs().le(MIX_TOLERANCE * (k.abs() + g.abs())).all()


def test_an_audio_prompt_is_kept_at_the_start_and_continued(files, model, tmp_path):
    # given in memory at 16 kHz: resampled to the codec's 8 kHz first
    at_16k = resample_audio(load_audio(files["prompt"], sample_rate=SR, channels=1), SR, 16000)
    prompt = resample_audio(at_16k, 16000, SR)  # what the model keeps, 5600 samples
    audio, _ = model.generate(files["video"], seed=2, candidates=1, audio_prompt=at_16k,
                              audio_rate=16000)
    assert torch.equal(audio[:, :5600 - RAMP], prompt[:, :5600 - RAMP])
    edit = plan_edit(audio_prompt=at_16k, audio_rate=16000, start=0.0, duration=SECONDS,
                     sample_rate=SR, channels=1)
    assert edit.regenerate == ((0.7, SECONDS),)
    codes = edit_codes(model, files["video"], edit, seed=2)
    padded = torch.nn.functional.pad(prompt, (0, 24000 - 5600))
    original = model.codec.encode(padded[None])[0]
    kept = math.floor(0.7 * FRAME_RATE)  # frames 0-42 end by 0.7 s; frame 43 holds 0.7 s
    assert torch.equal(codes[:, :kept], original[:, :kept])
    assert not torch.equal(codes[:, kept:], original[:, kept:])

    # the command line: a file as the prompt, the rest of the clip generated after it
    out = tmp_path / "out"
    assert main(["generate", "--recipe", str(files["recipe"]), str(files["video"]), "-o", str(out),
                 "--audio-prompt", str(files["prompt"]), "--raw-audio", "--candidates", "1",
                 "--seed", "2"]) == 0
    written = load_audio(out / "clip.wav", sample_rate=SR)
    from_file, _ = model.generate(files["video"], seed=2, candidates=1,
                                  audio_prompt=files["prompt"])
    from_prompt = load_audio(files["prompt"], sample_rate=SR)
    assert torch.equal(from_file[:, :5600 - RAMP], from_prompt[:, :5600 - RAMP])
    # 16-bit wav: within one step of 1/32768 (and a half for the rounding of the write)
    assert (written - from_file).abs().max() <= 1.5 / 32768


def test_keep_audio_on_the_command_line(files, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["generate", "--recipe", str(files["recipe"]), str(files["video"]), "-o", str(out),
                 "--keep-audio", "--regenerate", "1.2-1.4", "--raw-audio", "--crossfade", "0"])
    assert code == 0, capsys.readouterr().err
    written, kept = load_audio(out / "clip.wav", sample_rate=SR), kept_audio(files)
    outside = torch.ones(24000, dtype=torch.bool)
    outside[9600:11200] = False  # a hard cut: everything outside is the kept audio
    # the input's 16-bit samples written again as 16-bit: the same within a rounding step
    assert (written[:, outside] - kept[:, outside]).abs().max() <= 1.5 / 32768
    assert (written[:, ~outside] - kept[:, ~outside]).abs().max() > 0.01


@pytest.mark.parametrize("args, words", [
    (["--regenerate", "1-2"], "--regenerate needs --keep-audio"),
    (["--keep-audio"], "keeps the whole clip unless --regenerate"),
    (["--keep-audio", "--regenerate", "1-2", "--audio-prompt", "PROMPT"], "give one of them"),
    (["--keep-audio", "--regenerate", "2-1"], "ends before it starts"),
    (["--keep-audio", "--regenerate", "0.5-1,0.8-1.2"], "overlap"),
    (["--keep-audio", "--regenerate", "2.5-4"], "ends after the clip (3.00 s)"),
    (["--keep-audio", "--regenerate=-1-2"], "START-END"),
    (["--keep-audio", "--regenerate", "1.5"], "START-END"),
    (["--keep-audio", "--regenerate", "1-2", "--crossfade", "-0.1"], "--crossfade"),
    (["--audio-prompt", "LONG"], "not less than the 3.00 s"),
    (["--audio-prompt", "MISSING"], "does not exist"),
    (["SILENT", "--keep-audio", "--regenerate", "1-2"], "has no audio track to keep"),
])
def test_editing_options_that_cannot_work_give_one_sentence(files, tmp_path, capsys, args, words):
    names = {"PROMPT": files["prompt"], "LONG": files["long_prompt"],
             "MISSING": tmp_path / "nowhere.wav", "SILENT": files["silent"]}
    args = [str(names.get(a, a)) for a in args]
    video = [] if args[0] == str(files["silent"]) else [str(files["video"])]
    out = tmp_path / "out"
    code = main(["generate", "--recipe", str(files["recipe"]), *video, *args, "-o", str(out)])
    err = capsys.readouterr().err
    assert code != 0 and words in err and err.count("\n") == 1, err
    assert not out.exists()


def test_the_python_api_refuses_what_the_command_line_refuses(files, model):
    with pytest.raises(v2a.generate.GenerationError, match="keeps the whole clip"):
        model.generate(files["video"], keep_audio=files["video"])
    with pytest.raises(v2a.generate.GenerationError, match="lasts 1.00 s but the clip 3.00 s"):
        model.generate(files["video"], keep_audio=torch.zeros(1, SR), regenerate=[(1, 2)])
    # channels are matched to the codec's: a mono codec keeps the mean of the channels given
    stereo = torch.stack([torch.linspace(-1, 1, 3 * SR), torch.linspace(1, 0, 3 * SR)])
    edit = plan_edit(keep_audio=stereo, regenerate=[(1, 2)], start=0.0, duration=SECONDS,
                     sample_rate=SR, channels=1)
    assert torch.equal(edit.kept, stereo.mean(dim=0, keepdim=True))
    with pytest.raises(v2a.generate.GenerationError, match="3 channels and the codec 2"):
        plan_edit(keep_audio=torch.zeros(3, 3 * SR), regenerate=[(1, 2)], start=0.0,
                  duration=SECONDS, sample_rate=SR, channels=2)
    with pytest.raises(v2a.generate.GenerationError, match="--regenerate needs --keep-audio"):
        model.generate(files["video"], regenerate=[(1, 2)])


def test_the_bundled_model_regenerates_a_stretchs_events_without_onsets_at_the_seams(tmp_path):
    from v2a.metrics.onsets import DEFAULT_TOLERANCE, detect_onsets, match_onsets
    from v2a.synth import read_events, write_synth

    reference = write_synth(tmp_path / "reference", clips=6, seed=1000)  # never trained on
    events = read_events(reference / "events.jsonl")
    videos = sorted(reference.glob("*.mp4"))
    model = VideoToAudio.from_recipe(load_recipe("tiny"))
    first, last = 0.9, 2.7  # seconds of each 4 s clip generated again (14 events inside)

    def inside_f1(pictures: list[Path], *, check_seams: bool) -> float:
        """F1 of the onsets inside the stretch, each clip's audio kept and the stretch
        regenerated from ``pictures[i]``; with ``check_seams``, asserts that no onset lies
        within 30 ms of a seam without a true event there (none the splice made)."""
        hits = detected_inside = true_inside = 0
        for video, shown in zip(videos, pictures):
            truth = np.array([e.time for e in events[video.name]])
            audio, sr = model.generate(shown, seed=0, keep_audio=video, regenerate=[(first, last)])
            found = detect_onsets(audio.numpy(), sr)
            inside = found[(found >= first) & (found < last)]
            expected = truth[(truth >= first) & (truth < last)]
            hits += len(match_onsets(inside, expected))
            detected_inside += len(inside)
            true_inside += len(expected)
            for seam in (first, last) if check_seams else ():
                for onset in found[np.abs(found - seam) <= 0.03]:
                    assert np.abs(truth - onset).min() <= DEFAULT_TOLERANCE, (video.name, onset)
        assert true_inside >= 10  # enough events inside the stretches for the F1 to mean something
        return 2 * hits / max(1, detected_inside + true_inside)

    recovered = inside_f1(videos, check_seams=True)
    assert recovered >= 0.8
    # the control: the stretches generated from another clip's pictures miss the events, so
    # they were sounded from the video, not carried over from the kept audio
    assert inside_f1(videos[1:] + videos[:1], check_seams=False) < 0.5 * recovered
