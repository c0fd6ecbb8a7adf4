"""The output side of a ``v2a generate`` batch: the jobs' folders and locks (:class:`Outputs`)
and each job's (audio, mp4) pair written as one commit (:func:`write_outputs`)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from torch import Tensor

from v2a.files import (
    OutputLock,
    commit_together,
    recover_commit,
    remove_stale_temporaries,
    staged_output,
)
from v2a.generate.jobs import Job, existing_outputs
from v2a.media import mux_audio, write_audio


class Outputs:
    """The output side of a batch: folders made, each job's outputs locked
    (:class:`v2a.files.OutputLock`, refused in one sentence while another run writes them),
    commits a dead run decided finished (:func:`v2a.files.recover_commit`), stale temporaries
    removed. Leaving the context releases the locks and removes the folders it made if they stayed
    empty, so a run that fails before writing leaves nothing behind."""

    def __init__(self, jobs: list[Job], *, overwrite: bool):
        self.jobs, self.overwrite = jobs, overwrite
        self.made: list[Path] = []
        self.locks: list[OutputLock] = []

    def __enter__(self) -> Outputs:
        try:
            for folder in sorted({j.mp4.parent for j in self.jobs} | {j.wav.parent for j in self.jobs}):
                missing = []
                at = folder.absolute()
                while not at.exists():
                    missing.append(at)
                    at = at.parent
                folder.mkdir(parents=True, exist_ok=True)
                self.made += reversed(missing)
                remove_stale_temporaries(folder)
            for job in self.jobs:
                self.locks.append(OutputLock(job.mp4, what="writing").acquire())
                recover_commit(job.mp4)  # a pair a dead run had decided to commit
                job.replaces = existing_outputs(job, self.overwrite)  # again, now that it is ours
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for lock in self.locks:
            lock.release()
        self.locks = []
        for folder in reversed(self.made):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty


def write_outputs(job: Job, audio: Tensor, sample_rate: int) -> None:
    """Write ``job``'s audio file and mp4 as one commit: both are written as temporaries, then
    renamed together (:func:`v2a.files.commit_together`), so that after a failure or a kill the
    pair is either both new or both old."""
    wav = audio.numpy()
    with staged_output(job.wav) as new_wav:
        write_audio(new_wav, wav, sample_rate)
        try:
            with staged_output(job.mp4) as new_mp4:
                mux_audio(job.video, wav, sample_rate, new_mp4, plan=job.plan,
                          start=job.source.start, duration=job.source.duration)
        except BaseException:
            new_wav.unlink(missing_ok=True)
            raise
    commit_together([(new_wav, job.wav), (new_mp4, job.mp4)], anchor=job.mp4)
