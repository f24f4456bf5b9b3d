"""The tab's buttons, called as gradio calls them (no browser): portraits -> explain and edit -> results."""

from __future__ import annotations


import pytest
from PIL import Image

from lib_profile import sample_photos

try:
    from test_api import NAME, SLUG, TRAIN, png
except ImportError:
    from tests.test_api import NAME, SLUG, TRAIN, png


def handler(blocks, name):
    fns = blocks.fns if isinstance(blocks.fns, list) else list(blocks.fns.values())
    return next(f.fn for f in fns if getattr(f.fn, "__name__", None) == name)


def finish(studio, job_id):
    job = studio.jobs.wait(job_id, timeout=300)
    assert job["state"] == "done", job["error"]
    return job


@pytest.fixture
def ready(host, tmp_path, monkeypatch):
    """A person with a LoRA and one portrait, and the tab built on the same service."""
    from lib_profile.service import Studio
    from lib_profile.ui.tab import build_tab

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    studio = Studio(host, tmp_path / "data")
    studio.create_identity(NAME)
    studio.add_photos(SLUG, [(f"{n}.jpg", png(i)) for n, i in sample_photos.selfies()[:6]])
    finish(studio, studio.train(SLUG, TRAIN)["id"])
    gen = finish(studio, studio.generate(SLUG, count=1, seed=3, prompt="portrait of ohwx person in a red sweater",
                                         settings={"width": 64, "height": 64, "steps": 3},
                                         switches={"upscale": False})["id"])
    yield studio, build_tab(lambda: studio), gen
    studio.close()


def test_explain_and_edit_buttons(ready):
    studio, blocks, gen = ready
    portrait_update, _same = handler(blocks, "portraits")(SLUG)
    choice = portrait_update["value"]  # when the set was made and the file, not the job's id
    assert choice.endswith(f" · {gen['result']['images'][0]['file']}") and gen["id"] not in choice

    status, job_id = handler(blocks, "do_explain")(SLUG, choice, "sweater, red")
    assert "explain" in status.lower()
    finish(studio, job_id)
    polled = handler(blocks, "do_poll")(job_id)
    assert [caption for _path, caption in polled[5]] == ["sweater", "red"]

    status, job_id = handler(blocks, "do_edit")(SLUG, choice, "swap", "red -> blue", "", "", 0.8, 0.4, "")
    finish(studio, job_id)
    polled = handler(blocks, "do_poll")(job_id)
    assert polled[6].endswith("source.png") and polled[7].endswith("edited.png")

    status, job_id = handler(blocks, "do_edit")(SLUG, choice, "swap", "sharp -> soft", "", "", 0.8, 0.4, "", "refine pass")
    job = finish(studio, job_id)  # the refine pass's own prompt
    assert job["params"]["stage"] == 2 and job["result"]["pass"] == "refine"
    assert job["result"]["prompt"].startswith("photo, soft focus")

    message = handler(blocks, "do_edit")(SLUG, choice, "swap", "red blue", "", "", 0.8, 0.4, "")
    assert "old -> new" in message[0]
    message = handler(blocks, "do_explain")(SLUG, None, "x")
    assert "Make portraits first" in message[0]
    status, job_id = handler(blocks, "do_explain")(SLUG, choice, "sharp focus", "refine pass")  # a later pass
    job = finish(studio, job_id)
    assert job["result"]["pass"] == "refine" and job["params"]["stage"] == 2
    face = handler(blocks, "do_explain")(SLUG, choice, "sweater", "face detail pass")  # the tiny model draws no face:
    assert studio.jobs.wait(face[1], timeout=300)["state"] == "failed"  # the job says so


def test_status_line_names_the_stage_only_while_it_runs():
    from lib_profile.ui.display import job_markdown

    job = {"kind": "edit", "id": "abc", "state": "running", "stage": "finishing", "progress": 0.5, "eta_s": 12,
           "messages": ["face detail, refine and upscale passes on the edit"]}
    running = job_markdown(job)
    assert running.startswith("**Edit job abc: running** — finishing 50%, about 12 s left")
    done = job_markdown({**job, "state": "done", "progress": 1.0, "stage": "sampling"})
    assert done.splitlines()[0] == "**Edit job abc: done** — 100%"  # not the last pass's "sampling"
    failed = job_markdown({**job, "state": "failed"})
    assert "failed** — finishing 50%" in failed  # where it stopped


def test_the_pass_choice_offers_only_the_passes_a_portrait_has(ready, monkeypatch):
    studio, blocks, gen = ready
    choice = f"{gen['id']}/{gen['result']['images'][0]['file']}"
    assert handler(blocks, "passes_of")(SLUG, choice)["choices"] == ["first pass", "face detail pass", "refine pass"]
    assert handler(blocks, "edit_passes_of")(SLUG, choice)["choices"] == ["first pass", "refine pass"]
    real = studio.stage_index
    monkeypatch.setattr(studio, "stage_index", lambda s, j, i, kind: None if kind == "refine" else real(s, j, i, kind))
    assert handler(blocks, "passes_of")(SLUG, choice)["choices"] == ["first pass", "face detail pass"]
    assert handler(blocks, "edit_passes_of")(SLUG, choice)["choices"] == ["first pass"]


def test_generate_takes_the_size_and_steps_of_a_quick_try(ready):
    from lib_profile.ui.portraits_section import SIZES

    studio, blocks, _gen = ready
    quick = next(name for name in SIZES if "quick" in name)
    _status, job_id = handler(blocks, "do_generate")(SLUG, "three_quarter_left", None, "cool", 1, 5, False, quick, 12)
    job = studio.jobs.get(job_id)
    assert job["params"]["settings"] == {"width": 384, "height": 576, "steps": 12}
    studio.jobs.cancel(job_id)
    studio.jobs.wait(job_id, timeout=300)


def test_the_default_size_is_the_checkpoints_own_and_each_family_has_its_sizes(ready):
    """The tab's default leaves the size to the plan, which takes the family's 2:3 at Generate time (512x768 on
    SD1.5, 832x1216 on SDXL: tests/test_webui_sdxl.py), so an SDXL checkpoint is not sampled at SD1.5's size; the
    fixed choices include both families' (seen in a real Forge with SDXL loaded: the tab's default was 512x768)."""
    from lib_profile.families import SD15, SDXL
    from lib_profile.ui.portraits_section import DEFAULT_SIZE, SIZES

    studio, blocks, _gen = ready
    assert SIZES[DEFAULT_SIZE] is None and {SD15.portrait, SDXL.portrait} <= set(SIZES.values())
    _status, job_id = handler(blocks, "do_generate")(SLUG, "three_quarter_left", None, "cool", 1, 5, False,
                                                     DEFAULT_SIZE, 12)
    assert studio.jobs.get(job_id)["params"]["settings"] == {"steps": 12}
    studio.jobs.cancel(job_id)
    studio.jobs.wait(job_id, timeout=300)


def test_a_queued_job_says_what_it_waits_for():
    from lib_profile.ui.display import job_markdown

    job = {"kind": "generate", "id": "b2", "state": "queued", "progress": 0, "messages": [],
           "waiting_for": {"id": "a1", "kind": "train", "identity": "anna"}}
    assert "queued** — waiting for train job a1 to finish - 0%" in job_markdown(job)


def test_the_intake_report_says_which_face_detector_ran_and_why():
    from lib_profile.ui.display import intake_markdown

    report = {"counts": {"accepted": 6, "total": 6}, "min_photos": 5, "ready": True, "photos": [],
              "face_detector": {"name": "dlib", "note": "mediapipe cannot run here (RuntimeError: ...)"}}
    assert "_Face detection: dlib. mediapipe cannot run here" in intake_markdown(report)
    assert "Face detection" not in intake_markdown({**report, "face_detector": {"name": "mediapipe", "note": None}})


def test_restyle_and_a_photo_source_for_explain_and_edit(ready, tmp_path):
    studio, blocks, _gen = ready
    pickers = handler(blocks, "photos_of")(SLUG)  # Restyle's, Explain's and Edit's photo pickers
    names = studio.photo_names(SLUG)
    assert len(pickers) == 3 and all(p["choices"] == names and p["value"] == names[0] for p in pickers)
    target = handler(blocks, "target_of")(SLUG, "cool")  # the studio portrait of the person, in the tone's look
    assert target.startswith("studio portrait photo of ohwx person") and target != handler(blocks, "target_of")(SLUG)

    status, job_id = handler(blocks, "do_restyle")(SLUG, names[0], None, "", target, 0.2, True, "direct", 4, 128)
    job = finish(studio, job_id)
    assert job["params"]["lora"] and job["result"]["restyled"] == "restyled.png"
    polled = handler(blocks, "do_poll")(job_id)
    assert polled[8].endswith("photo.png") and polled[9]["value"].endswith("restyled.png")
    assert "identity" in polled[9]["label"] or job["result"]["identity_similarity"] is None

    upload = tmp_path / "wall.jpg"
    Image.new("RGB", (200, 300), (90, 60, 40)).save(upload)
    status, job_id = handler(blocks, "do_restyle")(SLUG, names[0], str(upload), "a brown wall", "a red wall", 0.5,
                                                   False, "ddim", 4, 128)
    job = finish(studio, job_id)  # the upload, not the picked photo
    assert job["params"]["photo"]["kind"] == "upload" and job["params"]["source_prompt"] == "a brown wall"

    photo = ("photo", names[0], "a photo of a person in a red coat", 4, 128)
    status, job_id = handler(blocks, "do_explain")(SLUG, None, "coat", "first pass", *photo)
    job = finish(studio, job_id)
    assert list(job["result"]["words"]) == ["coat"] and job["result"]["pass"] == "photo"
    assert [caption for _path, caption in handler(blocks, "do_poll")(job_id)[5]] == ["coat"]
    status, job_id = handler(blocks, "do_edit")(SLUG, None, "swap", "red -> blue", "", "", 0.8, 0.4, "",
                                                "first pass", *photo)
    job = finish(studio, job_id)
    assert job["result"]["prompt"] == "a photo of a person in a blue coat"
    polled = handler(blocks, "do_poll")(job_id)
    assert polled[6].endswith("photo.png") and polled[7].endswith("edited.png")

    assert "Pick one of the person's photos" in handler(blocks, "do_restyle")(SLUG, None, None, "", "x", 0.2, False)[0]
    assert "Pick one of the person's photos" in handler(blocks, "do_explain")(SLUG, None, "x", "first pass",
                                                                               "photo", None)[0]
    assert "strength" in handler(blocks, "do_restyle")(SLUG, names[0], None, "", "x", 1.5, False)[0]
    assert "choose a person" in handler(blocks, "do_restyle")(None, names[0], None, "", "x", 0.2, True)[0]
