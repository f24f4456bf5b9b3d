"""PostgreSQL restarted under a cluster (docs/cluster.md): while it is down, a front's requests say the job database
is unreachable (QueueUnreachable; 503 through the API, never a 500); when it is back, fronts and workers reconnect by
themselves, the job that was running (its end met the outage, or came after it) finishes, on its worker, once (no
other worker takes it up, though every heartbeat lapsed in the outage), and the next job runs."""

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


# when the running job's "until" file appears: None (no job running), "down" (while the server is down: its end
# meets the outage), "up" (after the restart)
CASES = {"idle worker": None, "job ends during the outage": "down", "job ends after the restart": "up"}


@pytest.mark.parametrize("release", list(CASES.values()), ids=list(CASES))
def test_fronts_and_workers_go_on_after_postgresql_restarts(pg_restartable, tmp_path, monkeypatch, release):
    monkeypatch.setattr(pg_records, "REQUEST_WAIT_S", 1.0)  # the outage's 503 comes sooner; same path
    server = pg_restartable
    worker = ClusterJobManager(server.url, {"hold": hold}, worker=True, heartbeat_s=0.5, stalled_s=3)
    # a second worker (its own queue worker and stalled-job check): after an outage longer than the heartbeat
    # timeout it must not take up the job the first one still runs (whose queue worker's record it may prune)
    other = ClusterJobManager(server.url, {"hold": hold}, worker=True, heartbeat_s=0.5, stalled_s=3)
    front = ClusterJobManager(server.url, {"hold": None}, worker=False)
    api = fastapi.FastAPI()
    from lib_profile.api.routes import make_router

    api.include_router(make_router(lambda: SimpleNamespace(jobs=front)))
    client = TestClient(api, raise_server_exceptions=False)
    go = tmp_path / "go"
    try:
        running = None
        if release:
            running = front.submit("hold", "ada", {"until": str(go)})
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
        time.sleep(4)  # past the heartbeat timeout: a worker that came back must take neither its own job nor the
        # other's as stalled
        server.start()
        if release == "up":
            go.touch()
        if running:
            done = until(lambda: (j := front.get(running["id"]))["state"] not in ("queued", "running") and j,
                         "the running job to end")
            assert done["state"] == "done" and done["result"]["taken_over"] is False, done
            assert not any(m.startswith("Its worker stopped") for m in done["messages"]), done
            assert (front.db.attempts(running["id"]), front.db.takeovers(running["id"])) == (1, 0)  # ran once
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
