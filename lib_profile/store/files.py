"""Writing a request's files whole or not at all, and storage faults (disk full, quota, read-only) as clear errors.

:func:`atomic_write` writes a temporary file in the destination's folder, flushes and fsyncs it, then renames
it over the destination (``os.replace``), so a reader (a queued job, the intake) sees the whole file or none.
:func:`storage_errors` turns an ``OSError`` of the storage class (``ENOSPC``, ``EDQUOT``, ``EROFS``, ``EACCES``,
``EPERM``) into a :class:`StorageError` that names the folder needing space or rights: HTTP 507, CLI exit 2.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional

from lib_profile.hosts.base import HostError

# errno -> what the user should do; EDQUOT is missing on some platforms
_FAULTS = {
    errno.ENOSPC: "the disk is full: free some space there, or choose a data folder on another disk "
                  "(--data-dir, or PROFILE_STUDIO_DIR)",
    getattr(errno, "EDQUOT", -1): "your disk quota is used up: free some space there, or ask for a larger quota",
    errno.EROFS: "the file system is read-only: choose a writable data folder (--data-dir, or PROFILE_STUDIO_DIR)",
    errno.EACCES: "permission denied: let the user running Profile Studio write there, or choose another folder",
    errno.EPERM: "the operation is not permitted there: let the user running Profile Studio write there, "
                 "or choose another folder",
}


class StorageError(HostError):
    """A file could not be written for lack of space, quota or rights (HTTP 507, CLI exit code 2).
    ``folder``: the folder that needs space (or rights); ``errno``: the ``OSError``'s errno."""

    def __init__(self, message: str, folder: Optional[str] = None, errno_: Optional[int] = None):
        super().__init__(message)
        self.folder = folder
        self.errno = errno_


def is_storage_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is an ``OSError`` of the storage class (no space, quota, read-only, no rights)."""
    return isinstance(exc, OSError) and exc.errno in _FAULTS


def storage_error(exc: OSError, folder: str | os.PathLike | None = None) -> StorageError:
    """``exc`` (a storage fault, see :func:`is_storage_fault`) as a :class:`StorageError` naming the folder:
    the folder of the file the OS names, else ``folder``."""
    where = Path(exc.filename).parent if getattr(exc, "filename", None) else (Path(folder) if folder else None)
    what = _FAULTS.get(exc.errno, os.strerror(exc.errno or 0))
    place = f"in {where}" if where is not None else "in the data folder"
    return StorageError(f"Could not write {place}: {what}. Nothing was kept of this request; try again once "
                        "that is fixed.", str(where) if where is not None else None, exc.errno)


LOW_SPACE = 16 * 2**20  # bytes free below which a failed write is taken for a full disk


def out_of_space(folder: str | os.PathLike) -> bool:
    """Whether the file system of ``folder`` (or of its nearest existing parent) has under 16 MiB free: what a
    write that failed without an ``OSError`` (torch's ``file write failed``, a child process's lost log) means."""
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free < LOW_SPACE
    except OSError:
        return False


def no_space(folder: str | os.PathLike) -> StorageError:
    """The :class:`StorageError` of a full disk at ``folder``."""
    return storage_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), folder)


@contextlib.contextmanager
def storage_errors(folder: str | os.PathLike | None = None) -> Iterator[None]:
    """Within it, a storage-class ``OSError`` becomes a :class:`StorageError` naming its folder (``folder`` when
    the error names no file); other errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        if is_storage_fault(exc) and not isinstance(exc, StorageError):
            raise storage_error(exc, folder) from exc
        raise


def _write_all(fd: int, raw: bytes) -> None:
    view = memoryview(raw)
    while view:
        view = view[os.write(fd, view):]


def move_folder_into_place(work: Path, target: Path) -> Path:
    """Rename the finished folder ``work`` to ``target``, for builders that several processes may run at once on one
    shared folder (``serve`` processes of a cluster starting together): the first rename wins; a later one, finding
    ``target`` there (the rename fails on a non-empty folder), drops its own copy and keeps the winner's. Returns
    ``target``; an OSError when ``target`` is still missing."""
    try:
        work.rename(target)
    except OSError:
        if not target.is_dir():
            raise
        shutil.rmtree(work, ignore_errors=True)
    return target


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` whole or not at all: a temporary file in the same
    folder (a dot name ending ``.partial``), flushed and fsynced, then ``os.replace``-d onto ``path``. On any
    failure the temporary file is removed and ``path`` is as before; a storage fault is a :class:`StorageError`
    naming the folder. Returns ``path``."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with storage_errors(path.parent):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:80]}.", suffix=".partial", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                _write_all(f.fileno(), raw)
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return path
