"""Two real ``serve --queue`` processes on one database and one data folder, driven through the HTTP API: front A
(``--no-worker``) takes a training request; worker B runs it; A answers for its progress and its result (the
LoRA in the shared folder); a second training sent to A and cancelled through A stops on B. Tiny model, 6 steps.

Marked slow (about 100 s on this 2-core machine: two model loads and two trainings): run it with
``bash .ci/test -m slow tests/test_cluster_serve.py``. The same behaviours are covered quickly, without HTTP and
the model, by tests/test_cluster.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lib_profile import API_PREFIX, sample_photos
from tests.pg_server import _free_port

ROOT = Path(__file__).resolve().parent.parent
WAIT = 300  # seconds: a bound on a hung test (two model loads and a training on a shared CPU), not a speed requirement
TRAIN = {"steps": 6, "resolution": 64, "batch_size": 2, "validate_every": 3, "validation_images": 1,
         "validation_steps": 2, "validation_size": 64, "save_every": 2, "log_every": 1, "select": "best",
         "device": "cpu"}


def _serve(url: str, data: Path, *extra: str):
    port = _free_port()
    env = {**os.environ, "PROFILE_STUDIO_DIR": str(data), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lib_profile", "--data-dir", str(data), "serve", "--checkpoint",
                             "tiny", "--device", "cpu", "--port", str(port), "--queue", url, *extra], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, httpx.Client(base_url=f"http://127.0.0.1:{port}{API_PREFIX}", timeout=60)


def _up(proc, client):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        try:
            if client.get("/version").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("serve did not come up")


def _png(img) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _wait(client, job_id, check=lambda j: j["state"] in ("done", "failed", "cancelled", "interrupted")):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if check(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"gave up on job {job_id}: {job}")


@pytest.mark.slow
def test_two_serve_processes_share_one_queue(pg_url, tmp_path):
    import psycopg

    data = tmp_path / "shared"
    a, api = _serve(pg_url, data, "--no-worker")
    b, _ = _serve(pg_url, data)
    try:
        _up(a, api)
        _up(b, _)
        assert api.post("/identities", json={"name": "Ada Cluster"}).status_code in (200, 201)
        files = [("files", (f"{n}.jpg", _png(img), "image/jpeg")) for n, img in sample_photos.selfies()[:6]]
        api.post("/identities/ada-cluster/photos", files=files).raise_for_status()
        job = api.post("/identities/ada-cluster/train", json=TRAIN).json()
        seen = _wait(api, job["id"], 
                     lambda j: j["stage"] == "train" or j["state"] not in ("queued", "running"))
        assert seen["state"] == "running", seen  # progress of a job on B, read through A
        done = _wait(api, job["id"])
        assert done["state"] == "done", done
        assert (data / "identities" / "ada-cluster").is_dir() and done["result"]["lora"]
        with psycopg.connect(pg_url) as conn:
            worker = conn.execute("SELECT worker FROM profile_studio_jobs WHERE id=%s", (job["id"],)).fetchone()[0]
        assert worker.endswith(f":{b.pid}"), worker  # B ran it, not A

        second = api.post("/identities/ada-cluster/train", json={**TRAIN, "steps": 400}).json()
        _wait(api, second["id"], lambda j: j["stage"] == "train")
        assert api.post(f"/jobs/{second['id']}/cancel").status_code == 200
        stopped = _wait(api, second["id"])
        assert stopped["state"] == "cancelled", stopped
    finally:
        for p in (a, b):
            p.terminate()
        for p in (a, b):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()


def _events(folder: Path) -> list[dict]:
    import json

    path = folder / "events.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.endswith("}")]


@pytest.mark.slow
def test_a_training_whose_worker_is_killed_finishes_on_another_from_its_saved_step_bit_for_bit(pg_url, tmp_path):
    """Two worker processes; ``kill -9`` of the one training, after a saved state: the other takes the job up
    after ``--worker-timeout`` (3 s here), resumes from the saved step (not step 0), and the LoRA equals an
    uninterrupted run's, tensor for tensor."""
    import psycopg
    from safetensors.torch import load_file

    data = tmp_path / "shared"
    train = {**TRAIN, "steps": 30, "validate_every": 30, "save_every": 2}
    procs = [_serve(pg_url, data, "--worker-timeout", "3") for _ in range(2)]
    try:
        for proc, client in procs:
            _up(proc, client)
        api = procs[0][1]
        assert api.post("/identities", json={"name": "Ada Cluster"}).status_code in (200, 201)
        files = [("files", (f"{n}.jpg", _png(img), "image/jpeg")) for n, img in sample_photos.selfies()[:6]]
        api.post("/identities/ada-cluster/photos", files=files).raise_for_status()
        job = api.post("/identities/ada-cluster/train", json=train).json()
        _wait(api, job["id"], lambda j: j["state"] == "running")
        with psycopg.connect(pg_url) as conn:
            row = conn.execute("SELECT worker, params FROM profile_studio_jobs WHERE id=%s", (job["id"],)).fetchone()
        run = data / "identities" / "ada-cluster" / "training" / row[1]["run"]
        victim = next(p for p, _ in procs if row[0].endswith(f":{p.pid}"))
        survivor = next(c for p, c in procs if p is not victim)
        deadline = time.monotonic() + WAIT
        while not any(e.get("event") in ("step", "tick") and e.get("step", 0) >= 8 for e in _events(run)):
            assert time.monotonic() < deadline, "the training did not reach step 8"
            time.sleep(0.1)
        victim.kill()
        victim.wait()
        done = _wait(survivor, job["id"])
        assert done["state"] == "done", done
        assert any(m.startswith("Its worker stopped answering (no heartbeat for 3 s)") for m in done["messages"])
        assert "Its first worker stopped; continuing from the last saved step" in done["messages"]
        restarts = [e["step"] for e in _events(run) if e.get("event") == "phase" and e.get("phase") == "train"]
        assert restarts[0] == 0 and len(restarts) == 2 and restarts[1] >= 6, restarts  # resumed, not from 0

        whole = survivor.post("/identities/ada-cluster/train", json=train).json()
        assert _wait(survivor, whole["id"])["state"] == "done"
        with psycopg.connect(pg_url) as conn:
            whole_run = conn.execute("SELECT params FROM profile_studio_jobs WHERE id=%s",
                                     (whole["id"],)).fetchone()[0]["run"]
        loras = []
        for folder in (run, run.parent / whole_run):
            import json

            loras.append(load_file(folder / json.loads((folder / "train_report.json").read_text())["file"]))
        a, b = loras
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.terminate()
        for p, _ in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
