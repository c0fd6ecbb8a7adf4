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
from v2a.generate.stages import stage
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
            for folder in sorted({path.parent for job in self.jobs for path in job.outputs}):
                missing = []
                at = folder.absolute()
                while not at.exists():
                    missing.append(at)
                    at = at.parent
                folder.mkdir(parents=True, exist_ok=True)
                self.made += reversed(missing)
                remove_stale_temporaries(folder)
            for job in self.jobs:
                self.locks.append(OutputLock(job.anchor, what="writing").acquire())
                recover_commit(job.anchor)  # a pair a dead run had decided to commit
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
    """Write ``job``'s audio file and mp4 (when it has one) as one commit: both are written as
    temporaries, then renamed together (:func:`v2a.files.commit_together`), so that after a
    failure or a kill the pair is either both new or both old. Both are tagged with the source's
    text prompts (:func:`v2a.media.generated_tags`)."""
    wav = audio.numpy()
    prompts = dict(prompt=job.source.prompt, negative_prompt=job.source.negative_prompt)
    with stage("write audio"), staged_output(job.wav) as new_wav:
        write_audio(new_wav, wav, sample_rate, **prompts)
    if job.mp4 is None:
        commit_together([(new_wav, job.wav)], anchor=job.anchor)
        return
    try:
        with stage("mux"), staged_output(job.mp4) as new_mp4:
            mux_audio(job.video, wav, sample_rate, new_mp4, plan=job.plan,
                      start=job.source.start, duration=job.source.duration, **prompts)
    except BaseException:
        new_wav.unlink(missing_ok=True)
        raise
    commit_together([(new_wav, job.wav), (new_mp4, job.mp4)], anchor=job.anchor)
