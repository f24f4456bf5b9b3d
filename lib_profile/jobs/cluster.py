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
written when the database is back, and this process refreshes its worker's heartbeat while it runs, so no other
worker takes it up. A job whose start met the outage is retried by Procrastinate (its RetryStrategy).

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
from lib_profile.jobs.manager import Handler, JobContext, JobManager
from lib_profile.jobs.pg_records import PgJobDB, QueueUnreachable, connect_error, open_pool, outage
from lib_profile.jobs.routing import QUEUE, preferring, queue_for
from lib_profile.store.identities import Conflict

TASK = "profile_studio.run_job"
RETRY_S = 5.0  # at most this long between two tries to reach a database that went away


def _app(connector):
    import procrastinate

    return procrastinate.App(connector=connector)


class ClusterJobManager(JobManager):
    """JobManager's public methods (submit/get/list/cancel/wait/busy_with/forget/shutdown) over PostgreSQL.

    ``url``: a libpq URL (``postgresql://user@host:port/db``); raises QueueUnreachable when it is malformed or
    the server cannot be reached. ``worker=False``: a front only (nothing runs here). ``poll_s``: how often a
    running job's cancel flag is read. ``heartbeat_s``: how often this worker tells the database it is alive;
    ``stalled_s``: after how long without a heartbeat another worker's running job is queued again (and run
    here or elsewhere from the start; a job kind that saves its state resumes from it). ``checkpoint()``: the
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
        # this worker's own link to the database (its beats, _watch_cancels): lost now; or until when, after it
        # came back, it takes no other worker's job for stalled
        self._lost, self._quiet_until = False, 0.0
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
        if worker:
            started = threading.Event()
            self._threads.append(threading.Thread(target=self._work_loop, args=(started,), daemon=True,
                                                  name="profile-studio-queue-worker"))
            self._threads.append(threading.Thread(target=self._watch_cancels, daemon=True,
                                                  name="profile-studio-cancel-watch"))
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
            try:
                self._run_one(job_id)
            finally:
                self._queue_workers.pop(job_id, None)

        # a job whose start met a database outage (QueueUnreachable before it ran) is tried again later
        retry = procrastinate.RetryStrategy(max_attempts=20, wait=RETRY_S, retry_exceptions={QueueUnreachable})
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
            if ctx is not None:  # running here
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
    def _started(self, ctx: JobContext) -> None:
        try:
            ctx.taken_over = self.db.takeovers(ctx.id) > 0
        except QueueUnreachable:  # away right now: a first run
            ctx.taken_over = False

    def _run_started(self, ctx: JobContext) -> None:
        try:
            self.db.update(ctx.id, worker=self.name)
        except QueueUnreachable:  # only the worker's name is missing from the row
            pass
        super()._run_started(ctx)

    def _write_live(self, job_id: str, live: dict[str, Any]) -> None:
        try:
            super()._write_live(job_id, live)
        except QueueUnreachable:  # the database is away: the job goes on; the next write carries it all
            pass

    def _write_end(self, job_id: str, fields: dict[str, Any]) -> None:
        """Write the end; while the database is away, try again (after 0.5 s, the wait doubling up to
        ``RETRY_S``) until it is back or this manager shuts down."""
        wait, said = 0.5, False
        while True:
            try:
                return super()._write_end(job_id, fields)
            except QueueUnreachable as exc:
                if self._stop.is_set():
                    print(f"[Profile Studio] job {job_id} ended ({fields.get('state')}) but {exc}; not recorded",
                          flush=True)
                    return
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
        (:meth:`_watch_cancels`; a Procrastinate worker restarted after an outage prunes the records of the workers
        whose heartbeat lapsed in it, so their jobs look stalled to Procrastinate). After this worker lost the
        database, it takes nothing for ``stalled_s`` seconds once it is back: the other workers' beats lapsed in
        the same outage, and they get that long to beat again."""
        while True:
            await asyncio.sleep(self.stalled_s / 2)
            try:
                stalled = await app.job_manager.get_stalled_jobs(task_name=TASK,
                                                                 seconds_since_heartbeat=self.stalled_s)
                for pjob in stalled:
                    if self._lost or time.monotonic() < self._quiet_until:  # checked last (the query may have
                        break  # waited through an outage): this worker lost the database lately (_watch_cancels)
                    job_id = pjob.task_kwargs.get("job_id")
                    if job_id in self._queue_workers:  # running here (its heartbeat lapsed in an outage): ours
                        continue
                    message = (f"Its worker stopped answering (no heartbeat for {self.stalled_s:g} s); "
                               f"queued again by {self.name}")
                    moved = await asyncio.to_thread(self.db.requeue_running, job_id, message, self.stalled_s)
                    if not moved and await asyncio.to_thread(self.db.state, job_id) == "running":
                        continue  # its worker beats on its row (its queue worker's record was pruned): alive
                    try:
                        await app.job_manager.retry_job(pjob)
                    except Exception:  # noqa: BLE001 - another worker handed it back first
                        continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database is away for a moment: next round
                print(f"[Profile Studio] stalled-job check failed: {exc}", flush=True)

    def _watch_cancels(self) -> None:
        """Turn a raised cancel flag (set by any front) into ``ctx.cancelled`` of the job running here; and, every
        ``heartbeat_s``, beat on the row of each job run here until its end is written (:meth:`PgJobDB.beat`: what
        another worker's stalled-job check reads) and keep the heartbeat of its Procrastinate worker (whose own
        heartbeat stops with its loop when the database goes away, while the job runs on)."""
        beat = time.monotonic()
        while not self._stop.wait(self.poll_s):
            if time.monotonic() - beat >= self.heartbeat_s:
                beat = time.monotonic()
                try:  # every job run here until its end is written (not only while its handler runs)
                    ours = dict(self._queue_workers)
                    self.db.beat(list(ours))  # our rows: what another worker checks before taking a job up
                    self.db.keep_alive(list(ours.values()))
                    if self._lost:  # back: the others' beats lapsed in the same outage; they get stalled_s
                        self._lost, self._quiet_until = False, time.monotonic() + self.stalled_s
                except Exception:  # noqa: BLE001 - the database is away: next time
                    self._lost = True
            if not self._lock.acquire(timeout=self.poll_s):  # an end is being written (maybe waiting for the
                continue  # database to come back): beat on meanwhile
            try:
                ids = [i for i, c in self._running.items() if not c.cancelled.is_set()]
            finally:
                self._lock.release()
            try:
                flagged = self.db.cancel_requested(ids)
            except Exception:  # noqa: BLE001 - the database is away for a moment: try again next time
                continue
            for job_id in flagged:
                with self._lock:
                    ctx = self._running.get(job_id)
                if ctx is not None and not ctx.cancelled.is_set():
                    ctx.cancelled.set()
                    ctx.update(message="Cancel requested; stopping after the current step", flush=True)


__all__ = ["ClusterJobManager", "QueueUnreachable"]
