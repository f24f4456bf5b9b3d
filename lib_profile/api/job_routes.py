"""Routes of jobs (list, state, cancel, resume) and of the files their portrait sets hold."""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from fastapi import APIRouter
from fastapi.responses import FileResponse

from lib_profile.api import models
from lib_profile.api.studio_calls import call, job_info


def add_job_routes(router: APIRouter, studio: Callable[[], Any]) -> None:
    """``/jobs`` and ``/files``."""

    def list_jobs(identity: Optional[str] = None) -> List[models.JobInfo]:
        """Jobs, newest first (optionally of one identity)."""
        return [job_info(j) for j in studio().jobs.list(identity)]

    def get_job(job_id: str) -> models.JobInfo:
        """A job's state, stage, progress (0-1), ETA, messages and, when done, its result and links."""
        return job_info(call(studio().jobs.get, job_id))

    def cancel_job(job_id: str) -> models.JobInfo:
        """Cancel a queued or running job; training stops within a step and can be resumed."""
        return job_info(call(studio().jobs.cancel, job_id))

    def resume_job(job_id: str) -> models.JobInfo:
        """Continue a cancelled or interrupted training from its last saved step (a new job)."""
        return job_info(call(studio().resume, job_id))

    def get_file(slug: str, job_id: str, name: str):
        """A file of a portrait set: a portrait PNG (with infotext), contact_sheet.png, plan.json, result.json."""
        path = call(studio().output_file, slug, job_id, name)
        return FileResponse(str(path))

    r = router.add_api_route
    r("/jobs", list_jobs, methods=["GET"], response_model=List[models.JobInfo])
    r("/jobs/{job_id}", get_job, methods=["GET"], response_model=models.JobInfo)
    r("/jobs/{job_id}/cancel", cancel_job, methods=["POST"], response_model=models.JobInfo)
    r("/jobs/{job_id}/resume", resume_job, methods=["POST"], response_model=models.JobInfo, status_code=202)
    r("/files/{slug}/{job_id}/{name}", get_file, methods=["GET"], response_class=FileResponse)
