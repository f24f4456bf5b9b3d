"""The trainer dies with the process that started it (the WebUI, or ``serve``).

Two guards, started first thing in the ``train`` command when it is given ``--parent-pid``:

* Linux: ``prctl(PR_SET_PDEATHSIG, SIGTERM)``: the kernel sends SIGTERM the moment the parent goes, however
  it goes (even SIGKILL). Checked once right after, in case the parent went before the call. (Linux sends it
  when the parent *thread* that started the trainer ends: the job worker, which outlives every job it runs.)
* Everywhere: a watchdog thread that looks at the parent once a second (POSIX: ``getppid()`` changes when
  the trainer is re-parented; Windows: whether the parent's pid is still alive, with psutil when present).

Either one stops the trainer as a cancel does (SIGTERM): at its next step it saves a resumable state and
exits with code 3; before its first step (loading the model) SIGTERM ends it at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable, Optional

PR_SET_PDEATHSIG = 1
POLL_S = 1.0


def _stop() -> None:
    if sys.platform == "win32":  # no SIGTERM handler to reach there: end now (the last saved state stays)
        os._exit(3)
    os.kill(os.getpid(), signal.SIGTERM)


def set_death_signal() -> bool:
    """Ask Linux to send this process SIGTERM when its parent dies; False where that is not available."""
    if not sys.platform.startswith("linux") or os.environ.get("PROFILE_STUDIO_NO_PDEATHSIG"):  # env: tests only
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def parent_alive(parent_pid: int) -> bool:
    """Whether ``parent_pid`` is still this process's parent (POSIX) or still running (Windows)."""
    if sys.platform != "win32":
        return os.getppid() == parent_pid
    try:
        import psutil

        return psutil.pid_exists(parent_pid)
    except ImportError:  # without psutil the Windows watchdog cannot tell; assume alive
        return True


def watch_parent(parent_pid: Optional[int], stop: Callable[[], None] = _stop, poll_s: float = POLL_S) -> None:
    """Tie this process's life to ``parent_pid`` (None: do nothing). Returns at once; ``stop`` is called
    (once) when the parent is found gone."""
    if not parent_pid:
        return
    set_death_signal()
    if not parent_alive(parent_pid):  # gone before the death signal was armed
        stop()
        return

    def loop() -> None:
        while parent_alive(parent_pid):
            threading.Event().wait(poll_s)
        stop()

    threading.Thread(target=loop, name="profile-studio-parent-watch", daemon=True).start()
