"""v2a.files: atomic writes, recognisable temporaries, output locks and all-or-nothing commits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from v2a.errors import UserError
from v2a.files import (
    FileBusyError,
    OutputLock,
    atomic_folder,
    atomic_output,
    commit_together,
    is_stale,
    is_temporary,
    journal_path,
    recover_commit,
    remove_stale_temporaries,
    staged_output,
    temporary_path,
    write_text_atomic,
)

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, *args: str, wait: bool = True):
    """Run ``code`` in a fresh interpreter with the project importable."""
    command = [sys.executable, "-c", textwrap.dedent(code), *args]
    if wait:
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def test_atomic_output_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_text_atomic(target, "one")
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            Path(tmp).write_text("two")
            assert is_temporary(tmp) and Path(tmp).parent == target.parent
            raise RuntimeError("the writer failed")
    assert target.read_text() == "one"  # the old file is untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_atomic_folder_is_complete_under_its_name_or_absent(tmp_path):
    final = tmp_path / "checkpoints" / "step_1"
    with atomic_folder(final) as tmp:
        assert is_temporary(tmp) and tmp.parent == final.parent
        (tmp / "a.bin").write_bytes(b"a")
        assert not final.exists()  # nothing under the final name until the block ends
    assert (final / "a.bin").read_bytes() == b"a"
    with atomic_folder(final) as tmp:  # an existing folder of that name is replaced
        (tmp / "b.bin").write_bytes(b"b")
    assert sorted(p.name for p in final.iterdir()) == ["b.bin"]
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "step_2") as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed half-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]  # no temporary left


def test_a_failed_rename_leaves_no_temporary(tmp_path):
    target = tmp_path / "taken"
    (target / "inside").mkdir(parents=True)  # a folder that is not empty: no file replaces it
    with pytest.raises(OSError):
        with atomic_output(target) as tmp:
            Path(tmp).write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    assert [p.name for p in target.iterdir()] == ["inside"]


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


def test_temporaries_are_told_from_users_files():
    assert is_temporary(temporary_path("/x/clip.mp4"))
    assert is_temporary(temporary_path("/x/noext"))
    for name in ("clip.mp4", ".clip.mp4", ".hidden", "a.v2a.mp4", ".clip.tmp.mp4"):
        assert not is_temporary(f"/x/{name}"), name


def test_only_temporaries_of_dead_processes_are_stale(tmp_path):
    # a process that has ended: its pid is free (reaped), so its temporaries are stale
    code = ("import sys; from v2a.files import temporary_path; "
            "p = temporary_path(sys.argv[1]); p.write_text('half'); print(p)")
    dead = Path(run_python(code, str(tmp_path / "a.wav")).stdout.strip())
    mine = temporary_path(tmp_path / "b.wav")
    mine.write_text("in progress")
    user = tmp_path / ".notes.wav"
    user.write_text("a user's hidden file")
    assert is_stale(dead) and not is_stale(mine) and not is_stale(user)
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert not dead.exists() and mine.exists() and user.exists()


def test_a_temporary_of_another_machine_is_never_stale(tmp_path):
    other = tmp_path / ".a.v2a-tmp-otherhost-1-abcd.wav"
    other.write_text("x")
    assert is_temporary(other) and not is_stale(other)


def test_a_second_lock_on_the_same_output_is_refused_in_one_sentence(tmp_path):
    out = tmp_path / "clip.mp4"
    holder = run_python("""
        import sys, time
        from v2a.files import OutputLock
        with OutputLock(sys.argv[1]):
            print("locked", flush=True)
            time.sleep(60)
    """, str(out), wait=False)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FileBusyError) as info:
            OutputLock(out).acquire()
        assert isinstance(info.value, UserError)
        assert f"process {holder.pid}" in str(info.value) and str(out) in str(info.value)
        holder.send_signal(signal.SIGKILL)  # the kernel releases the lock of a killed process
        holder.wait()
        with OutputLock(out):
            pass
    finally:
        holder.kill()
        holder.wait()
    assert not any(tmp_path.iterdir())  # the lock file goes with the lock


def test_a_lock_is_reacquired_after_release_in_the_same_process(tmp_path):
    lock = OutputLock(tmp_path / "a.wav")
    with lock:
        with pytest.raises(FileBusyError):
            OutputLock(tmp_path / "a.wav").acquire()  # another open file description
    with OutputLock(tmp_path / "a.wav"):
        pass


def test_commit_together_replaces_all_files(tmp_path):
    wav, mp4 = tmp_path / "a.wav", tmp_path / "a.mp4"
    wav.write_text("old wav")
    mp4.write_text("old mp4")
    with staged_output(wav) as new_wav, staged_output(mp4) as new_mp4:
        new_wav.write_text("new wav")
        new_mp4.write_text("new mp4")
    commit_together([(new_wav, wav), (new_mp4, mp4)], anchor=mp4)
    assert (wav.read_text(), mp4.read_text()) == ("new wav", "new mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "a.wav"]


def test_a_failed_stage_leaves_the_old_pair(tmp_path):
    wav, mp4 = tmp_path / "a.wav", tmp_path / "a.mp4"
    wav.write_text("old wav")
    mp4.write_text("old mp4")
    with pytest.raises(RuntimeError):
        with staged_output(wav) as new_wav:
            new_wav.write_text("new wav")
            with staged_output(mp4) as new_mp4:
                new_mp4.write_text("half")
                raise RuntimeError("muxing failed")
    assert (wav.read_text(), mp4.read_text()) == ("old wav", "old mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "a.wav"]  # no temporaries


def test_a_commit_whose_temporary_is_gone_fails_and_keeps_its_journal(tmp_path):
    """A commit never reports success for a file it did not write: the rename that cannot be
    made raises, and the journal stays for the next run's :func:`recover_commit`."""
    wav, mp4 = tmp_path / "a.wav", tmp_path / "a.mp4"
    mp4.write_text("old mp4")
    with staged_output(wav) as new_wav:
        new_wav.write_text("new wav")
    gone = temporary_path(mp4)  # never written (say, removed by hand meanwhile)
    with pytest.raises(FileNotFoundError):
        commit_together([(new_wav, wav), (gone, mp4)], anchor=mp4)
    assert wav.read_text() == "new wav" and mp4.read_text() == "old mp4"
    assert journal_path(mp4).exists()
    assert recover_commit(mp4) and not journal_path(mp4).exists()


@pytest.mark.parametrize("renamed", [0, 1, 2])
def test_a_commit_interrupted_after_its_decision_is_finished_by_recovery(tmp_path, renamed):
    """The process died after writing the journal and ``renamed`` of the two renames."""
    wav, mp4 = tmp_path / "a.wav", tmp_path / "a.mp4"
    wav.write_text("old wav")
    mp4.write_text("old mp4")
    new_wav, new_mp4 = temporary_path(wav), temporary_path(mp4)
    new_wav.write_text("new wav")
    new_mp4.write_text("new mp4")
    moves = [(new_wav, wav), (new_mp4, mp4)]
    write_text_atomic(journal_path(mp4), json.dumps({"moves": [[str(s), str(d)] for s, d in moves]}))
    for src, dst in moves[:renamed]:
        os.replace(src, dst)
    assert recover_commit(mp4)
    assert (wav.read_text(), mp4.read_text()) == ("new wav", "new mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "a.wav"]
    assert not recover_commit(mp4)


def test_a_torn_journal_means_the_commit_was_never_decided(tmp_path):
    mp4 = tmp_path / "a.mp4"
    mp4.write_text("old")
    journal_path(mp4).write_text('{"moves": [["/x/.a.v2a-tm')  # the write itself was cut
    assert not recover_commit(mp4)
    assert mp4.read_text() == "old" and not journal_path(mp4).exists()
