"""One job interface, two backends: every behaviour of the job manager holds the same in the embedded mode (SQLite,
a worker thread) and the cluster mode (PostgreSQL + Procrastinate, a front and a worker that may be different
processes). The cluster runs here as two managers on one database: a front with no worker, where the test
submits, reads and cancels, and a worker, where the jobs run; so each case also shows a front reaching jobs it
does not run. The handlers wait on events, never on the clock."""

from __future__ import annotations

import threading

import pytest

from lib_profile.hosts.base import HostError, Interrupted
from lib_profile.jobs.db import JobDB
from lib_profile.jobs.manager import JobManager
from lib_profile.store.identities import Conflict, NotFound

WAIT = 60  # seconds: a bound on a hung test, not a speed requirement


class Gate:
    """Events a handler waits on and sets, so a test can hold a job mid-run."""

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()
        self.runs: list[str] = []


def handlers(gate: Gate) -> dict:
    def ok(ctx):
        gate.runs.append(ctx.id)
        ctx.update(stage="work", progress=0.5, eta_s=3, message="halfway")
        return {"echo": ctx.params, "identity": ctx.identity}

    def held(ctx):
        gate.runs.append(ctx.id)
        ctx.update(stage="hold", progress=0.25, eta_s=9, message="holding", flush=True)
        gate.entered.set()
        while not gate.release.is_set():
            if ctx.cancelled.wait(0.02):
                raise Interrupted("stopped")
        return {"released": True}

    def host_error(ctx):
        raise HostError("no such checkpoint: x.safetensors")

    def crash(ctx):
        raise ValueError("bug")

    return {"ok": ok, "held": held, "host_error": host_error, "crash": crash}


@pytest.fixture(params=["embedded", "cluster"])
def jobs(request, tmp_path):
    """(front, gate): the manager the test talks to, and the handlers' gate."""
    gate = Gate()
    made = []
    if request.param == "embedded":
        front = JobManager(JobDB(tmp_path / "jobs.sqlite3"), handlers(gate))
        made.append(front)
    else:
        from lib_profile.jobs.cluster import ClusterJobManager

        url = request.getfixturevalue("pg_url")
        front = ClusterJobManager(url, handlers(gate), worker=False)
        made += [front, ClusterJobManager(url, handlers(gate), worker=True)]
    yield front, gate
    gate.release.set()
    for m in made:
        m.shutdown()
        m.db.close()


def test_a_job_runs_and_its_result_progress_and_messages_are_read_back(jobs):
    front, gate = jobs
    job = front.submit("ok", "ada", {"n": 3})
    assert job["state"] in ("queued", "running", "done") and job["kind"] == "ok" and job["identity"] == "ada"
    done = front.wait(job["id"], WAIT)
    assert done["state"] == "done" and done["result"] == {"echo": {"n": 3}, "identity": "ada"}
    assert done["progress"] == 1.0 and done["eta_s"] == 0.0 and done["stage"] == "work"
    assert done["messages"] == ["halfway"] and done["params"] == {"n": 3} and done["error"] is None
    assert done["started"] >= done["created"] and done["finished"] >= done["started"]
    assert gate.runs == [job["id"]]
    assert [j["id"] for j in front.list("ada")] == [job["id"]] and front.list("bob") == []


def test_a_running_jobs_stage_progress_eta_and_messages_are_read_by_the_front(jobs):
    front, gate = jobs
    job = front.submit("held", None, {})
    assert gate.entered.wait(WAIT)
    live = front.get(job["id"])
    assert (live["state"], live["stage"], live["progress"], live["eta_s"]) == ("running", "hold", 0.25, 9.0)
    assert live["messages"] == ["holding"]
    assert [j["state"] for j in front.list()] == ["running"]
    gate.release.set()
    assert front.wait(job["id"], WAIT)["result"] == {"released": True}


@pytest.mark.parametrize("kind, error", [("host_error", "no such checkpoint: x.safetensors"),
                                         ("crash", "ValueError: bug")])
def test_a_failing_job_ends_failed_with_its_error(jobs, kind, error):
    front, _ = jobs
    done = front.wait(front.submit(kind, None, {})["id"], WAIT)
    assert done["state"] == "failed" and done["error"] == error and done["messages"][-1] == error
    assert done["eta_s"] is None and done["result"] is None


def test_a_queued_job_cancelled_never_runs(jobs):
    front, gate = jobs
    first = front.submit("held", None, {})
    assert gate.entered.wait(WAIT)
    queued = front.submit("ok", None, {})
    assert front.get(queued["id"])["waiting_for"]["id"] == first["id"]  # why it has not started
    out = front.cancel(queued["id"])
    assert out["state"] == "cancelled" and out["messages"] == ["Cancelled before it started"]
    gate.release.set()
    assert front.wait(first["id"], WAIT)["state"] == "done"
    after = front.submit("ok", None, {})  # the worker goes on; the cancelled job was skipped, not run
    assert front.wait(after["id"], WAIT)["state"] == "done"
    assert gate.runs == [first["id"], after["id"]] and front.get(queued["id"])["state"] == "cancelled"
    with pytest.raises(Conflict, match="already ended"):
        front.cancel(queued["id"])


def test_a_running_job_cancelled_from_the_front_stops(jobs):
    front, gate = jobs
    job = front.submit("held", None, {})
    assert gate.entered.wait(WAIT)
    front.cancel(job["id"])
    done = front.wait(job["id"], WAIT)
    assert done["state"] == "cancelled" and done["result"] is None and done["eta_s"] is None
    assert "Cancel requested; stopping after the current step" in done["messages"]
    assert done["messages"][-1] == "Stopped before it finished"
    with pytest.raises(Conflict, match=r"already ended \(cancelled\)"):
        front.cancel(job["id"])


@pytest.mark.parametrize("job_id", ["nope00000000", "", "../x", "a b", 12])
def test_an_unknown_job_is_not_found(jobs, job_id):
    front, _ = jobs
    with pytest.raises(NotFound):
        front.get(job_id)
    with pytest.raises(NotFound):
        front.cancel(job_id)


def test_an_unknown_kind_is_refused_and_nothing_is_recorded(jobs):
    front, _ = jobs
    with pytest.raises(HostError, match="Unknown job kind 'nope'"):
        front.submit("nope", None, {})
    assert front.list() == []


def test_an_identitys_jobs_are_busy_then_forgotten(jobs):
    front, gate = jobs
    job = front.submit("held", "ada", {})
    assert gate.entered.wait(WAIT)
    assert front.busy_with("ada") and not front.busy_with("bob")
    gate.release.set()
    front.wait(job["id"], WAIT)
    assert not front.busy_with("ada")
    assert front.forget("ada") == 1 and front.list("ada") == []


def test_cancels_racing_the_worker_cancel_or_run_each_job_never_both(jobs):
    """Cancels from three threads on the front race the worker over 40 jobs: each job is cancelled before it
    starts (its function never runs) or runs once; a cancel that reports "cancelled" before a start is never
    followed by a run. The assertions hold for every interleaving."""
    front, gate = jobs
    gate.release.set()
    ids, won, lock = [], [], threading.Lock()
    submitted = threading.Event()

    def submitter():
        for _ in range(40):
            job = front.submit("ok", None, {})
            with lock:
                ids.append(job["id"])
        submitted.set()

    def canceller(k):
        n = 0
        while not submitted.is_set():
            with lock:
                pool = ids[-4:]
            if not pool:
                continue
            job_id = pool[n % len(pool)]
            n += k + 1
            try:
                out = front.cancel(job_id)
            except Conflict:
                continue
            if out["state"] == "cancelled" and job_id not in gate.runs:
                with lock:
                    won.append(job_id)

    threads = [threading.Thread(target=submitter)] + [threading.Thread(target=canceller, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    finals = {job_id: front.wait(job_id, WAIT) for job_id in ids}
    for job_id, job in finals.items():
        runs = gate.runs.count(job_id)
        assert runs <= 1 and job["state"] in ("done", "cancelled"), job
        assert (job["state"] == "done") == (runs == 1) or any(m.startswith("Cancel requested") for m in job["messages"])
    for job_id in won:
        assert job_id not in gate.runs and finals[job_id]["state"] == "cancelled"
