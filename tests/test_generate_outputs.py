"""What `v2a generate` promises about its outputs: the (audio, mp4) pair is committed as one, a
killed or failed run leaves the old pair (or nothing) and no file a later run mistakes for input,
two runs on the same output do not interleave, everything that can be known up front is checked
before a model is loaded, and long videos are decoded window by window.

The model is the bundled tiny one (`recipes/tiny.yaml`): offline, about a second per short video.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import v2a.generate.model
from tests.media_fixtures import write_audio as fixture_audio
from tests.media_fixtures import write_video
from v2a.cli import main
from v2a.files import OutputLock, is_temporary, journal_path, temporary_path, write_text_atomic
from v2a.generate import VideoToAudio, decode_in_windows
from v2a.media import generated_by_v2a, load_audio, probe
from v2a.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
SR = 16000  # the tiny codec's rate


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    return write_video(folder / "clip.mp4", seconds=1.2, fps=10.0, width=64, height=64)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def run(capsys, *argv) -> tuple[int, str]:
    """``v2a generate --recipe tiny ARGV``: the exit code and stderr without its warning and note
    lines (the tiny codec's raw output overshoots full scale now and then: the limiter says so)."""
    code = main(["generate", "--recipe", "tiny", *map(str, argv)])
    err = capsys.readouterr().err
    return code, "".join(line for line in err.splitlines(keepends=True)
                         if not line.startswith(("v2a: warning:", "v2a: note:")))


def run_all(capsys, *argv) -> tuple[int, str]:
    """:func:`run` with every line of stderr."""
    code = main(["generate", "--recipe", "tiny", *map(str, argv)])
    return code, capsys.readouterr().err


def generate_in_subprocess(*argv: str, before: str = "") -> subprocess.CompletedProcess:
    """``v2a generate --recipe tiny ARGV`` in a fresh interpreter, after running ``before`` there
    (e.g. a monkeypatch that kills the process half-way)."""
    code = textwrap.dedent(before) + "\nimport sys\nfrom v2a.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, "generate", "--recipe", "tiny", *argv],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


# -- the pair is one commit ----------------------------------------------------------------------


def test_outputs_say_v2a_wrote_them_and_a_failed_overwrite_keeps_the_old_pair(clip, tmp_path,
                                                                              capsys, monkeypatch):
    out = tmp_path / "out"
    assert run(capsys, clip, "-o", out, "--seed", 1)[0] == 0
    wav, mp4 = out / "clip.wav", out / "clip.mp4"
    assert generated_by_v2a(wav) and generated_by_v2a(mp4) and not generated_by_v2a(clip)
    old = (wav.read_bytes(), mp4.read_bytes())

    def broken_mux(video, audio, sample_rate, out_path, **kwargs):
        Path(out_path).write_bytes(b"half an mp4")
        raise OSError(28, "No space left on device", str(out_path))

    monkeypatch.setattr("v2a.generate.outputs.mux_audio", broken_mux)
    code, err = run(capsys, clip, "-o", out, "--seed", 2, "--overwrite")
    assert code == 1 and "no space left on device" in err.lower() and err.count("\n") == 1
    assert (wav.read_bytes(), mp4.read_bytes()) == old  # both old: the new wav never landed
    assert files_in(out) == ["clip.mp4", "clip.wav"]  # and no temporaries


def test_a_run_killed_while_muxing_leaves_the_old_pair_and_the_next_run_cleans_up(clip, tmp_path):
    out = tmp_path / "out"
    first = generate_in_subprocess(str(clip), "-o", str(out))
    assert first.returncode == 0, first.stderr
    old = ((out / "clip.wav").read_bytes(), (out / "clip.mp4").read_bytes())
    killed = generate_in_subprocess(str(clip), "-o", str(out), "--overwrite", "--seed", "3", before="""
        import os, signal, v2a.media
        real = v2a.media.mux_audio
        def mux_and_die(*args, **kwargs):
            real(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        v2a.media.mux_audio = mux_and_die
    """)
    assert killed.returncode == -signal.SIGKILL
    assert ((out / "clip.wav").read_bytes(), (out / "clip.mp4").read_bytes()) == old
    left = [p for p in out.iterdir() if p.name not in ("clip.wav", "clip.mp4")]
    assert left and all(is_temporary(p) for p in left)  # the dead run's temporaries
    # a folder scan never takes them (or the outputs) as videos; the next run removes them
    again = generate_in_subprocess(str(out), "--overwrite")
    assert again.returncode != 0 and "holds no video besides v2a's own outputs" in again.stderr
    done = generate_in_subprocess(str(clip), "-o", str(out), "--overwrite", "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert files_in(out) == ["clip.mp4", "clip.wav"]
    assert (out / "clip.mp4").read_bytes() != old[1]


def test_a_commit_a_killed_run_had_decided_is_finished_by_the_next_run(clip, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(capsys, clip, "-o", out)[0] == 0
    mp4 = out / "clip.mp4"
    # the state a run killed between its two renames leaves: new wav in place, new mp4 staged
    new_mp4 = temporary_path(mp4)
    new_mp4.write_bytes(mp4.read_bytes() + b"")
    os.utime(new_mp4, (1, 1))
    write_text_atomic(journal_path(mp4), '{"moves": [["%s", "%s"]]}' % (new_mp4, mp4))
    code, err = run(capsys, clip, "-o", out)
    assert code != 0 and "exists; pass --overwrite" in err  # the pair is whole (and new) again
    assert files_in(out) == ["clip.mp4", "clip.wav"] and mp4.stat().st_mtime == 1


def test_half_a_pair_v2a_wrote_is_done_again_but_a_users_file_is_not_replaced(clip, tmp_path,
                                                                              capsys):
    out = tmp_path / "out"
    assert run(capsys, clip, "-o", out)[0] == 0
    (out / "clip.mp4").unlink()  # an older version's half pair: the wav without its mp4
    code, err = run(capsys, clip, "-o", out)
    assert code == 0, err
    assert files_in(out) == ["clip.mp4", "clip.wav"]
    user = tmp_path / "user"
    user.mkdir()
    fixture_audio(user / "clip.wav", np.zeros((1, 100), np.float32), SR)  # someone else's file
    assert not generated_by_v2a(user / "clip.wav")
    code, err = run(capsys, clip, "-o", user)
    assert code != 0 and "exists; pass --overwrite" in err
    assert files_in(user) == ["clip.wav"]


def test_a_second_run_on_a_folder_without_o_does_not_take_the_first_runs_outputs(tmp_path,
                                                                                 capsys):
    folder = tmp_path / "videos"
    write_video(folder / "a.mp4", seconds=1.0, fps=10.0, width=64, height=64)
    assert run(capsys, folder)[0] == 0
    assert files_in(folder) == ["a.mp4", "a.v2a.mp4", "a.v2a.wav"]
    code, err = run_all(capsys, folder, "--overwrite")
    assert code == 0, err
    assert "left out 1 file(s) v2a wrote (a.v2a.mp4)" in err  # .wav is no video anyway
    assert files_in(folder) == ["a.mp4", "a.v2a.mp4", "a.v2a.wav"]  # no a.v2a.v2a.mp4


def test_two_runs_on_the_same_output_do_not_interleave(clip, tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from v2a.files import OutputLock
        with OutputLock(sys.argv[1]):
            print("locked", flush=True)
            time.sleep(60)
    """), str(out / "clip.mp4")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, err = run(capsys, clip, "-o", out)
        assert code != 0 and f"another v2a run (process {holder.pid}) is writing" in err
        assert err.count("\n") == 1 and not (out / "clip.wav").exists()
    finally:
        holder.kill()
        holder.wait()
    assert run(capsys, clip, "-o", out)[0] == 0  # the lock died with its holder
    with OutputLock(out / "clip.mp4"):  # and ours was released
        pass


# -- checked before any model is loaded ------------------------------------------------------------


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if generate gets as far as building a model."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the outputs were checked")

    monkeypatch.setattr(VideoToAudio, "from_recipe", classmethod(refuse))


def test_an_unwritable_output_folder_is_refused_before_the_model_loads(clip, tmp_path, capsys,
                                                                       monkeypatch, no_model):
    out = tmp_path / "locked"
    out.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == out else real(p, mode, **kw))
    code, err = run(capsys, clip, "-o", out / "sub")
    assert code != 0 and f"cannot write into {out / 'sub'}: permission denied on {out}" in err
    assert err.count("\n") == 1 and files_in(out) == []


def test_too_little_free_disk_is_refused_before_the_model_loads(clip, tmp_path, capsys,
                                                                monkeypatch, no_model):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    code, err = run(capsys, clip, "-o", tmp_path / "out")
    assert code != 0 and "MB free; free some space" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_an_os_error_is_one_sentence_and_a_bug_keeps_its_traceback(clip, tmp_path, capsys,
                                                                   monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x.wav"))

    monkeypatch.setattr("v2a.generate.outputs.write_audio", denied)
    code, err = run(capsys, clip, "-o", tmp_path / "out")
    assert code == 1 and err == f"v2a: error: {tmp_path / 'x.wav'}: permission denied; check the permissions\n"

    def bug(*args, **kwargs):
        raise KeyError("a bug in v2a")

    monkeypatch.setattr("v2a.generate.outputs.write_audio", bug)
    with pytest.raises(KeyError):
        main(["generate", "--recipe", "tiny", str(clip), "-o", str(tmp_path / "out2")])


# -- the audio ---------------------------------------------------------------------------------------


def test_non_finite_audio_is_refused_in_one_sentence(clip, tmp_path, capsys, monkeypatch):
    real = decode_in_windows

    def poisoned(*args, **kwargs):
        wav = real(*args, **kwargs)
        wav[..., 100] = float("nan")
        return wav

    monkeypatch.setattr(v2a.generate.model, "decode_in_windows", poisoned)
    code, err = run(capsys, clip, "-o", tmp_path / "out")
    assert code != 0 and "1 non-finite samples (NaN or inf)" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_the_output_stage_limits_peaks_by_default_and_warns_when_the_raw_audio_clipped(
        clip, tmp_path, capsys, monkeypatch):
    real = VideoToAudio.generate

    def loud(self, *args, **kwargs):
        audio, sr = real(self, *args, **kwargs)
        return audio * 8.0, sr  # far past full scale

    monkeypatch.setattr(VideoToAudio, "generate", loud)
    code, err = run_all(capsys, clip, "-o", tmp_path / "out")
    assert code == 0 and "v2a: warning:" in err and "the limiter brought the peak down" in err
    limited = load_audio(tmp_path / "out" / "clip.wav", sample_rate=SR)
    ceiling = 10 ** (-1 / 20)  # -1 dBFS; 16-bit rounding adds at most 1/32767
    assert float(limited.abs().max()) <= ceiling + 1 / 32767
    code, err = run(capsys, clip, "-o", tmp_path / "raw", "--raw-audio")
    raw = load_audio(tmp_path / "raw" / "clip.wav", sample_rate=SR)
    assert code == 0 and float(raw.abs().max()) > 0.999  # clipped by the 16-bit writer only


# -- windows of a long video -------------------------------------------------------------------------


def test_windowed_decoding_equals_one_decode_and_bounds_each_call():
    codec = VideoToAudio.from_recipe(load_recipe("tiny")).codec
    torch.manual_seed(0)
    codes = torch.randint(0, codec.codebook_size, (1, codec.n_codebooks, 2000))
    length = codec.num_samples(2000)
    calls = []
    real = codec.decode

    def spy(c, length=None):
        calls.append(c.shape[-1])
        return real(c, length)

    with torch.inference_mode():
        whole = real(codes, length)
        codec.decode = spy
        windowed = decode_in_windows(codec, codes, length, window=250, context=62)
    assert windowed.shape == whole.shape
    # the window (250 frames, aligned up to 256) with half of the 32-frame crossfade on either
    # side and 64 frames of context beyond that
    assert len(calls) == 8 and max(calls) == 256 + 32 + 2 * 64
    # windows start on multiples of 8 frames, so Griffin-Lim starts from the same phases as in the
    # whole decode; what differs is float32 FFT rounding over 16-bit-scaled values (~1e-7
    # relative per transform, compounded by the Griffin-Lim iterations): 1e-3 leaves room for
    # both CPUs' FFT kernels while a misplaced window (a frame off) differs by ~1e-1
    assert float((windowed - whole).abs().max()) < 1e-3


def test_a_manifest_row_gives_the_sound_of_its_stretch_and_a_video_cut_to_it(tmp_path, capsys):
    from v2a.manifests import Clip, write_manifest

    video = write_video(tmp_path / "long.mp4", seconds=3.0, fps=10.0, width=64, height=64)
    listed = write_manifest([Clip(path="long.mp4", start=1.0, duration=1.5)], tmp_path / "list.csv")
    code, err = run(capsys, listed, "-o", tmp_path / "out")
    assert code == 0, err
    assert files_in(tmp_path / "out") == ["long@1.mp4", "long@1.wav"]
    assert load_audio(tmp_path / "out" / "long@1.wav", sample_rate=SR).shape == (1, round(1.5 * SR))
    info = probe(tmp_path / "out" / "long@1.mp4")
    assert abs(info.video_duration - 1.5) < 0.11 and abs(info.audio_duration - 1.5) <= 1024 / SR
    assert video.exists()
