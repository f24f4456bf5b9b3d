"""``POST /portraits``: the whole flow in one call, from a JSON body or a multipart form."""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from lib_profile.api import models
from lib_profile.api.base64_images import decode_base64
from lib_profile.api.limits import check_count
from lib_profile.api.studio_calls import call, job_info
from lib_profile.store.identities import MAX_PHOTO_BYTES, MAX_PHOTOS


def add_portraits_route(router: APIRouter, studio: Callable[[], Any], upload: type) -> None:
    """``POST /portraits``; ``upload``: its route class (the upload body limit)."""

    async def portraits(request: Request) -> models.JobInfo:
        """The whole flow in one call: a new identity from its photos, the intake, the LoRA's training and the
        portraits, as one job (progress 0-1 across the three; cancel; resume continues where it stopped). Send
        JSON (``PortraitsRequest``, photos base64) or a multipart form (photos in ``files``, repeatable; the other
        fields as form fields, ``switches``, ``settings`` and ``train`` as JSON text). Returns the job at once."""
        body, files, pose_photo = await _portraits_request(request)
        generate = {k: getattr(body, k) for k in ("pose", "tone", "count", "seed", "prompt", "switches",
                                                  "lora_weight", "settings", "detail_engine")}
        train = body.train.dict() if body.train else {}
        checkpoint = train.pop("checkpoint", None)
        job = await run_in_threadpool(call, studio().portraits, body.name, files, class_word=body.class_word,
                                      train=train, checkpoint=checkpoint, pose_photo=pose_photo, **generate)
        return job_info(job)

    r = router.add_api_route
    r("/portraits", portraits, methods=["POST"], response_model=models.JobInfo, status_code=202,
      route_class_override=upload, openapi_extra={"requestBody": _portraits_body()})


# ---------------------------------------------------------------- POST /portraits: JSON or multipart

_FORM_JSON = ("switches", "settings", "train")  # form fields that carry JSON text


async def _portraits_request(request: Request) -> tuple[models.PortraitsRequest, list[tuple[str, bytes]], Optional[bytes]]:
    """The request's fields as a checked :class:`~lib_profile.api.models.PortraitsRequest`, its photos (name, bytes)
    and its pose photo; 400 naming the field for a bad one, 413 for a photo over the size limit."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form()
        data: dict[str, Any] = {"images": []}
        files: list[tuple[str, bytes]] = []
        pose_photo = None
        for key, value in form.multi_items():
            if hasattr(value, "read"):  # an uploaded file
                if key not in ("files", "pose_photo"):
                    raise HTTPException(400, f"Unknown file field {key!r}: photos go in 'files', a pose reference "
                                             "photo in 'pose_photo'")
                content = await value.read(MAX_PHOTO_BYTES + 1)
                if len(content) > MAX_PHOTO_BYTES:
                    raise HTTPException(413, f"{value.filename} is over {MAX_PHOTO_BYTES // 2**20} MB")
                if key == "files":
                    check_count(len(files) + 1, MAX_PHOTOS)
                    files.append((value.filename or "photo", content))
                else:
                    pose_photo = content
            elif key in _FORM_JSON:
                try:
                    data[key] = json.loads(value) if value.strip() else None
                except ValueError:
                    raise HTTPException(400, f"{key}: not JSON text (e.g. {key}='{{\"steps\": 20}}')") from None
            elif key == "files":
                raise HTTPException(400, "files: send the photos as files (multipart file parts), not text")
            else:
                data[key] = value
        body = _checked(data)
        return body, files, pose_photo
    try:
        data = await request.json()
    except ValueError:
        raise HTTPException(400, "Send JSON (Content-Type: application/json) or a multipart form "
                                 "(multipart/form-data)") from None
    if not isinstance(data, dict):
        raise HTTPException(400, "The JSON body must be an object with the fields of PortraitsRequest")
    body = _checked(data)
    check_count(len(body.images), MAX_PHOTOS)
    files = [(x.name, decode_base64(x.data, x.name)) for x in body.images]
    pose_photo = decode_base64(body.pose_photo, "pose_photo") if body.pose_photo else None
    return body, files, pose_photo


def _checked(data: dict) -> models.PortraitsRequest:
    from pydantic import ValidationError

    try:
        return models.PortraitsRequest(**data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise HTTPException(400, f"Bad request: {problems}") from None
    except TypeError as exc:
        raise HTTPException(400, f"Bad request: {exc}") from None


def _portraits_body() -> dict:
    """The OpenAPI request body of ``POST /portraits``: the JSON model and the multipart form."""
    ref = "#/components/schemas/{model}"
    model = models.PortraitsRequest
    schema = (model.model_json_schema(ref_template=ref) if hasattr(model, "model_json_schema")
              else model.schema(ref_template=ref))
    for key in ("$defs", "definitions"):  # ImageUpload and TrainRequest are components of the other routes
        schema.pop(key, None)
    text = {"type": "string"}
    form = {"type": "object", "required": ["name", "files"], "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "The photos (repeat the field for each)."},
        "pose_photo": {"type": "string", "format": "binary", "description": "A pose reference photo."},
        **{k: {**text, "description": v.get("description", "")} for k, v in schema["properties"].items()
           if k not in ("images", "pose_photo", *_FORM_JSON, "count", "seed", "lora_weight")},
        "count": {"type": "integer"}, "seed": {"type": "integer"}, "lora_weight": {"type": "number"},
        **{k: {**text, "description": "JSON text, as the JSON body's field"} for k in _FORM_JSON}}}
    return {"required": True, "content": {"application/json": {"schema": schema},
                                          "multipart/form-data": {"schema": form}}}
