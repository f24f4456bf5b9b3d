"""The face detail pass by the ADetailer extension: a host-neutral :class:`FaceDetailRequest` as ADetailer's own
arguments (one ADetailer tab dict, ``ad_*`` keys), run as an img2img with "skip img2img" on so only ADetailer's
inpaint runs. Pure functions: tested without a WebUI.
"""

from __future__ import annotations

from typing import Any

from lib_profile.hosts.base import FaceDetailRequest, Img2ImgRequest
from lib_profile.prompts.parse import lora_tags

TITLE = "adetailer"  # the script's title, lower case


def script_args(req: FaceDetailRequest) -> list:
    """ADetailer's ``script_args``: enabled, skip img2img, then one tab dict. Its prompt carries the request's LoRA
    tags, which ADetailer otherwise drops from its inner inpaint."""
    return [True, True, tab_args(req)]


def tab_args(req: FaceDetailRequest) -> dict[str, Any]:
    """One ADetailer tab dict (``ad_model``, ``ad_prompt``, ...) for the request."""
    return {
        "ad_model": req.detector, "ad_prompt": lora_tags(req.prompt, req.loras),
        "ad_negative_prompt": req.negative_prompt, "ad_denoising_strength": req.denoising_strength,
        "ad_mask_blur": req.mask_blur, "ad_dilate_erode": req.dilate, "ad_mask_k": req.max_faces,
        "ad_inpaint_only_masked": True, "ad_inpaint_only_masked_padding": req.padding,
        "ad_use_inpaint_width_height": True, "ad_inpaint_width": req.size, "ad_inpaint_height": req.size,
        "ad_use_steps": True, "ad_steps": req.steps,
    }


def image_request(req: FaceDetailRequest) -> Img2ImgRequest:
    """The img2img pass ADetailer runs in (skipped but for ADetailer's inpaint); no LoRAs: they are in
    :func:`tab_args`'s prompt only."""
    return Img2ImgRequest(prompt=req.prompt, negative_prompt=req.negative_prompt, width=req.width, height=req.height,
                          steps=req.steps, cfg_scale=req.cfg_scale, sampler=req.sampler, scheduler=req.scheduler,
                          seed=req.seed, clip_skip=req.clip_skip, init_image=req.init_image,
                          denoising_strength=req.denoising_strength)


def models_of(script) -> list[str]:
    """ADetailer's model list as its script holds it (its ``model_mapping``: the YOLO files found in
    ``models/adetailer`` and the mediapipe face models); empty when there is none."""
    if script is None:
        return []
    for attr in vars(type(script)).values():  # the module globals of the script file, as its methods see them
        mapping = getattr(attr, "__globals__", {}).get("model_mapping")
        if isinstance(mapping, dict):
            return list(mapping)
    return []
