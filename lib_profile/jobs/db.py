"""The job records, in SQLite under the data folder, so they outlive a WebUI restart."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Optional

STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
FINAL = ("done", "failed", "cancelled", "interrupted")
_JSON = ("messages", "result", "params")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, identity TEXT, state TEXT NOT NULL, stage TEXT,
    progress REAL NOT NULL DEFAULT 0, eta_s REAL, messages TEXT NOT NULL DEFAULT '[]', result TEXT,
    params TEXT NOT NULL DEFAULT '{}', error TEXT, created REAL NOT NULL, started REAL, finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_identity ON jobs(identity);
"""


class JobDB:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA secure_delete=ON")  # a deleted identity's job rows are overwritten, not left
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @staticmethod
    def _row(cur, row) -> dict[str, Any]:
        out = {d[0]: v for d, v in zip(cur.description, row)}
        for key in _JSON:
            out[key] = json.loads(out[key]) if out.get(key) else ([] if key == "messages" else None)
        return out

    def insert(self, job_id: str, kind: str, identity: Optional[str], params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._conn.execute("INSERT INTO jobs (id, kind, identity, state, params, created) VALUES (?,?,?,?,?,?)",
                               (job_id, kind, identity, "queued", json.dumps(params), time.time()))
        return self.get(job_id)

    def update(self, job_id: str, **fields) -> None:
        if not fields:
            return
        for key in _JSON:
            if key in fields:
                fields[key] = json.dumps(fields[key])
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._lock:
            self._conn.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*fields.values(), job_id))

    def start_queued(self, job_id: str) -> bool:
        """queued -> running, as one compare-and-set: True when this call started the job, False when it was
        no longer queued (cancelled meanwhile, or deleted)."""
        with self._lock:
            return self._conn.execute("UPDATE jobs SET state='running', started=? WHERE id=? AND state='queued'",
                                      (time.time(), job_id)).rowcount == 1

    def cancel_queued(self, job_id: str) -> bool:
        """queued -> cancelled, as one compare-and-set: True when this call cancelled the job before it
        started, False when it was no longer queued (the worker took it, or it had ended)."""
        with self._lock:
            return self._conn.execute(
                "UPDATE jobs SET state='cancelled', finished=?, messages=json_insert(messages, '$[#]', ?) "
                "WHERE id=? AND state='queued'",
                (time.time(), "Cancelled before it started", job_id)).rowcount == 1

    def get(self, job_id: str) -> Optional[dict[str, Any]]:
        with self._lock:
            cur = self._conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,))
            row = cur.fetchone()
            return self._row(cur, row) if row else None

    def list(self, identity: Optional[str] = None, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            if identity is None:
                cur = self._conn.execute("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (limit,))
            else:
                cur = self._conn.execute("SELECT * FROM jobs WHERE identity=? ORDER BY created DESC LIMIT ?",
                                         (identity, limit))
            return [self._row(cur, r) for r in cur.fetchall()]

    def delete_for(self, identity: str) -> int:
        with self._lock:
            n = self._conn.execute("DELETE FROM jobs WHERE identity=?", (identity,)).rowcount
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return n

    def mark_interrupted(self) -> list[dict[str, Any]]:
        """After a restart: what was queued or running did not finish. Returns those jobs, now interrupted."""
        with self._lock:
            cur = self._conn.execute("SELECT id FROM jobs WHERE state IN ('queued', 'running')")
            ids = [r[0] for r in cur.fetchall()]
            for job_id in ids:  # each one a compare-and-set too: only what is still unfinished
                self._conn.execute(
                    "UPDATE jobs SET state='interrupted', finished=?, messages=json_insert(messages, '$[#]', ?) "
                    "WHERE id=? AND state IN ('queued', 'running')",
                    (time.time(), "The WebUI stopped while this job was queued or running", job_id))
        return [job for job in map(self.get, ids) if job is not None]
