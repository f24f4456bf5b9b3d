"""A cluster worker keeps the job it runs its own, and lets go of it in time (docs/cluster.md, "Fencing").

Another worker takes a job up when its row has had no beat for ``stalled_s`` seconds, by the database's clock
(:meth:`PgJobDB.requeue_running`). A worker alive but cut off from the database (a network split, or the database
away for longer than that) would run on meanwhile, and two runs of one job would write one LoRA or one row. So, in
each worker process (:class:`Watch`, three threads; a query that hangs on a cut network holds up only its own):

* **beat**: every ``beat_s`` (``stalled_s / 20`` at most) the row of each run held here (from its start until its
  end or hand-back is written) gets a beat, on the process's own connection, conditioned on the run's token
  (:meth:`PgJobDB.beat`); the Procrastinate worker of each gets its heartbeat too. The time a beat was *sent*, once
  it came back, is a beat the database surely saw (its ``NOW()`` is later). A run whose row was not beaten (queued,
  started again or ended since: the run lost it) is fenced at once.
* **fence**: every ``poll_s``, a job running here whose last sure beat is more than ``FENCE_SHARE`` (2/3) of
  ``stalled_s`` old is stopped (``ctx.fenced`` and ``ctx.cancelled``: the handler stops after its current step),
  before any other worker may take it up (by then its row is at least ``stalled_s`` old). A fenced run writes no
  progress and no end; once the database answers, its row goes back to the queue from here by a compare-and-set on
  its token (or by another worker's take-up), and it runs again (a training from its last saved state).
* **cancels**: a cancel flag raised by any front becomes ``ctx.cancelled`` of the job running here.

So a run whose worker's beats get through for less than 2/3 of ``stalled_s`` goes on, and nobody takes it up
(its row is never older than that); one cut off for longer stops before anyone can take it up.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lib_profile.jobs.cluster import ClusterJobManager
    from lib_profile.jobs.manager import JobContext

FENCE_SHARE = 2 / 3  # a job stops here after this share of stalled_s without a sure beat
BEATS_PER_TIMEOUT = 20  # beats at least this often per stalled_s


class Watch:
    """The watching threads of a worker process (``threads()``). ``hold(ctx, sent)`` once a run has started here
    (``sent``: when its start, which beats its row, was sent; monotonic seconds), ``release(job_id)`` once its end
    or hand-back is written; ``fence(why, ctx)`` stops a run that lost its job."""

    def __init__(self, manager: "ClusterJobManager"):
        self.m = manager
        self.fence_s = manager.stalled_s * FENCE_SHARE
        self.beat_s = min(manager.heartbeat_s, manager.stalled_s / BEATS_PER_TIMEOUT)
        self.held: dict[str, "JobContext"] = {}  # job id -> its run here, from its start until its end is written
        self.sure: dict[str, float] = {}  # job id -> when the last beat the database surely saw was sent
        self.wake = threading.Event()  # set: stop waiting (shutdown)

    def threads(self) -> list[threading.Thread]:
        return [threading.Thread(target=fn, daemon=True, name=f"profile-studio-{name}")
                for name, fn in (("beat", self._beats), ("fence", self._fence), ("cancels", self._cancels))]

    def hold(self, ctx: "JobContext", sent: float) -> None:
        self.sure[ctx.id] = sent
        self.held[ctx.id] = ctx

    def release(self, job_id: str) -> None:
        self.held.pop(job_id, None)
        self.sure.pop(job_id, None)

    def beat(self) -> None:
        """Beat once on the rows of the runs held here (nothing when none is); fence those that lost their row."""
        runs = dict(self.held)
        if not runs:
            return
        sent = time.monotonic()
        try:
            beaten = self.m.db.beat({i: c.attempt for i, c in runs.items()})
        except Exception:  # noqa: BLE001 - the database is away (QueueUnreachable): the fence thread counts the time
            return
        try:  # Procrastinate's record of each worker too (its own loop may have stopped on a lost connection)
            self.m.db.keep_alive([w for i, w in list(self.m._queue_workers.items()) if i in runs])
        except Exception:  # noqa: BLE001 - gone again: our rows' beats are what the others check
            pass
        for job_id, ctx in runs.items():
            if job_id in beaten:
                self.sure[job_id] = max(self.sure.get(job_id, sent), sent)
            elif self.held.get(job_id) is ctx and job_id in self.m._running:  # not just ended here
                self.fence("its job record has moved on (queued or started again elsewhere, or ended)", ctx)

    def fence(self, why: str, ctx: "JobContext") -> None:
        """Stop the run ``ctx`` for ``why``: the job is no longer surely its own."""
        if ctx.fenced:
            return
        ctx.fenced = True
        ctx.cancelled.set()
        print(f"[Profile Studio] job {ctx.id} stopped on this worker: {why}; it goes back to the queue", flush=True)

    def _beats(self) -> None:
        while not self.m._stop.is_set():
            self.beat()
            self.wake.wait(self.beat_s)

    def _fence(self) -> None:
        while not self.m._stop.wait(self.m.poll_s):
            now = time.monotonic()
            for job_id, ctx in list(self.m._running.items()):
                age = now - self.sure.get(job_id, now)
                if age > self.fence_s and not ctx.fenced:
                    self.fence(f"no beat reached the job database for {age:.1f} s (another worker may take the job "
                               f"up after {self.m.stalled_s:g} s)", ctx)

    def _cancels(self) -> None:
        """Turn a raised cancel flag (set by any front) into ``ctx.cancelled`` of the job running here."""
        m = self.m
        while not m._stop.wait(m.poll_s):
            ids = [i for i, c in list(m._running.items()) if not c.cancelled.is_set()]
            try:
                flagged = m.db.cancel_requested(ids)
            except Exception:  # noqa: BLE001 - the database is away for a moment: try again next time
                continue
            for job_id in flagged:
                ctx = m._running.get(job_id)
                if ctx is not None and not ctx.cancelled.is_set():
                    ctx.cancelled.set()
                    ctx.update(message="Cancel requested; stopping after the current step", flush=True)


def guard_queue_record(job_manager, manager: "ClusterJobManager") -> None:
    """Fence Procrastinate's own record of a job too: a run here that lost its job (``manager._lost_queue_jobs``:
    its Procrastinate job id -> its worker id here) closes or retries that record only while it is still this
    worker's (status ``doing``, this worker's id), not once another worker took it up (it would end the other's
    run's record). Wraps ``job_manager.finish_job`` and ``retry_job`` in place."""
    import asyncio

    def guarded(original):
        async def call(*args, **kwargs):
            job = kwargs["job"] if "job" in kwargs else args[0]
            worker_id = manager._lost_queue_jobs.pop(job.id, None)
            if worker_id is not None and not await asyncio.to_thread(manager.db.holds_queue_job, job.id, worker_id):
                print(f"[Profile Studio] queue job {job.id}: another worker holds it now; left to it", flush=True)
                return None
            return await original(*args, **kwargs)

        return call

    job_manager.finish_job = guarded(job_manager.finish_job)
    job_manager.retry_job = guarded(job_manager.retry_job)
