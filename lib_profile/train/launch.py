"""Starting the trainer process (``python -m lib_profile train ...``) from the extension or ``serve``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

EXTENSION_ROOT = Path(__file__).resolve().parents[2]


def spawn(args: list[str], log: BinaryIO, data_dir: str | Path | None = None) -> subprocess.Popen:
    """Start ``python -m lib_profile [--data-dir D] <args>`` with this interpreter, output to ``log``.

    The child is told this process's pid (``--parent-pid``) and dies with it (:mod:`lib_profile.train.parent`):
    a WebUI that crashes or is killed leaves no trainer behind writing to the run folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(EXTENSION_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    head = [sys.executable, "-m", "lib_profile"] + (["--data-dir", str(data_dir)] if data_dir else [])
    cmd = head + list(args) + ["--parent-pid", str(os.getpid())]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(EXTENSION_ROOT))
