"""SHA-256 of files, each file read once while it stays unchanged.

A LoRA is hashed when its training ends (the hash is recorded with it in ``identity.json``) and checked again
before each use (:meth:`~lib_profile.service.identities.Identities._lora`, the WebUI's published copies). Reading a
150 MB file for every job would be slow on a network folder, so a file's hash is kept in memory under its
identity and state: device, inode, size, modification and status-change times (ns). Any write to the file changes
its status-change time (which no user tool can set back), so a changed file is read again; damage below the file
system (bit rot) that changes none of these is not seen until the process restarts. The WebUI keeps its own LoRA
hashes by modification time in the same way (``modules/hashes.py``).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from lib_profile.downloads import sha256_of

_known: dict[tuple, str] = {}
_lock = threading.Lock()
MAX_KEPT = 4096


def _key(path: Path) -> tuple:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_sha256(path: str | os.PathLike) -> str:
    """The file's SHA-256 as 64 lower-case hex digits (read again only when the file changed; see the module).
    Raises OSError (FileNotFoundError...) as ``open`` does."""
    path = Path(path)
    key = _key(path)
    with _lock:
        known = _known.get(key)
    if known is not None:
        return known
    digest = sha256_of(path)
    if _key(path) == key:  # unchanged while it was read
        with _lock:
            if len(_known) >= MAX_KEPT:
                _known.clear()
            _known[key] = digest
    return digest
