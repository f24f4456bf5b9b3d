"""No silent stage: every part of a pass the WebUI (or an extension in it) does for us is reported as ran,
skipped or failed, on stand-ins that fail the way the real hosts do (an extension's exception is caught by the
WebUI's script runner and only printed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib_profile.hosts.base import (ControlUnit, HostError, Img2ImgRequest, Interrupted, LoraRef, StageReport,
                                    Txt2ImgRequest)
from lib_profile.studio.detail import DetailParams, choose_adetailer_model, detail_pass

try:
    from standins import processing as runtime
    from test_webui_host import both, webui  # noqa: F401 - the stand-in WebUI fixture, per flavour
except ImportError:
    from tests.standins import processing as runtime
    from tests.test_webui_host import both, webui  # noqa: F401


def pose_map(w=256, h=384):
    image = Image.new("RGB", (w, h), (0, 0, 0))
    image.paste((255, 0, 0), (w // 3, h // 4, w // 3 + 4, h // 2))  # a limb on black, as a pose drawing is
    return image


def pose_request(**kw):
    return Txt2ImgRequest(prompt="portrait", seed=3, width=256, height=384, steps=3,
                          controlnets=[ControlUnit("pose", pose_map(), "control_v11p_sd15_openpose")], **kw)


def cn_script(modules):
    return next(s for s in modules.scripts.scripts_txt2img.alwayson_scripts if s.title() == "ControlNet")


# ------------------------------------------------------------------ ControlNet

@both()
def test_controlnet_units_reach_the_extension_in_the_form_it_takes_and_are_reported(webui):
    """Forge 2 compares the unit's image with ``< 5``: a {"image", "mask"} dict made every unit fail there."""
    modules, host = webui
    res = host.txt2img(pose_request())
    assert [r.line() for r in res.reports] == ["ControlNet pose: ran"]
    assert not runtime.exception_records  # nothing was reported to the console
    unit = cn_script(modules).units_seen[-1][0]
    assert isinstance(unit["image"], np.ndarray) and unit["image"].dtype == np.uint8
    assert [u["kind"] for u in res.params["controlnets"]] == ["pose"] and "ControlNet 0" in res.infotexts[0]


@both()
@pytest.mark.parametrize("hook", ["process", "process_before_every_sampling"])
def test_a_controlnet_that_fails_is_reported_failed_and_left_out_of_the_infotext(webui, monkeypatch, hook):
    modules, host = webui
    if hook == "process_before_every_sampling" and host.name == "a1111":
        pytest.skip("Mikubill's ControlNet does its work in process")

    def broken(self, p, *units):
        if hook == "process":  # as Forge: the unit's infotext is written before the unit fails
            p.extra_generation_params["ControlNet 0"] = "Module: None"
        raise TypeError("'<' not supported between instances of 'dict' and 'int'")

    monkeypatch.setattr(runtime.ControlNetScript, hook, broken, raising=False)
    res = host.txt2img(pose_request())
    assert len(res.images) == 1  # the WebUI still makes a picture, guided by the prompt only
    (report,) = res.reports
    assert report.status == "failed" and "TypeError" in report.why and hook in report.why
    assert res.params["controlnets"] == [] and "ControlNet 0" not in res.infotexts[0]
    assert runtime.exception_records  # the WebUI still printed it, as it does


@both()
def test_a_controlnet_that_ignores_the_unit_is_reported_failed(webui, monkeypatch):
    monkeypatch.setattr(runtime.ControlNetScript, "process", lambda self, p, *units: None)
    res = webui[1].txt2img(pose_request())
    assert res.reports[0].status == "failed" and "did not take the unit" in res.reports[0].why


@both(cn_models=None)
def test_no_controlnet_extension_is_reported_skipped_with_what_to_install(webui):
    res = webui[1].txt2img(pose_request())
    assert res.reports[0].status == "skipped" and "control_v11p_sd15_openpose.pth" in res.reports[0].why
    assert res.params["controlnets"] == []


# ------------------------------------------------------------------ LoRA and upscaler

@both()
def test_a_lora_the_webui_cannot_find_is_reported_failed(webui, tmp_path, monkeypatch):
    _modules, host = webui
    src = tmp_path / "alice-1.safetensors"
    src.write_bytes(b"x" * 64)
    ok = host.txt2img(Txt2ImgRequest(prompt="p", seed=1, loras=[LoraRef(str(src), 0.9)]))
    assert [r.line() for r in ok.reports] == ["LoRA alice-1: ran"]
    other = tmp_path / "bob-2.safetensors"
    other.write_bytes(b"y" * 64)
    monkeypatch.setattr(host, "publish_lora", lambda lora: lora)  # the file never reaches the Lora folder
    res = host.txt2img(Txt2ImgRequest(prompt="p", seed=1, loras=[LoraRef(str(other), 0.9)]))
    assert res.reports[0].status == "failed" and "could not find" in res.reports[0].why


@both()
def test_an_upscaler_that_fails_to_load_is_reported(webui, monkeypatch):
    modules, host = webui

    def failing(img, scale, selected_model):  # the WebUI's ESRGAN: load fails, reported, image resized anyway
        try:
            raise FileNotFoundError("RealESRGAN_x4plus.pth")
        except FileNotFoundError:
            runtime.report("Unable to load RealESRGAN model", exc_info=True)
        return img.resize((img.width * 2, img.height * 2))

    esrgan = next(u for u in modules.shared.sd_upscalers if u.name == "R-ESRGAN 4x+")
    monkeypatch.setattr(esrgan.scaler, "upscale", failing)
    reports: list[StageReport] = []
    assert host.upscale(pose_map(64, 64), 2.0, "R-ESRGAN 4x+", reports).size == (128, 128)
    assert reports[0].status == "failed" and "RealESRGAN_x4plus.pth" in reports[0].why and "Lanczos" in reports[0].why
    reports.clear()
    host.upscale(pose_map(64, 64), 2.0, "Lanczos", reports)
    assert [r.status for r in reports] == ["ran"]


# ------------------------------------------------------------------ ADetailer

@pytest.mark.parametrize("available,model,note", [
    (["face_yolov8n.pt", "mediapipe_face_full"], "face_yolov8n.pt", ""),
    (["face_yolov8s.pt", "hand_yolov8n.pt", "mediapipe_face_full"], "face_yolov8s.pt", "no face_yolov8n.pt"),
    (["hand_yolov8n.pt", "mediapipe_face_full", "mediapipe_face_short"], "mediapipe_face_full", "used mediapipe"),
    (["person_yolov8n-seg.pt"], None, "no face model"),
    ([], None, "not in this WebUI"),
])
def test_adetailer_is_asked_only_for_a_model_it_has(available, model, note):
    chosen, why = choose_adetailer_model("face_yolov8n.pt", available)
    assert chosen == model and note in why


@pytest.mark.parametrize("wanted,available,model", [
    ("face_yolov8n.pt", ["mediapipe_face_full", "mediapipe_face_short"], None),
    ("face_yolov8n.pt", ["face_yolov8s.pt", "mediapipe_face_full"], "face_yolov8s.pt"),
    ("mediapipe_face_full", ["mediapipe_face_full", "face_yolov8n.pt"], "face_yolov8n.pt"),
])
def test_adetailer_gets_no_mediapipe_model_where_mediapipe_cannot_run(wanted, available, model):
    """Under the WebUIs' protobuf 3.20.0 ADetailer's mediapipe fails inside it and it says "nothing detected"
    (seen in real A1111): such a model is never asked for there."""
    chosen, why = choose_adetailer_model(wanted, available, mediapipe_ok=False)
    assert chosen == model
    if model is None:
        assert "cannot run beside the WebUI's protobuf" in why


def adetailer(modules):
    return next(s for s in modules.scripts.scripts_img2img.alwayson_scripts if s.title() == "ADetailer")


def detail(host, engine="adetailer"):
    return detail_pass(host, pose_map(), "portrait", "", [], 5, "Euler", "Karras", 6.0, 1,
                       DetailParams(engine=engine, size=256, steps=3))


@both(adetailer=True)
def test_adetailer_without_its_yolo_file_uses_its_mediapipe_model_with_a_note(webui):
    modules, host = webui
    del runtime.model_mapping["face_yolov8n.pt"]
    image, info = detail(host)
    assert adetailer(modules).seen[-1][2]["ad_model"] == "mediapipe_face_full"
    (report,) = info["reports"]
    assert report.status == "ran" and "no face_yolov8n.pt" in report.why and "mediapipe_face_full" in report.why
    assert not np.array_equal(np.asarray(image), np.asarray(pose_map()))


@both(adetailer=True)
def test_adetailer_that_fails_falls_back_to_our_own_pass_and_says_why(webui, monkeypatch):
    """ADetailer raises inside the WebUI's runner (its error wrapped in a console panel), which only prints it.
    The pass is reported failed with ADetailer's own message and our pass runs instead."""
    modules, host = webui
    monkeypatch.setattr(runtime.ADetailerScript, "error", "models/adetailer/face_yolov8n.pt")
    calls = len(modules.processing.calls)
    image, info = detail(host)
    lines = [r.line() for r in info["reports"]]
    assert lines[0].startswith("ADetailer: failed (FileNotFoundError: models/adetailer/face_yolov8n.pt")
    assert "the built-in pass looked instead" in lines[0] and "panel" not in lines[0]
    assert lines[-1] == "face detail: skipped (no face found)"  # the stand-in draws no face for our detector
    assert len(modules.processing.calls) == calls + 1 and image.size == (256, 384)


@both(adetailer=True)
def test_adetailer_that_finds_no_face_is_reported_skipped(webui, monkeypatch):
    modules, host = webui
    monkeypatch.setattr(runtime.ADetailerScript, "finds_face", False)
    image, info = detail(host)
    assert [r.line() for r in info["reports"]] == [
        "ADetailer: skipped (ADetailer found no face; the built-in pass looked instead)",
        "face detail: skipped (no face found)"]
    assert np.array_equal(np.asarray(image), np.asarray(pose_map()))


def test_our_detail_pass_without_a_face_is_reported_skipped(host):
    image, info = detail(host, engine="builtin")
    assert [r.line() for r in info["reports"]] == ["face detail: skipped (no face found)"]
    _image, info = detail(host)  # no ADetailer in this host: our pass, and why
    assert info["reports"][0].line() == "ADetailer: skipped (the ADetailer extension is not in this WebUI)"


# ------------------------------------------------------------------ the plan: result.json, infotext, notes

@both()
def test_a_plan_lists_each_stage_as_it_ran_and_the_png_claims_only_what_ran(webui, tmp_path, monkeypatch):
    from lib_profile.studio import run as studio_run
    from lib_profile.studio.plan import build_plan

    modules, host = webui
    monkeypatch.setattr(studio_run, "prompt_tokens", lambda prompt: 10)

    def broken(self, p, *units):
        p.extra_generation_params["ControlNet 0"] = "Module: None"
        raise TypeError("'<' not supported between instances of 'dict' and 'int'")

    monkeypatch.setattr(runtime.ControlNetScript, "process", broken)
    plan = build_plan("portrait photo", None, "three_quarter_left", "cool", count=2, seed=5,
                      controlnet_pose=host.controlnet_model("pose"), controlnet_tile=host.controlnet_model("tile"),
                      width=256, height=384, steps=3)
    result = studio_run.run_plan(plan, host, tmp_path / "out")
    first = result["images"][0]
    statuses = {s["stage"]: s["status"] for s in first["stages"]}
    assert statuses == {"0:txt2img": "failed", "1:detail": "skipped", "2:refine": "ran", "3:detail": "skipped",
                        "4:upscale": "failed", "5:grade": "ran"}
    tile = next(p for s in first["stages"] if s["stage"] == "4:upscale" for p in s["parts"]
                if p["part"] == "ControlNet tile")
    assert tile["times"] == studio_run.upscale_tiles(256, 384, plan, plan.stages[4].params)
    notes = "\n".join(result["notes"])
    assert "txt2img: ControlNet pose failed in 2 of 2 portrait(s) (ControlNet's process raised TypeError" in notes
    assert "detail: face detail skipped in 2 of 2 portrait(s) (no face found)" in notes
    text = Image.open(tmp_path / "out" / first["file"]).info["parameters"]
    assert "ControlNet 0" not in text and "Profile Studio stages: \"txt2img failed, detail skipped" in text
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert saved["images"][0]["stages"] == first["stages"]


# ------------------------------------------------------------------ options and the config file

@both()
def test_overrides_never_reach_the_webui_config_file(webui, tmp_path):
    """A settings save while our pass runs (a quicksetting changed in the page, Forge's preset handler) wrote our
    CLIP skip into config.json; after the pass the options in memory are the user's again."""
    modules, host = webui
    config = tmp_path / "config.json"
    opts = modules.shared.opts
    opts.data.update({"sd_model_checkpoint": "model.safetensors", "return_mask": True})
    opts.save(str(config))
    before = config.read_bytes()
    seen = []

    def save_meanwhile(p, step):
        seen.append(dict(opts.data))
        opts.save(str(config))

    modules.processing.on_step = save_meanwhile
    host.txt2img(Txt2ImgRequest(prompt="x", seed=1, clip_skip=2, steps=2))
    host.img2img(Img2ImgRequest(prompt="x", seed=1, clip_skip=2, steps=2, init_image=pose_map(64, 64)))
    assert seen[0]["CLIP_stop_at_last_layers"] == 2 and seen[0]["return_mask"] is False  # in force while sampling
    assert config.read_bytes() == before
    assert opts.data == {"sd_model_checkpoint": "model.safetensors", "return_mask": True}
    assert "save" not in vars(opts)


# ------------------------------------------------------------------ interrupt keeps what is done

@both()
def test_an_interrupted_plan_keeps_its_finished_passes(webui, tmp_path, monkeypatch):
    from lib_profile.studio import run as studio_run
    from lib_profile.studio.plan import build_plan

    modules, host = webui
    monkeypatch.setattr(studio_run, "prompt_tokens", lambda prompt: 10)
    plan = build_plan("portrait photo", None, None, "cool", count=2, seed=5, width=256, height=384, steps=3)

    def interrupt_in_the_second_portraits_refine(p, step):
        if p.seed == 6 and getattr(p, "init_images", None):  # portrait 2's first img2img pass: its refine
            modules.shared.state.interrupt()

    modules.processing.on_step = interrupt_in_the_second_portraits_refine
    with pytest.raises(Interrupted) as stopped:
        with host.job("task(i)", studio_run.count_passes(plan)):
            studio_run.run_plan(plan, host, tmp_path / "out", control=host.control())
    kept = stopped.value.result
    assert kept["interrupted"] and len(kept["images"]) == 1
    assert [s["stage"] for s in kept["unfinished"]["stages"]] == ["0:txt2img", "1:detail"]
    out = tmp_path / "out"
    assert (out / kept["images"][0]["file"]).is_file() and (out / kept["unfinished"]["file"]).is_file()
    assert "unfinished after txt2img, detail skipped" in Image.open(out / kept["unfinished"]["file"]).info["parameters"]
    assert json.loads((out / "result.json").read_text())["interrupted"] is True
    assert (out / "contact_sheet.png").is_file()


def test_bad_reports_are_refused():
    with pytest.raises(ValueError):
        StageReport("x", "maybe")
    with pytest.raises(HostError):
        detail_pass(None, pose_map(), "", "", [], 1, "Euler", "Karras", 6.0, 1, DetailParams(engine="other"))


# ------------------------------------------------------------------ the WebUI's LoRA list and caches

def test_the_webui_lora_list_is_refreshed_and_a_deleted_lora_forgotten(webui, tmp_path):
    modules, host = webui
    import sys

    host.lora_list_changed()
    assert sys.modules["networks"].refreshed == [1]
    cache = modules.cache
    for sub in ("hashes", "hashes-addnet", "safetensors-metadata"):
        cache.cache(sub).update({"lora/alice-1": {"sha256": "ab"}, "lora/bob-2": {"sha256": "cd"}})
    params = tmp_path / "webui" / "params.txt"
    params.write_text("portrait, <lora:alice-1:0.9>\nSteps: 20", "utf-8")
    cleaned = host.forget_lora("alice-1")
    assert cleaned == ["cache hashes", "cache hashes-addnet", "cache safetensors-metadata", "params.txt"]
    assert all(list(cache.cache(s)) == ["lora/bob-2"] for s in ("hashes", "hashes-addnet", "safetensors-metadata"))
    assert not params.exists() and cache.dumps
    params.write_text("portrait, <lora:bob-2:0.9>", "utf-8")
    assert host.forget_lora("alice-1") == [] and params.exists()


def test_the_studio_tells_the_host_when_a_lora_comes_and_goes(host, tmp_path, monkeypatch):
    from safetensors.torch import save_file
    import torch

    from lib_profile.service import Studio

    events = []
    monkeypatch.setattr(host, "lora_list_changed", lambda: events.append("refresh"), raising=False)
    monkeypatch.setattr(host, "forget_lora", lambda name: events.append(f"forget {name}") or ["params.txt"],
                        raising=False)
    studio = Studio(host, tmp_path / "data")
    try:
        slug = studio.create_identity("Alice")["slug"]
        run = tmp_path / "run"
        run.mkdir()
        save_file({"x": torch.zeros(1)}, str(run / "alice-1.safetensors"), metadata={"ss_network_dim": "4"})
        studio._publish(slug, run, {"file": "alice-1.safetensors", "choice": {"identity_similarity": 0.5}})
        assert events == ["refresh"]
        removed = studio.delete_identity(slug)
        assert events == ["refresh", "forget alice-1", "refresh"] and "params.txt: alice-1" in removed
    finally:
        studio.close()


@both()
def test_settings_can_switch_a_controlnet_off_or_name_another(webui, tmp_path, monkeypatch):
    """settings {"controlnet_pose": null} makes the plan without the pose ControlNet (it was a TypeError: the
    job passed the host's model and the setting both)."""
    from lib_profile.service import Studio
    from lib_profile.studio import run as studio_run

    modules, host = webui
    monkeypatch.setattr(studio_run, "prompt_tokens", lambda prompt: 10)
    studio = Studio(host, tmp_path / "data")
    try:
        studio.create_identity("Anna", "woman")
        small = {"width": 128, "height": 192, "steps": 2}
        off = {"detail": False, "refine": False, "detail2": False, "upscale": False, "grade": False}
        plans = []
        for extra in ({}, {"controlnet_pose": None}, {"controlnet_pose": "control_v11p_sd15_openpose"}):
            job = studio.generate("anna", "three_quarter_left", "cool", 1, 3, switches=off,
                                  settings={**small, **extra})
            job = studio.jobs.wait(job["id"], timeout=120)
            assert job["state"] == "done", job["error"]
            plans.append(json.loads((Path(job["result"]["folder"]) / "plan.json").read_text())["controlnet_pose"])
        pose = host.controlnet_model("pose")
        assert pose and plans == [pose, None, pose]
    finally:
        studio.close()
