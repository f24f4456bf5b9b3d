"""Where Profile Studio keeps the user's data (identities, photos, LoRAs in progress, jobs, caches).

Never inside the extension folder (it is a git checkout that updates reset). Order of precedence:
an explicit path, the ``PROFILE_STUDIO_DIR`` environment variable, the WebUI's
``--profile-studio-dir`` flag, ``<WebUI data dir>/profile-studio`` inside a WebUI, and
``$XDG_DATA_HOME/profile-studio`` (``~/.local/share/profile-studio``) elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from lib_profile.webui import places as webui_places

ENV_VAR = "PROFILE_STUDIO_DIR"
EXTENSION_ROOT = Path(__file__).resolve().parent.parent


def data_dir(explicit: str | os.PathLike | None = None, create: bool = True) -> Path:
    if explicit:
        path = Path(explicit)
    elif os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR])
    else:
        path = webui_places.data_dir() or Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "profile-studio"
    path = path.expanduser().resolve()
    if path == EXTENSION_ROOT or EXTENSION_ROOT in path.parents:
        raise ValueError(
            f"The Profile Studio data folder {path} is inside the extension folder, which updates reset. "
            f"Choose another with --profile-studio-dir or {ENV_VAR}."
        )
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def tokenizer_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where the CLIP tokenizer built from open_clip's vocabulary is kept."""
    return cache_dir(explicit) / "clip-tokenizer"


def cache_dir(explicit: str | os.PathLike | None = None) -> Path:
    path = data_dir(explicit) / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path
