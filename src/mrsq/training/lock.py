"""One writer per run folder: a lock held by the process that trains (or resumes) into it.

``acquire(folder)`` takes ``folder/.mrsq.lock`` or raises :class:`RunLockedError` naming the
holder (pid, host, since when); the CLI turns that into one line and exit 2 before anything is
written. Re-entrant within a process (the CLI takes it before it touches the folder, the
Trainer again when it runs), released when the last holder releases it or the process ends.

The primitive is ``fcntl.flock`` on the lock file: the kernel drops it when the holding process
dies, however it dies, so a lock left by a SIGKILLed run is stale by construction and the next
``--resume`` simply takes it (with a one-line note naming the dead holder). Shared filesystems:
on NFS (v4, or v3 with lockd) Linux implements ``flock`` with the server's byte-range locks, so it
holds across machines; where the filesystem has no locking at all (``ENOLCK``/``EOPNOTSUPP``, e.g.
some Lustre or FUSE mounts), mrsq falls back to an exclusively created file holding pid and
host: stale when its host is this one and its pid is gone; a holder on *another* host cannot be
checked from here, so the message says which file to delete once that run is known to be dead.
Written by hand: ``filelock`` (the usual library) offers the same flock / exclusive-file pair but
no holder identity in the error, which is the point of this message.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: exclusive-file mode only
    fcntl = None

LOCK_NAME = ".mrsq.lock"
_NO_LOCKING = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}
_HELD: dict[str, "RunLock"] = {}


class RunLockedError(RuntimeError):
    """Another process is writing this run folder (one-line message)."""


def _identity() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())}


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _holder(info: dict) -> str:
    if not info:
        return "another process"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} (since {info.get('since', '?')})"


class RunLock:
    """A held lock on one run folder (see the module docstring); :meth:`release` when done."""

    def __init__(self, folder: Path, fd: int | None, mode: str, took_over: dict | None) -> None:
        self.folder, self.path, self.fd, self.mode = folder, folder / LOCK_NAME, fd, mode
        self.took_over = took_over  # the dead holder's identity, when a stale lock was taken over
        self.count = 1

    def release(self) -> None:
        self.count -= 1
        if self.count > 0:
            return
        _HELD.pop(str(self.folder), None)
        try:  # unlink while still holding it: a waiter that opened the old file re-checks the inode
            self.path.unlink(missing_ok=True)
        finally:
            if self.fd is not None:
                os.close(self.fd)  # closing drops the flock
                self.fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(folder: Path | str, warn=None) -> RunLock:
    """Hold ``folder``'s lock (created with the folder if needed) or raise RunLockedError."""
    folder = Path(folder).resolve()
    held = _HELD.get(str(folder))
    if held is not None:
        held.count += 1
        return held
    folder.mkdir(parents=True, exist_ok=True)
    lock = _acquire_flock(folder) if fcntl is not None else None
    if lock is None:
        lock = _acquire_exclusive(folder)
    _HELD[str(folder)] = lock
    if lock.took_over and warn is not None:
        warn(f"{folder}: took over the lock of {_holder(lock.took_over)}, which is no longer running")
    return lock


def _acquire_flock(folder: Path) -> RunLock | None:
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            info = _read(path)
            os.close(fd)
            if exc.errno in _NO_LOCKING:
                return None  # this filesystem cannot lock: the exclusive-file fallback
            raise RunLockedError(f"{folder}: another mrsq process is writing this run folder: {_holder(info)}; "
                                 "wait for it to finish or stop it first (nothing was written)") from None
        try:  # the holder may have unlinked the file between our open and our flock: retry on the new one
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                os.close(fd)
                continue
        except FileNotFoundError:
            os.close(fd)
            continue
        previous = _read(path)
        stale = previous if previous and previous.get("pid") != os.getpid() else None
        _write(fd, _identity())
        return RunLock(folder, fd, "flock", stale)


def _write(fd: int, info: dict) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)


def _acquire_exclusive(folder: Path) -> RunLock:
    path = folder / LOCK_NAME
    took_over = None
    for _ in range(2):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            info = _read(path)
            here = info.get("host") == socket.gethostname()
            if here and isinstance(info.get("pid"), int) and not _alive(info["pid"]):
                took_over = info
                path.unlink(missing_ok=True)
                continue
            hint = "" if here else f"; if that run is dead, delete {path}"
            raise RunLockedError(f"{folder}: another mrsq process is writing this run folder: {_holder(info)} "
                                 f"(this filesystem has no locks, so a holder on another host cannot be "
                                 f"checked{hint})") from None
        _write(fd, _identity())
        return RunLock(folder, fd, "exclusive-file", took_over)
    raise RunLockedError(f"{folder}: could not take its lock {path}")
