"""A training run's progress as the job and the WebUI show it, read from the trainer's event file.

The trainer writes ``phase`` events (load, cache, train, validate, export), a ``tick`` at most twice a second
and a ``step`` (with the loss) every ``log_every`` steps. Progress moves with every tick; the ETA is the time
left at the measured rate, counted down between events so it never stands still.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Optional

# the job's stage is the trainer's phase name (the API's contract: load, cache, train, validate, export); the
# WebUI's progress bar shows these words for it
PHASES = {"load": "loading the model", "cache": "encoding the photos", "train": "training",
          "validate": "validation portraits", "export": "saving the LoRA"}
START, SPAN = 0.02, 0.9  # the training steps fill 2 % .. 92 % of the bar (loading before, export after)


class TrainingProgress:
    def __init__(self, events: Path, steps: int, update: Callable[..., None],
                 show: Optional[Callable[[int, int, str], None]] = None, clock: Callable[[], float] = time.monotonic):
        """``update(stage=, progress=, eta_s=, message=)``: the job's; ``show(step, steps, text)``: the host's bar."""
        self.events, self.steps, self.update, self.show, self.clock = events, max(steps, 1), update, show, clock
        self.offset = 0
        self.error: Optional[str] = None
        self.step = 0
        self.first: Optional[tuple[float, int]] = None  # (time, step) of the first step seen in this run
        self.rate: Optional[float] = None  # steps a second
        self.at: Optional[float] = None  # when the last step was seen
        self.text = "Profile Studio: starting"  # what the host's bar says now

    def poll(self) -> None:
        """Read new events, then count the ETA down from the last measured rate."""
        if self.events.is_file():
            with open(self.events, "rb") as f:
                f.seek(self.offset)
                data = f.read()
            end = data.rfind(b"\n") + 1
            self.offset += end
            for line in data[:end].decode("utf-8", "replace").splitlines():
                try:
                    self._event(json.loads(line))
                except (ValueError, TypeError):
                    continue
        if self.rate and self.at is not None:
            left = (self.steps - self.step) / self.rate - (self.clock() - self.at)
            self.update(eta_s=max(left, 0.0))
        if self.show:  # again at every poll: the host's bar may have been reset by others meanwhile
            self.show(self.step, self.steps, self.text)

    def _event(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind in ("step", "tick"):
            self._step(int(ev.get("step", 0)))
        elif kind == "phase":
            phase = ev.get("phase")
            if phase == "error":
                self.error = ev.get("message")
            elif phase:
                self.update(stage=phase)
                self.text = f"Profile Studio: {PHASES.get(phase, phase)}"
                if self.show:
                    self.show(self.step, self.steps, self.text)
        elif kind == "validation":
            score = ev.get("identity")
            self.update(message=f"step {ev.get('step')}: " + (
                f"identity similarity {score:.3f}" if score is not None else "no face in the validation portraits yet"))

    def _step(self, step: int) -> None:
        now = self.clock()
        if self.first is None or step < self.first[1]:
            self.first = (now, step)
        elif step > self.first[1] and now > self.first[0]:
            self.rate = (step - self.first[1]) / (now - self.first[0])
        self.step, self.at = step, now
        self.update(stage="train", progress=START + SPAN * step / self.steps)
        self.text = f"Profile Studio: training step {step} of {self.steps}"
        if self.show:
            self.show(step, self.steps, self.text)
