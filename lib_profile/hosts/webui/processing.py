"""The WebUI's processing objects as the WebUI host makes them: constructor kwargs for a request, and a filtered
copy of the WebUI's script runner holding only the scripts a pass wants. Pure: tested without a WebUI.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

from lib_profile.hosts.base import Img2ImgRequest, InpaintRequest, Txt2ImgRequest
from lib_profile.hosts.webui import faults as faults_of
from lib_profile.prompts.parse import lora_tags


def processing_kwargs(kind: str, req: Txt2ImgRequest, outdirs: tuple[str, str]) -> dict[str, Any]:
    """Constructor kwargs of ``StableDiffusionProcessingTxt2Img/Img2Img`` for a request (no flavour extras)."""
    kw: dict[str, Any] = dict(
        outpath_samples=outdirs[0], outpath_grids=outdirs[1],
        prompt=[lora_tags(x, req.loras) for x in req.prompts] if req.prompts else lora_tags(req.prompt, req.loras),
        negative_prompt=req.negative_prompt,
        seed=list(req.seeds) if req.seeds else req.resolved_seeds()[0], subseed=-1, subseed_strength=0, sampler_name=req.sampler,
        scheduler=req.scheduler, batch_size=req.batch_size, n_iter=1, steps=req.steps, cfg_scale=req.cfg_scale,
        width=req.width, height=req.height, do_not_save_samples=True, do_not_save_grid=True,
        override_settings={"CLIP_stop_at_last_layers": req.clip_skip, "return_mask": False,
                           "return_mask_composite": False, "samples_save": False},
        override_settings_restore_afterwards=True,
    )
    if kind == "txt2img" and req.hires:  # the WebUI's own hires fix
        kw.update(enable_hr=True, hr_scale=req.hires_scale, hr_upscaler=req.hires_upscaler,
                  hr_second_pass_steps=req.hires_steps, denoising_strength=req.hires_denoising)
    if kind != "txt2img":
        assert isinstance(req, Img2ImgRequest)
        kw.update(init_images=[req.init_image.convert("RGB")], resize_mode=0,
                  denoising_strength=req.denoising_strength)
    if kind == "inpaint":
        assert isinstance(req, InpaintRequest)
        kw.update(mask_blur=req.mask_blur, inpainting_fill=1, inpaint_full_res=req.only_masked,
                  inpaint_full_res_padding=req.padding, inpainting_mask_invert=0)
    return kw


def filtered_runner(base, wanted: list[tuple[str, list]], own_scripts: list = (),
                    faults: Optional[list] = None):
    """A copy of a WebUI ``ScriptRunner`` holding copies of only the wanted always-on scripts, each
    given ``args`` at its own slice. ``wanted``: ``[(lower-case title, args), ...]``;
    ``own_scripts``: script objects of ours to run too (no args); ``faults``: a list the copies' hooks record
    their exceptions in (:func:`.faults.watch`). Returns ``(runner, script_args, titles not found)``."""
    runner = copy.copy(base)
    runner.alwayson_scripts = []
    runner.selectable_scripts = []
    runner.scripts = []
    runner.callback_map = {}  # the copy must not share the global runner's per-hook cache
    args: list = []
    missing: list[str] = []
    for title, script_args in wanted:
        script = next((s for s in base.alwayson_scripts if s.title().lower() == title), None)
        if script is None:
            missing.append(title)
            continue
        mine = copy.copy(script)
        mine.args_from, mine.args_to = len(args), len(args) + len(script_args)
        if faults is not None:
            faults_of.watch(mine, faults)
        args.extend(script_args)
        runner.alwayson_scripts.append(mine)
        runner.scripts.append(mine)
    for script in own_scripts:
        script.args_from = script.args_to = len(args)
        runner.alwayson_scripts.append(script)
        runner.scripts.append(script)
    return runner, args, missing


def plan_job_count(n_passes: int) -> int:
    """The WebUI counts one job per ``process_images`` call (n_iter=1); the bar spans them all."""
    return max(1, int(n_passes))
