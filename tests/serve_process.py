"""Real ``python -m lib_profile serve --queue`` processes for the process-level cluster tests
(tests/test_cluster_serve.py, tests/test_cluster_fleet.py): start one on a shared data folder, wait until it
answers, call its API with retries while the job database is away (503), stop them all."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from lib_profile import API_PREFIX, sample_photos
from tests.pg_server import _free_port

ROOT = Path(__file__).resolve().parent.parent
WAIT = 300  # seconds: a bound on a hung test (model loads and trainings on a shared CPU), not a speed requirement
FINAL = ("done", "failed", "cancelled", "interrupted")


class Serve:
    """One ``serve --checkpoint tiny --device cpu --queue url`` on ``data`` (one CPU thread); ``api``: an httpx
    client on its API; its console goes to ``<data>/../serve-<port>.log`` (read on a failure)."""

    def __init__(self, url: str, data: Path, *extra: str):
        self.port = _free_port()
        self.log = data.parent / f"serve-{self.port}.log"
        env = {**os.environ, "PROFILE_STUDIO_DIR": str(data), "OMP_NUM_THREADS": "1"}
        with open(self.log, "wb") as out:  # a file, never a pipe nobody reads (a full pipe would block it)
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lib_profile", "--data-dir", str(data), "serve", "--checkpoint", "tiny",
                 "--device", "cpu", "--port", str(self.port), "--queue", url, *extra],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        # a request waits up to WAIT: a front loads the model at its first request that needs it (minutes on a loaded CPU)
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.port}{API_PREFIX}", timeout=WAIT)
        self.pid = self.proc.pid

    def console(self) -> str:
        return self.log.read_text("utf-8", "replace")[-4000:] if self.log.is_file() else ""

    def up(self) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.console()
            try:
                if self.api.get("/version").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"serve did not come up: {self.console()}")

    def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        """The request, sent again while it answers 503 (the job database is away); any other answer is
        returned."""
        deadline = time.monotonic() + WAIT
        while True:
            got = self.api.request(method, path, **kwargs)
            if got.status_code != 503 or time.monotonic() > deadline:
                return got
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()


def stop_all(procs: list[Serve]) -> None:
    for p in procs:
        p.stop()
    for p in procs:
        try:
            p.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait()


def photo_files(count: int = 6) -> list:
    """The sample selfies as a multipart ``files`` list."""
    out = []
    for name, img in sample_photos.selfies()[:count]:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(("files", (f"{name}.png", buf.getvalue(), "image/png")))
    return out


def wait_job(front: Serve, job_id: str, check=lambda j: j["state"] in FINAL) -> dict:
    """Poll the job through ``front`` (503s retried) until ``check(job)``."""
    deadline = time.monotonic() + WAIT
    job = None
    while time.monotonic() < deadline:
        got = front.call("GET", f"/jobs/{job_id}")
        assert got.status_code == 200, got.text
        job = got.json()
        if check(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"gave up on job {job_id}: {job}")
