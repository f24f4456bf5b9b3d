"""A small fleet of real processes (issue #22's acceptance): one front ``serve --queue --no-worker`` and two workers
``serve --queue`` with the tiny model, one PostgreSQL, one shared data folder. 20 mixed jobs (trainings, portraits,
word maps, edits) are sent through the HTTP API of all three; PostgreSQL is restarted in the middle of the run, down
for less than 2/3 of the worker timeout, and the rest of the jobs are sent while it is down (503, sent again). Every
job ends done (none lost), both workers ran some and the front none (spread), and each job was started exactly once
(its row's ``attempts``; no takeover, no job stopped by fencing)."""

from __future__ import annotations

import time
from collections import Counter

from tests.serve_process import WAIT, Serve, photo_files, stop_all, wait_job

TRAIN = {"steps": 4, "resolution": 64, "batch_size": 2, "validate_every": 4, "validation_images": 1,
         "validation_steps": 2, "validation_size": 64, "save_every": 2, "log_every": 1, "select": "last",
         "device": "cpu"}
SMALL = {"width": 64, "height": 64, "steps": 2}
OFF = {"detail": False, "refine": False, "detail2": False, "upscale": False, "grade": False}
PROMPT = "studio portrait of ohwx person in a red sweater"
PEOPLE = ("ada-fleet", "bo-fleet")
TIMEOUT = 15  # --worker-timeout, seconds: a worker stops its job after 10 s without a beat the database saw
OUTAGE_S = 3  # PostgreSQL down this long (plus its stop and start), well under 10 s: running jobs go on


def _requests() -> list[tuple[str, dict]]:
    """20 jobs: a training of each person first (a person's training is refused while another of their jobs is
    queued), then portraits, word maps and edits of both, interleaved."""
    out = [(f"/identities/{slug}/train", TRAIN) for slug in PEOPLE]
    for n in range(6):
        slug = PEOPLE[n % 2]
        out.append((f"/identities/{slug}/generate", {"count": 1, "seed": n, "settings": SMALL, "switches": OFF}))
        out.append(("/explain", {"identity": slug, "prompt": PROMPT, "words": ["sweater"], "seed": n,
                                 "settings": SMALL}))
        out.append(("/edit", {"identity": slug, "prompt": PROMPT, "replace": {"red": "blue"}, "seed": n,
                              "settings": SMALL}))
    return out


def _rows(url: str) -> dict[str, dict]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, row_factory=dict_row) as conn:
        return {r["id"]: r for r in conn.execute(
            "SELECT id, kind, state, error, worker, attempts, takeovers FROM profile_studio_jobs")}


def test_twenty_jobs_on_a_fleet_through_a_postgresql_restart(pg_restartable, tmp_path):
    server = pg_restartable
    data = tmp_path / "shared"
    data.mkdir()
    front = Serve(server.url, data, "--no-worker")
    # an outage shorter than 2/3 of the worker timeout: the jobs running meanwhile go on, none is taken up
    workers = [Serve(server.url, data, "--worker-timeout", str(TIMEOUT)) for _ in range(2)]
    fleet = [front, *workers]
    try:
        for p in fleet:
            p.up()
        for n, slug in enumerate(PEOPLE):
            via = fleet[n % 3]
            assert via.call("POST", "/identities", json={"name": slug.replace("-", " ")}).status_code == 201
            got = via.call("POST", f"/identities/{slug}/photos", files=photo_files())
            assert got.status_code == 200 and got.json()["ready"], got.text

        requests = _requests()
        assert len(requests) == 20 and len({k.split("/")[-1] for k, _ in requests}) == 4
        jobs: dict[str, Serve] = {}  # job id -> the front it was sent to

        def send(n: int, path: str, body: dict) -> None:
            via = fleet[n % 3]
            got = via.call("POST", path, json=body)  # sent again while it answers 503
            assert got.status_code == 202, (path, got.text)
            jobs[got.json()["id"]] = via

        for n, (path, body) in enumerate(requests[:12]):
            send(n, path, body)
        # the middle of the run: some jobs done, others running or queued
        deadline = time.monotonic() + WAIT
        while sum(r["state"] == "done" for r in _rows(server.url).values()) < 4:
            assert time.monotonic() < deadline, _rows(server.url)
            time.sleep(0.3)
        server.stop()
        got = front.api.get("/jobs")
        assert got.status_code == 503 and "is unreachable" in got.json()["detail"], got.text
        time.sleep(OUTAGE_S)  # the workers' queue loops lose their connections; running jobs run on
        server.start()
        for n, (path, body) in enumerate(requests[12:], start=12):
            send(n, path, body)

        ended = {job_id: wait_job(via, job_id) for job_id, via in jobs.items()}
        failed = {i: (j["kind"], j["state"], j["error"]) for i, j in ended.items() if j["state"] != "done"}
        assert not failed, failed  # none lost, none failed

        rows = _rows(server.url)
        ours = {i: rows[i] for i in jobs}
        # each job was started once: one compare-and-set queued -> running per job, never taken over
        twice = {i: r for i, r in ours.items() if (r["attempts"], r["takeovers"]) != (1, 0)}
        assert not twice, twice
        # a submit that met the outage may leave a row it could not queue: marked failed, never run
        strays = {i: r for i, r in rows.items() if i not in jobs}
        assert all(r["state"] == "failed" and r["attempts"] == 0 for r in strays.values()), strays
        ran = Counter(r["worker"].rsplit(":", 1)[-1] for r in ours.values())
        assert set(ran) == {str(w.pid) for w in workers} and sum(ran.values()) == 20, (ran, front.pid)
        kinds = Counter(r["kind"] for r in ours.values())
        assert kinds == {"train": 2, "generate": 6, "explain": 6, "edit": 6}, kinds
        for job_id, job in ended.items():  # every front answers for every job, and its files are there
            if job["kind"] == "train":
                assert (data / "loras" / job["identity"]).is_dir(), job
            else:
                assert (data / "outputs" / job["identity"] / job_id).is_dir(), job
            assert workers[0].call("GET", f"/jobs/{job_id}").json()["state"] == "done"
    except BaseException:
        for p in fleet:
            print(f"--- serve {p.pid} (port {p.port}):\n{p.console()}")
        raise
    finally:
        stop_all(fleet)
