"""Routes of identities: create, list, get, delete; their photos (multipart or base64) and contact sheet;
starting their training and portraits."""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from lib_profile import API_PREFIX
from lib_profile.api import models
from lib_profile.api.base64_images import decode_base64
from lib_profile.api.limits import MULTIPART_SCHEMA, check_count, read_photos
from lib_profile.api.studio_calls import call, job_info
from lib_profile.store.identities import MAX_PHOTOS


def add_identity_routes(router: APIRouter, studio: Callable[[], Any], upload: type) -> None:
    """``/identities`` and below; ``upload``: the route class of the photo uploads (their body limit)."""

    def list_identities() -> List[models.IdentitySummary]:
        """All identities."""
        return [models.IdentitySummary(**x) for x in studio().store.list()]

    def create_identity(body: models.IdentityCreate) -> models.IdentityInfo:
        """Create an identity (a person). Then upload their photos."""
        s = studio()
        record = call(s.create_identity, body.name, body.class_word)
        return models.IdentityInfo(**call(s.identity, record["slug"]))

    def get_identity(slug: str) -> models.IdentityInfo:
        """One identity: photos, intake report, LoRAs, jobs, portrait sets."""
        return models.IdentityInfo(**call(studio().identity, slug))

    def delete_identity(slug: str) -> models.DeleteResponse:
        """Delete an identity and every trace of it: photos, crops, training runs, LoRA files, portraits, jobs."""
        return models.DeleteResponse(deleted=slug, removed=call(studio().delete_identity, slug))

    def report(slug: str, rep: dict) -> models.IntakeReport:
        sheet = f"{API_PREFIX}/identities/{slug}/contact_sheet.png"
        return models.IntakeReport(ready=rep["ready"], counts=rep["counts"], next_step=rep.get("next_step"),
                                   photos=rep["photos"], contact_sheet=sheet)

    def room(slug: str) -> int:
        """How many more photos the identity takes (404 when unknown)."""
        return MAX_PHOTOS - len(call(studio().store.get, slug)["photos"])

    async def upload_photos(slug: str, request: Request) -> models.IntakeReport:
        """Add photos (multipart form field ``files``, repeatable); the intake checks all of the identity's
        photos again and returns its report. Read as it streams: 413 at the first photo past the identity's
        40, the first byte past 25 MB in a photo or past 256 MB in the request; nothing is stored then."""
        items = await read_photos(request, await run_in_threadpool(room, slug))
        return await run_in_threadpool(lambda: report(slug, call(studio().add_photos, slug, items)))

    def upload_photos_base64(slug: str, body: models.PhotosUpload) -> models.IntakeReport:
        """Add photos given as base64 in JSON; same as the multipart route (the body is refused past 256 MB
        before it is parsed)."""
        check_count(len(body.images), room(slug))
        items = [(x.name, decode_base64(x.data, x.name)) for x in body.images]
        return report(slug, call(studio().add_photos, slug, items))

    def delete_photo(slug: str, name: str) -> models.IntakeReport:
        """Remove one photo (its name as the intake report lists it); the rest are checked again."""
        rep = call(studio().remove_photos, slug, [name])
        if rep is None:  # no photo left
            return models.IntakeReport(ready=False, counts={"total": 0, "accepted": 0, "rejected": 0, "by_reason": {}},
                                       next_step="Upload about 10 photos of the person.", photos=[], contact_sheet=None)
        return report(slug, rep)

    def contact_sheet(slug: str):
        """The intake's contact sheet (PNG): every photo with its verdict."""
        return FileResponse(str(call(studio().identity_file, slug, "contact_sheet")), media_type="image/png")

    def train(slug: str, body: Optional[models.TrainRequest] = None) -> models.JobInfo:
        """Start training the identity's LoRA; returns the job at once."""
        body = body or models.TrainRequest()
        options = body.dict()
        checkpoint = options.pop("checkpoint", None)
        return job_info(call(studio().train, slug, options, checkpoint))

    def generate(slug: str, body: models.GenerateRequest) -> models.JobInfo:
        """Start making portraits with the identity's LoRA; returns the job at once."""
        photo = decode_base64(body.pose_photo, "pose_photo") if body.pose_photo else None
        return job_info(call(studio().generate, slug, body.pose, body.tone, body.count, body.seed, body.prompt,
                             body.switches, photo, body.lora, body.lora_weight, body.settings, body.detail_engine))

    r = router.add_api_route
    r("/identities", list_identities, methods=["GET"], response_model=List[models.IdentitySummary])
    r("/identities", create_identity, methods=["POST"], response_model=models.IdentityInfo, status_code=201)
    r("/identities/{slug}", get_identity, methods=["GET"], response_model=models.IdentityInfo)
    r("/identities/{slug}", delete_identity, methods=["DELETE"], response_model=models.DeleteResponse)
    r("/identities/{slug}/photos", upload_photos, methods=["POST"], response_model=models.IntakeReport,
      route_class_override=upload, openapi_extra=MULTIPART_SCHEMA)
    r("/identities/{slug}/photos/base64", upload_photos_base64, methods=["POST"], response_model=models.IntakeReport,
      route_class_override=upload)
    r("/identities/{slug}/photos/{name}", delete_photo, methods=["DELETE"], response_model=models.IntakeReport)
    r("/identities/{slug}/contact_sheet.png", contact_sheet, methods=["GET"], response_class=FileResponse)
    r("/identities/{slug}/train", train, methods=["POST"], response_model=models.JobInfo, status_code=202)
    r("/identities/{slug}/generate", generate, methods=["POST"], response_model=models.JobInfo, status_code=202)
