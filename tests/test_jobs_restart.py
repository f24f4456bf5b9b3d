"""A restart finds the jobs the last run left running: each is interrupted (resumable); a trainer from before
the restart that is still alive (its run folder's lock tells) is asked to stop, and resume waits for it."""

from __future__ import annotations

import pytest

from lib_profile.jobs.db import JobDB
from lib_profile.store.identities import Conflict
from lib_profile.train.runlock import RunLock

SLUG = "anna"


def left_running(data, job_id, state="running", kind="train"):
    """What a WebUI killed mid-job leaves in the job database."""
    db = JobDB(data / "jobs.sqlite3")
    db.insert(job_id, kind, SLUG, {"run": f"run-{job_id}", "name": SLUG, "options": {}, "resume": False})
    if state == "running":
        assert db.start_queued(job_id)
    db.close()
    run = data / "identities" / SLUG / "training" / f"run-{job_id}"
    (run / "state").mkdir(parents=True)
    (run / "state" / "state.pt").write_bytes(b"saved")
    return run


@pytest.mark.parametrize("state", ["running", "queued"])
@pytest.mark.parametrize("trainer_alive", [False, True], ids=["trainer-gone", "trainer-alive"])
def test_a_restart_interrupts_what_was_running_and_never_starts_a_second_trainer(host, tmp_path, state,
                                                                                  trainer_alive):
    from lib_profile.service import EARLIER_TRAINER, Studio

    data = tmp_path / "data"
    run = left_running(data, "abc123", state)
    orphan = RunLock(run).acquire() if trainer_alive else None  # the trainer the old WebUI started
    studio = Studio(host, data)
    try:
        job = studio.jobs.get("abc123")
        assert job["state"] == "interrupted"
        if trainer_alive:
            assert EARLIER_TRAINER in job["messages"]
            assert (run / "CANCEL").exists()  # asked to stop at its next step, saving it
            with pytest.raises(Conflict, match="still running"):
                studio.resume("abc123")
            assert studio.jobs.busy_with(SLUG) is False  # nothing was queued
            orphan.release()  # it stopped
        else:
            assert EARLIER_TRAINER not in job["messages"] and not (run / "CANCEL").exists()
        resumed = studio.resume("abc123")
        assert resumed["params"]["resume"] is True and resumed["params"]["resumes"] == "abc123"
        studio.jobs.wait(resumed["id"], timeout=120)  # (it fails: this person has no photos; not the point)
    finally:
        if orphan is not None:
            orphan.release()
        studio.close()
