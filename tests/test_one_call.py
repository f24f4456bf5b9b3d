"""The whole flow in one call: ``POST /portraits`` (JSON with base64 photos, or a multipart form) makes a new
identity, takes its photos in, trains its LoRA and makes its portraits, as one job."""

from __future__ import annotations

import base64
import io
import json
import time

import pytest
from PIL import Image

from lib_profile import API_PREFIX, sample_photos
from lib_profile.flow import PHASES, Phase
from tests.test_api import SMALL, TRAIN, png

NAME, SLUG = "Zyxwq Flow", "zyxwq-flow"


def selfies(n=6):
    return [(f"{name}.jpg", png(img)) for name, img in sample_photos.selfies()[:n]]


def as_json(photos, **fields):
    return {"name": NAME, "class_word": "woman", "images": [{"name": n, "data": base64.b64encode(d).decode()}
                                                            for n, d in photos], **fields}


def as_form(photos, **fields):
    files = [("files", (n, d, "image/jpeg")) for n, d in photos]
    data = {"name": NAME, **{k: json.dumps(v) if isinstance(v, (dict, list)) else str(v) for k, v in fields.items()}}
    return dict(files=files, data=data)


def follow(api, job_id, timeout=1500):
    """Poll the job to its end; the (stage, progress) pairs seen on the way."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/jobs/{job_id}").json()
        seen.append((job["stage"], job["progress"]))
        if job["state"] not in ("queued", "running"):
            return job, seen
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_one_call_makes_portraits_from_photos(api, studio):
    r = api.post("/portraits", json=as_json(selfies(), tone="cool", count=1, seed=3, settings=SMALL, train=TRAIN))
    assert r.status_code == 202, r.text
    job, seen = follow(api, r.json()["id"])
    assert job["state"] == "done", job["error"]
    assert job["kind"] == "portraits" and job["identity"] == SLUG
    result = job["result"]
    assert result["intake"]["counts"]["accepted"] == 6 and result["lora"]["name"] and len(result["images"]) == 1
    image = Image.open(io.BytesIO(api.get(job["links"]["image0"].replace(API_PREFIX, "")).content))
    assert f"<lora:{result['lora']['name']}:" in image.text["parameters"]
    # one progress across the three phases: never backwards, each phase seen, training the largest part
    progress = [p for _s, p in seen]
    assert progress == sorted(progress) and progress[-1] == 1.0
    phases = {s.split(":")[0] for s, _p in seen if s}
    assert {"training", "portraits"} <= phases, phases
    info = api.get(f"/identities/{SLUG}").json()
    assert len(info["photos"]) == 6 and info["loras"][0]["name"] == result["lora"]["name"]
    staged = [p for p in studio.store.folder(SLUG).iterdir() if p.name.startswith("staged-")]
    assert staged == []  # nothing left of the request's upload


def test_one_call_by_multipart_cancelled_in_training_resumes_where_it_stopped(api, studio):
    form = as_form(selfies(), count=1, settings=SMALL, train={**TRAIN, "steps": 40, "save_every": 2,
                                                                  "validate_every": 20})
    r = api.post("/portraits", **form)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 300
    while True:
        job = api.get(f"/jobs/{job_id}").json()
        if (job["stage"] or "").startswith("training: train") and job["progress"] > 0.06:
            break
        assert time.monotonic() < deadline and job["state"] in ("queued", "running"), job
        time.sleep(0.1)
    assert api.post(f"/jobs/{job_id}/cancel").status_code == 200
    stopped, _ = follow(api, job_id)
    assert stopped["state"] == "cancelled" and stopped["links"]["resume"]
    photos = api.get(f"/identities/{SLUG}").json()["photos"]
    resumed = api.post(f"/jobs/{job_id}/resume")
    assert resumed.status_code == 202, resumed.text
    done, seen = follow(api, resumed.json()["id"])
    assert done["state"] == "done", done["error"]
    assert api.get(f"/identities/{SLUG}").json()["photos"] == photos  # the intake was not done again
    run = studio.jobs.get(job_id)["params"]["train"]["run"]
    log = (studio.store.folder(SLUG) / "training" / run / "events.jsonl").read_text()
    events = [json.loads(line) for line in log.splitlines() if line.strip()]
    starts = [e.get("step") for e in events if e["event"] == "phase" and e.get("phase") == "train" and "steps" in e]
    assert '"phase": "cancelled"' in log and len(starts) == 2 and starts[0] == 0 and starts[1] > 0, starts  # resumed
    assert len(done["result"]["images"]) == 1


@pytest.mark.parametrize("case,status,words", [
    ("no photos", 400, "photos"),
    ("bad tone", 400, "purple"),
    ("bad pose", 400, "handstand"),
    ("unknown training option", 400, "warp"),
    ("count not a number", 400, "count"),
    ("bad base64", 400, "base64"),
    ("no name", 400, "name"),
    ("not json", 400, "JSON"),
    ("settings not json (form)", 400, "settings"),
    ("photo too big (form)", 413, "MB"),
    ("too many photos", 413, "40"),
])
def test_a_bad_one_call_request_is_refused_and_leaves_nothing(api, studio, case, status, words):
    photos = selfies(2)
    requests = {
        "no photos": dict(json=as_json([])),
        "bad tone": dict(json=as_json(photos, tone="purple")),
        "bad pose": dict(json=as_json(photos, pose="handstand")),
        "unknown training option": dict(json=as_json(photos, train={"warp": 9})),
        "count not a number": dict(json=as_json(photos, count="many")),
        "bad base64": dict(json={**as_json(photos), "images": [{"name": "a.jpg", "data": "%%%"}]}),
        "no name": dict(json={k: v for k, v in as_json(photos).items() if k != "name"}),
        "not json": dict(content=b"{nope", headers={"content-type": "application/json"}),
        "settings not json (form)": as_form(photos, settings="{steps: 3"),
        "photo too big (form)": as_form([("big.jpg", b"\xff" * (25 * 2**20 + 1))]),
        "too many photos": dict(json=as_json(photos * 21)),
    }
    r = api.post("/portraits", **requests[case])
    assert r.status_code == status, r.text
    assert words.lower() in r.json()["detail"].lower()
    assert api.get("/identities").json() == [] and api.get("/jobs").json() == []
    assert not any(studio.store.root.iterdir())


def test_one_call_for_an_existing_name_is_a_conflict(api):
    api.post("/identities", json={"name": NAME}).raise_for_status()
    r = api.post("/portraits", json=as_json(selfies(2)))
    assert r.status_code == 409 and f"/identities/{SLUG}" in r.json()["detail"]
    assert api.get(f"/identities/{SLUG}").json()["photos"] == []


def test_one_call_with_too_few_good_photos_fails_saying_why(api):
    r = api.post("/portraits", json=as_json(selfies(2), train=TRAIN))
    assert r.status_code == 202, r.text
    job, _ = follow(api, r.json()["id"])
    assert job["state"] == "failed" and "too few good photos" in job["error"].lower()
    assert len(api.get(f"/identities/{SLUG}").json()["photos"]) == 2  # kept: add more and train


def test_one_call_is_in_the_openapi_with_both_bodies(api):
    import httpx

    spec = httpx.get(str(api.base_url).split(API_PREFIX)[0] + "/openapi.json").json()
    body = spec["paths"][f"{API_PREFIX}/portraits"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert "images" in body["application/json"]["schema"]["properties"]
    assert body["multipart/form-data"]["schema"]["properties"]["files"]["type"] == "array"
    refs = json.dumps(spec)
    for ref in {x.split('"')[0] for x in refs.split('"$ref": "')[1:]}:
        assert ref.split("/")[-1] in spec["components"]["schemas"], ref


def test_every_training_option_the_service_takes_is_a_request_field():
    """The request models refuse unknown fields, so each training option the service accepts must be one."""
    from lib_profile.api import models as api_models
    from lib_profile.service import TRAIN_OPTIONS

    fields = getattr(api_models.TrainRequest, "model_fields", None) or api_models.TrainRequest.__fields__
    assert set(TRAIN_OPTIONS) <= set(fields), set(TRAIN_OPTIONS) - set(fields)


@pytest.mark.parametrize("phase", [name for name, _share in PHASES])
def test_a_phase_offers_every_attribute_a_handler_reads_of_its_job(phase):
    """A phase stands in for the job's context to the intake, training and generate handlers: every public
    attribute of a JobContext (its internals, ``manager`` and ``live``, aside) is on the phase too, with the job's
    own value (cluster mode's ``taken_over`` was missing: a one-call job failed with an AttributeError)."""
    from lib_profile.jobs.manager import JobContext

    ctx = JobContext(None, {"id": "j1", "kind": "portraits", "identity": "anna", "params": {"x": 1}})
    ctx.taken_over = True
    seen = Phase(ctx, phase, {"y": 2})
    for name in sorted(n for n in dir(ctx) if not n.startswith("_") and n not in ("manager", "live")):
        assert hasattr(seen, name), name
        if name not in ("params", "update"):
            assert getattr(seen, name) is getattr(ctx, name) or getattr(seen, name) == getattr(ctx, name), name
    assert seen.params == {"y": 2}
