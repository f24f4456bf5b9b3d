"""``POST /explain`` (DAAM word heat maps), ``POST /edit`` (Prompt-to-Prompt) and ``POST /restyle`` (Plug-and-Play
of a real photo): each starts a job. Explain and edit take one source: a studio portrait (``job`` + ``image``), a new
``prompt``, or a real photo (``photo``: one of the identity's photos by name; ``photo_image``: base64)."""

from __future__ import annotations

from typing import Any, Callable, Optional

from fastapi import APIRouter, HTTPException

from lib_profile.api import models
from lib_profile.api.base64_images import decode_base64
from lib_profile.api.studio_calls import call, job_info


def _photo_upload(data: Optional[str]) -> Optional[bytes]:
    """``photo_image``'s bytes (None: not given); a 400 (413 too big) for bad base64."""
    return None if data is None else decode_base64(data, "photo_image")


def add_attention_routes(router: APIRouter, studio: Callable[[], Any]) -> None:
    """``/explain``, ``/edit`` and ``/restyle``."""

    def explain(body: models.ExplainRequest) -> models.JobInfo:
        """DAAM word heat maps of a studio portrait's first pass, of a new prompt, or of a real photo; returns a
        job."""
        pair = lambda v: tuple(v) if v else None  # noqa: E731
        if body.layers and len(body.layers) != 2 or body.steps and len(body.steps) != 2:
            raise HTTPException(400, "layers and steps are [first, last]")
        return job_info(call(studio().explain, body.identity, body.words, body.job, body.image, body.prompt,
                             body.seed, body.settings, pair(body.layers), pair(body.steps), body.stage,
                             body.hires, photo=body.photo, upload=_photo_upload(body.photo_image),
                             caption=body.caption, inversion=body.inversion))

    def edit(body: models.EditRequest) -> models.JobInfo:
        """Prompt-to-Prompt: edit a studio portrait's first (or refine) pass, a new prompt, or a real photo by
        editing its prompt (a photo's: its caption); returns a job."""
        return job_info(call(studio().edit, body.identity, body.target, body.mode, body.job, body.image,
                             body.prompt, body.seed, body.settings, body.cross_steps, body.self_steps,
                             body.weights, body.blend_words, body.blend_threshold, body.replace, body.finish,
                             body.stage, photo=body.photo, upload=_photo_upload(body.photo_image),
                             caption=body.caption, inversion=body.inversion))

    def restyle(body: models.RestyleRequest) -> models.JobInfo:
        """Plug-and-Play: a real photo (one of the identity's, or uploaded) made into the target prompt, its layout
        kept; returns a job (its result: photo, reconstruction and restyled image, identity similarity)."""
        return job_info(call(studio().restyle, body.identity, body.target_prompt, body.photo,
                             _photo_upload(body.photo_image), body.caption or "", body.strength, body.keep_person,
                             body.inversion))

    r = router.add_api_route
    r("/explain", explain, methods=["POST"], response_model=models.JobInfo, status_code=202)
    r("/edit", edit, methods=["POST"], response_model=models.JobInfo, status_code=202)
    r("/restyle", restyle, methods=["POST"], response_model=models.JobInfo, status_code=202)
