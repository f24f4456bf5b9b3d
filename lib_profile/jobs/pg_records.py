"""The job records of the cluster mode, in one PostgreSQL table every front and worker reads and writes.

:class:`PgJobDB` has :class:`~lib_profile.jobs.db.JobDB`'s methods and row shape (the same fields, ``messages``
a list, ``result`` and ``params`` JSON, times in seconds since the epoch), plus the cancel flag a front sets on
a job that runs on another worker (:meth:`PgJobDB.request_cancel`, polled by that worker).

psycopg is imported here only, when a cluster is opened: the embedded mode never needs it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Iterator, Optional

from lib_profile.hosts.base import HostError

TABLE = "profile_studio_jobs"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, identity TEXT, state TEXT NOT NULL, stage TEXT,
    progress DOUBLE PRECISION NOT NULL DEFAULT 0, eta_s DOUBLE PRECISION, messages JSONB NOT NULL DEFAULT '[]',
    result JSONB, params JSONB NOT NULL DEFAULT '{{}}', error TEXT, created DOUBLE PRECISION NOT NULL,
    started DOUBLE PRECISION, finished DOUBLE PRECISION,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE, worker TEXT, takeovers INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS {TABLE}_identity ON {TABLE}(identity);
ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS checkpoint TEXT;
ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS beat TIMESTAMPTZ;
"""
_COLUMNS = ("id, kind, identity, state, stage, progress, eta_s, messages, result, params, error, created, started, "
            "finished")
_JSON = ("messages", "result", "params")
REQUEST_WAIT_S = 5.0  # how long a request waits for a connection before saying the database is unreachable
SCHEMA_LOCK = 0x50524F46  # pg_advisory_xact_lock key: one process at a time creates the tables


class QueueUnreachable(HostError):
    """The job database named by ``--queue`` cannot be reached or used (the API answers 503 with the message)."""


def describe(url: str) -> str:
    """``url`` without its password, for messages."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - not even parseable: show it as given, less anything after '@'
        return url.split("@")[-1]
    host, port, db = parts.get("host", "localhost"), parts.get("port", "5432"), parts.get("dbname", "")
    return f"postgresql://{host}:{port}/{db}"


def connect_error(url: str, exc: BaseException) -> QueueUnreachable:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return QueueUnreachable(f"cannot reach the job database at {describe(url)}: {reason}; check --queue")


def outage(url: str, exc: BaseException) -> QueueUnreachable:
    """The message for a request made while the job database is away (restarted, the network cut)."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return QueueUnreachable(f"the job database at {describe(url)} is unreachable ({reason}); the jobs are kept "
                            "there and go on when it is back: try again in a moment")


def open_pool(url: str, max_size: int = 4, timeout: float = 10.0):
    """A psycopg connection pool on ``url`` (autocommit connections), checked once; raises QueueUnreachable
    with the reason when the URL is malformed or the server does not answer within ``timeout`` seconds."""
    try:
        import psycopg
        from psycopg_pool import ConnectionPool
    except ImportError as exc:
        raise QueueUnreachable(f"the cluster mode needs procrastinate and psycopg ({exc}); "
                               "pip install procrastinate psycopg-binary") from exc
    try:  # one direct connection first: a refused port or a wrong database fails at once, with psycopg's reason
        psycopg.conninfo.conninfo_to_dict(url)
        psycopg.connect(url, connect_timeout=max(1, int(timeout))).close()
    except Exception as exc:  # noqa: BLE001 - a malformed URL, a server that does not answer or refuses
        raise connect_error(url, exc) from exc
    # check: a connection the pool hands out is tested first, so one broken by a restart of the server is
    # replaced by a new one instead of failing the request
    pool = ConnectionPool(url, min_size=1, max_size=max_size, open=False, timeout=timeout,
                          check=ConnectionPool.check_connection, kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout))})
    try:
        pool.open(wait=True, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - gone between the two connections
        pool.close()
        raise connect_error(url, exc) from exc
    return pool


class PgJobDB:
    """Job rows in ``profile_studio_jobs``; the same methods as JobDB, each one statement (compare-and-set
    where a state changes hands)."""

    def __init__(self, pool, worker: Optional[str] = None):
        """``worker``: this process's name (``host:pid``), recorded on each job it starts."""
        self.pool = pool
        self.worker = worker
        self._beat_conn, self._beat_lock = None, threading.Lock()
        from psycopg.types.json import Jsonb

        self._Jsonb = Jsonb
        with pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            conn.execute(SCHEMA)

    def close(self) -> None:
        with self._beat_lock:
            if self._beat_conn is not None:
                self._beat_conn.close()
        self.pool.close()

    def _beat_exec(self, sql: str, args: tuple) -> list[tuple]:
        """One statement on this process's own connection for beats, opened again at once after a failure (never
        behind the pool's reconnection backoff, which grows with an outage: the beats resume as soon as the
        database is back): the rows it returns (none for a statement without any); QueueUnreachable while it
        is away."""
        import psycopg

        with self._beat_lock:
            try:
                if self._beat_conn is None or self._beat_conn.closed:
                    self._beat_conn = psycopg.connect(self.pool.conninfo, autocommit=True,
                                                      connect_timeout=max(2, int(REQUEST_WAIT_S)))
                cur = self._beat_conn.execute(sql, args)
                return cur.fetchall() if cur.description else []
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if self._beat_conn is not None:
                    self._beat_conn.close()
                self._beat_conn = None
                raise outage(self.pool.conninfo, exc) from exc

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        """A pooled connection; the server gone (restarted, unreachable, the pool's wait over) raises
        QueueUnreachable saying so, never psycopg's own error."""
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self.pool.connection(timeout=REQUEST_WAIT_S) as conn:
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            raise outage(self.pool.conninfo, exc) from exc

    def _rows(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        with self._connection() as conn:
            cur = conn.execute(sql, args)
            names = [d.name for d in cur.description]
            out = [dict(zip(names, r)) for r in cur.fetchall()]
        for row in out:
            row["messages"] = row["messages"] or []
        return out

    def _exec(self, sql: str, args: tuple = ()) -> int:
        with self._connection() as conn:
            return conn.execute(sql, args).rowcount

    def insert(self, job_id: str, kind: str, identity: Optional[str], params: dict[str, Any],
               checkpoint: Optional[str] = None) -> dict[str, Any]:
        """A new queued job; ``checkpoint``: the checkpoint it needs (routing, :mod:`.routing`), None: any."""
        self._exec(f"INSERT INTO {TABLE} (id, kind, identity, state, params, created, checkpoint) "
                   "VALUES (%s,%s,%s,%s,%s,%s,%s)",
                   (job_id, kind, identity, "queued", self._Jsonb(params), time.time(), checkpoint))
        return self.get(job_id)

    def checkpoint(self, job_id: str) -> Optional[str]:
        """The checkpoint the job was recorded as needing (None: any)."""
        with self._connection() as conn:
            row = conn.execute(f"SELECT checkpoint FROM {TABLE} WHERE id=%s", (job_id,)).fetchone()
        return row[0] if row else None

    def update(self, job_id: str, **fields) -> None:
        if not fields:
            return
        for key in _JSON:
            if key in fields:
                fields[key] = self._Jsonb(fields[key])
        cols = ", ".join(f"{k}=%s" for k in fields)
        self._exec(f"UPDATE {TABLE} SET {cols} WHERE id=%s", (*fields.values(), job_id))

    def start_queued(self, job_id: str, worker: Optional[str] = None) -> int:
        """queued -> running, compare-and-set: the start's fencing token when this call started the job (the
        row's ``attempts`` after it, one more at each start: 1, 2, ...), else 0. ``worker`` (default: this
        process's) is recorded with it, and its first beat. Every later write of that run names the token
        (:meth:`write_running`, :meth:`beat`, :meth:`requeue_running`), so a run that lost the job (queued or
        started again since, or ended) writes nothing more."""
        with self._connection() as conn:
            row = conn.execute(f"UPDATE {TABLE} SET state='running', started=%s, worker=%s, attempts=attempts+1, "
                               "beat=NOW() WHERE id=%s AND state='queued' RETURNING attempts",
                               (time.time(), worker or self.worker, job_id)).fetchone()
        return row[0] if row else 0

    def write_running(self, job_id: str, attempts: int, **fields) -> bool:
        """Write ``fields`` (progress, or the end: state, result, ...) to the job's row only while it is running
        under the start whose token is ``attempts``: False (nothing written) when it was queued again, started
        again, ended (cancelled while its worker was silent) or deleted since."""
        for key in _JSON:
            if key in fields:
                fields[key] = self._Jsonb(fields[key])
        cols = ", ".join(f"{k}=%s" for k in fields)
        return self._exec(f"UPDATE {TABLE} SET {cols} WHERE id=%s AND attempts=%s AND state='running'",
                          (*fields.values(), job_id, attempts)) == 1

    def cancel_queued(self, job_id: str) -> bool:
        """queued -> cancelled, compare-and-set: True when this call cancelled the job before it started."""
        return self._exec(
            f"UPDATE {TABLE} SET state='cancelled', finished=%s, messages=messages || to_jsonb(%s::text) "
            "WHERE id=%s AND state='queued'", (time.time(), "Cancelled before it started", job_id)) == 1

    def request_cancel(self, job_id: str) -> bool:
        """Raise the cancel flag of a running job (its worker polls it): True when the job was running."""
        return self._exec(f"UPDATE {TABLE} SET cancel_requested=TRUE WHERE id=%s AND state='running'",
                          (job_id,)) == 1

    def cancel_requested(self, job_ids: list[str]) -> set[str]:
        """Which of ``job_ids`` have their cancel flag raised."""
        if not job_ids:
            return set()
        with self._connection() as conn:
            rows = conn.execute(f"SELECT id FROM {TABLE} WHERE id = ANY(%s) AND cancel_requested",
                                (list(job_ids),)).fetchall()
        return {r[0] for r in rows}

    def requeue_running(self, job_id: str, message: str, silent_s: float = 0.0,
                        attempts: Optional[int] = None) -> bool:
        """running -> queued, compare-and-set: True when this call requeued the job. Another worker's take-up
        (``attempts`` None) takes only a row that has had no beat (:meth:`beat`) for ``silent_s`` seconds (the
        database's clock): one whose worker still beats is running. Its own worker's hand-back (``attempts``: its
        start's token) takes it only while that start still holds it. Its messages keep ``message``; its stage,
        progress and ETA start again. One with its cancel flag raised ends cancelled instead (and this returns
        False)."""
        if attempts is None:
            held, args = "(beat IS NULL OR beat < NOW() - make_interval(secs => %s))", (silent_s,)
        else:
            held, args = "attempts=%s", (attempts,)
        self._exec(f"UPDATE {TABLE} SET state='cancelled', finished=%s, messages=messages || to_jsonb(%s::text) "
                   f"WHERE id=%s AND state='running' AND cancel_requested AND {held}",
                   (time.time(), "Its worker stopped while a cancel was on its way: cancelled", job_id, *args))
        return self._exec(
            f"UPDATE {TABLE} SET state='queued', started=NULL, worker=NULL, stage=NULL, progress=0, eta_s=NULL, "
            "takeovers=takeovers+1, messages=messages || to_jsonb(%s::text) "
            f"WHERE id=%s AND state='running' AND NOT cancel_requested AND {held}",
            (message, job_id, *args)) == 1

    def beat(self, runs: dict[str, int]) -> set[str]:
        """The runs ``runs`` (job id -> its start's token) are alive here: their rows' ``beat`` is now (the
        database's clock), on this process's own connection. Returns the ids beaten: a job missing was queued,
        started again or ended since (that run lost it). With none, the database is only reached;
        QueueUnreachable while it is away."""
        ids, tokens = list(runs), [int(runs[i]) for i in runs]
        rows = self._beat_exec(f"UPDATE {TABLE} AS t SET beat=NOW() FROM unnest(%s::text[], %s::int[]) AS r(id, a) "
                               "WHERE t.id=r.id AND t.attempts=r.a AND t.state='running' RETURNING t.id",
                               (ids, tokens))
        return {r[0] for r in rows}

    def state(self, job_id: str) -> Optional[str]:
        """The job's state now (None: no such job)."""
        with self._connection() as conn:
            row = conn.execute(f"SELECT state FROM {TABLE} WHERE id=%s", (job_id,)).fetchone()
        return row[0] if row else None

    def keep_alive(self, worker_ids: list[int]) -> None:
        """Refresh the heartbeat of Procrastinate's workers ``worker_ids`` (a job still running here after its
        Procrastinate worker stopped on a lost connection: nobody else may take it up while it runs)."""
        if worker_ids:
            self._beat_exec("UPDATE procrastinate_workers SET last_heartbeat = NOW() WHERE id = ANY(%s)",
                            (list(worker_ids),))

    def holds_queue_job(self, queue_job_id: int, queue_worker_id: Optional[int]) -> bool:
        """Is Procrastinate's job ``queue_job_id`` still being run by its worker ``queue_worker_id`` (not handed
        back to the queue, nor taken by another worker since)? A job whose worker's record was pruned (its
        ``worker_id`` NULL) counts as still its: nobody fetched it since."""
        with self._connection() as conn:
            return conn.execute("SELECT 1 FROM procrastinate_jobs WHERE id=%s AND status='doing' "
                                "AND (worker_id IS NULL OR worker_id=%s)",
                                (queue_job_id, queue_worker_id)).fetchone() is not None

    def takeovers(self, job_id: str) -> int:
        """How many times the job was queued again after its worker stopped."""
        with self._connection() as conn:
            row = conn.execute(f"SELECT takeovers FROM {TABLE} WHERE id=%s", (job_id,)).fetchone()
        return row[0] if row else 0

    def attempts(self, job_id: str) -> int:
        """How many times the job was started (its row set running): 1 for a job run once, 2 after one takeover
        of a stopped worker's job; 0 while it has never started."""
        with self._connection() as conn:
            row = conn.execute(f"SELECT attempts FROM {TABLE} WHERE id=%s", (job_id,)).fetchone()
        return row[0] if row else 0

    def get(self, job_id: str) -> Optional[dict[str, Any]]:
        rows = self._rows(f"SELECT {_COLUMNS} FROM {TABLE} WHERE id=%s", (job_id,))
        return rows[0] if rows else None

    def running(self, limit: int = 1) -> list[dict[str, Any]]:
        """Jobs running on any worker, oldest first."""
        return self._rows(f"SELECT {_COLUMNS} FROM {TABLE} WHERE state='running' ORDER BY started LIMIT %s",
                          (limit,))

    def list(self, identity: Optional[str] = None, limit: int = 100) -> list[dict[str, Any]]:
        if identity is None:
            return self._rows(f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY created DESC LIMIT %s", (limit,))
        return self._rows(f"SELECT {_COLUMNS} FROM {TABLE} WHERE identity=%s ORDER BY created DESC LIMIT %s",
                          (identity, limit))

    def delete_for(self, identity: str) -> int:
        return self._exec(f"DELETE FROM {TABLE} WHERE identity=%s", (identity,))

    def mark_interrupted(self) -> list[dict[str, Any]]:
        """Nothing, in the cluster mode: a job queued or running belongs to the queue and the other workers, not to
        this process's restart."""
        return []
