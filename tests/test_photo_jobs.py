"""Real-photo jobs end to end (issue 21): POST /restyle and a photo source for /explain and /edit over a real socket,
the ``restyle``/``explain --photo``/``edit --photo`` commands, on the diffusers host with the tiny model; and the bad
input tables (no such photo, broken image, out-of-range settings, two sources at once, a host without a denoiser,
a full disk), each a clear 4xx (or exit 2) that leaves nothing behind."""

from __future__ import annotations

import base64
import errno
import io
import json

import pytest
from PIL import Image

from lib_profile import API_PREFIX
from tests.test_api import NAME, SLUG, TRAIN, upload_selfies, wait
from tests.test_cli import run

FAST = {"size": 64, "steps": 4}  # inversion settings that keep the tiny model quick


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def photo_bytes(size=(200, 300)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (150, 110, 80)).save(buf, format="JPEG")
    return buf.getvalue()


def fetch(api, link):
    r = api.get(link.replace(API_PREFIX, ""))
    assert r.status_code == 200, r.text
    return Image.open(io.BytesIO(r.content))


@pytest.fixture
def person(api, studio):
    """An identity with six photos (no LoRA yet); yields the name of its first photo as the user sees it."""
    api.post("/identities", json={"name": NAME, "class_word": "woman"}).raise_for_status()
    upload_selfies(api).raise_for_status()
    return studio.photo_names(SLUG)[0]


def test_restyle_edit_and_explain_a_photo(api, studio, person):
    job = wait(api, api.post(f"/identities/{SLUG}/train", json=TRAIN).json()["id"])
    assert job["state"] == "done", job["error"]
    r = api.post("/restyle", json={"identity": SLUG, "photo": person, "target_prompt": "oil painting of ohwx woman",
                                   "inversion": FAST})
    assert r.status_code == 202, r.text
    job = wait(api, r.json()["id"])
    assert job["state"] == "done", job["error"]
    res = job["result"]
    assert (res["feature_injection"], res["attention_injection"]) == (0.8, 0.5)  # strength 0.2: the paper's
    assert res["source_prompt"] == "a photo of ohwx woman"  # the default caption: the LoRA's activation text
    assert "identity_similarity" in res and res["loras"][0]["weight"] == 0.9  # kept the person: their LoRA
    folder = studio.store.outputs_folder(SLUG) / job["id"]
    assert {p.name for p in folder.iterdir()} >= {"photo.png", "reconstruction.png", "restyled.png", "restyle.json"}
    assert json.loads((folder / "restyle.json").read_text())["prompt"] == "oil painting of ohwx woman"
    restyled = fetch(api, job["links"]["restyled"])
    text = restyled.text["parameters"]
    assert text.startswith("oil painting of ohwx woman") and "Restyle: " in text and "strength 0.2" in text
    assert min(restyled.size) == 64 and fetch(api, job["links"]["photo"]).size == restyled.size
    assert "a photo of ohwx woman" in fetch(api, job["links"]["reconstruction"]).text["parameters"]

    upload = {"identity": SLUG, "photo_image": "data:image/jpeg;base64," + b64(photo_bytes()), "strength": 0,
              "keep_person": False, "caption": "a photo of a brown wall", "target_prompt": "a photo of a red wall",
              "inversion": {**FAST, "method": "ddim"}}
    job = wait(api, api.post("/restyle", json=upload).json()["id"])
    assert job["state"] == "done", job["error"]
    assert job["result"]["feature_injection"] == 1.0 and job["result"]["method"] == "ddim"
    assert "identity_similarity" not in job["result"]
    assert len(list((studio.store.folder(SLUG) / "photo-uploads").iterdir())) == 1  # stored whole, once

    ed = api.post("/edit", json={"identity": SLUG, "photo": person, "caption": "a photo of a woman in a red coat",
                                 "replace": {"red": "blue"}, "inversion": FAST})
    assert ed.status_code == 202, ed.text
    ed = wait(api, ed.json()["id"])
    assert ed["state"] == "done", ed["error"]
    assert ed["result"]["prompt"] == "a photo of a woman in a blue coat" and ed["result"]["pass"] == "photo"
    edited = fetch(api, ed["links"]["edited"])
    assert "blue coat" in edited.text["parameters"] and "Prompt-to-Prompt" in edited.text["parameters"]
    assert fetch(api, ed["links"]["source"]).size == edited.size

    ex = api.post("/explain", json={"identity": SLUG, "photo_image": b64(photo_bytes()), "words": ["coat"],
                                    "caption": "a photo of a woman in a red coat", "inversion": FAST})
    assert ex.status_code == 202, ex.text
    ex = wait(api, ex.json()["id"])
    assert ex["state"] == "done", ex["error"]
    assert set(ex["result"]["words"]) == {"coat"} and ex["result"]["caption"].endswith("red coat")
    assert fetch(api, ex["links"]["overlay:coat"]).size and fetch(api, ex["links"]["photo"]).size


def bad_requests(photo):
    """(route, body, status, words the answer holds): every kind of bad photo-job input."""
    good = {"identity": SLUG, "target_prompt": "x", "photo": photo, "keep_person": False, "inversion": FAST}
    broken_jpeg = photo_bytes()[:200]
    return [
        ("/restyle", {**good, "photo": "nope.jpg"}, 404, [photo]),  # the photos are listed
        ("/restyle", {**good, "photo": "../" + photo}, 400, ["refused"]),
        ("/restyle", {**good, "photo": "..%2F" + photo}, 404, ["no photo"]),
        ("/restyle", {**good, "photo": "．．／" + photo}, 400, ["refused"]),
        ("/restyle", {**good, "photo": photo + "\x00"}, 400, ["refused"]),
        ("/restyle", {**good, "photo": ""}, 400, ["Choose a photo"]),
        ("/restyle", {**good, "photo": None}, 400, ["Choose a photo"]),
        ("/restyle", {**good, "photo": None, "photo_image": "not base64!"}, 400, ["photo_image", "base64"]),
        ("/restyle", {**good, "photo": None, "photo_image": b64(b"hello")}, 400, ["photo_image", "not an image"]),
        ("/restyle", {**good, "photo": None, "photo_image": b64(broken_jpeg)}, 400, ["photo_image", "damaged"]),
        ("/restyle", {**good, "photo_image": b64(photo_bytes())}, 400, ["one photo"]),  # two photos
        ("/restyle", {**good, "strength": 1.5}, 400, ["strength"]),
        ("/restyle", {**good, "strength": -0.1}, 400, ["strength"]),
        ("/restyle", {**good, "inversion": {"steps": 1}}, 400, ["inversion.steps", "2..200"]),
        ("/restyle", {**good, "inversion": {"steps": 201}}, 400, ["inversion.steps"]),
        ("/restyle", {**good, "inversion": {"method": "magic"}}, 400, ["inversion.method", "null-text"]),
        ("/restyle", {**good, "inversion": {"size": 100}}, 400, ["inversion.size", "multiple of 64"]),
        ("/restyle", {**good, "inversion": {"cfg_scale": 0}}, 400, ["inversion.cfg_scale"]),
        ("/restyle", {**good, "inversion": {"sampler": "Euler"}}, 400, ["inversion.sampler"]),
        ("/restyle", {**good, "target_prompt": ""}, 400, ["target_prompt"]),
        ("/restyle", {**good, "target_prompt": "   "}, 400, ["target prompt"]),
        ("/restyle", {**good, "keep_person": True}, 400, ["LoRA", "train"]),
        ("/restyle", {**good, "target_prompt": "a [red:blue:0.5] wall"}, 400, ["same at every step"]),
        ("/restyle", {**good, "caption": "a wall AND a door"}, 400, ["AND"]),
        ("/restyle", {**good, "identity": "nobody"}, 404, ["nobody"]),
        ("/restyle", {**good, "identity": "../x"}, 400, ["refused"]),
        ("/restyle", {**good, "seed": 3}, 400, ["seed"]),  # unknown fields are refused
        ("/explain", {"identity": SLUG, "words": ["x"], "photo": photo, "prompt": "a cat"}, 400,
         ["one source", "prompt and photo"]),
        ("/explain", {"identity": SLUG, "words": ["x"], "photo": photo, "job": "abc123def456", "image": "a.png"}, 400,
         ["job and image and photo"]),
        ("/explain", {"identity": SLUG, "words": ["x"], "photo": "nope.jpg"}, 404, [photo]),
        ("/explain", {"identity": SLUG, "words": ["dog"], "photo": photo, "caption": "a photo of a cat"}, 400,
         ["not in the prompt"]),
        ("/explain", {"identity": SLUG, "words": ["x"], "photo": photo, "stage": 1}, 400, ["stage"]),
        ("/explain", {"identity": SLUG, "words": ["x"], "prompt": "a cat", "caption": "a cat"}, 400, ["photo source"]),
        ("/explain", {"identity": SLUG, "words": ["x"], "photo": photo, "inversion": {"steps": 0}}, 400,
         ["inversion.steps"]),
        ("/edit", {"identity": SLUG, "target": "a photo of a dog", "photo": photo, "prompt": "a cat"}, 400,
         ["one source"]),
        ("/edit", {"identity": SLUG, "target": "y", "photo_image": "%%%"}, 400, ["photo_image"]),
        ("/edit", {"identity": SLUG, "photo": photo, "caption": "a photo of a cat", "target": "a dog"}, 400,
         ["number of words"]),
        ("/edit", {"identity": SLUG, "photo": photo, "replace": {"red": "blue"}, "caption": "a photo of a cat"}, 400,
         ["not in the prompt"]),
        ("/edit", {"identity": SLUG, "photo": photo, "target": "y", "caption": "x" * 1001}, 400, ["caption"]),
        ("/edit", {"identity": SLUG, "photo": photo, "caption": "a photo of a [red:blue:3] wall",
                   "replace": {"wall": "door"}}, 400, ["same at every step"]),
    ]


def test_bad_photo_requests_get_clear_4xx_and_leave_nothing(api, studio, person):
    failures = []
    for route, body, status, words in bad_requests(person):
        r = api.post(route, json=body)
        detail = r.json().get("detail", "") if r.headers.get("content-type", "").startswith("application/json") else ""
        if r.status_code != status or not all(w.lower() in str(detail).lower() for w in words):
            failures.append(f"{route} {str(body)[:160]} -> {r.status_code} {str(detail)[:300]}")
    assert not failures, "\n".join(failures)
    assert studio.jobs.list(SLUG) == []  # no job was queued
    assert not (studio.store.folder(SLUG) / "photo-uploads").exists()  # no upload was kept
    assert not studio.store.outputs_folder(SLUG).exists() or not any(studio.store.outputs_folder(SLUG).iterdir())


def test_a_host_without_a_denoiser_says_so_with_a_400(api, studio, person, monkeypatch):
    monkeypatch.setattr(studio.host, "photo_inversion", False)  # as declared by a host without a denoiser
    for route, body in (("/restyle", {"identity": SLUG, "photo": person, "target_prompt": "x", "keep_person": False}),
                        ("/explain", {"identity": SLUG, "photo": person, "words": ["photo"]}),
                        ("/edit", {"identity": SLUG, "photo": person, "replace": {"photo": "drawing"}})):
        r = api.post(route, json=body)
        assert r.status_code == 400, (route, r.text)
        assert "not supported by the diffusers host" in r.json()["detail"], r.text
    assert studio.jobs.list(SLUG) == []


def test_an_upload_on_a_full_disk_is_a_507_and_leaves_nothing(api, studio, person, monkeypatch):
    from lib_profile.store import files

    def full(fd, raw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_write_all", full)
    r = api.post("/restyle", json={"identity": SLUG, "photo_image": b64(photo_bytes()), "target_prompt": "x",
                                   "keep_person": False})
    assert r.status_code == 507, r.text
    assert "photo-uploads" in r.json()["detail"]
    folder = studio.store.folder(SLUG) / "photo-uploads"
    assert not folder.exists() or list(folder.iterdir()) == []  # no part of the photo
    assert studio.jobs.list(SLUG) == []


@pytest.mark.parametrize("checkpoint", ["tiny", "tiny-sdxl"])
def test_restyle_and_photo_commands(tmp_path, data_dir, checkpoint):
    photo = tmp_path / "me.jpg"
    photo.write_bytes(photo_bytes())
    fast = ["--checkpoint", checkpoint, "--size", "64", "--steps", "4"]
    out = tmp_path / "restyled"
    proc = run("restyle", *fast, "--photo", str(photo), "--prompt", "oil painting of a person", "--strength", "0.3",
               "--method", "ddim", "--out", str(out), data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} == {"photo.png", "reconstruction.png", "restyled.png", "restyle.json"}
    assert "Restyle: " in Image.open(out / "restyled.png").text["parameters"]
    report = json.loads((out / "restyle.json").read_text())
    assert report["method"] == "ddim" and abs(report["feature_injection"] - 0.7) < 1e-9
    assert str(out / "restyled.png") in proc.stdout

    out = tmp_path / "edited"
    proc = run("edit", *fast, "--photo", str(photo), "--caption", "a photo of a red wall", "--target",
               "a photo of a blue wall", "--out", str(out), data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr
    assert "blue wall" in Image.open(out / "edited.png").text["parameters"]
    assert (out / "photo.png").is_file() and (out / "edit.json").is_file()

    out = tmp_path / "explained"
    proc = run("explain", *fast, "--photo", str(photo), "--caption", "a photo of a red wall", "--word", "wall",
               "--out", str(out), data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "explain.json").read_text())["caption"] == "a photo of a red wall"
    assert (out / "photo.png").is_file() and "wall: " in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["restyle", "--photo", "{missing}", "--prompt", "x"], "not found"),
    (["restyle", "--photo", "{broken}", "--prompt", "x"], "damaged"),
    (["restyle", "--photo", "{folder}", "--prompt", "x"], "folder"),
    (["restyle", "--photo", "{photo}", "--prompt", "x", "--strength", "1.5"], "strength"),
    (["restyle", "--photo", "{photo}", "--prompt", "x", "--method", "magic"], "method"),
    (["restyle", "--photo", "{photo}", "--prompt", "x", "--steps", "1"], "steps"),
    (["restyle", "--photo", "{photo}", "--prompt", "x", "--size", "100"], "size"),
    (["restyle", "--photo", "{photo}", "--prompt", " "], "--prompt"),
    (["restyle", "--photo", "{photo}", "--prompt", "x", "--keep-person"], "--keep-person"),
    (["restyle", "--identity", "nobody", "--photo", "a.jpg", "--prompt", "x"], "nobody"),
    (["edit", "--photo", "{photo}", "--prompt", "a cat", "--target", "a dog"], "one source"),
    (["edit", "--photo", "{broken}", "--target", "a dog"], "damaged"),
    (["edit", "--photo", "{photo}", "--target", "a dog", "--width", "64"], "--width: for a new image"),
    (["explain", "--word", "x"], "--photo"),
    (["explain", "--photo", "{missing}", "--word", "x"], "not found"),
    (["explain", "--photo", "{photo}", "--word", "x", "--hires-pass"], "--hires-pass: for a new image"),
])
def test_photo_commands_bad_input_gets_a_clear_message(tmp_path, data_dir, args, message):
    photo, broken = tmp_path / "p.jpg", tmp_path / "broken.jpg"
    photo.write_bytes(photo_bytes())
    broken.write_bytes(photo_bytes()[:200])
    names = {"photo": photo, "broken": broken, "missing": tmp_path / "missing.jpg", "folder": tmp_path}
    args = [a.format(**names) for a in args]
    proc = run(args[0], "--checkpoint", "tiny", *args[1:], "--out", str(tmp_path / "o"), data_dir=data_dir)
    assert proc.returncode == 2 and message.lower() in proc.stderr.lower(), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()
