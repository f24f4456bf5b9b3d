"""The face detail pass (the ADetailer idea, built in): find faces, mask them, inpaint only there.

The inpaint prompt keeps the identity LoRA, so the repaired face stays the person's (ADetailer's
re-inpaint drops the LoRA). The mask is the face-mesh outline (or the box) grown and feathered, and
the crop is pasted back through it, so no box edge shows and nothing outside the mask changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lib_profile.hosts.base import (RAN, SKIPPED, FaceDetailRequest, Host, HostError, InpaintRequest, LoraRef,
                                    RunControl, StageReport)

# ADetailer's own face models, which need no download (mediapipe ships them)
ADETAILER_MEDIAPIPE = ("mediapipe_face_full", "mediapipe_face_short", "mediapipe_face_mesh")


@dataclass
class DetailParams:
    denoising_strength: float = 0.4
    dilate: int = 16  # px the face mask grows by
    mask_blur: int = 8
    padding: int = 32
    size: int = 512  # the face crop is repainted at size x size
    steps: int = 20
    max_faces: int = 1
    use_mesh: bool = True
    engine: str = "builtin"  # "builtin" | "adetailer" (the ADetailer extension, inside the WebUI only)
    adetailer_model: str = "face_yolov8n.pt"

    def __post_init__(self):
        if self.engine not in ("builtin", "adetailer"):
            raise HostError(f"detail engine must be 'builtin' or 'adetailer', not {self.engine!r}")


def face_mask(image: Image.Image, params: DetailParams) -> tuple[Optional[Image.Image], list]:
    """A white-on-black mask over the largest faces (mesh outline when found, else the box), grown."""
    from lib_profile.photos.faces import default_detector

    faces = default_detector().detect(np.asarray(image.convert("RGB")))[: params.max_faces]
    if not faces:
        return None, []
    mask = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(mask)
    for face in faces:
        if params.use_mesh and face.landmarks is not None:
            import cv2

            hull = cv2.convexHull(face.landmarks[:, :2].astype(np.float32)).reshape(-1, 2)
            draw.polygon([tuple(p) for p in hull.tolist()], fill=255)
        else:
            draw.rectangle(face.box, fill=255)
    if params.dilate > 0:
        mask = mask.filter(ImageFilter.MaxFilter(2 * (params.dilate // 2) + 1))
    return mask, faces


def detail_pass(host: Host, image: Image.Image, prompt: str, negative_prompt: str, loras: list[LoraRef],
                seed: int, sampler: str, scheduler: str, cfg_scale: float, clip_skip: int,
                params: Optional[DetailParams] = None, control: Optional[RunControl] = None):
    """Repaint the face(s); returns (image, info), ``info["reports"]`` saying what ran. No face: the image
    comes back unchanged, reported as skipped. With the ADetailer engine: a model ADetailer has (see
    :func:`choose_adetailer_model`), and our own pass when ADetailer has none or fails."""
    params = params or DetailParams()
    reports: list[StageReport] = []
    if params.engine == "adetailer":
        from lib_profile.deps import mediapipe_can_run

        model, note = choose_adetailer_model(params.adetailer_model, host.adetailer_models(), mediapipe_can_run())
        if model is not None:
            out, info = adetailer_pass(host, image, prompt, negative_prompt, loras, seed, sampler, scheduler,
                                       cfg_scale, clip_skip, replace(params, adetailer_model=model), control)
            report = info["reports"][-1]
            if note:
                report.why = "; ".join(filter(None, [note, report.why]))
            if report.status == RAN:
                return out, info
            # failed, or found no face: our own pass (its own detector) has a go
            reports.append(StageReport("ADetailer", report.status, report.why + "; the built-in pass looked instead"))
        else:
            reports.append(StageReport("ADetailer", SKIPPED, note))
    mask, faces = face_mask(image, params)
    if mask is None:
        return image, {"faces": 0, "reports": [*reports, StageReport("face detail", SKIPPED, "no face found")]}
    req = InpaintRequest(prompt=prompt, negative_prompt=negative_prompt, width=params.size, height=params.size,
                         steps=params.steps, cfg_scale=cfg_scale, sampler=sampler, scheduler=scheduler, seed=seed,
                         clip_skip=clip_skip, loras=list(loras), init_image=image.convert("RGB"), mask=mask,
                         only_masked=True, padding=params.padding, mask_blur=params.mask_blur,
                         denoising_strength=params.denoising_strength)
    result = host.inpaint(req, control)
    reports += [*result.reports, StageReport("face detail", RAN, f"{len(faces)} face(s)")]
    return result.images[0], {"faces": len(faces), "mask": mask, "region": result.params.get("inpaint_region"),
                              "reports": reports}


def choose_adetailer_model(wanted: str, available: list[str], mediapipe_ok: bool = True) -> tuple[Optional[str], str]:
    """(the ADetailer model to ask for, a note): ``wanted`` when ADetailer has it, else another YOLO face model
    it has, else its mediapipe face model (only where mediapipe can run: under the WebUIs' protobuf 3.20.0 its
    graphs fail, and ADetailer then reports "nothing detected" even on a face); ``(None, why)`` when none fits."""
    if not available:
        return None, "the ADetailer extension is not in this WebUI"
    if wanted in available and (mediapipe_ok or not wanted.startswith("mediapipe")):
        return wanted, ""
    faces = [m for m in available if "face" in m.lower() and not m.startswith("mediapipe")]
    mediapipe = [m for m in ADETAILER_MEDIAPIPE if m in available] if mediapipe_ok else []
    pick = (faces or mediapipe or [None])[0]
    missing = f"ADetailer has no {wanted} (put it in models/adetailer)"
    if pick is None:
        why = "; its mediapipe models cannot run beside the WebUI's protobuf" if not mediapipe_ok else ""
        return None, f"{missing} and no face model it can use{why}"
    return pick, f"{missing}; it used {pick}"


def adetailer_pass(host: Host, image: Image.Image, prompt: str, negative_prompt: str, loras: list[LoraRef],
                   seed: int, sampler: str, scheduler: str, cfg_scale: float, clip_skip: int,
                   params: DetailParams, control: Optional[RunControl] = None):
    """The same pass done by the host's face detailer (the WebUI's ADetailer extension), asked for with a
    host-neutral :class:`FaceDetailRequest`; the identity LoRA goes with it (ADetailer would otherwise drop it)."""
    req = FaceDetailRequest(prompt=prompt, negative_prompt=negative_prompt, width=image.width, height=image.height,
                            steps=params.steps, cfg_scale=cfg_scale, sampler=sampler, scheduler=scheduler, seed=seed,
                            clip_skip=clip_skip, loras=list(loras), init_image=image.convert("RGB"),
                            denoising_strength=params.denoising_strength, detector=params.adetailer_model,
                            dilate=params.dilate, mask_blur=params.mask_blur, max_faces=params.max_faces,
                            padding=params.padding, size=params.size)
    result = host.adetailer_detail(req, control)
    reports = result.reports or [StageReport("ADetailer", RAN)]
    out = result.images[0] if reports[-1].status == RAN else image
    return out, {"faces": None, "engine": "adetailer", "model": params.adetailer_model, "reports": reports}
