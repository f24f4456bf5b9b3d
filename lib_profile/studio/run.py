"""Running a studio plan on a host: every stage of every portrait, timed, saved with its infotext."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image

from lib_profile import paths
from lib_profile.hosts.base import (FAILED, ControlUnit, Host, HostError, Img2ImgRequest, Interrupted, LoraRef,
                                    RunControl, StageReport, Txt2ImgRequest)
from lib_profile.infotext import infotext, save_png
from lib_profile.studio import report
from lib_profile.studio.detail import DetailParams, detail_pass
from lib_profile.studio.plan import Plan
from lib_profile.studio.settings import infotext_field, plan_settings
from lib_profile.studio.tone import get_tone, grade_image

MAX_TOKENS = 75


def prompt_tokens(prompt: str) -> int:
    from lib_profile.prompts import parse as prompts
    from lib_profile.prompts.tokenizer import load_tokenizer

    return prompts.token_count(load_tokenizer(str(paths.tokenizer_dir())), prompt)


def _positions(total: int, tile: int, overlap: int) -> list[int]:
    if total <= tile:
        return [0]
    step = max(tile - overlap, 8)
    return sorted(set(list(range(0, total - tile, step)) + [total - tile]))


def _ramp(n: int, overlap: int, start: bool, end: bool) -> np.ndarray:
    w = np.ones(n, np.float32)
    ramp = np.linspace(0.0, 1.0, overlap + 2, dtype=np.float32)[1:-1]
    if start and overlap:
        w[:overlap] = ramp
    if end and overlap:
        w[-overlap:] = ramp[::-1]
    return w


def pose_unit(plan: Plan) -> Optional[ControlUnit]:
    """The pose ControlNet unit of a plan (its pose drawn at the plan's size), or None."""
    if not (plan.pose and plan.controlnet_pose):
        return None
    from lib_profile.studio.pose import load_pose, render

    return ControlUnit("pose", render(load_pose(plan.pose), plan.width, plan.height), plan.controlnet_pose, 1.0)


def plan_loras(plan: Plan) -> list[LoraRef]:
    """The plan's identity LoRA at its weight (none without one)."""
    return [LoraRef(plan.lora["path"], float(plan.lora["weight"]))] if plan.lora else []


def first_stage_request(plan: Plan, seed: int, pose: Optional[ControlUnit] = None) -> Txt2ImgRequest:
    """The plan's txt2img pass for one seed (what explain and edit re-run of a studio portrait)."""
    loras = plan_loras(plan)
    return Txt2ImgRequest(prompt=plan.prompt, negative_prompt=plan.negative_prompt, width=plan.width,
                          height=plan.height, steps=plan.steps, cfg_scale=plan.cfg_scale, sampler=plan.sampler,
                          scheduler=plan.scheduler, seed=seed, clip_skip=plan.clip_skip, loras=loras,
                          controlnets=[pose] if pose else [])


def tile_grid(big_w: int, big_h: int, plan: Plan, params: dict) -> tuple[int, int, int, list[int], list[int]]:
    """Tile width, height, overlap and the tiles' x and y positions over an upscaled image."""
    tw, th, overlap = min(plan.width, big_w), min(plan.height, big_h), int(params.get("tile_overlap", 64))
    return tw, th, overlap, _positions(big_w, tw, overlap), _positions(big_h, th, overlap)


def upscale_tiles(width: int, height: int, plan: Plan, params: dict) -> int:
    """How many img2img tile passes the upscale stage makes for an image of this size."""
    if float(params.get("denoising_strength", 0.2)) <= 0:
        return 0
    scale = float(params.get("scale", 2.0))
    _tw, _th, _overlap, xs, ys = tile_grid(int(width * scale) // 8 * 8, int(height * scale) // 8 * 8, plan, params)
    return len(xs) * len(ys)


def count_passes(plan: Plan, through: Optional[int] = None) -> int:
    """The sampling passes (host generate calls) a plan makes (up to stage ``through`` when given), for a progress
    bar spanning all of them. A detail stage counts one pass per portrait (none is made when no face is found)."""
    per_image = 0
    for index, stage in plan.enabled():
        if through is not None and index > through:
            continue
        if stage.kind in ("txt2img", "refine", "detail"):  # a detail pass inpaints all its faces at once
            per_image += 1
        elif stage.kind == "upscale":
            per_image += upscale_tiles(plan.width, plan.height, plan, stage.params)
    return per_image * plan.count


def tiled_upscale(host: Host, image: Image.Image, plan: Plan, params: dict, loras: list[LoraRef], seed: int,
                  control: Optional[RunControl], reports: Optional[list[StageReport]] = None) -> Image.Image:
    """Upscale, then re-detail tile by tile at low denoise (ControlNet tile when there is a model),
    blending the overlaps with linear ramps so no seam shows. What the upscaler and each tile's pass really
    did goes to ``reports``."""
    reports = [] if reports is None else reports
    big = host.upscale(image, float(params.get("scale", 2.0)), params.get("upscaler", "Lanczos"), reports)
    strength = float(params.get("denoising_strength", 0.2))
    if strength <= 0:
        return big
    tw, th, overlap, xs, ys = tile_grid(big.width, big.height, plan, params)
    acc = np.zeros((big.height, big.width, 3), np.float32)
    weight = np.zeros((big.height, big.width, 1), np.float32)
    for yi, y in enumerate(ys):
        for xi, x in enumerate(xs):
            tile = big.crop((x, y, x + tw, y + th))
            units = ([ControlUnit("tile", tile, plan.controlnet_tile, float(params.get("tile_weight", 0.6)))]
                     if plan.controlnet_tile else [])
            req = Img2ImgRequest(prompt=plan.prompt, negative_prompt=plan.negative_prompt, width=tw, height=th,
                                 steps=int(params.get("steps", 20)), cfg_scale=plan.cfg_scale, sampler=plan.sampler,
                                 scheduler=plan.scheduler, seed=seed, clip_skip=plan.clip_skip, loras=loras,
                                 controlnets=units, init_image=tile, denoising_strength=strength)
            res = host.img2img(req, control)
            reports.extend(res.reports)
            out = np.asarray(res.images[0].convert("RGB"), np.float32)
            wy = _ramp(th, overlap if len(ys) > 1 else 0, yi > 0, yi < len(ys) - 1)
            wx = _ramp(tw, overlap if len(xs) > 1 else 0, xi > 0, xi < len(xs) - 1)
            w = (wy[:, None] * wx[None, :])[..., None]
            acc[y:y + th, x:x + tw] += out * w
            weight[y:y + th, x:x + tw] += w
    return Image.fromarray((acc / np.maximum(weight, 1e-6)).clip(0, 255).round().astype(np.uint8))


def run_stage(plan: Plan, host: Host, stage, image: Optional[Image.Image], seed: int, loras: list[LoraRef],
              pose: Optional[ControlUnit], tone, control: Optional[RunControl] = None,
              adjust: Optional[Callable[[Txt2ImgRequest], Txt2ImgRequest]] = None
              ) -> tuple[Image.Image, dict[str, Any]]:
    """One stage of one portrait: the image after it, and what its pass reported (``params``; a detail
    pass's ``region``, the box that was repainted; ``reports``, what each delegated part really did). ``adjust``
    changes a txt2img or refine pass's request (e.g. into a Prompt-to-Prompt pair); then ``images`` holds all the
    images the pass made."""
    p = stage.params
    if adjust is not None and stage.kind not in ("txt2img", "refine"):
        raise HostError(f"Only a txt2img or refine pass can be changed this way, not a {stage.kind} pass")
    adjust = adjust or (lambda req: req)
    if stage.kind == "txt2img":
        res = host.txt2img(adjust(first_stage_request(plan, seed, pose)), control)
        return res.images[0], {"params": res.params, "images": res.images, "reports": res.reports}
    if image is None:
        raise HostError("The plan's first enabled stage must be txt2img")
    if stage.kind == "detail":
        out, info = detail_pass(host, image, plan.prompt, plan.negative_prompt, loras, seed, plan.sampler,
                                plan.scheduler, plan.cfg_scale, plan.clip_skip, DetailParams(**p), control)
        return out, info
    if stage.kind == "refine":
        res = host.img2img(adjust(Img2ImgRequest(
            prompt=stage_prompt(plan, stage), negative_prompt=plan.negative_prompt, width=image.width,
            height=image.height, steps=int(p.get("steps", 20)), cfg_scale=plan.cfg_scale,
            sampler=plan.sampler, scheduler=plan.scheduler, seed=seed, clip_skip=plan.clip_skip,
            loras=loras, init_image=image, denoising_strength=float(p.get("denoising_strength", 0.25)))), control)
        return res.images[0], {"params": res.params, "images": res.images, "reports": res.reports}
    if stage.kind == "upscale":
        reports: list[StageReport] = []
        return tiled_upscale(host, image, plan, p, loras, seed, control, reports), {"reports": reports}
    if stage.kind == "grade":
        return grade_image(image, tone, p.get("strength")), {}
    raise HostError(f"Unknown stage {stage.kind!r}")


def stage_prompt(plan: Plan, stage) -> str:
    """The prompt a stage's pass is made with (the refinement has its own, "filter-like" one)."""
    return stage.params.get("prompt", plan.prompt) if stage.kind == "refine" else plan.prompt


def replay(plan: Plan, host: Host, seed: int, stage_index: int, stage_control: RunControl,
           control: Optional[RunControl] = None, adjust: Optional[Callable[[Txt2ImgRequest], Txt2ImgRequest]] = None
           ) -> tuple[Image.Image, dict[str, Any]]:
    """Make one portrait again up to the stage ``plan.stages[stage_index]``, with ``stage_control`` (e.g. an
    attention controller) and ``adjust`` (see :func:`run_stage`) on that stage's pass; returns the image after
    it and what the pass reported."""
    enabled = dict(plan.enabled())
    if stage_index not in enabled:
        raise HostError(f"Stage {stage_index} is not an enabled stage of this plan; enabled: "
                        + ", ".join(f"{i} ({s.kind})" for i, s in enabled.items()))
    if enabled[stage_index].kind not in ("txt2img", "detail", "refine"):
        raise HostError("Only the txt2img, detail and refine passes can be explained or edited "
                        f"(stage {stage_index} is {enabled[stage_index].kind})")
    loras = plan_loras(plan)
    pose, tone = pose_unit(plan), get_tone(plan.tone)
    image: Optional[Image.Image] = None
    for index, stage in enabled.items():
        if control and control.should_interrupt and control.should_interrupt():
            raise Interrupted()
        last = index == stage_index
        image, info = run_stage(plan, host, stage, image, seed, loras, pose, tone,
                                stage_control if last else control, adjust if last else None)
        if last:
            return image, info
    raise HostError(f"Stage {stage_index} was not reached")


def finish(plan: Plan, host: Host, image: Image.Image, seed: int, control: Optional[RunControl] = None,
           after: Optional[int] = None) -> Image.Image:
    """The plan's passes after its first (or after stage ``after``: face detail, refine, upscale, colour) on
    ``image``, made another way (e.g. a Prompt-to-Prompt edit of it), as :func:`run_plan` runs them for ``seed``."""
    loras = plan_loras(plan)
    pose, tone = pose_unit(plan), get_tone(plan.tone)
    for index, stage in plan.enabled():
        if stage.kind == "txt2img" or (after is not None and index <= after):
            continue
        if control and control.should_interrupt and control.should_interrupt():
            raise Interrupted()
        image, _info = run_stage(plan, host, stage, image, seed, loras, pose, tone, control)
    return image


def run_plan(plan: Plan, host: Host, out: str | Path, control: Optional[RunControl] = None,
             on_stage: Optional[Callable[[int, int, str], None]] = None) -> dict[str, Any]:
    """Make ``plan.count`` portraits into ``out``: PNGs with infotext, plan.json, result.json, a contact sheet.
    Each portrait lists its stages as ran / skipped / failed with why (``stages``), and ``notes`` says every part
    that did not run. Interrupted: the portraits finished so far and the unfinished one's last pass are kept
    (``result.json`` says ``interrupted``), and :class:`Interrupted` is raised with that result."""
    from lib_profile.identity.score import IdentityScorer, reference_from_lora

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokens = prompt_tokens(plan.prompt)
    if tokens > MAX_TOKENS:
        plan.notes.append(f"The prompt has {tokens} CLIP tokens (over {MAX_TOKENS}): words past the first chunk "
                          "are weighted less; shorten it for the most faithful result.")
    plan.save(out / "plan.json")
    tone = get_tone(plan.tone)
    loras = plan_loras(plan)
    pose = pose_unit(plan)
    if pose is not None:
        pose.image.save(out / "pose.png")
    scorer = IdentityScorer(reference_from_lora(plan.lora["path"]) if plan.lora else None)
    stages = plan.enabled()
    used = infotext_field(plan_settings(plan))  # the settings of the first pass, read back by from_infotext
    items: list[dict[str, Any]] = []
    finals: list[Image.Image] = []
    for n in range(plan.count):
        seed = (plan.seed + n) % 2**32
        image: Optional[Image.Image] = None
        first_params: dict[str, Any] = {}
        timings: dict[str, float] = {}
        done: list[dict[str, Any]] = []
        before_detail: Optional[Image.Image] = None
        try:
            for index, stage in stages:
                if control and control.should_interrupt and control.should_interrupt():
                    raise Interrupted()
                if on_stage:
                    on_stage(n, index, stage.kind)
                started = time.perf_counter()
                if stage.kind == "detail" and before_detail is None and image is not None:
                    before_detail = image
                image, info = run_stage(plan, host, stage, image, seed, loras, pose, tone, control)
                if stage.kind == "txt2img":
                    first_params = info["params"]
                timings[f"{index}:{stage.kind}"] = round(time.perf_counter() - started, 3)
                done.append(report.stage_entry(index, stage.kind, info.get("reports", [])))
        except Interrupted as stop:
            unfinished = None
            if image is not None:  # the last finished pass of this portrait, kept and marked as such
                name = f"{n:03d}-{seed}-unfinished.png"
                save_png(image, out / name, infotext({**first_params, "seed": seed}, {
                    "Profile Studio": f"unfinished after {report.infotext_line(done)}", **used}))
                unfinished = {"file": name, "seed": seed, "stages": done, "size": [image.width, image.height]}
            stop.result = _write_result(plan, out, items, finals, tokens,
                                        {"interrupted": True, "unfinished": unfinished}, image)
            raise
        score = scorer(image)
        extra = {"Profile Studio": f"pose {plan.pose or 'none'}, tone {plan.tone}",
                 "Profile Studio stages": report.infotext_line(done),
                 "Identity similarity": score if score is not None else "n/a (no face found or no reference)",
                 "Size": f"{image.width}x{image.height}", **used}
        name = f"{n:03d}-{seed}.png"
        save_png(image, out / name, infotext({**first_params, "seed": seed}, extra))
        finals.append(image)
        if before_detail is not None:
            before_detail.save(out / f"{n:03d}-{seed}-before-detail.png")
        items.append({"file": name, "seed": seed, "identity_similarity": score, "stage_seconds": timings,
                      "stages": done,
                      "before_detail": f"{n:03d}-{seed}-before-detail.png" if before_detail is not None else None,
                      "size": [image.width, image.height]})
    return _write_result(plan, out, items, finals, tokens, {})


def _write_result(plan: Plan, out: Path, items: list[dict[str, Any]], finals: list[Image.Image], tokens: int,
                  extra: dict[str, Any], unfinished_image: Optional[Image.Image] = None) -> dict[str, Any]:
    """result.json and the contact sheet of the portraits made (and of an unfinished one, ``unfinished_image``)."""
    from lib_profile.photos.contact_sheet import GREEN, GREY, RED, contact_sheet

    result = {"plan": "plan.json", "images": items, "notes": [*plan.notes, *report.notes(items)],
              "prompt_tokens": tokens, "contact_sheet": "contact_sheet.png", **extra}
    entries = []
    for it, img in zip(items, finals):
        failed = [report.kind(s) for s in it["stages"] if s["status"] == FAILED]
        lines = [f"identity {it['identity_similarity']:.3f}" if it["identity_similarity"] is not None
                 else "identity: no face found"]
        lines += [f"{kind} failed" for kind in failed]
        entries.append({"image": img, "title": it["file"], "verdict": "", "lines": lines,
                        "colour": RED if failed else GREEN})
    unfinished = extra.get("unfinished")
    if unfinished:
        entries.append({"image": unfinished_image, "title": unfinished["file"],
                        "verdict": "UNFINISHED", "colour": GREY,
                        "lines": [f"after {report.infotext_line(unfinished['stages'])}"]})
    if entries:
        contact_sheet(entries, columns=min(4, len(entries))).save(out / "contact_sheet.png")
    else:
        result["contact_sheet"] = None
    tmp = out / "result.json.partial"
    tmp.write_text(json.dumps(result, indent=1), "utf-8")
    tmp.replace(out / "result.json")
    return result
