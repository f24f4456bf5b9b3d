"""Fencing a worker cut off from the job database (docs/cluster.md, lib_profile/jobs/fencing.py): a worker whose
beats cannot reach the database stops its job itself before another may take it up, the job runs once more
elsewhere and ends once; and a run that lost its job (queued or started again since, or ended) can write nothing
more to its row, nor close Procrastinate's record of the job that another worker now runs."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lib_profile.jobs.cluster import ClusterJobManager
from lib_profile.jobs.pg_records import PgJobDB, open_pool
from tests.pg_server import WAIT, until

ROOT = Path(__file__).resolve().parent.parent


class CuttableLink:
    """A TCP relay to a PostgreSQL port that the test can cut (bytes are held, connections stay open: a network
    split, not a refused connection) and join again."""

    def __init__(self, url: str):
        host_port = url.split("@", 1)[1].split("/", 1)[0]
        self.target = ("127.0.0.1", int(host_port.rsplit(":", 1)[1]))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = url.replace(host_port, f"127.0.0.1:{self.listener.getsockname()[1]}")
        self.joined = threading.Event()
        self.joined.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self.joined.clear()

    def join(self) -> None:
        self.joined.set()

    def close(self) -> None:
        self.joined.set()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                break
            self.joined.wait()
            if not data:
                break
            try:
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def workers():
    procs = []

    def start(url, heartbeat_s, stalled_s):
        p = subprocess.Popen([sys.executable, "-m", "tests.cluster_worker", url, str(heartbeat_s), str(stalled_s)],
                             cwd=ROOT, text=True, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_a_worker_cut_off_from_the_database_stops_its_job_before_another_takes_it_up(pg_url, workers, tmp_path):
    """Worker A reaches the database through a link the test cuts while A runs a job: A stops the job itself
    (after 2/3 of the 4 s timeout without a heartbeat) before B takes it up (after the full 4 s); B runs it to its
    end. When the link is joined again, A's late writes change nothing: the job ended once, on B."""
    link = CuttableLink(pg_url)
    front = ClusterJobManager(pg_url, {"hold": None}, worker=False)
    go, log = tmp_path / "go", tmp_path / "log"
    try:
        job = front.submit("hold", "ada", {"until": str(go), "log": str(log)})
        a = workers(link.url, 0.5, 4)
        until(lambda: front.get(job["id"])["stage"] == "hold", "worker A to take the job")
        b = workers(pg_url, 0.5, 4)
        link.cut()
        taken = until(lambda: (j := front.get(job["id"]))["messages"][-1:] == [f"held by pid {b.pid}"] and j,
                      "worker B to take the job up")
        assert taken["state"] == "running"
        assert log.read_text().split("\n")[:3] == [f"start {a.pid}", f"stop {a.pid}", f"start {b.pid}"]
        link.join()  # A's late writes (its end, its hand-back) arrive while B runs the job
        time.sleep(3)
        assert front.get(job["id"])["messages"][-1] == f"held by pid {b.pid}"
        # nor to Procrastinate's record of the job, which B runs now: A's late finish of it was skipped
        assert _queue_record(pg_url, job["id"]) == "doing"
        go.touch()
        done = front.wait(job["id"], WAIT)
        assert done["state"] == "done" and done["result"] == {"pid": b.pid, "taken_over": True}, done
        time.sleep(1)
        assert log.read_text().split() == ["start", str(a.pid), "stop", str(a.pid), "start", str(b.pid),
                                           "done", str(b.pid)]
        assert front.get(job["id"]) == done  # nothing written after its end
        assert sum(m.startswith("Its worker stopped answering") for m in done["messages"]) == 1
        assert (front.db.attempts(job["id"]), front.db.takeovers(job["id"])) == (2, 1)
    finally:
        front.shutdown()
        front.db.close()
        link.close()


def _queue_record(url: str, job_id: str):
    """The status of Procrastinate's record of our job ``job_id`` (None: none, e.g. deleted when it succeeded)."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT status FROM procrastinate_jobs WHERE args->>'job_id' = %s", (job_id,)).fetchone()
    return row[0] if row else None


# every write a run makes after its start: (fields, is it the end)
WRITES = {
    "progress": {"stage": "late", "progress": 0.9, "eta_s": 1.0, "messages": ["late"]},
    "end done": {"state": "done", "result": {"late": True}, "error": None, "finished": 1.0, "progress": 1.0},
    "end failed": {"state": "failed", "error": "late", "finished": 1.0},
    "end cancelled": {"state": "cancelled", "finished": 1.0},
}


def _beat(db, job_id: str):
    with db.pool.connection() as conn:
        return conn.execute("SELECT beat FROM profile_studio_jobs WHERE id=%s", (job_id,)).fetchone()[0]


@pytest.mark.parametrize("write", list(WRITES))
@pytest.mark.parametrize("since", ["queued again", "started again", "ended by the new run", "cancelled while silent"])
def test_a_stale_runs_writes_are_refused_and_leave_the_row_as_it_is(pg_url, write, since):
    """Run 1 started the job (token 1); then another worker took it up (queued again, maybe started again as run
    2 and ended; or cancelled). Every write of run 1 (progress, any end, its hand-back) is refused and changes
    nothing; run 2's own writes go through."""
    db = PgJobDB(open_pool(pg_url))
    try:
        db.insert("j1", "hold", "ada", {})
        first = db.start_queued("j1", worker="a")
        assert first == 1
        if since == "cancelled while silent":
            db.request_cancel("j1")
        assert db.requeue_running("j1", "taken up") is (since != "cancelled while silent")
        second = 0
        if since in ("started again", "ended by the new run"):
            second = db.start_queued("j1", worker="b")
            assert second == 2
            assert db.write_running("j1", second, stage="b", progress=0.5)
        if since == "ended by the new run":
            assert db.write_running("j1", second, state="done", result={"by": "b"}, finished=2.0)
        before, beat = db.get("j1"), _beat(db, "j1")
        time.sleep(0.01)
        assert db.write_running("j1", first, **WRITES[write]) is False
        assert db.requeue_running("j1", "handed back by a", attempts=first) is False
        assert db.beat({"j1": first}) == set()
        assert db.get("j1") == before and _beat(db, "j1") == beat
        if since == "started again":  # the new run still holds it
            assert db.beat({"j1": second}) == {"j1"} and _beat(db, "j1") > beat
            assert db.write_running("j1", second, **WRITES[write]) is True
    finally:
        db.close()


@pytest.mark.parametrize("found_by", ["its next write", "its next beat"])
def test_a_run_whose_row_moved_on_stops_and_writes_nothing_more(pg_url, found_by):
    """In a worker: the job running there is taken up elsewhere (its row queued and started again: run 2). The
    first run finds it at its next progress write (refused) or its worker's next beat (refused), which stops it;
    its end and hand-back are refused too, so the row keeps run 2's stage and state."""
    entered, step = threading.Event(), threading.Event()
    by_write = found_by == "its next write"

    def held(ctx):
        ctx.update(stage="one", progress=0.1, flush=True)
        entered.set()
        if by_write:
            step.wait(WAIT)
            ctx.update(stage="two", progress=0.2, flush=True)  # refused: stops this run
        if ctx.cancelled.wait(WAIT):
            return {"by": "first"}
        return {"not": "stopped"}

    # no beat within the test (every 30 s) when the write must find it; a beat every 0.2 s otherwise; never a
    # fence for silence (after 400 s)
    worker = ClusterJobManager(pg_url, {"held": held}, worker=True, heartbeat_s=600 if by_write else 0.2,
                               stalled_s=600)
    try:
        job = worker.submit("held", "ada", {})
        assert entered.wait(WAIT)
        assert worker.db.requeue_running(job["id"], "taken up elsewhere")
        assert worker.db.start_queued(job["id"], worker="elsewhere") == 2
        assert worker.db.write_running(job["id"], 2, stage="second run", progress=0.4)
        step.set()
        until(lambda: not worker._running, "the first run to stop")
        time.sleep(0.5)
        row = worker.db.get(job["id"])
        assert (row["state"], row["stage"], row["progress"], row["result"]) == ("running", "second run", 0.4, None)
    finally:
        worker.shutdown()
        worker.db.close()


def test_a_cancel_sent_to_the_worker_running_the_job_holds_when_fencing_stops_that_run(pg_url):
    """A cancel sent through the worker that runs the job raises the row's flag too (not only this process's): when
    fencing stops that run meanwhile (its worker cut off), its hand-back ends the job cancelled, never queued again
    to run a second time."""
    from lib_profile.hosts.base import Interrupted

    entered, step = threading.Event(), threading.Event()

    def held(ctx):
        entered.set()
        step.wait(WAIT)  # a long step: the cancel and the fence come meanwhile
        raise Interrupted("stopped")

    worker = ClusterJobManager(pg_url, {"held": held}, worker=True, heartbeat_s=600, stalled_s=600)
    try:
        job = worker.submit("held", "ada", {})
        assert entered.wait(WAIT)
        worker.cancel(job["id"])
        assert worker.db.cancel_requested([job["id"]]) == {job["id"]}
        worker._watch.fence("cut off (the test)", worker._running[job["id"]])
        step.set()
        done = worker.wait(job["id"], WAIT)
        assert done["state"] == "cancelled", done
        time.sleep(1)
        assert worker.db.get(job["id"])["state"] == "cancelled" and worker.db.attempts(job["id"]) == 1
    finally:
        worker.shutdown()
        worker.db.close()
