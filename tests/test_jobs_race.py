"""Cancel races the worker: a job is either cancelled before it starts (its function never runs) or it runs,
never both. Checked over many jobs with cancels from several threads; the assertions hold for every
interleaving (no timing in them), the thread switches are only made frequent to visit many."""

from __future__ import annotations

import random
import sys
import threading

import pytest

from lib_profile.jobs.db import JobDB
from lib_profile.jobs.manager import JobManager
from lib_profile.store.identities import Conflict


@pytest.fixture
def fast_switches():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@pytest.mark.parametrize("seed", range(3))
def test_cancel_racing_the_worker_cancels_or_runs_each_job_never_both(tmp_path, fast_switches, seed):
    started: dict[str, int] = {}
    guard = threading.Lock()

    def handler(ctx):
        with guard:
            started[ctx.id] = started.get(ctx.id, 0) + 1
        return {"ran": ctx.id}

    manager = JobManager(JobDB(tmp_path / "jobs.sqlite3"), {"work": handler})
    rng = random.Random(seed)
    n = 300
    ids: list[str] = []
    won: list[str] = []  # cancels that reported the job cancelled before its function started

    submitted = threading.Event()

    def submitter():
        for _ in range(n):
            job = manager.submit("work", None, {})
            with guard:
                ids.append(job["id"])
        submitted.set()

    def canceller(k):
        local = random.Random(seed * 100 + k)
        while not submitted.is_set():
            with guard:
                pool = list(ids)
            if not pool:
                continue
            job_id = local.choice(pool[-8:])  # the newest: queued or just taken by the worker
            try:
                out = manager.cancel(job_id)
            except Conflict:
                continue
            with guard:
                if out["state"] == "cancelled" and job_id not in started:
                    won.append(job_id)

    threads = [threading.Thread(target=submitter)] + [threading.Thread(target=canceller, args=(k,))
                                                       for k in range(3)]
    rng.shuffle(threads)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        finals = {job_id: manager.wait(job_id, timeout=120) for job_id in ids}
    finally:
        manager.shutdown()
        manager.db.close()
    assert len(finals) == n
    for job_id, job in finals.items():
        runs = started.get(job_id, 0)
        assert runs <= 1, f"{job_id} ran {runs} times"
        assert job["state"] in ("done", "cancelled"), job
        if job["state"] == "done":
            assert runs == 1 and job["result"] == {"ran": job_id}
        elif runs:  # cancelled while it ran: the cancel reached the running job, it says so
            assert any(m.startswith("Cancel requested") for m in job["messages"]), job
    for job_id in won:  # reported cancelled before it started: its function never ran, not even later
        assert job_id not in started and finals[job_id]["state"] == "cancelled"
    assert won, "no cancel won the race: the test did not exercise it"


def test_a_queued_job_is_taken_by_exactly_one_of_cancel_and_start(tmp_path):
    """The database transition itself: queued -> cancelled and queued -> running are compare-and-set."""
    db = JobDB(tmp_path / "jobs.sqlite3")
    try:
        db.insert("a1", "work", None, {})
        assert db.cancel_queued("a1") is True
        assert db.start_queued("a1") is False and db.get("a1")["state"] == "cancelled"
        db.insert("b2", "work", None, {})
        assert db.start_queued("b2") is True
        assert db.cancel_queued("b2") is False and db.start_queued("b2") is False
        assert db.get("b2")["state"] == "running" and db.get("b2")["started"] is not None
    finally:
        db.close()
