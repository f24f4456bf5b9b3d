"""The cluster mode's job manager: records in PostgreSQL, the queue in Procrastinate, any number of processes.

Every process is a front (submit, get, list, cancel any job); a process started with a worker also runs jobs.
The queue is Procrastinate's (workers claim with ``SELECT ... FOR UPDATE SKIP LOCKED`` and wake on
``LISTEN/NOTIFY``); its worker runs embedded, in its own event-loop thread, one job at a time, and calls the same
:meth:`JobManager._run_one` the embedded mode runs. A handler sees the same :class:`JobContext`: its progress,
stage, ETA and messages go to the job's row (throttled as in the embedded mode), so every front reads them.

A restart of PostgreSQL (or the network cut for a while): a front's request meanwhile raises QueueUnreachable (the
API's 503); the pools test each connection before use and reconnect. A worker's Procrastinate loop stops when its
connection breaks; it is started again (every ``RETRY_S`` seconds at most) until the database answers. A job
running meanwhile runs on: its progress writes that fail are skipped (the next one writes everything), its end is
written when the database is back, and this process beats on its row while it runs, so no other worker takes it up.
A job whose start met the outage is retried by Procrastinate (its RetryStrategy). An outage that keeps this process's
beats out for longer than 2/3 of ``stalled_s`` stops the job here instead (fencing, :mod:`.fencing`: a worker cannot
tell it from being cut off alone), and it is queued again; every write of a run is conditioned on its start's token
(the row's ``attempts``), so a run that lost its job writes nothing more.

Cancel, from any front: a queued job is cancelled by a compare-and-set on its row (the worker's own
compare-and-set to start it then fails, and it never runs); a running one gets its row's cancel flag raised,
which the worker running it polls (every ``poll_s`` seconds) and turns into ``ctx.cancelled``.

procrastinate and psycopg are imported when a cluster manager is made, never by the embedded mode.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from typing import Any, Callable, Optional

from lib_profile.hosts.base import HostError
from lib_profile.jobs.fencing import Watch, guard_queue_record
from lib_profile.jobs.manager import Handler, JobContext, JobManager
from lib_profile.jobs.pg_records import PgJobDB, QueueUnreachable, connect_error, open_pool, outage
from lib_profile.jobs.routing import QUEUE, preferring, queue_for
from lib_profile.store.identities import Conflict

TASK = "profile_studio.run_job"
RETRY_S = 5.0  # at most this long between two tries to reach a database that went away


class HandedBack(Exception):
    """A job stopped on this worker by fencing, its row queued again: Procrastinate retries its job."""


def _app(connector):
    import procrastinate

    return procrastinate.App(connector=connector)


class ClusterJobManager(JobManager):
    """JobManager's public methods (submit/get/list/cancel/wait/busy_with/forget/shutdown) over PostgreSQL.

    ``url``: a libpq URL (``postgresql://user@host:port/db``); raises QueueUnreachable when it is malformed or
    the server cannot be reached. ``worker=False``: a front only (nothing runs here). ``poll_s``: how often a
    running job's cancel flag is read. ``heartbeat_s``: how often this worker tells the database it is alive;
    ``stalled_s``: after how long without a heartbeat another worker's running job is queued again (and run
    here or elsewhere from the start; a job kind that saves its state resumes from it); a job running here stops
    after 2/3 of it without a beat the database saw (:mod:`.fencing`). ``checkpoint()``: the
    checkpoint this process has selected now (a name; None: cannot tell), recorded with each job submitted here
    that names none (``params["checkpoint"]``), and preferred by this worker (:mod:`.routing`)."""

    def __init__(self, url: str, handlers: dict[str, Handler], worker: bool = True, poll_s: float = 0.25,
                 heartbeat_s: float = 10.0, stalled_s: float = 30.0,
                 checkpoint: Optional[Callable[[], Optional[str]]] = None):
        self.url = url
        self.handlers = handlers
        self.worker = worker
        self.checkpoint = checkpoint or (lambda: None)
        self._lock = threading.RLock()
        self._running: dict[str, JobContext] = {}
        self._queue_workers: dict[str, int] = {}  # job id -> id of the Procrastinate worker that runs it here
        self._queue_jobs: dict[str, int] = {}  # job id -> id of its Procrastinate job, while it runs here
        self._handed_back: set[str] = set()  # jobs stopped here by fencing and queued again from here
        # Procrastinate job id -> its worker id here, for a run here that lost its job: its record is closed only
        # when it is still this worker's (fencing.guard_queue_record)
        self._lost_queue_jobs: dict[int, int] = {}
        self.interrupted_at_start: list[dict[str, Any]] = []
        self.poll_s, self.heartbeat_s, self.stalled_s = poll_s, heartbeat_s, stalled_s
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        pool = open_pool(url)
        try:
            # the tables, made by the first process (the user may lack the right); each start records our name
            self.db = PgJobDB(pool, worker=self.name)
            from procrastinate import SyncPsycopgConnector

            self._front = _app(SyncPsycopgConnector(conninfo=url, min_size=1, max_size=2)).open()
            self._ensure_queue_schema()
            self._front_task = self._register(self._front)
        except Exception as exc:  # noqa: BLE001 - say which database and why, whatever psycopg raised
            pool.close()
            raise exc if isinstance(exc, HostError) else connect_error(url, exc) from exc
        self._stop = threading.Event()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._worker_task: Optional[asyncio.Task] = None
        self._threads: list[threading.Thread] = []
        self._watch = Watch(self)  # beats, self-fencing, cancel flags (lib_profile/jobs/fencing.py)
        if worker:
            started = threading.Event()
            self._threads.append(threading.Thread(target=self._work_loop, args=(started,), daemon=True,
                                                  name="profile-studio-queue-worker"))
            self._threads += self._watch.threads()
            for t in self._threads:
                t.start()
            started.wait(30)

    # -- setup
    def _ensure_queue_schema(self) -> None:
        """Procrastinate's tables, created once per database (under an advisory lock: two processes starting
        together do not both create them)."""
        from lib_profile.jobs.pg_records import SCHEMA_LOCK

        with self.db.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            if conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()[0] is None:
                conn.execute(self._front.schema_manager.get_schema().encode())

    def _register(self, app):
        import procrastinate

        def run_job(context, job_id: str) -> None:
            if context.job.worker_id is not None:
                self._queue_workers[job_id] = context.job.worker_id
            self._queue_jobs[job_id] = context.job.id
            try:
                self._run_one(job_id)
            finally:
                self._watch.release(job_id)
                self._queue_workers.pop(job_id, None)
                self._queue_jobs.pop(job_id, None)
            if job_id in self._handed_back:  # stopped here by fencing, its row queued again: Procrastinate's too
                self._handed_back.discard(job_id)
                raise HandedBack(f"job {job_id} was stopped on {self.name} by fencing and queued again")

        # a job whose start met a database outage (QueueUnreachable before it ran) is tried again later, and one
        # stopped by fencing (HandedBack) runs again
        retry = procrastinate.RetryStrategy(max_attempts=20, wait=RETRY_S,
                                            retry_exceptions={QueueUnreachable, HandedBack})
        return app.task(name=TASK, queue=QUEUE, pass_context=True, retry=retry)(run_job)

    # -- public
    def submit(self, kind: str, identity: Optional[str], params: dict[str, Any]) -> dict[str, Any]:
        if kind not in self.handlers:
            raise HostError(f"Unknown job kind {kind!r}")
        job_id = uuid.uuid4().hex[:12]
        needs = params.get("checkpoint") or self.checkpoint()
        self.db.insert(job_id, kind, identity, params, checkpoint=needs)
        try:
            self._front_task.configure(queue=queue_for(needs)).defer(job_id=job_id)
        except Exception as exc:  # noqa: BLE001 - not queued: do not leave a row that waits forever
            try:
                self.db.update(job_id, state="failed", error=f"could not queue it: {exc}")
            except QueueUnreachable:
                pass  # the row stays queued with no queue job: nothing runs it; a cancel ends it
            raise outage(self.url, exc) from exc
        return self.get(job_id)

    def get(self, job_id: str) -> dict[str, Any]:
        job = super().get(job_id)
        if job["state"] == "queued" and "waiting_for" not in job:
            ahead = self.db.running(1)
            if ahead:
                a = ahead[0]
                job["waiting_for"] = {"id": a["id"], "kind": a["kind"], "identity": a["identity"]}
        return job

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued job (it never runs) or ask a running one, on whichever worker, to stop after its
        current step. Raises NotFound (no such job) or Conflict (it has already ended)."""
        job = self.get(job_id)
        with self._lock:
            ctx = self._running.get(job_id)
            if ctx is not None:  # running here; the row's flag too: the cancel holds should this run lose the job
                self.db.request_cancel(job_id)
                ctx.cancelled.set()
                ctx.update(message="Cancel requested; stopping after the current step", flush=True)
                return self.get(job_id)
        for _ in range(3):  # a job queued again after its worker stopped can move back between the two updates
            if self.db.cancel_queued(job_id) or self.db.request_cancel(job_id):
                return self.get(job_id)
            now = self.db.get(job_id) or job
            if now["state"] not in ("queued", "running"):
                break
        raise Conflict(f"Job {job_id} has already ended ({now['state']})")

    def shutdown(self) -> None:
        self._stop.set()  # first: an end being written to an unreachable database gives up
        self._watch.wake.set()
        with self._lock:
            for ctx in self._running.values():
                ctx.cancelled.set()
        loop, task = self._loop, self._worker_task
        if loop is not None and task is not None:
            loop.call_soon_threadsafe(task.cancel)
        for t in self._threads:
            t.join(timeout=30)
        self._front.close()

    # -- worker
    def _claim(self, ctx: JobContext) -> int:
        sent = time.monotonic()  # the start beats the row: a beat the database surely saw, sent then
        token = self.db.start_queued(ctx.id, worker=self.name)
        if token:
            ctx.attempt = token
            self._watch.hold(ctx, sent)
        return token

    def _started(self, ctx: JobContext) -> None:
        ctx.taken_over = ctx.attempt > 1  # each start counts; the first worker stopped (or handed it back)

    def _write_live(self, ctx: JobContext, live: dict[str, Any]) -> None:
        """Progress, only while this run still holds the job (its start's token); a refused write stops it."""
        if ctx.fenced:
            return
        try:
            if not self.db.write_running(ctx.id, ctx.attempt, **live):
                self._lost(ctx)
                self._watch.fence("its job record has moved on (queued or started again elsewhere, or ended)", ctx)
        except QueueUnreachable:  # the database is away: the job goes on; the next write carries it all
            pass

    def _write_end(self, ctx: JobContext, fields: dict[str, Any]) -> None:
        """Write the end, only while this run still holds the job; a run stopped by fencing writes none and hands
        its row back to the queue instead (compare-and-set on its token). While the database is away, try again
        (after 0.5 s, the wait doubling up to ``RETRY_S``) until it is back or this manager shuts down."""
        if ctx.fenced:
            over = round(self._watch.fence_s, 1)
            message = (f"Its worker {self.name} lost the job database for over {over:g} s and stopped it there; "
                       "queued again")
            moved = self._retrying(ctx.id, "stopped by fencing",
                                   lambda: self.db.requeue_running(ctx.id, message, attempts=ctx.attempt))
            if moved:
                self._handed_back.add(ctx.id)
            if moved is not None:  # Procrastinate's record goes back only if another worker did not take it first
                self._lost(ctx)
            return
        written = self._retrying(ctx.id, fields.get("state"),
                                 lambda: self.db.write_running(ctx.id, ctx.attempt, **fields))
        if written is False:
            self._lost(ctx)
            print(f"[Profile Studio] job {ctx.id} ended ({fields.get('state')}) here, but it is no longer this "
                  "run's (queued or started again elsewhere, or ended): not recorded", flush=True)

    def _lost(self, ctx: JobContext) -> None:
        """This run lost its job (or handed it back): its Procrastinate record is closed or retried from here only
        while it is still this worker's (:func:`.fencing.guard_queue_record`)."""
        queue_job, queue_worker = self._queue_jobs.get(ctx.id), self._queue_workers.get(ctx.id)
        if queue_job is not None and queue_worker is not None:
            self._lost_queue_jobs[queue_job] = queue_worker

    def _retrying(self, job_id: str, what, write: Callable[[], bool]) -> Optional[bool]:
        """``write()``, tried again while the database is away; None when this manager shut down first."""
        wait, said = 0.5, False
        while True:
            try:
                return write()
            except QueueUnreachable as exc:
                if self._stop.is_set():
                    print(f"[Profile Studio] job {job_id} ended ({what}) but {exc}; not recorded", flush=True)
                    return None
                if not said:
                    print(f"[Profile Studio] job {job_id} ended; waiting for the job database to record it: {exc}",
                          flush=True)
                    said = True
                self._stop.wait(wait)
                wait = min(RETRY_S, wait * 2)

    def _work_loop(self, started: threading.Event) -> None:
        from procrastinate import PsycopgConnector

        app = _app(PsycopgConnector(conninfo=self.url, min_size=1, max_size=3))
        self._register(app)
        app.job_manager.fetch_job = preferring(app.job_manager.fetch_job, self.checkpoint)
        guard_queue_record(app.job_manager, self)

        async def main() -> None:
            async with app.open_async():
                self._worker_task = asyncio.current_task()
                started.set()
                recovery = asyncio.create_task(self._recover_stalled(app))
                try:
                    await self._run_worker(app)
                except asyncio.CancelledError:
                    pass
                finally:
                    recovery.cancel()

        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(main())
        except Exception as exc:  # noqa: BLE001 - the worker is gone: say so where the operator looks
            print(f"[Profile Studio] the queue worker stopped: {connect_error(self.url, exc)}", flush=True)
        finally:
            started.set()
            self._loop.close()

    async def _run_worker(self, app) -> None:
        """Procrastinate's worker, started again whenever it stops on a lost connection (a restart of the
        database: its heartbeat or its LISTEN fails and it stops), until this manager shuts down."""
        wait = 0.5
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                await app.run_worker_async(queues=None, concurrency=1, name=self.name,
                                           install_signal_handlers=False, listen_notify=True,
                                           fetch_job_polling_interval=2.0, delete_jobs="successful",
                                           update_heartbeat_interval=self.heartbeat_s,
                                           stalled_worker_timeout=self.stalled_s)
                reason = "its worker loop stopped"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database went away: say so, try again
                reason = str(connect_error(self.url, exc))
            if self._stop.is_set():
                return
            wait = 0.5 if time.monotonic() - began > 60 else min(RETRY_S, wait * 2)
            print(f"[Profile Studio] the queue worker lost the job database ({reason}); trying again in "
                  f"{wait:g} s", flush=True)
            await asyncio.sleep(wait)

    async def _recover_stalled(self, app) -> None:
        """Every ``stalled_s / 2`` seconds: the jobs of workers silent for ``stalled_s`` (killed, or their machine
        gone) go back to the queue, each once: our row by compare-and-set (running -> queued, with a message), then
        Procrastinate's job (doing -> todo). A job its worker had already ended is handed back too, and is then
        skipped (its row is no longer queued). A job still running in this process (its worker's heartbeat lapsed
        during a database outage) is never taken for stalled here, nor one whose row its worker still beats on
        (:mod:`.fencing`; a Procrastinate worker restarted after an outage prunes the records of the workers whose
        heartbeat lapsed in it, so their jobs look stalled to Procrastinate). A worker's row is never older than
        2/3 of ``stalled_s`` while its job runs (it stops it itself first), so a job taken up here has stopped."""
        while True:
            await asyncio.sleep(self.stalled_s / 2)
            try:
                stalled = await app.job_manager.get_stalled_jobs(task_name=TASK,
                                                                 seconds_since_heartbeat=self.stalled_s)
                for pjob in stalled:
                    job_id = pjob.task_kwargs.get("job_id")
                    if job_id in self._queue_workers:  # running here (its heartbeat lapsed in an outage): ours
                        continue
                    message = (f"Its worker stopped answering (no heartbeat for {self.stalled_s:g} s); "
                               f"queued again by {self.name}")
                    moved = await asyncio.to_thread(self.db.requeue_running, job_id, message, self.stalled_s)
                    if not moved and await asyncio.to_thread(self.db.state, job_id) == "running":
                        continue  # its worker beats on its row (its queue worker's record was pruned): alive
                    if not await asyncio.to_thread(self.db.holds_queue_job, pjob.id, pjob.worker_id):
                        continue  # handed back (and maybe taken) meanwhile by its worker or another
                    try:
                        await app.job_manager.retry_job(pjob)
                    except Exception:  # noqa: BLE001 - another worker handed it back first
                        continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database is away for a moment: next round
                print(f"[Profile Studio] stalled-job check failed: {exc}", flush=True)


__all__ = ["ClusterJobManager", "QueueUnreachable"]
