"""The WebUI host on an SDXL checkpoint (A1111 and Forge stand-ins): the family it reports (loaded, or selected and
not loaded yet), generation and training let through, the studio's SDXL sizes, ControlNet models by family, LoRAs
of the other family refused, attention control (explain, edit) and photo inversion let through
(tests/test_webui_sdxl_attention.py, tests/test_webui_denoiser.py), and another family (SD2) refused up front naming
it and what to do."""

from __future__ import annotations

import re
import numpy as np
import pytest
from PIL import Image

from lib_profile.families import SD15, SDXL
from lib_profile.hosts.base import ControlUnit, HostError, Img2ImgRequest, InpaintRequest, LoraRef, Txt2ImgRequest
from lib_profile.hosts.webui.flavours import detect_flavour
from lib_profile.hosts.webui.host import WebUIHost

from pathlib import Path

try:
    from standins import models as standin_models
    from standins import webui as standin
except ImportError:
    from tests.standins import models as standin_models
    from tests.standins import webui as standin

LORAS = Path(__file__).resolve().parent / "data" / "loras"
FLAVOURS = ["a1111", "forge"]
OTHER = "needs an SD1.5 or SDXL checkpoint, and the WebUI has an SD2 checkpoint loaded; pick an SD1.5 or SDXL checkpoint"
SDXL_CN = ["controlnet-openpose-sdxl-1.0 [aaaa1111]", "TTPLANET_Controlnet_Tile_realistic_v2 [bbbb2222]",
           "control_v11p_sd15_openpose [cab727d4]", "control_v11f1e_sd15_tile [a371b31b]"]


def _file(path: Path, shapes: dict, meta: dict | None = None) -> Path:
    from safetensors.numpy import save_file

    save_file({k: np.zeros(s, dtype=np.float16) for k, s in shapes.items()}, str(path), metadata=meta)
    return path


SDXL_LORAS = {  # an SDXL LoRA as each sign shows it: metadata, kohya's SDXL names, the 2048-wide text
    "meta": ({"lora_unet_x.lora_down.weight": (4, 8)}, {"ss_base_model_version": "sdxl_base_v1-0"}),
    "te1": ({"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 768)}, None),
    "width": ({"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 2048)}, None),
}
SD15_KEYS = ["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
             "model.diffusion_model.input_blocks.0.0.weight"]
SDXL_KEYS = ["conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
             "conditioner.embedders.1.model.token_embedding.weight", "model.diffusion_model.input_blocks.0.0.weight"]


@pytest.fixture(params=FLAVOURS)
def xl(tmp_path, request):
    """(modules, host, model) with an SDXL model loaded in the stand-in WebUI (``is_sdxl``, as both set it)."""
    with standin.installed(tmp_path / "webui", flavour=request.param, cn_models=SDXL_CN,
                           lora_dir=str(tmp_path / "webui" / "models" / "Lora")) as modules:
        standin_models.install(request.param, "cpu")
        model = modules.sd_models.model_data.sd_model
        model.is_sdxl = True
        yield modules, WebUIHost(detect_flavour()), model


def pose_map(w=832, h=1216):
    return Image.new("RGB", (w, h), (10, 20, 30))


# ---------------------------------------------------------------- the family the host reports

def test_the_host_reports_the_loaded_models_family_and_the_flags_follow(xl):
    _modules, host, model = xl
    assert host.model_family == "SDXL" and host.family_state() == ("SDXL", "loaded")
    assert host.attention_control and host.photo_inversion
    model.is_sdxl = False
    assert host.model_family == "SD1.5" and host.attention_control and host.photo_inversion


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("keys, family", [(SD15_KEYS, "SD1.5"), (SDXL_KEYS, "SDXL")], ids=["sd15", "sdxl"])
def test_a_selected_checkpoint_not_loaded_yet_gives_the_family(tmp_path, flavour, keys, family):
    """Forge (before its first generation, or after a pick in its menu) and A1111 (while it loads at start) have no
    model of the selected checkpoint loaded: its file's header gives the family, and loads nothing."""
    path = _file(tmp_path / "picked.safetensors", {k: (1,) for k in keys})
    with standin.installed(tmp_path / "webui", flavour=flavour) as modules:
        log = standin_models.install(flavour, "cpu")
        modules.sd_models.select_checkpoint = lambda: type("Info", (), {"filename": str(path)})()
        for loaded in (None, standin_models.FakeInitialModel(), modules.sd_models.model_data.sd_model):
            modules.sd_models.model_data.sd_model = loaded
            host = WebUIHost(detect_flavour())
            assert host.family_state() == (family, "selected")
        assert log["loads"] == ["model.safetensors"]  # only the stand-in's own start: nothing loaded to find out


def test_studio_plans_sdxl_sizes_on_the_webui_host(xl, tmp_path, monkeypatch):
    """A generate job through the studio service on the WebUI host with SDXL loaded: the plan is 832x1216 with its
    face detail at 1024, and the first pass runs at that size through the WebUI's processing."""
    from lib_profile.service import Studio

    modules, host, _model = xl
    studio = Studio(host, tmp_path / "data", lora_root=tmp_path / "loras", outputs_root=tmp_path / "out")
    try:
        studio.create_identity("Anna")
        job = studio.generate("anna", count=1, seed=3, prompt="studio portrait photo of a woman",
                              switches={"upscale": False, "refine": False})
        done = studio.jobs.wait(job["id"], timeout=120)
        assert done["state"] == "done", (done.get("error"), done.get("messages"))
        first = modules.processing.calls[0]
        assert (first.width, first.height) == SDXL.portrait == (832, 1216)
        from lib_profile.studio.plan import Plan

        saved = Plan.load(studio.output_file("anna", job["id"], "plan.json"))
        assert (saved.width, saved.height) == (832, 1216)
        assert [s.params["size"] for s in saved.stages if s.kind == "detail"] == [1024, 1024]
    finally:
        studio.close()


# ---------------------------------------------------------------- generation on SDXL

def test_txt2img_img2img_and_inpaint_run_on_sdxl_with_lora_tags_and_the_webuis_infotext(xl, tmp_path):
    modules, host, _model = xl
    lora = _file(tmp_path / "anna-xl.safetensors", *SDXL_LORAS["te1"])
    res = host.txt2img(Txt2ImgRequest(prompt="portrait", negative_prompt="blurry, " * 40, width=832, height=1216,
                                      seed=7, loras=[LoraRef(str(lora), 0.9)]))
    p = modules.processing.calls[-1]
    assert p.prompt == "portrait, <lora:anna-xl:0.9>" and p.negative_prompt == "blurry, " * 40  # no padding of ours
    assert (p.width, p.height) == (832, 1216) and res.images[0].size == (832, 1216)
    assert res.infotexts[0].startswith("portrait, <lora:anna-xl:0.9>\nSeed: 7")
    assert [r.line() for r in res.reports] == ["LoRA anna-xl: ran"]
    image = res.images[0]
    host.img2img(Img2ImgRequest(prompt="x", init_image=image, width=832, height=1216, seed=1))
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (300, 300, 500, 500))
    out = host.inpaint(InpaintRequest(prompt="face", init_image=image, mask=mask, width=1024, height=1024, seed=1))
    assert modules.processing.calls[-1].inpaint_full_res and out.images[0].size == image.size


@pytest.mark.parametrize("flag", ["is_sd2", "is_sd3"])
def test_other_families_are_still_refused_naming_both_that_run(xl, flag):
    _modules, host, model = xl
    model.is_sdxl = False
    setattr(model, flag, True)
    family = {"is_sd2": "SD2", "is_sd3": "SD3"}[flag]
    with pytest.raises(HostError, match=f"Generating needs an SD1.5 or SDXL checkpoint, and the WebUI has an {family} "
                                        "checkpoint loaded; pick an SD1.5 or SDXL checkpoint"):
        host.txt2img(Txt2ImgRequest(prompt="a", width=64, height=64, steps=1))


def test_training_on_sdxl_gets_its_slot_and_the_webuis_checkpoint_file(xl):
    """The training slot is no longer refused on SDXL: the WebUI's model is dropped (CPU) for the trainer process,
    which is given the WebUI's checkpoint file and reads the family from it."""
    modules, host, model = xl
    assert host.checkpoint_path() == model.sd_checkpoint_info.filename
    with host.training_slot("task(train)", 2):
        assert modules.sd_models.model_data.sd_model is not model


# ---------------------------------------------------------------- explain, edit and photo inversion run on SDXL; SD2 is refused

def test_attention_control_and_photo_inversion_are_declared_on_sdxl_and_refused_on_sd2(xl):
    """On SDXL both run (under control: tests/test_webui_sdxl_attention.py; the lent model:
    tests/test_webui_denoiser.py's SDXL cases); another family (SD2) is refused up front naming it."""
    modules, host, model = xl
    host.check_attention_control("Explain (DAAM word maps)")
    assert host.photo_inversion and host.attention_control
    assert "is not supported by the" in str(host.unsupported("Something else"))
    model.is_sdxl, model.is_sd2 = False, True
    assert not host.photo_inversion
    with pytest.raises(HostError, match=OTHER):
        host.denoiser(["a photo"]).__enter__()
    assert re.search(OTHER, str(host.unsupported("Inverting a photo (restyle, edit or explain a photo)")))
    assert re.search(OTHER.replace("Inverting", "x"), str(host.unsupported("Something else")))
    assert modules.call_queue.queue_lock.owner is None


def test_the_service_refuses_a_photo_restyle_on_sd2_before_a_job(xl, tmp_path):
    from lib_profile.service import Studio

    _modules, host, model = xl
    model.is_sdxl, model.is_sd2 = False, True
    studio = Studio(host, tmp_path / "data", lora_root=tmp_path / "loras", outputs_root=tmp_path / "out")
    try:
        studio.create_identity("Anna")
        with pytest.raises(HostError, match=OTHER):
            studio.restyle("anna", "a painting", upload=b"not even read")
        assert studio.jobs.list() == []
    finally:
        studio.close()


# ---------------------------------------------------------------- ControlNet by family

def test_controlnet_defaults_follow_the_family_and_the_other_familys_model_is_refused(xl):
    _modules, host, model = xl
    assert host.controlnet_model("pose").startswith("controlnet-openpose-sdxl-1.0")
    assert host.controlnet_model("tile").startswith("TTPLANET_Controlnet_Tile_realistic_v2")
    res = host.txt2img(Txt2ImgRequest(prompt="x", seed=1, width=832, height=1216, controlnets=[
        ControlUnit("pose", pose_map(), "controlnet-openpose-sdxl-1.0")]))
    assert [r.line() for r in res.reports][0] == "ControlNet pose: ran"
    for name in ("control_v11p_sd15_openpose", "control_v11f1e_sd15_tile"):
        with pytest.raises(HostError, match=f"ControlNet model {name} is for SD1.5 and the checkpoint is SDXL: use an "
                                            "SDXL ControlNet model such as controlnet-openpose-sdxl-1.0"):
            host.txt2img(Txt2ImgRequest(prompt="x", controlnets=[ControlUnit("pose", pose_map(), name)]))
        with pytest.raises(HostError, match="is for SD1.5 and the checkpoint is SDXL"):
            host.controlnet_model("pose", name)
    model.is_sdxl = False  # and the reverse, on SD1.5
    assert host.controlnet_model("pose").startswith("control_v11p_sd15_openpose")
    with pytest.raises(HostError, match="is for SDXL and the checkpoint is SD1.5"):
        host.controlnet_model("pose", "controlnet-openpose-sdxl-1.0")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_missing_sdxl_controlnet_names_the_sdxl_file(tmp_path, flavour):
    with standin.installed(tmp_path / "webui", flavour=flavour, cn_models=["control_v11p_sd15_openpose [cab727d4]"]):
        standin_models.install(flavour, "cpu")
        sys_modules = __import__("sys").modules
        sys_modules["modules.sd_models"].model_data.sd_model.is_sdxl = True
        host = WebUIHost(detect_flavour())
        assert host.controlnet_model("pose") is None  # never the SD1.5 one on SDXL
        assert any("controlnet-openpose-sdxl-1.0.safetensors" in n for n in host.take_notes())


# ---------------------------------------------------------------- LoRAs of the other family

def _published(tmp_path, name, shapes, meta=None):
    folder = tmp_path / "webui" / "models" / "Lora"
    folder.mkdir(parents=True, exist_ok=True)
    return _file(folder / f"{name}.safetensors", shapes, meta)


@pytest.mark.parametrize("lora, family", [("strong", "SD1.5"), ("loha", "SD1.5"), ("sd2_style", "SD2")])
def test_an_sd15_lora_on_sdxl_is_refused_by_every_path(xl, tmp_path, lora, family):
    import shutil

    modules, host, _model = xl
    folder = tmp_path / "webui" / "models" / "Lora"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(LORAS / f"{lora}.safetensors", folder)
    message = f"LoRA {lora} is for {family} and the checkpoint is SDXL: use a LoRA made for SDXL"
    for call in (lambda: host.check_prompt_loras(f"a <lora:{lora}:1>"),
                 lambda: host.txt2img(Txt2ImgRequest(prompt=f"a <lora:{lora}:0.8>", width=64, height=64, steps=1)),
                 lambda: host.txt2img(Txt2ImgRequest(prompt="a", prompts=["a", f"b <lora:{lora}:1>"], batch_size=2,
                                                     width=64, height=64, steps=1)),
                 lambda: host.txt2img(Txt2ImgRequest(prompt="a", loras=[LoraRef(str(LORAS / f"{lora}.safetensors"))],
                                                     width=64, height=64, steps=1))):
        with pytest.raises(HostError) as err:
            call()
        assert message in str(err.value)
    assert modules.processing.calls == []


@pytest.mark.parametrize("sign", list(SDXL_LORAS))
def test_an_sdxl_lora_is_refused_on_sd15_and_runs_on_sdxl(xl, tmp_path, sign):
    modules, host, model = xl
    _published(tmp_path, f"xl_{sign}", *SDXL_LORAS[sign])
    assert host.check_prompt_loras(f"a <lora:xl_{sign}:1>") == []
    host.txt2img(Txt2ImgRequest(prompt=f"a <lora:xl_{sign}:1>", width=64, height=64, steps=1))
    model.is_sdxl = False
    with pytest.raises(HostError, match=f"LoRA xl_{sign} is for SDXL and the checkpoint is SD1.5: use a LoRA made for "
                                        "SD1.5, or load an SDXL checkpoint"):
        host.txt2img(Txt2ImgRequest(prompt=f"a <lora:xl_{sign}:1>", width=64, height=64, steps=1))
    assert len(modules.processing.calls) == 1


def test_unknown_tags_and_unreadable_files_are_left_to_the_webui(xl, tmp_path):
    _modules, host, _model = xl
    broken = tmp_path / "webui" / "models" / "Lora" / "broken.safetensors"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(b"\x05\x00not a header")
    assert host.check_prompt_loras("a <lora:nothere:1> <lora:broken:1> <lora:../x:1>") == []
    res = host.txt2img(Txt2ImgRequest(prompt="a <lora:nothere:1>", width=64, height=64, steps=1))
    assert res.images


def test_the_service_refuses_the_identitys_lora_of_the_other_family_before_a_job(xl, tmp_path):
    """An identity whose LoRA was trained on SD1.5, generating with SDXL loaded: a 400 naming both, no job."""
    from lib_profile.service import Studio

    _modules, host, _model = xl
    studio = Studio(host, tmp_path / "data", lora_root=tmp_path / "loras", outputs_root=tmp_path / "out")
    try:
        studio.create_identity("Anna")
        entry = {"name": "strong", "path": str(LORAS / "strong.safetensors")}
        with pytest.raises(HostError, match="LoRA strong is for SD1.5 and the checkpoint is SDXL"):
            studio.check_generate(prompt="a portrait", lora=entry)
        assert studio.check_generate(prompt="a portrait", lora=None)["lora"] is None
    finally:
        studio.close()


def test_lora_file_family_reads_the_header_only(tmp_path):
    from lib_profile.lora.family import lora_file_family

    assert lora_file_family(LORAS / "strong.safetensors") == SD15.name
    for sign, (shapes, meta) in SDXL_LORAS.items():
        assert lora_file_family(_file(tmp_path / f"{sign}.safetensors", shapes, meta)) == SDXL.name
    (tmp_path / "x.pt").write_bytes(b"PK")
    assert lora_file_family(tmp_path / "x.pt") is None and lora_file_family(tmp_path / "missing.safetensors") is None
