"""The HTTP API under ``/sdapi/v1/profile-studio``: identities, photos, jobs, files, poses and tones.

Slow routes are plain ``def`` (FastAPI runs them in its thread pool). Training and generation return a
job at once; poll ``GET /jobs/{id}``. Errors: 400 bad input, 401 no or wrong credentials (when the
WebUI's ``--api-auth`` or serve's ``--api-auth`` is set), 404 unknown, 409 conflict, 413 too large, 507 no
space (or quota, or rights) to store the request's files: the message names the folder; nothing of the request
is kept. A body its model refuses is a 400 too (not FastAPI's 422), naming each bad field and its allowed range
(:mod:`.errors`).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import json
from typing import Any, Callable, List, Optional

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from lib_profile import API_PREFIX, EXTENSION_NAME, __version__
from lib_profile.api import models as m
from lib_profile.api.errors import BAD_INPUT, StudioRoute
from lib_profile.api.limits import MAX_JSON_BYTES, MAX_UPLOAD_BYTES, MULTIPART_SCHEMA, check_count, limited_route, \
    read_photos
from lib_profile.hosts.base import HostError
from lib_profile.store.files import StorageError, is_storage_fault, storage_error
from lib_profile.store.identities import MAX_PHOTO_BYTES, MAX_PHOTOS, Conflict, NotFound

StudioProvider = Callable[[], "object"]


def version() -> m.VersionResponse:
    """Name and version of Profile Studio."""
    return m.VersionResponse(name=EXTENSION_NAME, version=__version__)


def parse_auth(text: Optional[str]) -> list[tuple[str, str]]:
    """``"user:pass,user2:pass2"`` (the WebUI's ``--api-auth`` format) as pairs."""
    pairs = []
    for item in (text or "").split(","):
        if ":" in item:
            user, _, password = item.strip().partition(":")
            pairs.append((user, password))
    return pairs


def _auth_dependency(credentials: list[tuple[str, str]]):
    basic = HTTPBasic(auto_error=False)

    def check(creds: Optional[HTTPBasicCredentials] = Depends(basic)) -> None:
        if creds is not None:
            for user, password in credentials:
                if secrets.compare_digest(creds.username.encode(), user.encode()) and \
                        secrets.compare_digest(creds.password.encode(), password.encode()):
                    return
        raise HTTPException(status_code=401, detail="Incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})

    return check


def _http(exc: Exception) -> HTTPException:
    if isinstance(exc, NotFound):
        return HTTPException(404, str(exc))
    if isinstance(exc, Conflict):
        return HTTPException(409, str(exc))
    if isinstance(exc, StorageError):
        return HTTPException(507, str(exc))
    return HTTPException(400, str(exc))


_DATA_URL = re.compile(r"data:[^,;]*(?:;[^,;]*)*?(;base64)?,", re.IGNORECASE)


def _decode(data: str, name: str) -> bytes:
    """A base64 field's bytes. Accepted: plain base64, with or without a ``data:image/...;base64,`` prefix, with
    line breaks and other whitespace anywhere (``base64 FILE`` wraps at 76 columns). Refused with a 400 naming
    the image: a data URL that is not base64, other characters, wrong padding, nothing at all; 413 when too big."""
    text = data.lstrip()
    prefix = _DATA_URL.match(text)
    if prefix:
        if not prefix.group(1):
            raise HTTPException(400, f"{name}: the data: URL is not base64 (it needs ';base64,' before the data)")
        text = text[prefix.end():]
    text = "".join(text.split())  # line breaks, spaces, tabs
    if len(text) > MAX_PHOTO_BYTES * 4 // 3 + 16:
        raise HTTPException(413, f"{name} is over {MAX_PHOTO_BYTES // 2**20} MB")
    if not text:
        raise HTTPException(400, f"{name}: no data (the base64 text is empty)")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, f"{name}: the data is not valid base64 (standard alphabet A-Z a-z 0-9 + /, "
                                 "padded with '=')") from None


def _refusal_dependency(message: str):
    def refuse() -> None:
        raise HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": 'Basic realm="Profile Studio"'})

    return refuse


def make_router(studio: Optional[StudioProvider] = None, auth: Optional[str] = None,
                refuse: Optional[str] = None) -> APIRouter:
    """All routes under ``API_PREFIX``. ``studio()`` gives the :class:`~lib_profile.service.Studio` (made on
    first use); without it only ``/version`` exists. ``auth``: ``"user:pass[,...]"`` protects every route.
    ``refuse``: without ``auth``, every route answers 401 with this message (a server exposed without
    credentials, see :mod:`lib_profile.api.exposure`)."""
    if parse_auth(auth):
        deps = [Depends(_auth_dependency(parse_auth(auth)))]
    else:
        deps = [Depends(_refusal_dependency(refuse))] if refuse else []
    router = APIRouter(prefix=API_PREFIX, tags=[EXTENSION_NAME], dependencies=deps,
                       route_class=limited_route(MAX_JSON_BYTES, StudioRoute), responses=BAD_INPUT)

    def version_route() -> m.VersionResponse:
        """Name and version of Profile Studio, and the host it runs on."""
        out = version()
        made = getattr(studio, "peek", studio)() if studio is not None else None  # never loads a model
        out.host = getattr(getattr(made, "host", None), "name", None)
        if out.host is None and callable(getattr(studio, "host_name", None)):  # the WebUI's, before a first job
            out.host = studio.host_name()
        return out

    router.add_api_route("/version", version_route, methods=["GET"], response_model=m.VersionResponse)
    if studio is None:
        return router

    def call(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HTTPException:
            raise
        except (HostError, TimeoutError) as exc:
            raise _http(exc) from None
        except OSError as exc:  # a full disk (or quota, read-only) where no store method named the folder
            if is_storage_fault(exc):
                raise _http(storage_error(exc)) from None
            raise

    def links(job: dict) -> dict:
        base = f"{API_PREFIX}/jobs/{job['id']}"
        out = {"self": base, "cancel": f"{base}/cancel", "webui_task": f"task(profile-studio-{job['id']})"}
        if job["kind"] in ("train", "portraits"):
            out["resume"] = f"{base}/resume"
        result = job.get("result") or {}
        files = f"{API_PREFIX}/files/{job['identity']}/{job['id']}"
        if job["kind"] == "explain" and result.get("words"):
            out["image"] = f"{files}/{result['image']}"
            for word, f in result["words"].items():
                out[f"overlay:{word}"] = f"{files}/{f['overlay']}"
        if job["kind"] == "edit" and result.get("edited"):
            out["source"], out["edited"] = f"{files}/{result['source']}", f"{files}/{result['edited']}"
        if job["kind"] in ("generate", "portraits") and result.get("images"):
            for i, item in enumerate(result["images"]):
                out[f"image{i}"] = f"{API_PREFIX}/files/{job['identity']}/{job['id']}/{item['file']}"
            out["contact_sheet"] = f"{API_PREFIX}/files/{job['identity']}/{job['id']}/contact_sheet.png"
        return out

    def job_info(job: dict) -> m.JobInfo:
        return m.JobInfo(**{**job, "links": links(job)})

    def list_identities() -> List[m.IdentitySummary]:
        """All identities."""
        return [m.IdentitySummary(**x) for x in studio().store.list()]

    def create_identity(body: m.IdentityCreate) -> m.IdentityInfo:
        """Create an identity (a person). Then upload their photos."""
        s = studio()
        record = call(s.create_identity, body.name, body.class_word)
        return m.IdentityInfo(**call(s.identity, record["slug"]))

    def get_identity(slug: str) -> m.IdentityInfo:
        """One identity: photos, intake report, LoRAs, jobs, portrait sets."""
        return m.IdentityInfo(**call(studio().identity, slug))

    def delete_identity(slug: str) -> m.DeleteResponse:
        """Delete an identity and every trace of it: photos, crops, training runs, LoRA files, portraits, jobs."""
        return m.DeleteResponse(deleted=slug, removed=call(studio().delete_identity, slug))

    def report(slug: str, rep: dict) -> m.IntakeReport:
        sheet = f"{API_PREFIX}/identities/{slug}/contact_sheet.png"
        return m.IntakeReport(ready=rep["ready"], counts=rep["counts"], next_step=rep.get("next_step"),
                              photos=rep["photos"], contact_sheet=sheet)

    def room(slug: str) -> int:
        """How many more photos the identity takes (404 when unknown)."""
        return MAX_PHOTOS - len(call(studio().store.get, slug)["photos"])

    async def upload_photos(slug: str, request: Request) -> m.IntakeReport:
        """Add photos (multipart form field ``files``, repeatable); the intake checks all of the identity's
        photos again and returns its report. Read as it streams: 413 at the first photo past the identity's
        40, the first byte past 25 MB in a photo or past 256 MB in the request; nothing is stored then."""
        items = await read_photos(request, await run_in_threadpool(room, slug))
        return await run_in_threadpool(lambda: report(slug, call(studio().add_photos, slug, items)))

    def upload_photos_base64(slug: str, body: m.PhotosUpload) -> m.IntakeReport:
        """Add photos given as base64 in JSON; same as the multipart route (the body is refused past 256 MB
        before it is parsed)."""
        check_count(len(body.images), room(slug))
        items = [(x.name, _decode(x.data, x.name)) for x in body.images]
        return report(slug, call(studio().add_photos, slug, items))

    def delete_photo(slug: str, name: str) -> m.IntakeReport:
        """Remove one photo (its name as the intake report lists it); the rest are checked again."""
        rep = call(studio().remove_photos, slug, [name])
        if rep is None:  # no photo left
            return m.IntakeReport(ready=False, counts={"total": 0, "accepted": 0, "rejected": 0, "by_reason": {}},
                                  next_step="Upload about 10 photos of the person.", photos=[], contact_sheet=None)
        return report(slug, rep)

    def contact_sheet(slug: str):
        """The intake's contact sheet (PNG): every photo with its verdict."""
        return FileResponse(str(call(studio().identity_file, slug, "contact_sheet")), media_type="image/png")

    def train(slug: str, body: Optional[m.TrainRequest] = None) -> m.JobInfo:
        """Start training the identity's LoRA; returns the job at once."""
        body = body or m.TrainRequest()
        options = body.dict()
        checkpoint = options.pop("checkpoint", None)
        return job_info(call(studio().train, slug, options, checkpoint))

    def generate(slug: str, body: m.GenerateRequest) -> m.JobInfo:
        """Start making portraits with the identity's LoRA; returns the job at once."""
        photo = _decode(body.pose_photo, "pose_photo") if body.pose_photo else None
        return job_info(call(studio().generate, slug, body.pose, body.tone, body.count, body.seed, body.prompt,
                             body.switches, photo, body.lora, body.lora_weight, body.settings, body.detail_engine))

    def explain(body: m.ExplainRequest) -> m.JobInfo:
        """DAAM word heat maps of a studio portrait's first pass (or of a new prompt); returns a job."""
        pair = lambda v: tuple(v) if v else None  # noqa: E731
        if body.layers and len(body.layers) != 2 or body.steps and len(body.steps) != 2:
            raise HTTPException(400, "layers and steps are [first, last]")
        return job_info(call(studio().explain, body.identity, body.words, body.job, body.image, body.prompt,
                             body.seed, body.settings, pair(body.layers), pair(body.steps), body.stage,
                             body.hires))

    def edit(body: m.EditRequest) -> m.JobInfo:
        """Prompt-to-Prompt: edit a studio portrait's first (or refine) pass by editing its prompt; returns a job."""
        return job_info(call(studio().edit, body.identity, body.target, body.mode, body.job, body.image,
                             body.prompt, body.seed, body.settings, body.cross_steps, body.self_steps,
                             body.weights, body.blend_words, body.blend_threshold, body.replace, body.finish,
                             body.stage))

    async def portraits(request: Request) -> m.JobInfo:
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

    def list_jobs(identity: Optional[str] = None) -> List[m.JobInfo]:
        """Jobs, newest first (optionally of one identity)."""
        return [job_info(j) for j in studio().jobs.list(identity)]

    def get_job(job_id: str) -> m.JobInfo:
        """A job's state, stage, progress (0-1), ETA, messages and, when done, its result and links."""
        return job_info(call(studio().jobs.get, job_id))

    def cancel_job(job_id: str) -> m.JobInfo:
        """Cancel a queued or running job; training stops within a step and can be resumed."""
        return job_info(call(studio().jobs.cancel, job_id))

    def resume_job(job_id: str) -> m.JobInfo:
        """Continue a cancelled or interrupted training from its last saved step (a new job)."""
        return job_info(call(studio().resume, job_id))

    def get_file(slug: str, job_id: str, name: str):
        """A file of a portrait set: a portrait PNG (with infotext), contact_sheet.png, plan.json, result.json."""
        path = call(studio().output_file, slug, job_id, name)
        return FileResponse(str(path))

    def poses() -> List[m.PoseInfo]:
        """The pose templates."""
        from lib_profile.studio.pose import list_poses

        return [m.PoseInfo(name=p.name, title=p.title, description=p.description, framing=p.framing,
                           thumbnail=f"{API_PREFIX}/poses/{p.name}/thumbnail.png") for p in list_poses()]

    def pose_thumbnail(name: str):
        """A pose template's thumbnail (PNG)."""
        from lib_profile.store.safe import UnsafeName
        from lib_profile.studio.pose import template_path

        try:
            path = template_path(name, ".png")
        except UnsafeName as exc:
            raise HTTPException(400, str(exc)) from None
        except HostError as exc:
            raise HTTPException(404, str(exc)) from None
        return FileResponse(str(path), media_type="image/png")

    def tones() -> List[m.ToneInfo]:
        """The tone presets (shipped and the user's own)."""
        from lib_profile.studio.tone import list_tones

        return [m.ToneInfo(name=t.name, title=t.title, description=t.description, sampler=t.sampler,
                           scheduler=t.scheduler) for t in list_tones(studio().data_dir)]

    r = router.add_api_route
    r("/identities", list_identities, methods=["GET"], response_model=List[m.IdentitySummary])
    r("/identities", create_identity, methods=["POST"], response_model=m.IdentityInfo, status_code=201)
    r("/identities/{slug}", get_identity, methods=["GET"], response_model=m.IdentityInfo)
    r("/identities/{slug}", delete_identity, methods=["DELETE"], response_model=m.DeleteResponse)
    upload = limited_route(MAX_UPLOAD_BYTES, StudioRoute)
    r("/identities/{slug}/photos", upload_photos, methods=["POST"], response_model=m.IntakeReport,
      route_class_override=upload, openapi_extra=MULTIPART_SCHEMA)
    r("/identities/{slug}/photos/base64", upload_photos_base64, methods=["POST"], response_model=m.IntakeReport,
      route_class_override=upload)
    r("/identities/{slug}/photos/{name}", delete_photo, methods=["DELETE"], response_model=m.IntakeReport)
    r("/identities/{slug}/contact_sheet.png", contact_sheet, methods=["GET"], response_class=FileResponse)
    r("/identities/{slug}/train", train, methods=["POST"], response_model=m.JobInfo, status_code=202)
    r("/identities/{slug}/generate", generate, methods=["POST"], response_model=m.JobInfo, status_code=202)
    r("/portraits", portraits, methods=["POST"], response_model=m.JobInfo, status_code=202,
      route_class_override=upload, openapi_extra={"requestBody": _portraits_body()})
    r("/jobs", list_jobs, methods=["GET"], response_model=List[m.JobInfo])
    r("/jobs/{job_id}", get_job, methods=["GET"], response_model=m.JobInfo)
    r("/jobs/{job_id}/cancel", cancel_job, methods=["POST"], response_model=m.JobInfo)
    r("/jobs/{job_id}/resume", resume_job, methods=["POST"], response_model=m.JobInfo, status_code=202)
    r("/files/{slug}/{job_id}/{name}", get_file, methods=["GET"], response_class=FileResponse)
    r("/explain", explain, methods=["POST"], response_model=m.JobInfo, status_code=202)
    r("/edit", edit, methods=["POST"], response_model=m.JobInfo, status_code=202)
    r("/poses", poses, methods=["GET"], response_model=List[m.PoseInfo])
    r("/poses/{name}/thumbnail.png", pose_thumbnail, methods=["GET"], response_class=FileResponse)
    r("/tones", tones, methods=["GET"], response_model=List[m.ToneInfo])
    return router


# ---------------------------------------------------------------- POST /portraits: JSON or multipart

_FORM_JSON = ("switches", "settings", "train")  # form fields that carry JSON text


async def _portraits_request(request: Request) -> tuple[m.PortraitsRequest, list[tuple[str, bytes]], Optional[bytes]]:
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
    files = [(x.name, _decode(x.data, x.name)) for x in body.images]
    pose_photo = _decode(body.pose_photo, "pose_photo") if body.pose_photo else None
    return body, files, pose_photo


def _checked(data: dict) -> m.PortraitsRequest:
    from pydantic import ValidationError

    try:
        return m.PortraitsRequest(**data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise HTTPException(400, f"Bad request: {problems}") from None
    except TypeError as exc:
        raise HTTPException(400, f"Bad request: {exc}") from None


def _portraits_body() -> dict:
    """The OpenAPI request body of ``POST /portraits``: the JSON model and the multipart form."""
    ref = "#/components/schemas/{model}"
    model = m.PortraitsRequest
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
