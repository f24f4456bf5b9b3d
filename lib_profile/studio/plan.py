"""The studio plan: the ordered stages that turn a face LoRA into portraits, as plain data.

A plan is built from the defaults below plus the user's choices (pose, tone, count, seed, switches),
saved as ``plan.json`` beside every output, and run the same way by any host, so a portrait can be
made again from its plan and seed. Default stages: txt2img 2:3 with the LoRA and a pose ControlNet ->
face detail -> img2img refinement with a filter-like prompt -> face detail again -> 2x tiled upscale
(ControlNet tile when available) -> the tone's colour grade.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from lib_profile import families
from lib_profile.families import SD15
from lib_profile.hosts.base import HostError

STAGE_KINDS = ("txt2img", "detail", "refine", "upscale", "grade")
PLAN_VERSION = 1


@dataclass
class Stage:
    kind: str
    enabled: bool = True
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in STAGE_KINDS:
            raise HostError(f"Unknown stage {self.kind!r}; stages are {', '.join(STAGE_KINDS)}")


@dataclass
class Plan:
    prompt: str
    negative_prompt: str
    lora: Optional[dict[str, Any]]  # {"path": ..., "weight": ...}
    pose: Optional[str]  # template name or JSON path
    tone: str
    seed: int
    count: int
    width: int = 512
    height: int = 768
    steps: int = 25
    cfg_scale: float = 6.5
    sampler: str = "DPM++ 2M"
    scheduler: str = "Karras"
    clip_skip: int = 2
    controlnet_pose: Optional[str] = None  # model file / WebUI model name; None = pose by prompt only
    controlnet_tile: Optional[str] = None
    stages: list[Stage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    version: int = PLAN_VERSION

    def enabled(self) -> list[tuple[int, Stage]]:
        return [(i, s) for i, s in enumerate(self.stages) if s.enabled]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(json.dumps(self.to_dict(), indent=1), "utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Plan":
        data = dict(data)
        if data.get("version") != PLAN_VERSION:
            raise HostError(f"This plan is version {data.get('version')}; this Profile Studio reads version {PLAN_VERSION}")
        data["stages"] = [Stage(**s) for s in data.get("stages", [])]
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        try:
            return cls.from_dict(json.loads(Path(path).read_text("utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise HostError(f"Cannot read plan {path}: {exc}") from exc


# What stays of the prompt in the refinement pass: the look, not the content ("filter-like" tokens).
REFINE_PROMPT = "photo, sharp focus, natural skin texture, detailed eyes, high quality"
NEGATIVE = "blurry, lowres, deformed, disfigured, bad anatomy, extra fingers, watermark, text, cartoon, painting"


def default_stages(switches: Optional[dict[str, bool]] = None, family: str = SD15.name) -> list[Stage]:
    """The default stages; the face detail passes repaint the face at ``family``'s native size (512 SD1.5, 1024
    SDXL)."""
    size = families.family(family).native_size
    on = {"detail": True, "refine": True, "detail2": True, "upscale": True, "grade": True, **(switches or {})}
    unknown = set(on) - {"detail", "refine", "detail2", "upscale", "grade"}
    if unknown:
        raise HostError(f"Unknown stage switch(es) {', '.join(sorted(unknown))}; switches are detail, refine, "
                        "detail2, upscale, grade")
    return [
        Stage("txt2img", True, {}),
        Stage("detail", on["detail"], {"denoising_strength": 0.4, "dilate": 16, "mask_blur": 8, "padding": 32,
                                       "size": size, "steps": 20}),
        Stage("refine", on["refine"], {"denoising_strength": 0.25, "prompt": REFINE_PROMPT, "steps": 20}),
        Stage("detail", on["detail2"], {"denoising_strength": 0.3, "dilate": 16, "mask_blur": 8, "padding": 32,
                                        "size": size, "steps": 20}),
        Stage("upscale", on["upscale"], {"scale": 2.0, "upscaler": "Lanczos", "denoising_strength": 0.2,
                                         "tile_overlap": 64, "steps": 20, "tile_weight": 0.6}),
        Stage("grade", on["grade"], {"strength": None}),
    ]


def default_prompt(lora: Optional[str] = None) -> str:
    """A studio portrait of the LoRA's person (its activation text, e.g. "ohwx woman")."""
    activation = "person"
    if lora:
        from lib_profile.lora.apply import read_metadata

        if not Path(lora).is_file():
            raise HostError(f"LoRA file not found: {lora}")
        activation = read_metadata(lora).get("profile_studio_activation_text", activation)
    return f"studio portrait photo of {activation}, looking at the camera, soft studio light"


def build_plan(prompt: str, lora: Optional[str], pose: Optional[str], tone_name: str = "warm", count: int = 1,
               seed: int = -1, switches: Optional[dict[str, bool]] = None, lora_weight: float = 0.9,
               controlnet_pose: Optional[str] = None, controlnet_tile: Optional[str] = None,
               data_dir: str | Path | None = None, detail_engine: str = "builtin", family: str = SD15.name,
               **overrides) -> Plan:
    """A plan from the defaults plus the user's choices; the tone sets sampler, scheduler and prompt fragments, the
    checkpoint's model ``family`` (:mod:`lib_profile.families`) the portrait size (2:3: 512x768 SD1.5, 832x1216
    SDXL) and the face detail size; ``overrides`` (plan fields: width, steps...) win over all of them."""
    import random

    from lib_profile.studio.tone import get_tone

    tone = get_tone(tone_name, data_dir)
    model = families.family(family)
    if not 1 <= count <= 100:
        raise HostError(f"count must be within 1..100, not {count}")
    if lora is not None and not Path(lora).is_file():
        raise HostError(f"LoRA file not found: {lora}")
    plan = Plan(
        prompt=", ".join(x for x in (prompt, tone.prompt) if x),
        negative_prompt=", ".join(x for x in (NEGATIVE, tone.negative_prompt) if x),
        lora={"path": str(lora), "weight": lora_weight} if lora else None,
        pose=pose, tone=tone.name, seed=seed if seed != -1 else random.randrange(2**32), count=count,
        sampler=tone.sampler, scheduler=tone.scheduler, controlnet_pose=controlnet_pose,
        controlnet_tile=controlnet_tile, stages=default_stages(switches, family),
        width=model.portrait[0], height=model.portrait[1],
    )
    if detail_engine not in ("builtin", "adetailer"):
        raise HostError(f"detail_engine must be 'builtin' or 'adetailer', not {detail_engine!r}")
    for stage in plan.stages:
        if stage.kind == "detail" and detail_engine != "builtin":
            stage.params["engine"] = detail_engine
    for key, value in overrides.items():
        if not hasattr(plan, key) or key in ("stages", "version"):
            raise HostError(f"Unknown plan setting {key!r}")
        setattr(plan, key, value)
    if plan.pose and not plan.controlnet_pose:
        stem = model.controlnet_files("pose")[0]
        plan.notes.append(f"No pose ControlNet model: the pose is asked for by prompt only. Put {stem}.pth (or "
                          f"{stem}.safetensors) in your ControlNet models folder to follow the pose.")
    return plan
