"""The WebUI host (A1111 and Forge flavours) against stand-ins that follow docs/webui-hosts.md."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from PIL import Image

from lib_profile.hosts.base import (ControlUnit, FaceDetailRequest, HostError, Img2ImgRequest, InpaintRequest,
                                    Interrupted, LoraRef, Txt2ImgRequest)
from lib_profile.hosts.webui import adetailer
from lib_profile.families import SD15, SDXL
from lib_profile.hosts.webui.controlnet import family_problem, model_stem, resolve_model_name
from lib_profile.hosts.webui.flavours import detect_flavour
from lib_profile.hosts.webui.host import WebUIHost
from lib_profile.hosts.webui.processing import filtered_runner, processing_kwargs
from lib_profile.prompts.parse import lora_tags

try:
    from standins import webui as standin
except ImportError:
    from tests.standins import webui as standin

POSE = "control_v11p_sd15_openpose [cab727d4]"
TILE = "control_v11f1e_sd15_tile [a371b31b]"
FLAVOURS = ["a1111", "forge"]


@pytest.fixture
def webui(tmp_path, request):
    """(modules package, WebUIHost) for the flavour in ``request.param`` (default a1111, ControlNet present)."""
    opts = dict(flavour="a1111", cn_models=[POSE, TILE])
    opts.update(getattr(request, "param", {}) or {})
    with standin.installed(tmp_path / "webui", lora_dir=str(tmp_path / "webui" / "models" / "Lora"), **opts) as m:
        yield m, WebUIHost(detect_flavour())


def both(**extra):
    return pytest.mark.parametrize("webui", [dict(flavour=f, **extra) for f in FLAVOURS], indirect=True, ids=FLAVOURS)


def pose_map(w=512, h=768):
    return Image.new("RGB", (w, h), (10, 20, 30))


# ------------------------------------------------------------------ pure helpers

def test_lora_tags_are_added_once():
    lora = LoraRef("/x/alice-20261122-1.safetensors", 0.9)
    assert lora_tags("photo", [lora]) == "photo, <lora:alice-20261122-1:0.9>"
    assert lora_tags("photo <lora:alice-20261122-1:0.5>", [lora]) == "photo <lora:alice-20261122-1:0.5>"
    assert lora_tags("", [lora]) == "<lora:alice-20261122-1:0.9>"


@pytest.mark.parametrize("wanted,kind,expected", [
    (POSE, None, POSE),
    ("control_v11p_sd15_openpose", None, POSE),
    ("/models/ControlNet/control_v11p_sd15_openpose.pth", None, POSE),
    ("control_v11f1e_sd15_tile.safetensors", None, TILE),
    (None, "pose", POSE),
    (None, "tile", TILE),
    ("not_there", "pose", None),
])
def test_controlnet_model_names_resolve_to_the_exact_webui_name(wanted, kind, expected):
    assert resolve_model_name(wanted, ["None", POSE, TILE], kind) == expected


def test_default_controlnet_prefers_sd15_and_skips_sdxl():
    names = ["thibaud_xl_openpose [11111111]", "my_openpose_fp16 [22222222]"]
    assert resolve_model_name(None, names, "pose") == "my_openpose_fp16 [22222222]"
    assert resolve_model_name(None, ["thibaud_xl_openpose [1]"], "pose") is None


@pytest.mark.parametrize("kind, name", [(k, n) for k in ("pose", "tile") for n in SDXL.controlnet_files(k)])
def test_default_controlnet_never_picks_a_usual_sdxl_file_and_a_named_one_gets_the_family_message(kind, name):
    """Every usual SDXL ControlNet file of the family data (TTPlanet's tile says nothing of XL in its name)."""
    assert resolve_model_name(None, [f"{name} [12345678]"], kind) is None
    assert family_problem(f"{name} [12345678]") == (
        f"ControlNet model {name} is for SDXL and the checkpoint is SD1.5: use an SD1.5 ControlNet model such as "
        "control_v11p_sd15_openpose, or load an SDXL checkpoint.")


@pytest.mark.parametrize("name", [n for k in ("pose", "tile") for n in SD15.controlnet_files(k)]
                         + ["my_openpose_fp16 [22222222]"])
def test_sd15_controlnet_names_have_no_family_problem(name):
    assert family_problem(name) is None


def test_processing_kwargs_save_nothing_and_carry_clip_skip():
    req = InpaintRequest(prompt="p", negative_prompt="n", steps=12, sampler="Euler", scheduler="Karras", seed=7,
                         clip_skip=2, init_image=pose_map(), mask=Image.new("L", (512, 768)), padding=24,
                         mask_blur=6, denoising_strength=0.4)
    kw = processing_kwargs("inpaint", req, ("o", "g"))
    assert kw["do_not_save_samples"] and kw["do_not_save_grid"] and kw["n_iter"] == 1
    assert kw["override_settings"]["CLIP_stop_at_last_layers"] == 2
    assert kw["override_settings"]["return_mask"] is False
    assert (kw["seed"], kw["steps"], kw["sampler_name"], kw["scheduler"]) == (7, 12, "Euler", "Karras")
    assert (kw["inpaint_full_res"], kw["inpaint_full_res_padding"], kw["mask_blur"], kw["inpainting_fill"]) == \
        (True, 24, 6, 1)
    assert "mask" not in kw  # set as p.image_mask after construction


def test_filtered_runner_copies_and_leaves_the_global_runner_alone(webui):
    modules, _host = webui
    base = modules.scripts.scripts_txt2img
    before = [(s.title(), s.args_from, s.args_to) for s in base.alwayson_scripts]
    runner, args, missing = filtered_runner(base, [("controlnet", [{"a": 1}, {"b": 2}]), ("adetailer", [1])])
    assert missing == ["adetailer"] and args == [{"a": 1}, {"b": 2}]
    (cn,) = runner.alwayson_scripts
    assert (cn.args_from, cn.args_to) == (0, 2)
    assert cn is not base.alwayson_scripts[1] and runner.callback_map is not base.callback_map
    assert [(s.title(), s.args_from, s.args_to) for s in base.alwayson_scripts] == before


# ------------------------------------------------------------------ runs through the stand-in WebUI

@both()
def test_txt2img_keeps_our_settings_and_passes_per_flavour_controlnet_units(webui):
    modules, host = webui
    flavour = modules.scripts.scripts_txt2img.alwayson_scripts[1].flavour
    req = Txt2ImgRequest(prompt="portrait", width=512, height=768, steps=9, sampler="DPM++ 2M", scheduler="Karras",
                         seed=42, clip_skip=2, controlnets=[ControlUnit("pose", pose_map(), "control_v11p_sd15_openpose",
                                                                         0.8, 0.0, 0.9)])
    res = host.txt2img(req)
    (p,) = modules.processing.calls
    assert p.is_api and p.closed
    assert (p.steps, p.sampler_name, p.scheduler, p.seed) == (9, "DPM++ 2M", "Karras", 42)
    assert len(res.images) == 1 and res.images[0].size == (512, 768)  # the detected map is not returned
    assert res.seeds == [42] and res.params["sampler"] == "DPM++ 2M"
    cn = p.scripts.alwayson_scripts[0]
    (units,) = cn.units_seen
    (unit,) = units
    assert unit["model"] in host.controlnet_models() and model_stem(unit["model"]) == model_stem(POSE)
    assert unit["weight"] == 0.8 and unit["guidance_end"] == 0.9
    if flavour == "forge":
        assert unit["module"] == "None" and isinstance(unit["image"], np.ndarray)  # Forge 2 takes no dict pair
        assert p.hr_additional_modules == ["Use same choices"] and p.hr_cfg == req.cfg_scale
    else:
        assert unit["module"] == "none" and unit["resize_mode"] == "Just Resize"
        assert not hasattr(p, "hr_cfg")  # A1111's Txt2Img has no such field (passing it is a TypeError)
    glob = modules.scripts.scripts_txt2img.alwayson_scripts[1]
    assert cn is not glob and (glob.args_from, glob.args_to) == (3, 6)  # a copy ran; the global one is untouched


@both()
def test_img2img_and_inpaint_use_the_img2img_runner_and_the_mask(webui):
    modules, host = webui
    image = Image.new("RGB", (512, 768), (200, 100, 50))
    out = host.img2img(Img2ImgRequest(prompt="x", width=512, height=768, seed=1, init_image=image,
                                      denoising_strength=0.3))
    assert out.images[0].size == (512, 768)
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (100, 100, 300, 300))
    res = host.inpaint(InpaintRequest(prompt="x", seed=3, init_image=image, mask=mask, denoising_strength=0.4))
    p = modules.processing.calls[-1]
    assert p.image_mask is not None and p.inpaint_full_res and p.inpainting_fill == 1
    a, b = np.asarray(image), np.asarray(res.images[0])
    assert (a[np.asarray(mask) == 0] == b[np.asarray(mask) == 0]).all()
    assert (a[np.asarray(mask) == 255] != b[np.asarray(mask) == 255]).any()


@both()
def test_an_edit_of_a_refine_pass_is_one_img2img_pair(webui):
    """Prompt-to-Prompt on an img2img pass: both prompts, one seed, one init image, in one WebUI batch."""
    from lib_profile.attention.p2p import Edit, edit_request

    modules, host = webui
    image = Image.new("RGB", (512, 768), (200, 100, 50))
    req = Img2ImgRequest(prompt="photo, sharp focus", width=512, height=768, seed=9, init_image=image,
                         denoising_strength=0.25)
    out = host.img2img(edit_request(req, Edit(source=req.prompt, target="photo, soft focus", mode="swap")))
    p = modules.processing.calls[-1]
    assert p.prompt == ["photo, sharp focus", "photo, soft focus"] and p.seed == [9, 9] and p.batch_size == 2
    assert len(p.init_images) == 1 and p.denoising_strength == 0.25
    assert len(out.images) == 2 and out.seeds == [9, 9]


class _Chunk:
    def __init__(self, tokens):
        self.tokens = tokens


class _TextEngine:
    """The WebUI's ``tokenize_line``: 77-id chunks (BOS, the prompt's ids, EOS padding)."""

    def tokenize_line(self, text):
        from lib_profile.attention.explain import tokenizer

        tok = tokenizer()
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return [_Chunk([tok.bos_token_id, *ids, *[tok.eos_token_id] * (76 - len(ids))])], len(ids)


@both()
def test_word_positions_come_from_the_webuis_own_tokenizer(webui):
    import types

    from lib_profile.attention.daam import TokenMap
    from lib_profile.attention.explain import tokenizer

    modules, host = webui
    if host.name == "forge":
        modules.shared.sd_model = types.SimpleNamespace(text_processing_engine=_TextEngine())
    else:
        modules.shared.sd_model = types.SimpleNamespace(cond_stage_model=_TextEngine())
    chunks = host.token_chunks("a red cat <lora:alice-1:0.9>")
    assert len(chunks) == 1 and len(chunks[0]) == 77
    tokens = TokenMap.for_host(host, tokenizer(), "a red cat")
    assert tokens.positions(tokenizer(), "red cat") == [2, 3]


@pytest.mark.parametrize("webui", [dict(flavour="forge")], indirect=True, ids=["forge"])
def test_forge_before_its_first_generation_checks_words_with_our_tokenizer_and_loads_the_model_in_a_job(webui):
    """Forge loads its model only at its first generation (``shared.sd_model`` is a ``FakeInitialModel`` until
    then): an explain asked for before that is checked with our tokenizer; its job, which holds the WebUI's queue,
    loads the model as ``process_images`` would, and then uses Forge's own tokenizer."""
    import types

    from lib_profile.attention.daam import TokenMap
    from lib_profile.attention.explain import tokenizer

    modules, host = webui
    modules.shared.sd_model = types.SimpleNamespace(cond_stage_model=None, chunk_length=75)  # FakeInitialModel
    loads = []

    def forge_model_reload():
        loads.append(1)
        modules.shared.sd_model = types.SimpleNamespace(text_processing_engine=_TextEngine())

    modules.sd_models.forge_model_reload = forge_model_reload
    assert host.token_chunks("a red cat") is None and not loads  # a request: no model loaded from it
    assert TokenMap.for_host(host, tokenizer(), "a red cat").positions(tokenizer(), "red cat") == [2, 3]
    with host.job("task(x)", 1):
        assert len(host.token_chunks("a red cat")) == 1 and loads == [1]
        assert host.token_chunks("a red cat") is not None and loads == [1]

    def broken():
        raise KeyError("checkpoint_info")

    modules.shared.sd_model = types.SimpleNamespace(cond_stage_model=None, chunk_length=75)
    modules.sd_models.forge_model_reload = broken
    with host.job("task(y)", 1), pytest.raises(HostError, match="could not load the selected checkpoint"):
        host.token_chunks("a red cat")


@both(cn_models=None)
def test_no_controlnet_extension_runs_pose_by_prompt_and_names_the_file(webui):
    modules, host = webui
    assert host.controlnet_model("pose") is None
    assert any("control_v11p_sd15_openpose.pth" in n and "not installed" in n for n in host.notes)
    res = host.txt2img(Txt2ImgRequest(prompt="x", seed=1, controlnets=[ControlUnit("pose", pose_map(512, 512),
                                                                                   "control_v11p_sd15_openpose")]))
    assert len(res.images) == 1 and res.params["notes"]


@both(cn_models=[])
def test_controlnet_without_a_model_names_the_file(webui):
    _modules, host = webui
    assert host.controlnet_model("tile") is None
    assert any("control_v11f1e_sd15_tile.pth" in n and "models/ControlNet" in n for n in host.notes)
    with pytest.raises(HostError, match="control_v11p_sd15_openpose.pth"):
        host.txt2img(Txt2ImgRequest(prompt="x", controlnets=[ControlUnit("pose", pose_map(), "openpose_v2")]))


@both(cn_models=[POSE, "thibaud_xl_openpose [c7b9cadd]", "TTPLANET_Controlnet_Tile_realistic_v2 [1f2e3d4c]"])
def test_an_sdxl_controlnet_named_for_an_sd15_checkpoint_gets_the_family_message(webui):
    _modules, host = webui
    assert model_stem(host.controlnet_model("pose")) == model_stem(POSE) and host.controlnet_model("tile") is None
    for kind, name in (("pose", "thibaud_xl_openpose"), ("tile", "TTPLANET_Controlnet_Tile_realistic_v2")):
        with pytest.raises(HostError, match=f"ControlNet model {name} is for SDXL and the checkpoint is SD1.5"):
            host.txt2img(Txt2ImgRequest(prompt="x", controlnets=[ControlUnit(kind, pose_map(), name)]))


def test_loras_are_published_into_the_webui_lora_folder_and_tagged(webui, tmp_path):
    modules, host = webui
    src = tmp_path / "identities" / "alice-20261122-1.safetensors"
    src.parent.mkdir()
    src.write_bytes(b"x" * 100)
    host.txt2img(Txt2ImgRequest(prompt="portrait", seed=1, loras=[LoraRef(str(src), 0.9)]))
    copied = tmp_path / "webui" / "models" / "Lora" / "profile-studio" / src.name
    assert copied.read_bytes() == src.read_bytes()
    assert modules.processing.calls[-1].prompt == "portrait, <lora:alice-20261122-1:0.9>"
    inside = LoraRef(str(copied), 1.0)
    assert host.publish_lora(inside) is inside
    assert not list(copied.parent.glob("*.partial"))


def test_upscalers_by_name(webui):
    _modules, host = webui
    assert "Lanczos" in host.upscalers()
    assert host.upscale(pose_map(104, 152), 2.0, "R-ESRGAN 4x+").size == (208, 304)
    with pytest.raises(HostError, match="Lanczos"):
        host.upscale(pose_map(), 2.0, "SuperScale 9000")


def test_samplers_come_from_the_webui(webui):
    assert "DPM++ 2M" in webui[1].samplers()


def test_interrupt_within_a_pass_stops_the_host_call(webui):
    modules, host = webui
    steps = []
    modules.processing.on_step = lambda p, step: steps.append(step) or step == 2 and modules.shared.state.interrupt()
    with pytest.raises(Interrupted):
        host.txt2img(Txt2ImgRequest(prompt="x", steps=10, seed=1))
    assert steps == [1, 2]
    with pytest.raises(Interrupted):  # and nothing more runs until the next job begins
        host.img2img(Img2ImgRequest(prompt="x", seed=1, init_image=pose_map(), denoising_strength=0.3))
    assert len(modules.processing.calls) == 1
    assert host.control().should_interrupt()


@both(adetailer=True)
def test_adetailer_detail_pass_skips_img2img_and_gets_the_lora_prompt(webui):
    modules, host = webui
    req = FaceDetailRequest(prompt="photo", seed=1, init_image=pose_map(), denoising_strength=0.4,
                            loras=[LoraRef("/nowhere/alice.safetensors", 0.9)], detector="face_yolov8n.pt", dilate=12,
                            mask_blur=6, max_faces=2, padding=24, size=640, steps=15)
    host.adetailer_detail(req)
    p = modules.processing.calls[-1]
    script = p.scripts.alwayson_scripts[-1]
    assert script.title() == "ADetailer" and script.seen == [(True, True, {
        "ad_model": "face_yolov8n.pt", "ad_prompt": "photo, <lora:alice:0.9>", "ad_negative_prompt": "",
        "ad_denoising_strength": 0.4, "ad_mask_blur": 6, "ad_dilate_erode": 12, "ad_mask_k": 2,
        "ad_inpaint_only_masked": True, "ad_inpaint_only_masked_padding": 24, "ad_use_inpaint_width_height": True,
        "ad_inpaint_width": 640, "ad_inpaint_height": 640, "ad_use_steps": True, "ad_steps": 15})]
    assert "<lora:" not in str(p.prompt)  # the LoRA is in ADetailer's prompt only, the skipped img2img has none
    assert adetailer.image_request(req).loras == []


def test_adetailer_missing_is_a_clear_error(webui):
    with pytest.raises(HostError, match="ADetailer is not installed"):
        webui[1].adetailer_detail(FaceDetailRequest(prompt="x", init_image=pose_map()))


@both()
def test_flavour_is_detected(webui):
    modules, host = webui
    expected = "forge" if "modules_forge" in __import__("sys").modules else "a1111"
    assert host.name == expected


# ------------------------------------------------------------------ a whole plan as one WebUI job

@both()
def test_a_plan_runs_as_one_webui_job_and_the_progress_bar_spans_every_pass(webui, tmp_path, monkeypatch):
    from lib_profile.studio import run as studio_run
    from lib_profile.studio.plan import build_plan

    modules, host = webui
    monkeypatch.setattr(studio_run, "prompt_tokens", lambda prompt: 10)
    plan = build_plan("portrait photo", None, "three_quarter_left", "cool", count=2, seed=5,
                      controlnet_pose=host.controlnet_model("pose"), controlnet_tile=host.controlnet_model("tile"),
                      width=256, height=384, steps=4)
    passes = studio_run.count_passes(plan)
    lock = modules.call_queue.queue_lock
    with host.job("task(abc)", passes):
        assert lock.owner is not None and modules.shared.state.job_count == passes
        result = studio_run.run_plan(plan, host, tmp_path / "out", control=host.control())
    assert lock.owner is None and lock.acquired == 1
    assert modules.progress.log == [("queued", "task(abc)"), ("start", "task(abc)"), ("finish", "task(abc)")]
    # the stand-in draws flat colours, so the detail passes find no face and make no pass
    detail_stages = sum(1 for _i, s in plan.enabled() if s.kind == "detail") * plan.count
    calls = len(modules.processing.calls)
    assert calls == passes - detail_stages
    ((_begin, job), (_end, _job, job_no, job_count)) = modules.shared.state.log
    assert job == "task(abc)" and job_no == calls and job_count == passes
    assert len(result["images"]) == 2 and (tmp_path / "out" / result["images"][0]["file"]).is_file()
    first = modules.processing.calls[0]
    assert first.scripts.alwayson_scripts[0].units_seen[0][0]["model"] == host.controlnet_model("pose")
    tiles = [c for c in modules.processing.calls if c.width == 256 and c.height == 384 and c.scripts.alwayson_scripts
             and c.scripts.alwayson_scripts[0].units_seen[0][0]["model"] == host.controlnet_model("tile")]
    assert len(tiles) == studio_run.upscale_tiles(256, 384, plan, plan.stages[4].params) * plan.count


def test_a_failing_stage_still_ends_the_job_and_frees_the_lock(webui):
    modules, host = webui
    with pytest.raises(ValueError):
        with host.job("task(x)", 3):
            host.txt2img(Txt2ImgRequest(prompt="x", sampler="No Such Sampler"))
    assert modules.call_queue.queue_lock.owner is None
    assert modules.progress.log[-1] == ("finish", "task(x)")
    assert modules.shared.state.log[-1][0] == "end"


def test_requests_are_not_changed_by_the_host(webui, tmp_path):
    _modules, host = webui
    src = tmp_path / "a.safetensors"
    src.write_bytes(b"1")
    req = Txt2ImgRequest(prompt="x", seed=1, loras=[LoraRef(str(src), 1.0)])
    before = copy.deepcopy(req.describe())
    host.txt2img(req)
    assert req.describe() == before


@both(adetailer=True)
def test_the_detail_stage_can_use_adetailer_with_the_identity_lora(webui, tmp_path):
    from lib_profile.studio.detail import DetailParams, detail_pass

    modules, host = webui
    lora = tmp_path / "alice-1.safetensors"
    lora.write_bytes(b"1")
    image, info = detail_pass(host, pose_map(), "photo of alice", "", [LoraRef(str(lora), 0.9)], 5, "Euler", "Karras",
                              6.0, 2, DetailParams(engine="adetailer", size=512, steps=12))
    (args,) = modules.processing.calls[-1].scripts.alwayson_scripts[-1].seen
    assert args[:2] == (True, True) and args[2]["ad_prompt"] == "photo of alice, <lora:alice-1:0.9>"
    assert args[2]["ad_steps"] == 12 and info["engine"] == "adetailer" and image.size == (512, 768)


def test_adetailer_engine_off_the_webui_falls_back_to_our_pass_and_says_why(host):
    from lib_profile.studio.detail import DetailParams, detail_pass

    _image, info = detail_pass(host, pose_map(64, 64), "x", "", [], 1, "Euler", "Karras", 6.0, 1,
                               DetailParams(engine="adetailer"))
    assert "not in this WebUI" in info["reports"][0].why and info["reports"][-1].part == "face detail"
    with pytest.raises(HostError, match="builtin"):
        DetailParams(engine="magic")


@pytest.mark.parametrize("webui", [dict(flavour="forge")], indirect=True, ids=["forge"])
def test_forge_attention_control_rides_in_the_runner_and_leaves(webui):
    import types

    from lib_profile.attention.control import Controller

    modules, host = webui
    seen = []

    class Unet:
        def __init__(self):
            self.model = types.SimpleNamespace(diffusion_model=__import__("torch").nn.Module())
            self.patches = {}

        def clone(self):
            seen.append("clone")
            return Unet()

    modules.shared.sd_model = types.SimpleNamespace(forge_objects=types.SimpleNamespace(unet=Unet()))
    processing = modules.processing
    original = processing.StableDiffusionProcessingTxt2Img

    class P(original):
        @property
        def sd_model(self):
            return modules.shared.sd_model

        @sd_model.setter
        def sd_model(self, value):
            pass

    processing.StableDiffusionProcessingTxt2Img = P
    req = Txt2ImgRequest(prompt="a b", prompts=["a b", "a c"], seeds=[7, 7], batch_size=2)
    res = host.txt2img(req, RunControlWith(Controller()))
    p = processing.calls[-1]
    assert [s.title() for s in p.scripts.alwayson_scripts] == ["Profile Studio attention"]
    assert seen == ["clone"] and p.prompt == ["a b", "a c"] and res.seeds == [7, 7]
    assert not modules.script_callbacks.callbacks["cfg_denoiser"]


def RunControlWith(controller):
    from lib_profile.hosts.base import RunControl

    return RunControl(attention=controller)


def test_overridden_settings_do_not_stick_after_a_pass(webui):
    """A1111 restores only options already saved; our CLIP skip override must not become the user's setting."""
    modules, host = webui
    data = modules.shared.opts.data
    data["samples_save"] = True
    host.txt2img(Txt2ImgRequest(prompt="x", seed=1, clip_skip=2))
    assert "CLIP_stop_at_last_layers" not in data and "return_mask" not in data
    assert data["samples_save"] is True


@both()
def test_hires_fix_goes_to_the_webuis_own_fields(webui):
    modules, host = webui
    res = host.txt2img(Txt2ImgRequest(prompt="x", width=512, height=768, seed=1, hires_scale=1.5, hires_steps=12,
                                      hires_denoising=0.45, hires_upscaler="R-ESRGAN 4x+"))
    (p,) = modules.processing.calls
    assert (p.enable_hr, p.hr_scale, p.hr_upscaler, p.hr_second_pass_steps, p.denoising_strength) == \
        (True, 1.5, "R-ESRGAN 4x+", 12, 0.45)
    assert res.images[0].size == (768, 1152) and res.params["width"] == 768
    assert res.params["first_pass_size"] == [512, 768]
    host.txt2img(Txt2ImgRequest(prompt="x", seed=1))
    assert not modules.processing.calls[-1].enable_hr  # off unless asked
    with pytest.raises(HostError, match="Latent, Latent \\(nearest\\), None, Lanczos"):
        host.txt2img(Txt2ImgRequest(prompt="x", seed=1, hires_scale=2, hires_upscaler="SuperScale 9000"))


@both()
def test_a_request_names_a_checkpoint_from_the_webuis_list(webui, monkeypatch):
    """Training's checkpoint in a request is one of the WebUI's checkpoints (title, name, file name or stem), as
    ``sd_models.checkpoints_list`` holds them; never a path of the request's own."""
    import types

    from lib_profile.hosts.base import resolve_checkpoint

    _m, host = webui
    info = types.SimpleNamespace(filename="/webui/models/Stable-diffusion/sub/real.safetensors",
                                 name="sub/real.safetensors", model_name="sub_real", title="sub/real.safetensors [abc]")
    sd_models = types.SimpleNamespace(checkpoints_list={info.title: info})
    real = host._m
    monkeypatch.setattr(host, "_m", lambda name: sd_models if name == "sd_models" else real(name))
    for name in (info.title, info.name, "sub_real", "real.safetensors", "real", info.filename):
        assert resolve_checkpoint(host, name) == info.filename
    for bad in ("/etc/passwd", "../real.safetensors", "sub/../../x.ckpt", "other"):
        with pytest.raises(HostError, match="train on one of"):
            resolve_checkpoint(host, bad)
