"""A plan's progress and ETA from its passes' sampling steps, so the bar moves through every pass (an upscale
makes one pass per tile) instead of jumping from stage to stage."""

from __future__ import annotations

import time
from typing import Callable, Optional

from lib_profile.studio.plan import Plan
from lib_profile.studio.run import count_passes


def passes_before(plan: Plan, portrait: int, stage_index: int) -> int:
    """How many passes the plan makes before stage ``stage_index`` of portrait ``portrait`` (0-based) starts."""
    per_image = count_passes(plan) // max(plan.count, 1)
    earlier = count_passes(plan, through=stage_index - 1) // max(plan.count, 1) if stage_index > 0 else 0
    return portrait * per_image + earlier


class PlanProgress:
    """``stage(n, index, kind)`` when a portrait's stage starts, ``step(step, steps)`` after each sampling step;
    a step count that goes back starts the stage's next pass (tiles, faces). ``report(fraction, eta_s)`` gets the
    whole plan's fraction done and the seconds left (None until something was timed)."""

    def __init__(self, plan: Plan, report: Callable[[float, Optional[float]], None],
                 clock: Callable[[], float] = time.perf_counter):
        self.plan, self.report, self.clock = plan, report, clock
        self.total = max(count_passes(plan), 1)
        self.started = clock()
        self.base = 0  # passes before the current stage
        self.within = 0  # passes of the current stage already finished
        self.last = 0

    def stage(self, n: int, index: int, kind: str) -> None:
        self.base, self.within, self.last = passes_before(self.plan, n, index), 0, 0
        self._report(0.0)

    def step(self, step: int, steps: int) -> None:
        if step < self.last:
            self.within += 1
        self.last = step
        self._report(step / max(steps, 1))

    def _report(self, in_pass: float) -> None:
        fraction = min(1.0, (self.base + self.within + in_pass) / self.total)
        elapsed = self.clock() - self.started
        self.report(fraction, elapsed / fraction * (1 - fraction) if fraction > 0 and elapsed > 0 else None)
