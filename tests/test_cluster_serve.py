"""Two real ``serve --queue`` processes on one database and one data folder, driven through the HTTP API: front A
(``--no-worker``) takes a training request; worker B runs it; A answers for its progress and its result (the
LoRA in the shared folder); a second training sent to A and cancelled through A stops on B. And a training whose
worker is killed (``kill -9``) finishes on the other worker from its saved step, its LoRA bit for bit an
uninterrupted run's. Tiny model, one CPU thread per process.

Both are part of the default run: the first about 80 s on a 2-core machine under moderate load (240 s under heavy
load), the second (three trainer processes) 50-58 s beside a full test run on 2026-11-30 (it was once marked slow
after 400-560 s on a box overloaded by several helpers). The same behaviours are covered quickly, without HTTP and
the model, by tests/test_cluster.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.serve_process import WAIT, Serve, photo_files, stop_all, wait_job

TRAIN = {"steps": 6, "resolution": 64, "batch_size": 2, "validate_every": 3, "validation_images": 1,
         "validation_steps": 2, "validation_size": 64, "save_every": 2, "log_every": 1, "select": "best",
         "device": "cpu"}


def _row(url: str, job_id: str) -> dict:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute("SELECT worker, params, attempts, takeovers FROM profile_studio_jobs WHERE id=%s",
                            (job_id,)).fetchone()


def _person(api: Serve) -> None:
    assert api.call("POST", "/identities", json={"name": "Ada Cluster"}).status_code == 201
    got = api.call("POST", "/identities/ada-cluster/photos", files=photo_files())
    assert got.status_code == 200, got.text


def test_two_serve_processes_share_one_queue(pg_url, tmp_path):
    data = tmp_path / "shared"
    data.mkdir()
    a = Serve(pg_url, data, "--no-worker")
    b = Serve(pg_url, data)
    try:
        a.up()
        b.up()
        _person(a)
        job = a.call("POST", "/identities/ada-cluster/train", json=TRAIN).json()
        seen = wait_job(a, job["id"], lambda j: j["stage"] == "train" or j["state"] not in ("queued", "running"))
        assert seen["state"] == "running", seen  # progress of a job on B, read through A
        done = wait_job(a, job["id"])
        assert done["state"] == "done", done
        assert (data / "identities" / "ada-cluster").is_dir() and done["result"]["lora"]
        row = _row(pg_url, job["id"])
        assert row["worker"].endswith(f":{b.pid}") and row["attempts"] == 1, row  # B ran it, once; not A

        second = a.call("POST", "/identities/ada-cluster/train", json={**TRAIN, "steps": 400}).json()
        wait_job(a, second["id"], lambda j: j["stage"] == "train")
        assert a.call("POST", f"/jobs/{second['id']}/cancel").status_code == 200  # through A, which runs nothing
        stopped = wait_job(a, second["id"])
        assert stopped["state"] == "cancelled", stopped
    except BaseException:
        for p in (a, b):
            print(f"--- serve {p.pid}:\n{p.console()}")
        raise
    finally:
        stop_all([a, b])


def _events(folder: Path) -> list[dict]:
    path = folder / "events.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.endswith("}")]


def test_a_training_whose_worker_is_killed_finishes_on_another_from_its_saved_step_bit_for_bit(pg_url, tmp_path):
    """Two worker processes; ``kill -9`` of the one training, after a saved state: the other takes the job up
    after ``--worker-timeout`` (3 s here), resumes from the saved step (not step 0), and the LoRA equals an
    uninterrupted run's, tensor for tensor."""
    from safetensors.torch import load_file

    data = tmp_path / "shared"
    data.mkdir()
    train = {**TRAIN, "steps": 16, "validate_every": 16, "save_every": 2}
    procs = [Serve(pg_url, data, "--worker-timeout", "3") for _ in range(2)]
    try:
        for p in procs:
            p.up()
        api = procs[0]
        _person(api)
        job = api.call("POST", "/identities/ada-cluster/train", json=train).json()
        wait_job(api, job["id"], lambda j: j["state"] == "running")
        row = _row(pg_url, job["id"])
        run = data / "identities" / "ada-cluster" / "training" / row["params"]["run"]
        victim = next(p for p in procs if row["worker"].endswith(f":{p.pid}"))
        survivor = next(p for p in procs if p is not victim)
        deadline = time.monotonic() + WAIT
        while not any(e.get("event") in ("step", "tick") and e.get("step", 0) >= 6 for e in _events(run)):
            assert time.monotonic() < deadline, "the training did not reach step 6"
            time.sleep(0.1)
        victim.proc.kill()
        victim.proc.wait()
        done = wait_job(survivor, job["id"])
        assert done["state"] == "done", done
        assert any(m.startswith("Its worker stopped answering (no heartbeat for 3 s)") for m in done["messages"])
        assert "Its first worker stopped; continuing from the last saved step" in done["messages"]
        restarts = [e["step"] for e in _events(run) if e.get("event") == "phase" and e.get("phase") == "train"]
        assert restarts[0] == 0 and len(restarts) == 2 and restarts[1] >= 4, restarts  # resumed, not from 0
        row = _row(pg_url, job["id"])
        assert (row["attempts"], row["takeovers"]) == (2, 1) and row["worker"].endswith(f":{survivor.pid}"), row

        whole = survivor.call("POST", "/identities/ada-cluster/train", json=train).json()
        assert wait_job(survivor, whole["id"])["state"] == "done"
        loras = []
        for folder in (run, run.parent / _row(pg_url, whole["id"])["params"]["run"]):
            loras.append(load_file(folder / json.loads((folder / "train_report.json").read_text())["file"]))
        a, b = loras
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    except BaseException:
        for p in procs:
            print(f"--- serve {p.pid}:\n{p.console()}")
        raise
    finally:
        stop_all(procs)
