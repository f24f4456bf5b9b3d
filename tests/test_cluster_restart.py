"""PostgreSQL restarted under a cluster (docs/cluster.md): while it is down, a front's requests say the job database
is unreachable (QueueUnreachable; 503 through the API, never a 500); when it is back, fronts and workers reconnect by
themselves, and the next job runs. An outage shorter than 2/3 of the worker timeout: the job that was running (its
end met the outage, or came after it) finishes, on its worker, once (no other worker takes it up). A longer one: its
worker stops it itself (fencing) and it runs again, once, never two runs at once."""

from __future__ import annotations

import time
from types import SimpleNamespace

import fastapi
import pytest
from fastapi.testclient import TestClient

from lib_profile import API_PREFIX
from lib_profile.jobs import pg_records
from lib_profile.jobs.cluster import ClusterJobManager
from lib_profile.jobs.pg_records import QueueUnreachable
from tests import pg_server
from tests.cluster_worker import hold
from tests.pg_server import WAIT


def until(check, what: str):
    """``check()`` until it is true; a QueueUnreachable meanwhile (still reconnecting) counts as not yet."""
    return pg_server.until(check, what, ignore=(QueueUnreachable,))


# (when the running job's "until" file appears: None (no job running), "down" (while the server is down: its end
# meets the outage), "up" (after the restart); the worker timeout in seconds). The outage lasts about 5 s: shorter
# than 2/3 of a 20 s timeout (the job goes on), longer than a 3 s one (its worker stops it after 2 s; it runs again)
CASES = {"idle worker": (None, 3), "job ends during a short outage": ("down", 20),
         "job ends after a short outage": ("up", 20), "outage past the worker timeout": ("up", 3)}


@pytest.mark.parametrize("release, timeout_s", list(CASES.values()), ids=list(CASES))
def test_fronts_and_workers_go_on_after_postgresql_restarts(pg_restartable, tmp_path, monkeypatch, release,
                                                             timeout_s):
    monkeypatch.setattr(pg_records, "REQUEST_WAIT_S", 1.0)  # the outage's 503 comes sooner; same path
    server = pg_restartable
    worker = ClusterJobManager(server.url, {"hold": hold}, worker=True, heartbeat_s=0.5, stalled_s=timeout_s)
    # a second worker (its own queue worker and stalled-job check): it must not take up the job the first one
    # still runs after a short outage (whose queue worker's record it may prune), and may run it after a long one
    other = ClusterJobManager(server.url, {"hold": hold}, worker=True, heartbeat_s=0.5, stalled_s=timeout_s)
    front = ClusterJobManager(server.url, {"hold": None}, worker=False)
    api = fastapi.FastAPI()
    from lib_profile.api.routes import make_router

    api.include_router(make_router(lambda: SimpleNamespace(jobs=front)))
    client = TestClient(api, raise_server_exceptions=False)
    go, log = tmp_path / "go", tmp_path / "log"
    try:
        running = None
        if release:
            running = front.submit("hold", "ada", {"until": str(go), "log": str(log)})
            until(lambda: front.get(running["id"])["stage"] == "hold", "the worker to take the job")
        server.stop()
        with pytest.raises(QueueUnreachable, match="^the job database at postgresql://127.0.0.1:.* is unreachable"):
            front.get(running["id"] if running else "abc")
        with pytest.raises(QueueUnreachable, match="is unreachable"):
            front.submit("hold", "ada", {"until": str(go)})
        for method, path in [("GET", "/jobs"), ("GET", "/jobs/abc123"), ("POST", "/jobs/abc123/cancel")]:
            got = client.request(method, API_PREFIX + path)
            assert got.status_code == 503 and "is unreachable" in got.json()["detail"], (path, got.text)
        if release == "down":
            go.touch()
            time.sleep(1.0)  # its end is tried while the server is down
        time.sleep(4)  # past a 3 s timeout: a worker that came back must take neither its own job nor the other's
        # as stalled while it runs
        server.start()
        if release == "up":
            go.touch()
        if running:
            done = until(lambda: (j := front.get(running["id"]))["state"] not in ("queued", "running") and j,
                         "the running job to end")
            long = timeout_s == 3
            assert done["state"] == "done" and done["result"]["taken_over"] is long, done
            assert sum(m.startswith("Its worker ") for m in done["messages"]) == long, done  # stopped there once
            # started once (short), or twice after one stop (long)
            assert (front.db.attempts(running["id"]), front.db.takeovers(running["id"])) == (1 + long, long)
            runs = [line.split() for line in log.read_text().splitlines()]
            if long:  # the first run stopped before the second started: never two at once
                first, second = runs[0][1], runs[2][1]
                assert runs == [["start", first], ["stop", first], ["start", second], ["done", second]], runs
            else:
                assert [r[0] for r in runs] == ["start", "done"] and runs[0][1] == runs[1][1], runs
        go.touch()
        following = until(lambda: front.submit("hold", "bob", {"until": str(go)}), "a front to submit again")
        done = front.wait(following["id"], WAIT)
        assert done["state"] == "done", done
        assert client.get(API_PREFIX + "/jobs").status_code == 200
    finally:
        go.touch()
        front.shutdown()
        front.db.close()
        for w in (worker, other):
            w.shutdown()
            w.db.close()
