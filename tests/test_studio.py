"""The studio plan on the diffusers host: stages, switches, seeds, the face detail pass, the files."""

import json

import numpy as np
import pytest
from PIL import Image

from lib_profile.hosts.diffusers import masking
from lib_profile.hosts.base import HostError
from lib_profile.studio.detail import DetailParams, detail_pass
from lib_profile.studio.plan import Plan, build_plan
from lib_profile.studio.run import run_plan

SMALL = dict(width=64, height=96, steps=3)


def small_plan(tiny_controlnet, **kw):
    base = dict(prompt="studio portrait photo of ohwx woman", lora=None, pose=None, tone_name="cool", count=1, seed=11,
                controlnet_tile=str(tiny_controlnet), **SMALL)
    base.update(kw)
    plan = build_plan(**base)
    for stage in plan.stages:  # keep the tiny run tiny
        if "steps" in stage.params:
            stage.params["steps"] = 3
        if "size" in stage.params:
            stage.params["size"] = 64
        if "tile_overlap" in stage.params:
            stage.params["tile_overlap"] = 16
    return plan


def test_the_whole_default_plan_runs(host, tiny_controlnet, tmp_path):
    plan = small_plan(tiny_controlnet, count=2, pose="three_quarter_left", controlnet_pose=str(tiny_controlnet))
    result = run_plan(plan, host, tmp_path)
    assert Image.open(tmp_path / "pose.png").size == (64, 96) and not plan.notes
    assert [s.kind for s in plan.stages] == ["txt2img", "detail", "refine", "detail", "upscale", "grade"]
    assert len(result["images"]) == 2 and [i["seed"] for i in result["images"]] == [11, 12]
    first = result["images"][0]
    assert list(first["stage_seconds"]) == ["0:txt2img", "1:detail", "2:refine", "3:detail", "4:upscale", "5:grade"]
    image = Image.open(tmp_path / first["file"])
    assert image.size == (128, 192)  # upscaled 2x
    text = image.text["parameters"]
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in text and "Size: 128x192" in text and "tone cool" in text
    assert json.loads((tmp_path / "result.json").read_text())["images"][1]["file"] == result["images"][1]["file"]
    assert Plan.load(tmp_path / "plan.json").to_dict() == plan.to_dict()
    assert (tmp_path / "contact_sheet.png").is_file()


@pytest.mark.parametrize("off", ["detail", "refine", "detail2", "upscale", "grade"])
def test_each_stage_switch_is_honoured(host, tiny_controlnet, tmp_path, off):
    plan = small_plan(tiny_controlnet, switches={off: False})
    result = run_plan(plan, host, tmp_path)
    ran = list(result["images"][0]["stage_seconds"])
    index = {"detail": 1, "refine": 2, "detail2": 3, "upscale": 4, "grade": 5}[off]
    assert not any(r.startswith(f"{index}:") for r in ran) and len(ran) == 5
    size = Image.open(tmp_path / result["images"][0]["file"]).size
    assert size == ((64, 96) if off == "upscale" else (128, 192))


def test_a_fixed_seed_reproduces_the_images(host, tiny_controlnet, tmp_path):
    a = run_plan(small_plan(tiny_controlnet), host, tmp_path / "a")
    b = run_plan(small_plan(tiny_controlnet), host, tmp_path / "b")
    pa = np.asarray(Image.open(tmp_path / "a" / a["images"][0]["file"]))
    pb = np.asarray(Image.open(tmp_path / "b" / b["images"][0]["file"]))
    assert np.array_equal(pa, pb)
    c = run_plan(small_plan(tiny_controlnet, seed=99), host, tmp_path / "c")
    assert not np.array_equal(pa, np.asarray(Image.open(tmp_path / "c" / c["images"][0]["file"])))


def test_detail_pass_changes_only_the_masked_face(host, astronaut):
    params = DetailParams(steps=3, size=64, denoising_strength=0.6)
    out, info = detail_pass(host, astronaut, "face", "", [], 1, "Euler a", "Automatic", 7.0, 1, params)
    assert info["faces"] == 1
    changed = (np.abs(np.asarray(out, np.int16) - np.asarray(astronaut, np.int16)).sum(-1) > 0)
    inside = np.asarray(masking.soft_mask(info["mask"], params.mask_blur)) > 0
    assert changed.sum() > 1000 and not (changed & ~inside).any()
    x1, y1, x2, y2 = info["region"]
    face_box = (173, 67, 278, 172)  # mediapipe's box on this photo
    assert x1 <= face_box[0] and y1 <= face_box[1] and x2 >= face_box[2] and y2 >= face_box[3]


def test_no_face_means_no_change(host):
    blank = Image.new("RGB", (96, 96), (120, 130, 140))
    out, info = detail_pass(host, blank, "face", "", [], 1, "Euler a", "Automatic", 7.0, 1, DetailParams(steps=2))
    assert info["faces"] == 0 and np.array_equal(np.asarray(out), np.asarray(blank))


def test_long_prompts_are_flagged(host, tiny_controlnet, tmp_path):
    plan = small_plan(tiny_controlnet, prompt=", ".join(["a very detailed studio portrait"] * 20),
                      switches={"detail": False, "refine": False, "detail2": False, "upscale": False})
    result = run_plan(plan, host, tmp_path)
    assert result["prompt_tokens"] > 75 and any("CLIP tokens" in n for n in result["notes"])


@pytest.mark.parametrize("kw, message", [
    (dict(tone_name="sepia"), "Unknown tone"),
    (dict(count=0), "count"),
    (dict(lora="/nope/anna.safetensors"), "LoRA file not found"),
    (dict(switches={"sharpen": True}), "Unknown stage switch"),
])
def test_bad_choices_are_named(tiny_controlnet, kw, message):
    with pytest.raises(HostError, match=message):
        small_plan(tiny_controlnet, **kw)


def test_pose_without_a_controlnet_model_says_which_file_to_install(tiny_controlnet):
    plan = small_plan(tiny_controlnet, pose="frontal_shoulders")
    assert any("control_v11p_sd15_openpose.pth" in n for n in plan.notes)
