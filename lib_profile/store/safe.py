"""Paths built from request data (identity slugs, job ids, file, photo and pose names) that cannot leave their root.

Every route and service method that turns a name it was given into a file path goes through :func:`inside`:
each name is checked first (:func:`check_name`), then the joined path is resolved with ``os.path.realpath``
(so a symlink inside the data folder that points elsewhere counts as elsewhere) and must lie inside the
root, itself resolved the same way. A refused name is a :class:`UnsafeName` (HTTP 400), never a file.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from lib_profile.hosts.base import HostError

MAX_NAME = 255  # a file name's bytes on the usual file systems
JOB_ID = re.compile(r"[0-9A-Za-z]{1,64}")  # what a job id looks like (the job manager makes 12 hex digits)


class UnsafeName(HostError):
    """A name that could reach outside its folder, or a path that resolves outside it (HTTP 400)."""


def _why_refused(name: str) -> str | None:
    if name in ("", ".", ".."):
        return "it is empty, '.' or '..'" if name else "it is empty"
    if "\x00" in name or any(unicodedata.category(c) == "Cc" for c in name):
        return "it holds a NUL or another control character"
    if "/" in name or "\\" in name:
        return "it holds a path separator ('/' or '\\')"
    if ":" in name:
        return "it holds ':' (a drive or stream name on Windows)"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME:
        return f"it is over {MAX_NAME} bytes"
    return None


def check_name(name: object, what: str = "name") -> str:
    """``name`` if it is one plain path part; else :class:`UnsafeName` saying why. Refused: no string, empty,
    ``.`` and ``..``, a path separator (``/``, ``\\``; so no absolute path either), NUL or other control
    characters, ``:`` (drive letters and Windows streams), over 255 bytes; and names whose Unicode compatibility form (NFKC)
    is one of these, e.g. fullwidth ``．．`` or ``／``, which some file systems and tools fold to ``..`` and ``/``."""
    if not isinstance(name, str):
        raise UnsafeName(f"The {what} must be text, not {type(name).__name__}")
    for form in dict.fromkeys((name, unicodedata.normalize("NFKC", name))):
        why = _why_refused(form)
        if why:
            raise UnsafeName(f"The {what} {name!r} is refused: {why}")
    return name


def is_inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``path``, all symlinks followed, is ``root`` (symlinks followed too) or lies under it."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def inside(root: str | os.PathLike, *names: str, what: str = "name") -> Path:
    """``root / name / ...`` once every name passed :func:`check_name` and the path, symlinks followed, lies
    inside ``root``; else :class:`UnsafeName`. The path returned is the unresolved one (what the caller
    names in messages); it need not exist."""
    for name in names:
        check_name(name, what)
    path = Path(root).joinpath(*names)
    if not is_inside(path, root):
        raise UnsafeName(f"The {what} {'/'.join(names)!r} leads outside its folder (a link to elsewhere); refused")
    return path
