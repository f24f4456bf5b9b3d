"""ControlNet on SDXL on the diffusers host (lib_profile/hosts/diffusers/controlnet_file.py): both file layouts of
both families read back exactly, every mismatch of family and every other control architecture named, every pass
kind (txt2img, img2img, inpaint) with a ControlNet at weight 0 equal to the plain pass (the oracle: the residuals are
scaled by 0) and changed at weight 1, and the studio's pose stage on SDXL with the ControlNet, as a user runs it."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from lib_profile import families
from lib_profile.hosts.base import ControlUnit, HostError, Img2ImgRequest, InpaintRequest, Txt2ImgRequest
from lib_profile.hosts.diffusers import tiny, tiny_sdxl
from lib_profile.hosts.diffusers.controlnet_file import load_controlnet, save_controlnet
from lib_profile.hosts.diffusers.engines import tiny_controlnet


@pytest.fixture(scope="module")
def sdxl(data_dir):
    from lib_profile.hosts.diffusers.host import DiffusersHost

    return DiffusersHost("tiny-sdxl", device="cpu", data_dir=data_dir,
                         controlnets={"pose": str(tiny_controlnet(data_dir, "tiny-sdxl"))})


def _models(family: str):
    """(unet, controlnet) random tiny modules of ``family``."""
    if family == families.SDXL.name:
        unet = tiny_sdxl.build_modules()[0]
        return unet, tiny_sdxl.build_controlnet(unet)
    unet, _vae, _text, controlnet = tiny.build_modules()
    return unet, controlnet


def _real_width_controlnet(family: str):
    """A tiny ControlNet whose cross-attention reads the family's real text width (768 SD1.5; SDXL's tiny one
    tells by its size embedding), as a real file of that family does."""
    from diffusers import ControlNetModel

    if family == families.SDXL.name:
        return _models(family)[1]
    torch.manual_seed(0)
    return ControlNetModel(**dict(tiny.tiny_configs()["controlnet"], cross_attention_dim=768))


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------- files: every layout x every family

@pytest.mark.parametrize("family, layout", [("SD1.5", "original"), ("SD1.5", "diffusers"), ("SDXL", "diffusers")])
def test_a_controlnet_file_reads_back_exactly(family, layout, tmp_path):
    unet, controlnet = _models(family)
    path = save_controlnet(tmp_path / "cn.safetensors", controlnet, layout=layout)
    back = load_controlnet(path, family, unet.config)
    assert _same(controlnet, back)
    for a, b in zip(_forward(controlnet, unet), _forward(back, unet), strict=True):  # heads too: they hold no weights
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (a - b).abs().max()  # float order only


def _forward(controlnet, unet) -> list[torch.Tensor]:
    """The ControlNet's residuals on fixed random inputs."""
    g = torch.Generator().manual_seed(0)
    cfg = dict(unet.config)
    latents = torch.randn(1, 4, 8, 8, generator=g)
    context = torch.randn(1, 77, cfg["cross_attention_dim"], generator=g)
    extra = {}
    if cfg.get("addition_embed_type") == "text_time":
        pooled = cfg["projection_class_embeddings_input_dim"] - 6 * cfg["addition_time_embed_dim"]
        extra["added_cond_kwargs"] = {"text_embeds": torch.randn(1, pooled, generator=g),
                                      "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])}
    with torch.no_grad():
        down, mid = controlnet(latents, 10, context, torch.rand(1, 3, 64, 64, generator=g), return_dict=False,
                               **extra)
    return [*down, mid]


def test_an_sdxl_controlnet_in_the_original_layout_says_which_file_to_use(tmp_path):
    """The original layout is read for SD1.5 only; the message names the diffusers file to use instead."""
    from safetensors.torch import save_file

    sd = {"control_model.input_hint_block.0.weight": torch.zeros(16, 3, 3, 3),
          "control_model.label_emb.0.0.weight": torch.zeros(8, 8)}
    save_file(sd, str(tmp_path / "sgm_openpose_xl.safetensors"))
    with pytest.raises(HostError, match=re.escape("original (control_model.*) layout, read for SD1.5 only; for SDXL "
                                                  "use the diffusers-layout file (diffusion_pytorch_model.safetensors "
                                                  "of controlnet-openpose-sdxl-1.0")):
        load_controlnet(tmp_path / "sgm_openpose_xl.safetensors", "SDXL")


@pytest.mark.parametrize("host, file_family, layout", [
    ("SDXL", "SD1.5", "original"), ("SDXL", "SD1.5", "diffusers"), ("SD1.5", "SDXL", "diffusers")])
def test_a_controlnet_of_another_family_is_named_with_one_to_use(host, file_family, layout, tmp_path):
    path = save_controlnet(tmp_path / "pose.safetensors", _real_width_controlnet(file_family), layout=layout)
    usual = families.family(host).controlnet_files("pose")[0]
    with pytest.raises(HostError, match=f"ControlNet model pose.safetensors is for {file_family} and the checkpoint "
                                        f"is {host}: use an {host} ControlNet model such as {usual}"):
        load_controlnet(path, host)


@pytest.mark.parametrize("name, tensors, what", [
    ("control-lora-openposeXL2-rank256.safetensors", {"input_blocks.1.1.proj_in.up": (4, 4)}, "ControlNet-LoRA"),
    ("t2i-adapter_xl_openpose.safetensors", {"adapter.body.0.weight": (4, 4)}, "T2I-Adapter"),
    ("kohya_controllllite_xl_openpose.safetensors", {"lllite_unet_input_blocks_4.down.weight": (4, 4)},
     "ControlLLLite"),
    ("not_a_controlnet.safetensors", {"first_stage_model.encoder.conv_in.weight": (4, 3, 3, 3)}, "not a ControlNet"),
])
@pytest.mark.parametrize("family", ["SD1.5", "SDXL"])
def test_other_control_architectures_are_named(name, tensors, what, family, tmp_path):
    from safetensors.torch import save_file

    save_file({k: torch.zeros(*s) for k, s in tensors.items()}, str(tmp_path / name))
    with pytest.raises(HostError, match=what + ".*use a ControlNet file for " + family.replace(".", r"\.")):
        load_controlnet(tmp_path / name, family)


# ---------------------------------------------------------------- every pass kind on SDXL

def _picture(seed: int, size=(64, 64)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size[::-1], 3), dtype=np.uint8))


def _request(kind: str, **kw):
    base = dict(prompt="studio portrait photo", negative_prompt="blurry", width=64, height=64, steps=3, seed=5,
                cfg_scale=5.0, sampler="Euler", **kw)
    if kind == "txt2img":
        return Txt2ImgRequest(**base)
    if kind == "img2img":
        return Img2ImgRequest(init_image=_picture(1), denoising_strength=0.7, **base)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    return InpaintRequest(init_image=_picture(1), mask=mask, denoising_strength=0.9, **base)


def _pixels(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=np.float32)


@pytest.mark.parametrize("kind", ["txt2img", "img2img", "inpaint"])
def test_every_pass_kind_runs_a_controlnet_on_sdxl_and_weight_0_is_the_plain_pass(sdxl, kind):
    run = {"txt2img": sdxl.txt2img, "img2img": sdxl.img2img, "inpaint": sdxl.inpaint}[kind]
    model = sdxl.controlnet_model("pose")
    pose = _picture(9)
    plain = _pixels(run(_request(kind)))
    off = run(_request(kind, controlnets=[ControlUnit("pose", pose, model, 0.0)]))
    on = run(_request(kind, controlnets=[ControlUnit("pose", pose, model, 1.0)]))
    assert np.abs(_pixels(off) - plain).max() <= 1.0  # the oracle: zero residuals (rounding to 8 bits aside)
    assert np.abs(_pixels(on) - plain).mean() > 1.0  # the ControlNet steers the picture
    assert any(r.part == "ControlNet pose" and r.status == "ran" for r in on.reports)


def test_an_sd15_controlnet_given_to_the_sdxl_host_is_a_clear_error_not_a_crash(sdxl, tmp_path):
    path = save_controlnet(tmp_path / "control_v11p_sd15_openpose.safetensors", _real_width_controlnet("SD1.5"))
    req = _request("txt2img", controlnets=[ControlUnit("pose", _picture(9), str(path), 1.0)])
    with pytest.raises(HostError, match="is for SD1.5 and the checkpoint is SDXL: use an SDXL ControlNet model "
                                        "such as controlnet-openpose-sdxl-1.0"):
        sdxl.txt2img(req)


# ---------------------------------------------------------------- the studio's pose stage on SDXL

def test_cli_generate_on_tiny_sdxl_follows_the_pose_with_its_controlnet(tmp_path, monkeypatch, capsys):
    """``generate --checkpoint tiny-sdxl --controlnet-pose tiny --pose NAME``: the pose stage runs the SDXL
    ControlNet (no "asked for by prompt only" note); the family's portrait patched small for the CPU."""
    import dataclasses

    from lib_profile.cli import main

    small = dataclasses.replace(families.SDXL, portrait=(64, 96), native_size=64)
    monkeypatch.setitem(families._BY_NAME, "SDXL", small)
    out = tmp_path / "out"
    code = main(["--data-dir", str(tmp_path / "data"), "generate", "--checkpoint", "tiny-sdxl", "--controlnet-pose",
                 "tiny", "--pose", "frontal_shoulders", "--prompt", "studio portrait photo of a woman", "--count",
                 "1", "--seed", "7", "--steps", "2", "--no-detail", "--no-refine", "--no-detail2", "--no-upscale",
                 "--device", "cpu", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    plan = json.loads((out / "plan.json").read_text("utf-8"))
    assert plan["controlnet_pose"].endswith(tiny_sdxl.CONTROLNET)
    assert not any("asked for by prompt only" in n for n in plan.get("notes", []))
    result = json.loads((out / "result.json").read_text("utf-8"))
    parts = [p for image in result["images"] for stage in image["stages"] for p in stage["parts"]]
    assert any(p["part"] == "ControlNet pose" and p["status"] == "ran" for p in parts), parts
