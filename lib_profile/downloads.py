"""Downloading optional model files for the user: resumable, checksummed, and clear when offline.

A download goes to ``<file>.partial`` beside its destination and continues from there (HTTP Range)
when interrupted; only a complete file whose SHA-256 matches (when the manifest knows it) is moved
into place. When the network is unreachable the error names the file, the folder it belongs in and
where to get it, so it can be put there by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from lib_profile.hosts.base import HostError

CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: str | Path, sha256: Optional[str] = None, timeout: float = 30.0,
             progress: Optional[Callable[[int, Optional[int]], None]] = None) -> Path:
    """Fetch ``url`` to ``dest`` (resuming a ``.partial``); verify ``sha256`` when given."""
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".partial")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "profile-studio"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    manual = f"Download {url} yourself and put it in {dest.parent} as {dest.name}."
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            if have and resp.status != 206:  # the server ignored Range: start over
                have = 0
            total = resp.headers.get("Content-Length")
            total = int(total) + have if total is not None else None
            with open(part, "ab" if have else "wb") as f:
                done = have
                try:
                    while block := resp.read(CHUNK):
                        f.write(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
                except http.client.IncompleteRead as exc:
                    f.write(exc.partial)
                    done += len(exc.partial)
            if total is not None and done < total:
                raise HostError(f"Download of {dest.name} stopped at {done} of {total} bytes; run it again to "
                                f"resume. {manual}")
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # already complete
            pass
        else:
            raise HostError(f"Download of {dest.name} failed: HTTP {exc.code}. {manual}") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HostError(f"Cannot download {dest.name} (no connection: {reason}). {manual} "
                        f"A partial download, if any, resumes next time.") from exc
    if sha256 is not None:
        got = sha256_of(part)
        if got != sha256:
            part.unlink(missing_ok=True)
            raise HostError(f"{dest.name} arrived damaged (SHA-256 {got[:12]}..., expected {sha256[:12]}...); "
                            f"the partial file was removed, try again. {manual}")
    part.replace(dest)
    return dest
