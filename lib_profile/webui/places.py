"""Where a running WebUI keeps things, read from its already-imported modules (``sys.modules``) without importing
anything: None outside a WebUI. The core's paths (:mod:`lib_profile.paths`, :mod:`lib_profile.model_files`) ask
here, so they stay free of the WebUI's names."""

from __future__ import annotations

import sys
from pathlib import Path


def data_dir() -> Path | None:
    """Profile Studio's data folder inside a running WebUI: its ``--profile-studio-dir`` flag, else
    ``<WebUI data dir>/profile-studio``; None when not inside one."""
    shared = sys.modules.get("modules.shared")
    paths = sys.modules.get("modules.paths")
    flag = getattr(getattr(shared, "cmd_opts", None), "profile_studio_dir", None)
    if flag:
        return Path(flag)
    data_path = getattr(paths, "data_path", None)
    if data_path:
        return Path(data_path) / "profile-studio"
    return None


def models_dir() -> Path | None:
    """The running WebUI's models folder (``models_path``); None when not inside one."""
    root = getattr(sys.modules.get("modules.paths"), "models_path", None)
    return Path(root) if root else None
