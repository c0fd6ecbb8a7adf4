"""Training when the world misbehaves: a run folder that stops taking files (read-only, no
permission, a full disk), checkpoint temporaries of dead runs, and data errors raised in
DataLoader worker processes (a damaged feature cache)."""

from __future__ import annotations

import errno
import json
import os
import pwd
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

import v2a.training.trainer
import v2a.weights
from tests.test_cache import dataset, recipe_for, reference, tensor_span  # noqa: F401 (fixtures)
from tests.test_train import MemoryClips, recipe
from v2a.cache import CacheError
from v2a.datasets import CachedClips
from v2a.files import is_temporary, temporary_path
from v2a.items import collate
from v2a.training import Trainer, TrainingError, checkpoints, train, worker_errors

EVERY_2 = ("training.steps=4", "training.checkpoint_every=2", "training.keep_checkpoints=5")


def refuse_checkpoint(monkeypatch, step: int, code: int) -> None:
    """Make the second file of the checkpoint of ``step`` fail to write with the OS error
    ``code`` (a folder turned read-only, a disk that filled up), reported the way safetensors
    reports it: a SafetensorError whose message holds the OS error."""
    real_save, written = v2a.weights.save_file, []

    def save_file(tensors, path, metadata=None):
        if metadata and metadata.get("step") == str(step):
            written.append(path)
            if len(written) == 2:
                raise SafetensorError(f"Error while serializing: I/O error: {os.strerror(code)} "
                                      f"(os error {code})")
        return real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(v2a.weights, "save_file", save_file)


def left_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("code, text, once", [
    (errno.EROFS, "Read-only file system", "the folder is writable"),
    (errno.EACCES, "Permission denied", "the folder is writable"),
    (errno.ENOSPC, "No space left on device", "its disk has space again"),
])
def test_a_run_folder_that_stops_taking_files_stops_with_the_last_good_checkpoint(
        monkeypatch, tmp_path, code, text, once):
    data = MemoryClips(4)
    refuse_checkpoint(monkeypatch, 4, code)
    with pytest.raises(TrainingError) as error:
        train(recipe(*EVERY_2), out_dir=tmp_path, train_data=data, quiet=True)
    last = tmp_path / "checkpoints" / "step_00000002"
    source = recipe(*EVERY_2).source
    assert str(error.value) == (
        f"cannot write the checkpoint of step 4 into {tmp_path / 'checkpoints'} ({text}); the last "
        f"good checkpoint is {last}: resume with `v2a train {source} data.num_workers=0 "
        "training.eval_every=0 training.sample_every=0 training.log_every=1000 training.steps=4 "
        f"training.checkpoint_every=2 training.keep_checkpoints=5 --resume --out {tmp_path}` "
        f"once {once}")
    # the half-written checkpoint is gone, not left under its final name
    assert left_in(tmp_path / "checkpoints") == ["step_00000002"]

    monkeypatch.undo()  # the folder takes files again: the advice works
    done = train(recipe(*EVERY_2), out_dir=tmp_path, resume=True, train_data=data, quiet=True)
    assert done.step == 4 and [s for s, _ in checkpoints(tmp_path)] == [2, 4]


def test_no_checkpoint_yet_says_so(monkeypatch, tmp_path):
    refuse_checkpoint(monkeypatch, 2, errno.EROFS)
    with pytest.raises(TrainingError, match=r"\(Read-only file system\); no checkpoint was saved "
                                            r"yet: start again once the folder is writable$"):
        train(recipe(*EVERY_2), out_dir=tmp_path, train_data=MemoryClips(4), quiet=True)


def test_a_checkpoint_that_cannot_be_removed_stays_a_temporary_until_its_run_is_gone(
        monkeypatch, tmp_path):
    data = MemoryClips(4)
    refuse_checkpoint(monkeypatch, 4, errno.EROFS)
    real_rmtree = shutil.rmtree
    monkeypatch.setattr(shutil, "rmtree", lambda path, **kwargs: None)  # removal fails too
    with pytest.raises(TrainingError, match="the last good checkpoint is .*step_00000002"):
        train(recipe(*EVERY_2), out_dir=tmp_path, train_data=data, quiet=True)
    monkeypatch.undo()
    folder = tmp_path / "checkpoints"
    (half,) = [p for p in folder.iterdir() if p.name != "step_00000002"]
    assert is_temporary(half) and half.name.startswith(".step_00000004.v2a-tmp-")
    assert [s for s, _ in checkpoints(tmp_path)] == [2]  # never taken for a checkpoint

    # its process dies (a pid above pid_max); another live run's temporary is kept
    dead = half.with_name(half.name.replace(f"-{os.getpid()}-", "-99999999-"))
    half.rename(dead)
    live = temporary_path(folder / "step_00000006")
    live.mkdir()
    done = train(recipe(*EVERY_2), out_dir=tmp_path, resume=True, train_data=data, quiet=True)
    assert done.step == 4
    assert left_in(folder) == sorted([live.name, "step_00000002", "step_00000004"])
    real_rmtree(live)


def test_a_full_disk_while_exporting_the_weights_stops_the_same_way(monkeypatch, tmp_path):
    data = MemoryClips(4)
    real_save = v2a.weights.save_file

    def save_file(tensors, path, metadata=None):
        if metadata and metadata.get("component") == "fuser":
            raise SafetensorError("Error while serializing: I/O error: No space left on device "
                                  "(os error 28)")
        return real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(v2a.weights, "save_file", save_file)
    with pytest.raises(TrainingError) as error:
        train(recipe(*EVERY_2), out_dir=tmp_path, train_data=data, quiet=True)
    assert str(error.value).startswith(
        f"cannot write fuser.safetensors into {tmp_path} (No space left on device); the last good "
        f"checkpoint is {tmp_path / 'checkpoints' / 'step_00000004'}: resume with `v2a train ")
    assert str(error.value).endswith("--resume --out " + str(tmp_path) + "` once its disk has space again")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".fuser", "fuser"))]

    monkeypatch.undo()
    done = train(recipe(*EVERY_2), out_dir=tmp_path, resume=True, train_data=data, quiet=True)
    assert (tmp_path / "fuser.safetensors").is_file() and done.exported


def _train_as(user: pwd.struct_passwd | None, out: Path, report: int) -> None:
    """In a forked child: become ``user``, train 4 steps into ``out`` and make the checkpoints
    folder read-only after the first checkpoint; write what happened to the pipe ``report``."""
    outcome = {}
    try:
        if user is not None:
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
        real_write = v2a.training.trainer.write_checkpoint

        def write_then_lock(run_dir, step, *args, **kwargs):
            path = real_write(run_dir, step, *args, **kwargs)
            os.chmod(Path(run_dir) / "checkpoints", 0o555)  # chmod -w while training
            return path

        v2a.training.trainer.write_checkpoint = write_then_lock
        try:
            train(recipe(*EVERY_2), out_dir=out, train_data=MemoryClips(4), quiet=True)
        except TrainingError as exc:
            outcome["error"] = str(exc)
        outcome["left"] = left_in(out / "checkpoints")
    except BaseException as exc:  # reported to the parent: the child never returns into pytest
        outcome["crash"] = f"{type(exc).__name__}: {exc}"
    finally:
        os.write(report, json.dumps(outcome).encode())
        os._exit(0)


def test_a_really_read_only_checkpoints_folder_stops_training(tmp_path):
    """Real permissions, not a patched writer: as root (where chmod stops nothing) the run is a
    forked child that becomes the user nobody."""
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("running as root and there is no user 'nobody' to train as")
    base = Path(tempfile.mkdtemp(prefix="v2a-readonly-"))  # reachable by that user
    try:
        out = base / "run"
        out.mkdir()
        if user is not None:
            os.chown(base, user.pw_uid, user.pw_gid)
            os.chown(out, user.pw_uid, user.pw_gid)
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401 (imported before the fork)

        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            _train_as(user, out, write)
        os.close(write)
        with os.fdopen(read) as pipe:
            outcome = json.loads(pipe.read() or "{}")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0 and "crash" not in outcome, outcome
        assert outcome["error"].startswith(
            f"cannot write the checkpoint of step 4 into {out / 'checkpoints'} (Permission "
            f"denied); the last good checkpoint is {out / 'checkpoints' / 'step_00000002'}: "
            "resume with `v2a train ")
        assert outcome["error"].endswith(f"--resume --out {out}` once the folder is writable")
        assert outcome["left"] == ["step_00000002"]
    finally:
        if (base / "run" / "checkpoints").is_dir():
            os.chmod(base / "run" / "checkpoints", 0o755)
        shutil.rmtree(base)


# -- errors raised in DataLoader workers ----------------------------------------------------------


class Unreadable(torch.utils.data.Dataset):
    """Clips whose reading fails with a user error (what a damaged cache shard gives)."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        raise CacheError("the shard /data/cache/shards/000007.safetensors is damaged (its bytes "
                         "changed); extract it again with `v2a extract r.yaml --verify`")


def test_a_user_error_in_a_worker_process_reaches_the_user_as_its_own_sentence(tmp_path):
    trainer = Trainer(recipe(*EVERY_2, "data.num_workers=1"), out_dir=tmp_path,
                      train_data=Unreadable(), quiet=True)
    with pytest.raises(CacheError) as error:
        trainer.run()
    assert str(error.value) == (
        "the shard /data/cache/shards/000007.safetensors is damaged (its bytes changed); extract "
        "it again with `v2a extract r.yaml --verify`")


def test_a_damaged_cache_shard_stops_worker_processes_in_one_sentence(dataset, reference, tmp_path):  # noqa: F811
    cache = tmp_path / "cache"
    shutil.copytree(reference[0], cache)
    shard = cache / "shards" / "000000.safetensors"
    first, last = tensor_span(shard, "0.codes")
    with open(shard, "r+b") as f:
        f.seek(first)
        f.write(b"\xff\x7f" * ((last - first) // 2))
    data = CachedClips(cache, recipe_for(dataset, cache))
    loader = torch.utils.data.DataLoader(data, batch_size=2, collate_fn=collate, num_workers=2)
    with pytest.raises(CacheError) as error:
        list(worker_errors(loader))
    message = str(error.value)
    assert message.startswith(f"the shard {shard} is damaged (the tensors of clip000.mp4 changed")
    assert "\n" not in message and message.endswith(" --verify`")


def test_stopping_by_signal_names_the_command_that_resumes(tmp_path, capsys):
    """The SIGTERM note repeats the user's command with --resume."""
    trainer = Trainer(recipe("training.steps=3"), out_dir=tmp_path, train_data=MemoryClips(4))
    real_step = trainer._step

    def step_then_signal(step, batches):
        out = real_step(step, batches)
        os.kill(os.getpid(), signal.SIGTERM)
        return out

    trainer._step = step_then_signal
    result = trainer.run()
    assert result.stopped_by == signal.SIGTERM and result.step == 1
    out = capsys.readouterr().out
    assert f"continue with `{trainer.resume_command}`" in out
    assert trainer.resume_command.endswith(f"training.steps=3 --resume --out {tmp_path}")


def test_a_checkpoint_whose_weights_turned_nan_is_not_resumed(tmp_path):
    from safetensors.torch import load_file, save_file

    from v2a.weights import WeightsError

    data = MemoryClips(4)
    train(recipe("training.steps=2"), out_dir=tmp_path, train_data=data, quiet=True)
    model = tmp_path / "checkpoints" / "step_00000002" / "model.safetensors"
    tensors = load_file(str(model))
    name = sorted(k for k, v in tensors.items() if v.is_floating_point())[0]
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(model))
    with pytest.raises(WeightsError, match=rf"^{model} holds NaN or infinite values in '{name}' \(1 of"):
        train(recipe("training.steps=4"), out_dir=tmp_path, resume=True, train_data=data, quiet=True)
