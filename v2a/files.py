"""Files v2a writes: atomically, with temporaries it can recognise, and under a lock where two
runs may meet.

* :func:`atomic_output` — the one way v2a writes a file: into a temporary beside the target,
  flushed to disk, then renamed over it, so nobody ever sees a half-written file under its final
  name. :func:`write_text_atomic` does it for text.
* Temporaries are named ``.<name>.v2a-tmp-<host>-<pid>-<random><suffix>``: :func:`is_temporary`
  tells v2a's temporaries from a user's files (so that a folder scan never takes one as input),
  and :func:`remove_stale_temporaries` removes those whose process on this machine is gone (a run
  killed with SIGKILL leaves them; a live run's are kept).
* :class:`OutputLock` — an advisory lock (``flock``) on one output, so that a second run writing the
  same files refuses in one sentence instead of interleaving its files with the first one's. The
  kernel releases it when the process dies, however it dies.
* :func:`commit_together` — several finished temporaries renamed to their final names as one
  commit: after a crash at any point, :func:`recover_commit` makes them all new (the commit had
  been decided) or leaves them all old (it had not).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

from v2a.errors import UserError

_TEMP = re.compile(r"^\..+\.v2a-tmp-(?P<host>[A-Za-z0-9_-]*)-(?P<pid>\d+)-[0-9a-f]+(\.[^.]*)?$")
_LOCK_SUFFIX = ".v2a-lock"
_JOURNAL_SUFFIX = ".v2a-commit"


class FileBusyError(UserError):
    """Another process holds the lock of an output."""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:32]


def temporary_path(path: str | Path) -> Path:
    """A fresh temporary name beside ``path``, owned by this process (see :func:`is_temporary`)."""
    path = Path(path)
    token = secrets.token_hex(4)
    return path.with_name(f".{path.stem}.v2a-tmp-{_host()}-{os.getpid()}-{token}{path.suffix}")


def is_temporary(path: str | Path) -> bool:
    """Whether ``path`` is a temporary file v2a writes before renaming it into place (or a lock or
    commit journal of an output)."""
    name = Path(path).name
    return bool(_TEMP.match(name)) or (
        name.startswith(".") and name.endswith((_LOCK_SUFFIX, _JOURNAL_SUFFIX)))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def is_stale(path: str | Path) -> bool:
    """Whether ``path`` is a v2a temporary whose writer, a process on this machine, has ended.
    A temporary written on another machine (a shared file system) is never called stale here."""
    match = _TEMP.match(Path(path).name)
    if not match or match["host"] != _host():
        return False
    return not _alive(int(match["pid"]))


def remove_stale_temporaries(folder: str | Path, *, recursive: bool = False) -> list[Path]:
    """Delete the temporaries that dead v2a processes left in ``folder`` (and below it, with
    ``recursive``); returns what was removed. Files of live runs and users' files are kept."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = folder.rglob(".*") if recursive else folder.glob(".*")
    removed = []
    for path in candidates:
        if is_stale(path):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                path.unlink()
                removed.append(path)
    return removed


def fsync(path: str | Path) -> None:
    """Flush a file's data, or a folder's entries (after a rename), to disk; best effort (some
    file systems refuse to fsync a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _new_temporary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    os.close(fd)
    return tmp


@contextlib.contextmanager
def staged_output(path: str | Path) -> Iterator[Path]:
    """A temporary beside ``path`` to write to (see :func:`temporary_path`), flushed to disk and
    kept (not renamed) when the block ends normally, for :func:`commit_together`; removed when
    the block raises. Permissions follow the umask, as for ``open``."""
    tmp = _new_temporary(Path(path))
    try:
        yield tmp
        fsync(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[str]:
    """A temporary file beside ``path`` to write to (its name as a string); when the block ends
    normally it is flushed to disk and renamed to ``path``; when the block (or the rename) fails
    it is removed, so nobody ever sees a half-written ``path``: :func:`staged_output`, then a
    commit of that one file."""
    path = Path(path)
    with staged_output(path) as tmp:
        yield str(tmp)
    try:
        _rename_all([(tmp, path)])
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill; when the block ends normally every file in
    it and the folder are flushed to disk and it is renamed to ``path`` (a folder already there
    under that name is replaced); when the block (or the rename) fails it is removed. So a
    folder such as a training checkpoint is complete under its final name or absent, and a
    dead writer's leftover is recognisable (:func:`is_temporary`, :func:`is_stale`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    tmp.mkdir()
    try:
        yield tmp
        for child in tmp.iterdir():
            fsync(child)
        fsync(tmp)
        shutil.rmtree(path, ignore_errors=True)  # an incomplete folder of that name
        _rename_all([(tmp, path)])
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # what cannot be removed stays a temporary
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


# -- committing several files as one ----------------------------------------------------------


def journal_path(anchor: str | Path) -> Path:
    """Where the commit journal of the outputs named after ``anchor`` lives."""
    anchor = Path(anchor)
    return anchor.with_name(f".{anchor.name}{_JOURNAL_SUFFIX}")


def commit_together(moves: Sequence[tuple[Path, Path]], *, anchor: str | Path) -> None:
    """Rename each finished temporary ``src`` to its ``dst``, all or none.

    The decision is written first (a journal beside ``anchor``, atomically, listing the moves);
    then the renames; then the journal is removed. A process that dies part-way leaves the journal,
    and :func:`recover_commit` (called by the next run that takes the same lock) finishes the
    renames: the temporaries were complete before the journal was written."""
    journal = journal_path(anchor)
    record = {"moves": [[str(src), str(dst)] for src, dst in moves]}
    write_text_atomic(journal, json.dumps(record) + "\n")
    _rename_all(record["moves"])
    journal.unlink()
    fsync(journal.parent)


def _rename_all(moves: Sequence[Sequence[str | Path]]) -> None:
    """Rename each finished ``src`` to its ``dst``, then flush the folders' entries to disk: the
    one way a v2a temporary takes its final name."""
    for src, dst in moves:
        os.replace(src, dst)
    for folder in {Path(dst).parent for _, dst in moves}:
        fsync(folder)


def recover_commit(anchor: str | Path) -> bool:
    """Finish a commit a dead process decided but did not complete (see :func:`commit_together`);
    returns whether there was one. Call it while holding the outputs' :class:`OutputLock`."""
    journal = journal_path(anchor)
    try:
        record = json.loads(journal.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, ValueError):  # the journal itself was never complete: nothing was renamed
        journal.unlink(missing_ok=True)
        return False
    # the moves whose temporary is gone were made before the process died
    _rename_all([(src, dst) for src, dst in record.get("moves", []) if os.path.exists(src)])
    journal.unlink(missing_ok=True)
    return True


# -- locks ---------------------------------------------------------------------------------------


class OutputLock:
    """An exclusive advisory lock on the output ``path`` (a lock file ``.<name>.v2a-lock`` beside
    it, removed on release). ``acquire()`` raises :class:`FileBusyError` naming the process that
    holds it; ``what`` says in that sentence what the holder is doing."""

    def __init__(self, path: str | Path, *, what: str = "writing"):
        self.path = Path(path)
        self.file = self.path.with_name(f".{self.path.name}{_LOCK_SUFFIX}")
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = self._holder()
                by = f" (process {holder})" if holder else ""
                raise FileBusyError(
                    f"another v2a run{by} is {self.what} {self.path}; wait for it to finish or "
                    f"choose another output") from None
            # the file may have been removed by a holder releasing it between open and flock
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.file))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def _holder(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            return str(int(self.file.read_text().strip()))
        return ""

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.file.unlink()  # while still locked: a waiter re-checks the inode
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
