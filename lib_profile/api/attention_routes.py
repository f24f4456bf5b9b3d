"""``POST /explain`` (DAAM word heat maps) and ``POST /edit`` (Prompt-to-Prompt): each starts a job."""

from __future__ import annotations

from typing import Any, Callable

from fastapi import APIRouter, HTTPException

from lib_profile.api import models
from lib_profile.api.studio_calls import call, job_info


def add_attention_routes(router: APIRouter, studio: Callable[[], Any]) -> None:
    """``/explain`` and ``/edit``."""

    def explain(body: models.ExplainRequest) -> models.JobInfo:
        """DAAM word heat maps of a studio portrait's first pass (or of a new prompt); returns a job."""
        pair = lambda v: tuple(v) if v else None  # noqa: E731
        if body.layers and len(body.layers) != 2 or body.steps and len(body.steps) != 2:
            raise HTTPException(400, "layers and steps are [first, last]")
        return job_info(call(studio().explain, body.identity, body.words, body.job, body.image, body.prompt,
                             body.seed, body.settings, pair(body.layers), pair(body.steps), body.stage,
                             body.hires))

    def edit(body: models.EditRequest) -> models.JobInfo:
        """Prompt-to-Prompt: edit a studio portrait's first (or refine) pass by editing its prompt; returns a job."""
        return job_info(call(studio().edit, body.identity, body.target, body.mode, body.job, body.image,
                             body.prompt, body.seed, body.settings, body.cross_steps, body.self_steps,
                             body.weights, body.blend_words, body.blend_threshold, body.replace, body.finish,
                             body.stage))

    r = router.add_api_route
    r("/explain", explain, methods=["POST"], response_model=models.JobInfo, status_code=202)
    r("/edit", edit, methods=["POST"], response_model=models.JobInfo, status_code=202)
