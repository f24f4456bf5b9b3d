"""Step progress and cancel for a WebUI pass: the WebUI reports sampling steps only in ``shared.state``, and our
jobs are cancelled through their own flag. A watcher thread reads ``state.sampling_step`` a few times a second
and calls the pass's ``on_step`` when it moves; when the job's ``should_interrupt`` turns true it interrupts the
WebUI (``state.interrupt()``), so a cancel stops the sampling within a step, not at the end of the pass."""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional

from lib_profile.hosts.base import RunControl

POLL_S = 0.25


@contextlib.contextmanager
def watching(state, control: Optional[RunControl], poll_s: float = POLL_S) -> Iterator[None]:
    if control is None or (control.on_step is None and control.should_interrupt is None):
        yield
        return
    stop = threading.Event()
    seen = [(-1, -1)]

    def tick() -> None:
        step, steps = int(getattr(state, "sampling_step", 0) or 0), int(getattr(state, "sampling_steps", 0) or 0)
        if control.on_step is not None and step > 0 and steps > 0 and (step, steps) != seen[0]:  # 0: between jobs
            seen[0] = (step, steps)
            control.on_step(min(step, steps), steps)
        if control.should_interrupt is not None and not getattr(state, "interrupted", False) \
                and control.should_interrupt():
            state.interrupt()

    def loop() -> None:
        while not stop.wait(poll_s):
            tick()

    thread = threading.Thread(target=loop, name="profile-studio-steps", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
    total = int(getattr(state, "sampling_steps", 0) or seen[0][1])
    if control.on_step is not None and total > 0 and seen[0] != (total, total):  # the pass ended: all its steps
        control.on_step(total, total)
