"""Checkpoint routing in the cluster mode (lib_profile/jobs/routing.py): a job records the checkpoint it needs (the
request's, else the submitting host's at submit); a worker takes the queued jobs of the checkpoint it has loaded
first, oldest first, and the others (oldest first) when none of its own is left; two workers with different
checkpoints each take their own checkpoint's jobs first, though older jobs of the other one wait ahead of them."""

from __future__ import annotations

import threading
import time

import pytest

from lib_profile.jobs.cluster import ClusterJobManager
from lib_profile.jobs.routing import checkpoint_key, queue_for

WAIT = 60  # seconds: a bound on a hung test, not a speed requirement


def recorder(name: str, ran: list, gate: threading.Semaphore | None = None):
    """A handler recording (worker, tag); with ``gate``, each job waits for one release of it."""
    def run(ctx):
        if gate is not None:
            gate.acquire(timeout=WAIT)
        ran.append((name, ctx.params["tag"]))
        return {"worker": name}
    return run


def submit_all(front, checkpoints):
    """One job per entry, oldest first: tag ``i:checkpoint``; ``None`` names no checkpoint (the front's own, here
    none, is used)."""
    jobs = []
    for i, ckpt in enumerate(checkpoints):
        params = {"tag": f"{i}:{ckpt}"}
        if ckpt is not None:
            params["checkpoint"] = ckpt
        jobs.append(front.submit("rec", None, params))
    return jobs


ORDER = [  # (the worker's loaded checkpoint, the jobs' checkpoints as submitted, the order it runs them)
    ("a.safetensors", ["b", "b", "a"], ["2:a", "0:b", "1:b"]),
    ("a.safetensors", ["a", "b", "a"], ["0:a", "2:a", "1:b"]),
    ("b.safetensors", ["a", None, "b", "a"], ["2:b", "0:a", "1:None", "3:a"]),
    ("/models/A.safetensors", ["A.safetensors [0123abcd]", "c", "a"], ["0:A.safetensors [0123abcd]", "2:a", "1:c"]),
    (None, ["b", "a"], ["0:b", "1:a"]),  # cannot tell its checkpoint: in order
    ("a.safetensors", ["c", "b"], ["0:c", "1:b"]),  # none of its own: the others, in order
]


@pytest.mark.parametrize("loaded, queued, expected", ORDER)
def test_a_worker_takes_its_checkpoints_jobs_first_and_the_others_when_idle(pg_url, loaded, queued, expected):
    front = ClusterJobManager(pg_url, {"rec": None}, worker=False)
    ran: list = []
    worker = None
    try:
        jobs = submit_all(front, queued)  # all queued before the worker starts
        worker = ClusterJobManager(pg_url, {"rec": recorder("w", ran)}, checkpoint=lambda: loaded)
        for job in jobs:
            assert front.wait(job["id"], WAIT)["state"] == "done"
        assert [tag for _, tag in ran] == expected
        assert [front.db.checkpoint(j["id"]) for j in jobs] == queued  # each job records what it needs
    finally:
        for m in (front, worker):
            if m is not None:
                m.shutdown()
                m.db.close()


def test_two_workers_with_different_checkpoints_each_take_their_own_first(pg_url):
    """Jobs a0 b1 a2 b3 queued; worker B starts first and takes b1 (not the older a0); A then takes a0. A ends a0
    first and takes its own a2 (not the older b3); B ends b1 and takes b3. Each job waits for its worker's gate, so
    the order does not hang on which process is quicker (a loaded machine)."""
    front = ClusterJobManager(pg_url, {"rec": None}, worker=False)
    ran: list = []
    gates = {"A": threading.Semaphore(0), "B": threading.Semaphore(0)}
    workers = []

    def states():
        return [front.get(j["id"])["state"] for j in jobs]

    def until(want):
        deadline = time.monotonic() + WAIT
        while states() != want and time.monotonic() < deadline:
            time.sleep(0.05)
        assert states() == want

    try:
        jobs = submit_all(front, ["a", "b", "a", "b"])
        workers.append(ClusterJobManager(pg_url, {"rec": recorder("B", ran, gates["B"])}, checkpoint=lambda: "b.ckpt"))
        until(["queued", "running", "queued", "queued"])
        workers.append(ClusterJobManager(pg_url, {"rec": recorder("A", ran, gates["A"])}, checkpoint=lambda: "a.ckpt"))
        until(["running", "running", "queued", "queued"])
        gates["A"].release()  # A ends a0 and takes its own a2, past the older b3
        until(["done", "running", "running", "queued"])
        gates["B"].release()  # B ends b1 and takes b3
        until(["done", "done", "running", "running"])
        for gate in gates.values():
            gate.release()
        for job in jobs:
            assert front.wait(job["id"], WAIT)["state"] == "done"
        by_worker = {w: [tag for name, tag in ran if name == w] for w in ("A", "B")}
        assert by_worker == {"A": ["0:a", "2:a"], "B": ["1:b", "3:b"]}, ran
    finally:
        for gate in gates.values():
            gate.release(4)
        for m in (front, *workers):
            m.shutdown()
            m.db.close()


@pytest.mark.parametrize("name, key", [
    ("model.safetensors", "model"), ("Model.safetensors [0123abcd]", "model"), ("/m/sub/model.ckpt", "model"),
    ("C:\\models\\Model.safetensors", "model"), ("model", "model"), ("v1-5 pruned", "v1-5 pruned"),
    ("", None), (None, None), ("   ", None), ("x" * 300 + ".safetensors", "x" * 100),
])
def test_checkpoint_key_and_queue(name, key):
    assert checkpoint_key(name) == key
    assert queue_for(name) == ("profile_studio" if key is None else f"profile_studio@{key}")
