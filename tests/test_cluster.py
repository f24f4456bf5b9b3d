"""The cluster mode across processes, and its errors: a job submitted on a front with no worker runs in a worker
process, the front reads its progress and result, and a cancel sent to the front stops it in the worker. A wrong
or unreachable ``--queue`` is said with the database and the reason, before any model loads."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lib_profile.hosts.base import HostError
from lib_profile.jobs.cluster import ClusterJobManager
from lib_profile.jobs.pg_records import QueueUnreachable
from tests.pg_server import WAIT, _free_port, until

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def worker_process(pg_url):
    procs = []

    def start(*timing):
        p = subprocess.Popen([sys.executable, "-m", "tests.cluster_worker", pg_url, *map(str, timing)], cwd=ROOT,
                             text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        procs.append(p)
        assert p.stdout.readline().strip() == "ready"
        return p

    yield start
    for p in procs:
        if p.poll() is not None:
            continue
        p.stdin.close()
        try:
            p.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            p.kill()


def test_a_job_sent_to_a_front_runs_on_a_worker_process_and_a_cancel_sent_to_the_front_stops_it(
        pg_url, worker_process, tmp_path):
    front = ClusterJobManager(pg_url, {"hold": None}, worker=False)  # a front never calls a handler
    try:
        first = front.submit("hold", "ada", {"until": str(tmp_path / "go")})
        time.sleep(0.5)  # a front alone runs nothing: the job waits for a worker
        assert front.get(first["id"])["state"] == "queued"
        proc = worker_process()
        live = until(lambda: (j := front.get(first["id"]))["stage"] == "hold" and j, "the worker to take the job")
        assert (live["state"], live["progress"], live["eta_s"]) == ("running", 0.3, 5.0)
        assert live["messages"] == [f"held by pid {proc.pid}"]  # progress written there, read here
        (tmp_path / "go").touch()
        done = front.wait(first["id"], WAIT)
        assert done["state"] == "done" and done["progress"] == 1.0
        assert done["result"] == {"pid": proc.pid, "taken_over": False}

        second = front.submit("hold", "ada", {"until": str(tmp_path / "never")})
        until(lambda: front.get(second["id"])["state"] == "running", "the worker to take the second job")
        front.cancel(second["id"])
        stopped = front.wait(second["id"], WAIT)
        assert stopped["state"] == "cancelled" and stopped["messages"][-1] == "Stopped before it finished"
        assert "Cancel requested; stopping after the current step" in stopped["messages"]
    finally:
        front.shutdown()
        front.db.close()


def test_a_killed_workers_job_is_queued_again_and_finished_by_another_worker(pg_url, worker_process, tmp_path):
    """kill -9 of the worker running a job: after its heartbeat is missed (2 s here), another worker queues the job
    again, once, and runs it; the front sees it through. A job cancelled while its worker was dead ends cancelled."""
    front = ClusterJobManager(pg_url, {"hold": None}, worker=False)
    go = tmp_path / "go"
    try:
        first = front.submit("hold", "ada", {"until": str(go)})
        a = worker_process(0.5, 2)
        until(lambda: front.get(first["id"])["stage"] == "hold", "worker A to take the job")
        b = worker_process(0.5, 2)  # idle: A has the only job
        a.kill()
        a.wait()
        taken = until(lambda: (j := front.get(first["id"]))["messages"][-1:] == [f"held by pid {b.pid}"] and j,
                      "worker B to take the job up")
        assert taken["state"] == "running" and taken["messages"][0] == f"held by pid {a.pid}"
        assert taken["messages"][1].startswith("Its worker stopped answering (no heartbeat for 2 s); queued again")
        time.sleep(3)  # B is alive: its heartbeat keeps its job its own past the 2 s timeout
        go.touch()
        done = front.wait(first["id"], WAIT)
        assert done["state"] == "done" and done["result"] == {"pid": b.pid, "taken_over": True}
        assert sum(m.startswith("Its worker stopped") for m in done["messages"]) == 1  # handed back once

        second = front.submit("hold", "ada", {"until": str(tmp_path / "never")})
        until(lambda: front.get(second["id"])["stage"] == "hold", "worker B to take the second job")
        b.kill()  # dies, and a cancel arrives while nobody runs it
        b.wait()
        front.cancel(second["id"])
        worker_process(0.5, 2)
        stopped = front.wait(second["id"], WAIT)
        assert stopped["state"] == "cancelled", stopped
        assert stopped["messages"][-1] == "Its worker stopped while a cancel was on its way: cancelled"
    finally:
        front.shutdown()
        front.db.close()


def _cases(pg_server):
    base = pg_server.rsplit("/", 1)[0]
    port = _free_port()
    return [  # (url, what the message must say)
        (f"postgresql://postgres@127.0.0.1:{port}/postgres", f"postgresql://127.0.0.1:{port}/postgres: "),
        (f"postgresql://postgres:s3cret@127.0.0.1:{port}/postgres", f"postgresql://127.0.0.1:{port}/postgres: "),
        (base + "/no_such_db", 'database "no_such_db" does not exist'),
        ("postgresql://127.0.0.1:notaport/db", "invalid"),
        ("not a url", "cannot reach the job database"),
    ]


def test_a_wrong_or_unreachable_queue_is_named_with_the_reason(pg_server):
    for url, says in _cases(pg_server):
        with pytest.raises(QueueUnreachable) as err:
            ClusterJobManager(url, {}, worker=True)
        message = str(err.value)
        assert isinstance(err.value, HostError)
        assert message.startswith("cannot reach the job database at ") and message.endswith("; check --queue")
        assert says in message and "s3cret" not in message, (url, message)


def test_a_database_user_without_the_right_to_create_the_tables_is_told_so(pg_url):
    import psycopg

    role = "visitor_" + pg_url.rsplit("/", 1)[1]  # roles are server-wide: one per test database
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    visitor = pg_url.replace("postgres@", f"{role}@")
    with pytest.raises(QueueUnreachable, match=r"^cannot reach the job database at .*permission denied.*; check --queue$"):
        ClusterJobManager(visitor, {}, worker=False)


def test_serve_says_a_bad_queue_before_loading_a_model(pg_server, tmp_path):
    port = _free_port()
    env = {**os.environ, "PROFILE_STUDIO_DIR": str(tmp_path)}
    cases = [(["--queue", f"postgresql://postgres@127.0.0.1:{port}/postgres"],
              f"cannot reach the job database at postgresql://127.0.0.1:{port}/postgres"),
             (["--no-worker"], "--no-worker needs --queue"),
             *[(["--worker-timeout", bad], "--worker-timeout must be 1 to 86400 seconds")
               for bad in ("0", "0.5", "-3", "nan", "inf", "1e9")]]
    for extra, says in cases:
        out = subprocess.run([sys.executable, "-m", "lib_profile", "serve", "--checkpoint", "/nonexistent.safetensors",
                              "--port", str(_free_port()), *extra], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=WAIT)
        assert out.returncode != 0 and says in out.stderr + out.stdout, (extra, out.stderr[-2000:])


def test_the_default_mode_never_imports_psycopg_or_procrastinate(tmp_path):
    """The embedded mode (Studio, its job manager, serve's parser) works without the cluster's packages."""
    code = ("import sys; from lib_profile.service import Studio; from lib_profile.cli.parser import build_parser; "
            "from lib_profile.jobs.db import JobDB; from lib_profile.jobs.manager import JobManager; "
            f"m = JobManager(JobDB({str(tmp_path / 'j.sqlite3')!r}), {{'ok': lambda ctx: 1}}); "
            "print(m.wait(m.submit('ok', None, {})['id'])['state']); m.shutdown(); "
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('psycopg', 'psycopg_pool', 'procrastinate')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=WAIT)
    assert out.stdout.split() == ["done", "[]"], out.stderr[-2000:]


def test_studios_in_cluster_mode_share_jobs_and_a_bad_queue_leaves_no_sqlite(pg_url, tmp_path):
    """Studio(queue=...): a front-only studio and a worker studio on one database and one data folder; a real job
    kind submitted on the front runs on the worker (here it fails: the stand-in host has no model) and its end is
    read on the front.
    An unreachable queue raises before any job file is made."""
    from lib_profile.service import Studio

    front = Studio(object(), tmp_path, queue=pg_url, worker=False)
    worker = Studio(object(), tmp_path, queue=pg_url)
    try:
        assert not (tmp_path / "jobs.sqlite3").exists()
        job = front.jobs.submit("generate", "nobody", {})
        done = front.jobs.wait(job["id"], WAIT)
        assert done["state"] == "failed" and done["error"], done
        assert [j["id"] for j in worker.jobs.list("nobody")] == [job["id"]]
    finally:
        front.close()
        worker.close()
    with pytest.raises(QueueUnreachable, match="check --queue"):
        Studio(object(), tmp_path / "other", queue=f"postgresql://postgres@127.0.0.1:{_free_port()}/postgres")
    assert not (tmp_path / "other" / "jobs.sqlite3").exists()


class _Ctx:
    def __init__(self, params, taken_over):
        self.params, self.taken_over, self.messages = params, taken_over, []

    def update(self, message=None, **_):
        self.messages.append(message)


@pytest.mark.parametrize("resume, taken_over, saved, expected", [
    (True, False, True, True),     # a resume job
    (False, False, True, False),   # a new job: from step 0
    (False, True, True, True),     # taken up after its worker stopped, a state saved: continue from it
    (False, True, False, False),   # taken up before the first save: from step 0
])
def test_a_training_taken_up_after_its_worker_stopped_continues_from_its_saved_state(
        tmp_path, resume, taken_over, saved, expected):
    from lib_profile.service.training import Training

    if saved:
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / "state.pt").write_bytes(b"x")
    ctx = _Ctx({"resume": resume}, taken_over)
    assert Training._resumes(ctx, tmp_path) is expected
    assert ctx.messages == (["Its first worker stopped; continuing from the last saved step"]
                            if taken_over and expected else [])
