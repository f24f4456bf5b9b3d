"""Runs jobs one at a time in a worker thread, keeps their live state, and cancels them.

A handler gets a :class:`JobContext`: ``ctx.update(stage=, progress=, eta_s=, message=)`` publishes
progress (kept in memory for polling, written to SQLite at most twice a second and on every state
change), ``ctx.cancelled`` is set by :meth:`JobManager.cancel`, and the handler's return value is
the job's result. Raising :class:`~lib_profile.hosts.base.Interrupted` ends it as cancelled.

A queued job is either cancelled or run, never both: the two ways out of ``queued`` are compare-and-set
updates of its row (:meth:`JobDB.cancel_queued`, :meth:`JobDB.start_queued`), and the worker registers the
job it starts under the same lock :meth:`JobManager.cancel` looks it up with.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
import uuid
from typing import Any, Callable, Optional

from lib_profile.hosts.base import HostError, Interrupted
from lib_profile.jobs.db import FINAL, JobDB
from lib_profile.store.identities import Conflict, NotFound

Handler = Callable[["JobContext"], Any]


class JobContext:
    def __init__(self, manager: "JobManager", job: dict[str, Any]):
        self.manager = manager
        self.id = job["id"]
        self.kind = job["kind"]
        self.identity = job["identity"]
        self.params = job["params"] or {}
        self.cancelled = threading.Event()
        self.taken_over = False  # cluster mode: this run took the job up after its first worker stopped
        self.attempt = 0  # the start's fencing token (cluster mode: the row's ``attempts``; 1 in the embedded mode)
        self.fenced = False  # cluster mode: this run lost the job (lib_profile/jobs/fencing.py): it writes nothing more
        # messages already on the row stay (a job the cluster mode queued again after its worker died says so)
        self.live: dict[str, Any] = {"stage": None, "progress": 0.0, "eta_s": None,
                                     "messages": list(job.get("messages") or [])}
        self._flushed = 0.0

    @property
    def task_id(self) -> str:
        """The id the WebUI's ``/internal/progress`` knows this job by."""
        return f"task(profile-studio-{self.id})"

    def update(self, stage: Optional[str] = None, progress: Optional[float] = None, eta_s: Optional[float] = None,
               message: Optional[str] = None, flush: bool = False) -> None:
        with self.manager._lock:
            if stage is not None:
                flush = flush or stage != self.live["stage"]
                self.live["stage"] = stage
            if progress is not None:
                self.live["progress"] = max(0.0, min(1.0, float(progress)))
            if eta_s is not None:
                self.live["eta_s"] = round(float(eta_s), 1)
            if message:
                self.live["messages"] = [*self.live["messages"], message]
                flush = True
        now = time.monotonic()
        if flush or now - self._flushed > 0.5:
            self._flushed = now
            self.manager._write_live(self, dict(self.live))


class JobManager:
    def __init__(self, db: JobDB, handlers: dict[str, Handler]):
        self.db = db
        self.handlers = handlers
        self._lock = threading.RLock()
        self._queue: "queue.Queue[Optional[str]]" = queue.Queue()
        self._running: dict[str, JobContext] = {}
        self.interrupted_at_start = self.db.mark_interrupted()  # what the last run of the service left unfinished
        self._worker = threading.Thread(target=self._work, name="profile-studio-jobs", daemon=True)
        self._worker.start()

    # -- public
    def submit(self, kind: str, identity: Optional[str], params: dict[str, Any]) -> dict[str, Any]:
        if kind not in self.handlers:
            raise HostError(f"Unknown job kind {kind!r}")
        job_id = uuid.uuid4().hex[:12]
        self.db.insert(job_id, kind, identity, params)
        self._queue.put(job_id)
        return self.get(job_id)

    def get(self, job_id: str) -> dict[str, Any]:
        job = self.db.get(job_id) if isinstance(job_id, str) and job_id.isalnum() else None
        if job is None:
            raise NotFound(f"No job {job_id!r}")
        with self._lock:
            ctx = self._running.get(job_id)
            if ctx is not None:
                job.update(ctx.live)
            elif job["state"] == "queued" and self._running:  # why it has not started: the job ahead of it
                ahead = next(iter(self._running.values()))
                job["waiting_for"] = {"id": ahead.id, "kind": ahead.kind, "identity": ahead.identity}
        return job

    def list(self, identity: Optional[str] = None) -> list[dict[str, Any]]:
        return [self.get(j["id"]) if j["state"] == "running" else j for j in self.db.list(identity)]

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued job (it will never run) or ask a running one to stop after its current step.
        Raises NotFound (no such job) or Conflict (it has already ended)."""
        job = self.get(job_id)
        with self._lock:  # the worker starts and ends jobs under this lock: the job cannot change hands here
            ctx = self._running.get(job_id)
            if ctx is not None:
                ctx.cancelled.set()
                ctx.update(message="Cancel requested; stopping after the current step", flush=True)
            elif not self.db.cancel_queued(job_id):
                now = self.db.get(job_id) or job
                raise Conflict(f"Job {job_id} has already ended ({now['state']})")
        return self.get(job_id)

    def busy_with(self, identity: str) -> bool:
        return any(j["state"] in ("queued", "running") for j in self.db.list(identity))

    def forget(self, identity: str) -> int:
        """Delete the identity's job records (after its data is deleted)."""
        return self.db.delete_for(identity)

    def wait(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(job_id)
            if job["state"] in FINAL:
                return job
            time.sleep(0.05)
        raise TimeoutError(f"job {job_id} still {self.get(job_id)['state']} after {timeout} s")

    def shutdown(self) -> None:
        with self._lock:
            for ctx in self._running.values():
                ctx.cancelled.set()
        self._queue.put(None)
        self._worker.join(timeout=30)

    # -- worker
    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            self._run_one(job_id)

    def _run_one(self, job_id: str) -> None:
        """Run one queued job to its end (state, result, error written to its row); nothing when it is no longer
        queued. Also what the cluster mode's queue worker calls (:mod:`lib_profile.jobs.cluster`)."""
        job = self.db.get(job_id)
        if job is None or job["state"] != "queued":
            return  # cancelled while queued, or deleted with its identity
        ctx = JobContext(self, job)
        with self._lock:
            ctx.attempt = int(self._claim(ctx))
            if not ctx.attempt:
                return  # cancelled (or deleted) since it was read: it never runs
            self._running[job_id] = ctx
        self._started(ctx)
        try:
            self._run_started(ctx)
        finally:
            self._ended(ctx)

    def _claim(self, ctx: JobContext) -> int:
        """queued -> running by compare-and-set: the start's token (true) when this call started the job, else 0."""
        return int(self.db.start_queued(ctx.id))

    def _write_live(self, ctx: JobContext, live: dict[str, Any]) -> None:
        """Write a running job's stage, progress, ETA and messages to its row (the cluster mode lets a write fail
        while its database is away: the next one writes them all; and refuses one of a run that lost the job)."""
        self.db.update(ctx.id, **live)

    def _write_end(self, ctx: JobContext, fields: dict[str, Any]) -> None:
        """Write a job's end (state, result, error, times, last progress) to its row, unless it was deleted
        meanwhile (with its identity). The cluster mode retries while its database is away, and writes only while
        this run still holds the job."""
        if self.db.get(ctx.id) is not None:
            self.db.update(ctx.id, **fields)

    def _started(self, ctx: JobContext) -> None:
        """Hook: the job is running here (the cluster mode starts watching its row for a cancel)."""

    def _ended(self, ctx: JobContext) -> None:
        """Hook: the job has ended here."""

    def _run_started(self, ctx: JobContext) -> None:
        job_id = ctx.id
        state, result, error = "done", None, None
        try:
            result = self.handlers[ctx.kind](ctx)
            if ctx.cancelled.is_set():
                state = "cancelled"
        except Interrupted as stop:
            state, result = "cancelled", getattr(stop, "result", None)  # what was kept, if anything
        except HostError as exc:
            state, error = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - a job must never take the worker down
            state, error = "failed", f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        with self._lock:  # ended and written under the lock: a cancel sees it running or ended, never between
            self._running.pop(job_id, None)
            if state == "done":
                ctx.live["progress"] = 1.0
                ctx.live["eta_s"] = 0.0
            else:  # nothing is left to wait for (the stage says where it stopped)
                ctx.live["eta_s"] = None
            if state == "cancelled" and not any(m.startswith("Stopped") for m in ctx.live["messages"]):
                ctx.live["messages"] = [*ctx.live["messages"], "Stopped before it finished"]
            if error:
                ctx.live["messages"] = [*ctx.live["messages"], error]
            self._write_end(ctx, dict(state=state, result=result, error=error, finished=time.time(), **ctx.live))
