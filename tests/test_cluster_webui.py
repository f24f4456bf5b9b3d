"""A WebUI in a cluster (docs/cluster.md): the flags preload.py adds, read by ``app_started`` (the stand-in WebUI),
make the WebUI a worker and a front on the shared queue, or a front only; a job sent through another front runs
on it, and its routes answer for every job. Flags that cannot work (a database that cannot be reached, a malformed
URL, --profile-studio-no-worker alone, a bad timeout) are said in the console, and our routes answer 503 with the
same message while the WebUI itself runs on."""

from __future__ import annotations

import os
import time

import fastapi
import pytest
from fastapi.testclient import TestClient

from lib_profile import API_PREFIX
from lib_profile.jobs.cluster import ClusterJobManager
from tests.pg_server import WAIT, _free_port, until
from tests.test_exposure import webui_parser

try:
    from standins import webui as standin
except ImportError:  # tests/ imported as a package
    from tests.standins import webui as standin



def webui_app(argv, monkeypatch):
    """The WebUI's app after ``app_started`` with ``argv`` (a fresh ``get_studio``); the stand-in must be
    installed."""
    from lib_profile.serve import lazy
    from lib_profile.webui import register

    monkeypatch.setattr(register, "get_studio", lazy(register._make_studio))
    app = fastapi.FastAPI()
    register.app_started(None, app)
    return app, register.get_studio


@pytest.mark.parametrize("extra, runs_here", [([], True), (["--profile-studio-no-worker"], False)])
def test_a_webui_with_the_queue_flag_runs_jobs_sent_to_another_front(pg_url, tmp_path, monkeypatch, extra,
                                                                     runs_here):
    shared = tmp_path / "shared"
    argv = ["--data-dir", str(tmp_path / "webui"), "--profile-studio-dir", str(shared),
            "--profile-studio-queue", pg_url, "--profile-studio-worker-timeout", "5", *extra]
    opts = vars(webui_parser().parse_args(argv))
    front = ClusterJobManager(pg_url, {"probe": None}, worker=False)  # another front: serve, another WebUI
    studio = None
    with standin.installed(opts.pop("data_dir"), **opts):
        app, get_studio = webui_app(argv, monkeypatch)
        try:
            studio = until(get_studio.peek, "app_started to make the studio")  # without a first request
            assert studio.data_dir == shared and not (shared / "jobs.sqlite3").exists()
            # LoRAs are trained into the shared folder; this WebUI's own Lora folder gets checked copies
            assert studio.store.lora_root == shared / "loras"
            assert studio.store.local_lora_root == tmp_path / "webui" / "models" / "Lora" / "profile-studio"
            studio.jobs.handlers["probe"] = lambda ctx: {"pid": os.getpid(), "data_dir": str(studio.data_dir)}
            job = front.submit("probe", "ada", {})
            client = TestClient(app)
            url = f"{API_PREFIX}/jobs/{job['id']}"
            if runs_here:
                done = front.wait(job["id"], WAIT)
                assert done["state"] == "done", done
                assert done["result"] == {"pid": os.getpid(), "data_dir": str(shared)}
            else:
                time.sleep(1.0)  # a front only: nothing here takes it
                assert front.get(job["id"])["state"] == "queued"
            got = client.get(url)  # the WebUI answers for a job sent elsewhere
            assert got.status_code == 200 and got.json()["state"] == ("done" if runs_here else "queued")
            assert [j["id"] for j in client.get(API_PREFIX + "/jobs").json()] == [job["id"]]
        finally:
            if studio is not None:
                studio.close()
            front.shutdown()
            front.db.close()


def _bad_flags(pg_server):
    port = _free_port()
    return [  # (flags, what the console and the 503 say)
        (["--profile-studio-queue", f"postgresql://postgres:s3cret@127.0.0.1:{port}/postgres"],
         f"cannot reach the job database at postgresql://127.0.0.1:{port}/postgres: "),
        (["--profile-studio-queue", pg_server.rsplit("/", 1)[0] + "/no_such_db"], 'database "no_such_db" does not'),
        (["--profile-studio-queue", "not a url"], "check --profile-studio-queue"),
        (["--profile-studio-no-worker"], "--profile-studio-no-worker needs --profile-studio-queue"),
        *[(["--profile-studio-queue", pg_server, "--profile-studio-worker-timeout", bad],
           "--profile-studio-worker-timeout must be 1 to 86400 seconds") for bad in ("0", "-3", "nan", "inf", "1e9")],
    ]


def test_a_webui_with_bad_queue_flags_starts_says_why_and_answers_503(pg_server, tmp_path, monkeypatch, capsys):
    for extra, says in _bad_flags(pg_server):
        argv = ["--data-dir", str(tmp_path / "webui"), "--profile-studio-dir", str(tmp_path / "data"), *extra]
        opts = vars(webui_parser().parse_args(argv))
        with standin.installed(opts.pop("data_dir"), **opts):
            app, get_studio = webui_app(argv, monkeypatch)  # does not raise: the WebUI starts
            console = until(lambda: "Profile Studio: " in (out := capsys.readouterr().out) and out, "the message")
            assert says in console and "answer 503" in console and "s3cret" not in console, (extra, console)
            client = TestClient(app, raise_server_exceptions=False)
            assert client.get(API_PREFIX + "/version").status_code == 200
            for method, path in [("GET", "/identities"), ("GET", "/jobs"), ("GET", "/jobs/abc123"),
                                 ("POST", "/identities/ada/train")]:
                got = client.request(method, API_PREFIX + path)
                assert got.status_code == 503 and says in got.json()["detail"], (extra, path, got.text)
            assert get_studio.peek() is None
        assert not (tmp_path / "data" / "jobs.sqlite3").exists()
