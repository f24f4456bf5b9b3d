"""The HTTP API end to end: a real uvicorn server on 127.0.0.1, the diffusers host and the tiny model."""

from __future__ import annotations

import base64
import io
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from lib_profile import API_PREFIX, sample_photos

NAME = "Zyxwq Test"  # a name no shipped file contains, so a byte scan can prove it is gone
SLUG = "zyxwq-test"
TRAIN = {"steps": 6, "resolution": 64, "batch_size": 2, "validate_every": 3, "validation_images": 1,
         "validation_steps": 2, "validation_size": 64, "save_every": 2, "log_every": 1, "select": "best",
         "device": "cpu"}
SMALL = {"width": 128, "height": 192, "steps": 3}


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


class Server:
    """uvicorn in a thread on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not (self.server.started and self.server.servers):
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def wait(api, job_id, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def upload_selfies(api, slug=SLUG, extra=()):
    files = [("files", (f"{name}.jpg", png(img), "image/jpeg")) for name, img in sample_photos.selfies()[:6]]
    files += list(extra)
    return api.post(f"/identities/{slug}/photos", files=files)


def test_identity_names_are_checked(api):
    assert api.post("/identities", json={"name": NAME, "class_word": "woman"}).status_code == 201
    assert api.post("/identities", json={"name": NAME}).status_code == 409
    for bad in ("../x", "", "   ", "a/b", "x" * 101):
        r = api.post("/identities", json={"name": bad})
        assert r.status_code == 400, bad
        assert r.json()["detail"]
    assert api.post("/identities", json={"name": "Bob", "class_word": "cat"}).status_code == 400
    assert api.get("/identities/..%2Fetc").status_code == 404
    assert api.get("/identities/nobody").status_code == 404
    assert [x["slug"] for x in api.get("/identities").json()] == [SLUG]


def test_the_whole_flow_and_delete_leaves_nothing(api, studio, tmp_path):
    api.post("/identities", json={"name": NAME, "class_word": "woman"}).raise_for_status()
    broken = ("files", ("broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg", "image/jpeg"))
    no_face = ("files", ("coffee.jpg", png(sample_photos.coffee()), "image/jpeg"))
    r = upload_selfies(api, extra=[broken, no_face])
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["ready"] and report["counts"]["accepted"] == 6 and report["counts"]["rejected"] == 2
    reasons = {p["file"]: p["reasons"] for p in report["photos"]}
    assert reasons["broken.jpg"] and reasons["coffee.jpg"]
    assert api.get(report["contact_sheet"].replace(API_PREFIX, "")).headers["content-type"] == "image/png"

    job = api.post(f"/identities/{SLUG}/train", json=TRAIN)
    assert job.status_code == 202, job.text
    job = wait(api, job.json()["id"])
    assert job["state"] == "done", job
    lora = job["result"]["lora"]
    lora_dir = tmp_path / "webui" / "models" / "Lora" / "profile-studio" / SLUG
    assert (lora_dir / f"{lora}.safetensors").is_file() and (lora_dir / f"{lora}.json").is_file()
    assert (lora_dir / f"{lora}.identity.json").is_file()

    gen = api.post(f"/identities/{SLUG}/generate", json={"pose": "three_quarter_left", "tone": "cool", "count": 1,
                                                         "seed": 11, "settings": SMALL})
    assert gen.status_code == 202, gen.text
    gen = wait(api, gen.json()["id"])
    assert gen["state"] == "done", gen["error"]
    image = api.get(gen["links"]["image0"].replace(API_PREFIX, ""))
    assert image.status_code == 200
    pic = Image.open(io.BytesIO(image.content))
    assert pic.size == (256, 384) and "Identity similarity" in pic.text["parameters"]
    assert f"<lora:{lora}:" in pic.text["parameters"]
    info = api.get(f"/identities/{SLUG}").json()
    assert info["loras"][0]["name"] == lora and info["outputs"][0]["job"] == gen["id"]
    assert api.get(f"/files/{SLUG}/{gen['id']}/..%2F..%2Fjobs.sqlite3").status_code == 404

    r = api.delete(f"/identities/{SLUG}")
    assert r.status_code == 200 and r.json()["removed"]
    assert api.get(f"/identities/{SLUG}").status_code == 404
    assert api.get(f"/jobs?identity={SLUG}").json() == []
    assert api.get(f"/jobs/{gen['id']}").status_code == 404
    leftovers = []
    for root in (tmp_path / "data", tmp_path / "webui"):
        for path in root.rglob("*"):
            if SLUG in path.name or NAME in path.name:
                leftovers.append(str(path))
            elif path.is_file() and (SLUG.encode() in path.read_bytes() or NAME.encode() in path.read_bytes()):
                leftovers.append(f"{path} (contents)")
    assert leftovers == []


def test_cancel_mid_training_then_resume(api, studio):
    api.post("/identities", json={"name": NAME}).raise_for_status()
    upload_selfies(api).raise_for_status()
    job = api.post(f"/identities/{SLUG}/train", json={**TRAIN, "steps": 150, "save_every": 2, "validate_every": 50}).json()
    deadline = time.monotonic() + 900  # hang bounds, not speed requirements: a loaded 2-core CI box is slow
    while True:
        state = api.get(f"/jobs/{job['id']}").json()
        if state["stage"] == "train" and state["progress"] > 0.03:
            break
        assert time.monotonic() < deadline and state["state"] in ("queued", "running"), state
        time.sleep(0.1)
    with ThreadPoolExecutor(16) as pool:  # many clients polling a running job at once
        polls = list(pool.map(lambda _i: api.get(f"/jobs/{job['id']}"), range(100)))
    assert all(p.status_code == 200 and p.json()["id"] == job["id"] for p in polls)
    assert api.post(f"/jobs/{job['id']}/cancel").status_code == 200
    stopped = wait(api, job["id"])
    assert stopped["state"] == "cancelled" and stopped["links"]["resume"]
    assert api.post(f"/jobs/{job['id']}/cancel").status_code == 409
    resumed = api.post(f"/jobs/{job['id']}/resume")
    assert resumed.status_code == 202, resumed.text
    assert api.post(f"/identities/{SLUG}/train", json=TRAIN).status_code == 409  # one job at a time
    log = studio.store.folder(SLUG) / "training" / studio.jobs.get(job["id"])["params"]["run"] / "events.jsonl"
    done = wait(api, resumed.json()["id"], timeout=1800)
    assert done["state"] == "done", done
    assert '"phase": "cancelled"' in log.read_text()


def test_bad_requests_get_clear_messages(api):
    api.post("/identities", json={"name": NAME}).raise_for_status()
    r = api.post(f"/identities/{SLUG}/train", json={})
    assert r.status_code == 400 and "photos" in r.json()["detail"].lower()
    r = api.post(f"/identities/{SLUG}/generate", json={"tone": "purple"})
    assert r.status_code == 400 and "purple" in r.json()["detail"]
    r = api.post(f"/identities/{SLUG}/generate", json={"pose": "handstand"})
    assert r.status_code == 400 and "handstand" in r.json()["detail"]
    r = api.post(f"/identities/{SLUG}/photos/base64", json={"images": [{"name": "a.jpg", "data": "%%%"}]})
    assert r.status_code == 400 and "base64" in r.json()["detail"]
    assert api.get("/jobs/nope").status_code == 404
    assert api.post(f"/identities/{SLUG}/photos", files=[]).status_code in (400, 422)


def test_base64_upload_and_listings(api):
    api.post("/identities", json={"name": NAME}).raise_for_status()
    images = [{"name": f"{n}.jpg", "data": base64.b64encode(png(i)).decode()} for n, i in sample_photos.selfies()[:5]]
    r = api.post(f"/identities/{SLUG}/photos/base64", json={"images": images})
    assert r.status_code == 200 and r.json()["counts"]["accepted"] == 5
    poses = api.get("/poses").json()
    assert len(poses) >= 8 and api.get(poses[0]["thumbnail"].replace(API_PREFIX, "")).status_code == 200
    assert {"warm", "cool", "neutral"} <= {t["name"] for t in api.get("/tones").json()}
    assert api.get("/version").json()["host"] == "diffusers"


def test_auth_protects_every_route(studio):
    from lib_profile.serve import make_app

    server = Server(make_app(lambda: studio, auth="ann:s3cret", ui=False))
    try:
        with httpx.Client(base_url=server.url + API_PREFIX) as client:
            assert client.get("/version").status_code == 401
            assert client.get("/identities").status_code == 401
            assert client.get("/version", auth=("ann", "wrong")).status_code == 401
            assert client.get("/version", auth=("ann", "s3cret")).status_code == 200
    finally:
        server.stop()


def test_openapi_documents_every_field(api):
    spec = httpx.get(str(api.base_url).split(API_PREFIX)[0] + "/openapi.json").json()
    paths = [p for p in spec["paths"] if p.startswith(API_PREFIX)]
    assert len(paths) >= 14
    schemas = spec["components"]["schemas"]
    for model in ("GenerateRequest", "TrainRequest", "JobInfo", "IdentityInfo", "IntakeReport", "RestyleRequest",
                  "InversionSettings", "ExplainRequest", "EditRequest"):
        props = schemas[model]["properties"]
        missing = [k for k, v in props.items() if not v.get("description")]
        assert not missing, f"{model}: {missing}"


def test_a_restart_marks_running_jobs_interrupted(tmp_path):
    from lib_profile.jobs.db import JobDB
    from lib_profile.jobs.manager import JobManager

    db = JobDB(tmp_path / "jobs.sqlite3")
    db.insert("abc123", "train", "x", {})
    db.update("abc123", state="running")
    db.close()
    manager = JobManager(JobDB(tmp_path / "jobs.sqlite3"), {"train": lambda ctx: None})
    job = manager.get("abc123")
    assert job["state"] == "interrupted" and "stopped" in job["messages"][-1]
    manager.shutdown()
    assert sqlite3.connect(tmp_path / "jobs.sqlite3").execute("select count(*) from jobs").fetchone()[0] == 1
    assert os.path.exists(tmp_path / "jobs.sqlite3")


def test_user_settings_apply(host, tmp_path):
    from lib_profile.hosts.base import HostError
    from lib_profile.service import Studio

    settings = {"min_photos": 7, "detail_engine": "adetailer"}
    studio = Studio(host, tmp_path / "data", defaults=lambda: settings)
    try:
        studio.create_identity(NAME)
        files = [(f"{n}.jpg", png(i)) for n, i in sample_photos.selfies()[:6]]
        report = studio.add_photos(SLUG, files)
        assert report["counts"]["accepted"] == 6 and not report["ready"] and report["min_photos"] == 7
        with pytest.raises(HostError, match="ADetailer"):
            studio.generate(SLUG)
        settings["detail_engine"] = "builtin"
        assert studio.generate(SLUG, settings=SMALL, count=1)["state"] in ("queued", "running")
    finally:
        studio.close()


def test_serve_command_answers_on_loopback(data_dir):
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "lib_profile", "serve", "--checkpoint", "tiny", "--port", str(port)],
                            cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}{API_PREFIX}/version", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "serve did not answer"
                time.sleep(0.5)
        assert r.json()["host"] == "diffusers"
        assert "Profile Studio" in httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_explain_and_edit_a_studio_portrait(api, studio):
    api.post("/identities", json={"name": NAME}).raise_for_status()
    upload_selfies(api).raise_for_status()
    job = wait(api, api.post(f"/identities/{SLUG}/train", json=TRAIN).json()["id"])
    assert job["state"] == "done", job["error"]
    gen = wait(api, api.post(f"/identities/{SLUG}/generate", json={
        "count": 1, "seed": 7, "prompt": "studio portrait of ohwx person in a red sweater",
        "settings": {"width": 64, "height": 64, "steps": 3}, "switches": {"upscale": False}}).json()["id"])
    assert gen["state"] == "done", gen["error"]
    image = gen["result"]["images"][0]["file"]

    ex = api.post("/explain", json={"identity": SLUG, "job": gen["id"], "image": image, "words": ["sweater", "red"]})
    assert ex.status_code == 202, ex.text
    ex = wait(api, ex.json()["id"])
    assert ex["state"] == "done", ex["error"]
    assert api.get(ex["links"]["overlay:sweater"].replace(API_PREFIX, "")).status_code == 200
    assert ex["result"]["seed"] == 7

    ed = api.post("/edit", json={"identity": SLUG, "job": gen["id"], "image": image, "mode": "swap",
                                 "replace": {"red": "blue"}})
    assert ed.status_code == 202, ed.text
    ed = wait(api, ed.json()["id"])
    assert ed["state"] == "done", ed["error"]
    edited = Image.open(io.BytesIO(api.get(ed["links"]["edited"].replace(API_PREFIX, "")).content))
    assert "blue sweater" in edited.text["parameters"] and "Prompt-to-Prompt" in edited.text["parameters"]
    # 3 sampler steps, tau 0.8 and self 0.4: what ran is recorded, in sampler steps
    assert ed["result"]["injected"] == [{"steps": 3, "cross": 2, "self": 1}]
    assert "cross 2/3, self 1/3" in edited.text["parameters"]
    # finished like the portrait: before is the portrait itself, after went through the same later passes
    portrait = api.get(f"/files/{SLUG}/{gen['id']}/{image}").content
    assert api.get(ed["links"]["source"].replace(API_PREFIX, "")).content == portrait
    assert ed["result"]["finished"] and "identity_similarity" in ed["result"]
    folder = studio.store.outputs_folder(SLUG) / ed["id"]
    assert (folder / "edited-first-pass.png").is_file() and (folder / "source-first-pass.png").is_file()
    assert edited.size == Image.open(io.BytesIO(portrait)).size
    same = wait(api, api.post("/edit", json={"identity": SLUG, "job": gen["id"], "image": image, "mode": "reweight",
                                             "weights": {"sweater": 1.0}}).json()["id"])  # an edit that changes nothing
    assert same["state"] == "done", same["error"]
    same_edit = np.asarray(Image.open(io.BytesIO(api.get(same["links"]["edited"].replace(API_PREFIX, "")).content)), np.int16)
    assert np.abs(same_edit - np.asarray(Image.open(io.BytesIO(portrait)), np.int16)).max() <= 2  # is the portrait
    raw = wait(api, api.post("/edit", json={"identity": SLUG, "job": gen["id"], "image": image, "mode": "swap",
                                            "replace": {"red": "blue"}, "finish": False}).json()["id"])
    assert raw["state"] == "done" and not raw["result"]["finished"]
    raw_edit = api.get(raw["links"]["edited"].replace(API_PREFIX, "")).content
    assert raw_edit != api.get(ed["links"]["edited"].replace(API_PREFIX, "")).content  # the later passes did run
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(raw_edit))),
                          np.asarray(Image.open(folder / "edited-first-pass.png")))

    later = wait(api, api.post("/explain", json={"identity": SLUG, "job": gen["id"], "image": image, "stage": 2,
                                                 "words": ["sharp focus"]}).json()["id"])  # the refine pass
    assert later["state"] == "done", later["error"]
    assert set(later["result"]["words"]) == {"sharp focus"}
    # an edit of the refine pass's own prompt: the passes before it as they were, the pair made there, then
    # the passes after it; a re-weighting by 1 gives the portrait back, a swap changes it
    refine = {"identity": SLUG, "job": gen["id"], "image": image, "stage": 2}
    same = wait(api, api.post("/edit", json={**refine, "mode": "reweight", "weights": {"sharp focus": 1.0}}).json()["id"])
    assert same["state"] == "done", same["error"]
    assert same["result"]["pass"] == "refine" and same["result"]["source_prompt"].startswith("photo, sharp focus")
    same_edit = Image.open(io.BytesIO(api.get(same["links"]["edited"].replace(API_PREFIX, "")).content))
    assert np.abs(np.asarray(same_edit, np.int16) - np.asarray(Image.open(io.BytesIO(portrait)), np.int16)).max() <= 2
    job_counts, job = [], studio.host.job

    def counting_job(id_task, job_count, *args, **kwargs):  # the passes the progress bar is sized for
        job_counts.append(job_count)
        return job(id_task, job_count, *args, **kwargs)

    studio.host.job = counting_job
    try:
        soft = wait(api, api.post("/edit", json={**refine, "replace": {"sharp": "soft"}}).json()["id"])
        soft_raw = wait(api, api.post("/edit", json={**refine, "replace": {"sharp": "soft"}, "finish": False}
                                      ).json()["id"])
    finally:
        studio.host.job = job
    assert soft["state"] == "done", soft["error"]
    assert soft_raw["state"] == "done" and not soft_raw["result"]["finished"]
    # unfinished, the edit stops at the refine pass, and so does its progress bar: 3 passes (txt2img, face
    # detail, refine) of the plan's 4 (then the upscale)
    assert job_counts[1] == 3 and job_counts[0] == 4
    soft_folder = studio.store.outputs_folder(SLUG) / soft["id"]
    assert (soft_folder / "edited-refine-pass.png").is_file() and (soft_folder / "source-refine-pass.png").is_file()
    raw_refine = studio.store.outputs_folder(SLUG) / soft_raw["id"] / "edited.png"
    assert np.array_equal(np.asarray(Image.open(raw_refine)),
                          np.asarray(Image.open(soft_folder / "edited-refine-pass.png")))  # the same pair
    soft_edit = Image.open(io.BytesIO(api.get(soft["links"]["edited"].replace(API_PREFIX, "")).content))
    assert "soft focus" in soft_edit.text["parameters"] and "red sweater" not in soft_edit.text["parameters"]
    assert not np.array_equal(np.asarray(soft_edit), np.asarray(same_edit))
    bad = api.post("/edit", json={**refine, "replace": {"sweater": "coat"}})  # the first pass's word
    assert bad.status_code == 400 and "not in the prompt: photo, sharp focus" in bad.json()["detail"]
    bad = api.post("/edit", json={**refine, "stage": 1, "replace": {"red": "blue"}})  # a face detail pass
    assert bad.status_code == 400 and "txt2img or refine stage" in bad.json()["detail"]
    face = wait(api, api.post("/explain", json={"identity": SLUG, "job": gen["id"], "image": image, "stage": 1,
                                                "words": ["sweater"]}).json()["id"])  # detail: the tiny model draws no face
    assert face["state"] == "failed" and "No face" in face["error"]
    assert not (studio.store.outputs_folder(SLUG) / face["id"]).exists()  # a failed job leaves no folder
    bad = api.post("/explain", json={"identity": SLUG, "job": gen["id"], "image": image, "stage": 4, "words": ["x"]})
    assert bad.status_code == 400 and "refine" in bad.json()["detail"]
    bad = api.post("/explain", json={"identity": SLUG, "job": gen["id"], "image": image, "stage": 2,
                                     "words": ["sweater"]})  # not in the refine pass's prompt
    assert bad.status_code == 400 and "not in the prompt" in bad.json()["detail"]
    bad = api.post("/explain", json={"identity": SLUG, "job": gen["id"], "image": image, "words": ["dog"]})
    assert bad.status_code == 400 and "not in the prompt" in bad.json()["detail"]
    assert "sweater" in bad.json()["detail"] and ", ," not in bad.json()["detail"]  # its words, no punctuation
    bad = api.post("/explain", json={"identity": SLUG, "job": gen["id"], "image": image, "words": ["red"],
                                     "layers": [5, 2]})
    assert bad.status_code == 400 and "first <= last" in bad.json()["detail"]
    source = {"identity": SLUG, "job": gen["id"], "image": image}  # edits refused before a job is made:
    bad = api.post("/edit", json={**source, "mode": "reweight", "weights": {"dog": 1.5}})  # an unknown word's weight
    assert bad.status_code == 400 and "'dog' is not in the prompt" in bad.json()["detail"]
    bad = api.post("/edit", json={**source, "replace": {"red": "blue"}, "blend_words": ["dog"]})  # blend word
    assert bad.status_code == 400 and "in neither prompt" in bad.json()["detail"]
    bad = api.post("/edit", json={"identity": SLUG, "job": gen["id"], "image": image, "target": "a cat"})
    assert bad.status_code == 400 and "number of words" in bad.json()["detail"]
    bad = api.post("/edit", json={"identity": SLUG, "job": gen["id"], "image": "nope.png", "target": "x"})
    assert bad.status_code == 404

    # a new prompt made with hires fix: its hires pass explained, and edited through both passes
    hires = {"width": 64, "height": 64, "steps": 3, "hires_scale": 1.5, "hires_steps": 2}
    new = {"identity": SLUG, "prompt": "studio portrait of ohwx person in a red sweater", "seed": 3}
    ex = wait(api, api.post("/explain", json={**new, "settings": hires, "hires": True, "words": ["sweater"]}).json()["id"])
    assert ex["state"] == "done", ex["error"]
    assert ex["result"]["pass"] == "hires"
    assert Image.open(io.BytesIO(api.get(ex["links"]["image"].replace(API_PREFIX, "")).content)).size == (96, 96)
    ed = wait(api, api.post("/edit", json={**new, "settings": hires, "replace": {"red": "blue"}}).json()["id"])
    assert ed["state"] == "done", ed["error"]
    edited = Image.open(io.BytesIO(api.get(ed["links"]["edited"].replace(API_PREFIX, "")).content))
    assert edited.size == (96, 96) and "Hires upscale: 1.5" in edited.text["parameters"]
    bad = api.post("/explain", json={**new, "settings": {"steps": 3}, "hires": True, "words": ["sweater"]})
    assert bad.status_code == 400 and "hires_scale" in bad.json()["detail"]
    bad = api.post("/explain", json={"identity": SLUG, "job": gen["id"], "image": image, "settings": hires,
                                     "words": ["sweater"]})
    assert bad.status_code == 400 and "new prompt" in bad.json()["detail"]
    bad = api.post("/edit", json={**new, "settings": {**hires, "hires_denoising": 2}, "replace": {"red": "blue"}})
    assert bad.status_code == 400 and "hires_denoising" in bad.json()["detail"]
    bad = api.post("/edit", json={**new, "settings": {**hires, "hires_upscaler": "x"}, "replace": {"red": "blue"}})
    assert bad.status_code == 400 and "Latent, Latent (nearest)" in bad.json()["detail"]
