"""Copies of a person's files in gradio's temp folder, found and removed when the person is deleted.

gradio copies every file a page uploads or is shown (selfies, contact sheets, portraits, word maps) into its
temp folder (``GRADIO_TEMP_DIR``, else ``<tmp>/gradio``: both gradio 3.41 and 4.40) under a folder named by a
hash, and keeps them there. The copies are found by their bytes: same size, then same SHA-256 as one of the
person's files, so no gradio internals are needed and nothing else is touched.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterable

SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".heic", ".heif", ".gif", ".bmp", ".tif", ".tiff", ".json"}


def gradio_temp_dirs() -> list[Path]:
    dirs = [Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")]
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprints(folders: Iterable[Path]) -> dict[int, set[str]]:
    """Size -> SHA-256s of the files (pictures, reports) under ``folders`` that a page may have shown."""
    out: dict[int, set[str]] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix.lower() in SUFFIXES:
                out.setdefault(path.stat().st_size, set()).add(_sha256(path))
    return out


def remove_copies(prints: dict[int, set[str]], roots: Iterable[Path] | None = None) -> list[str]:
    """Delete the files under ``roots`` (gradio's temp folders) whose bytes match ``prints``; their emptied hash
    folders go too. Returns the paths removed."""
    removed: list[str] = []
    if not prints:
        return removed
    for root in (gradio_temp_dirs() if roots is None else roots):
        for path in list(Path(root).rglob("*")):
            try:
                if not path.is_file() or path.stat().st_size not in prints:
                    continue
                if _sha256(path) in prints[path.stat().st_size]:
                    path.unlink()
                    removed.append(str(path))
                    if path.parent != Path(root) and not any(path.parent.iterdir()):
                        path.parent.rmdir()
            except OSError:  # gone meanwhile, or not ours to remove
                continue
    return removed
