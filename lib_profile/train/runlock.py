"""One trainer per run folder: a lock file in the folder, held (``flock``) for the trainer's whole life.

The operating system drops the lock when the process ends, however it ends (even ``SIGKILL``), so a stale
lock file never blocks anything; only a live trainer does. The file also holds that trainer's pid, for the
message. On Windows the first byte of the file is locked with ``msvcrt.locking`` (released at exit as well).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

from lib_profile.hosts.base import HostError

LOCK_NAME = "trainer.lock"
LOCKED = 4  # the train command's exit code when another trainer holds the run folder


class RunLocked(HostError):
    """Another live trainer holds the run folder; ``pid`` is its process id when it could be read."""

    def __init__(self, folder: Path, pid: Optional[int]):
        self.folder, self.pid = folder, pid
        who = f" (pid {pid})" if pid else ""
        super().__init__(f"Another trainer{who} is already writing to {folder}; wait for it to finish or cancel "
                         "it, then try again.")


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _unlock(fd: int) -> None:
    """Windows wants a locked region unlocked before the file is closed; flock needs nothing (close drops it)."""
    if sys.platform == "win32":
        import msvcrt

        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        except OSError:
            pass


def _read_pid(path: Path) -> Optional[int]:
    try:
        text = path.read_text("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


class RunLock:
    """``with RunLock(folder):`` holds the folder's lock or raises :class:`RunLocked` at once (never waits)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            raise RunLocked(self.folder, _read_pid(self.path))
        os.ftruncate(fd, 0)  # the lock is ours: say who holds it
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _unlock(fd)
            os.close(fd)  # closing drops the lock; the file stays, harmless

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder(folder: str | Path) -> Optional[int]:
    """The pid of the live trainer holding ``folder`` (0 when its pid is unknown), or None when none does."""
    path = Path(folder) / LOCK_NAME
    if not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        if _try_lock(fd):
            _unlock(fd)
            return None  # nobody holds it (our probe is released)
        return _read_pid(path) or 0
    finally:
        os.close(fd)
